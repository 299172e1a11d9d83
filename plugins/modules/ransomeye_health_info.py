#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_health_info
short_description: One answer to "is this RansomEye host healthy?", with a JSON report and a Nagios line
version_added: "0.1.0"
description:
  - Runs the selected checks, each with its own thresholds, and returns per check its value, unit, thresholds and status
    (V(ok), V(warning), V(critical), V(unknown)). The overall status is the worst of them
    (ok < unknown < warning < critical).
  - "System: disk usage and inodes per path in O(paths); disk I/O rates, utilisation and latency of the devices under
    O(paths) from two samples O(sample_seconds) apart; load per usable CPU; available memory; swap use."
  - "PostgreSQL: connect time and probe-query latency (O(pg_samples) samples, p50 and max); client backends as a share
    of C(max_connections) less the reserved slots; sessions idle in transaction; the longest-running query;
    transaction-ID wraparound age; replication lag where there is replication (bytes per standby on a primary, seconds
    on a standby)."
  - "A server that does not answer (for example a postmaster stopped with SIGSTOP) gives V(critical) within about
    O(connect_timeout) seconds: libpq's C(connect_timeout) bounds the connection, C(statement_timeout) bounds each query
    (O(query_timeout)), and a watchdog bounds the whole PostgreSQL battery."
  - Whether the given services (systemd or supervisord) and processes run, and the days left on given certificates.
  - "The application (V(app)): its health URL O(app_health_url) must answer 200 (503, another code or no answer is
    V(critical)), and a database login with the credentials each of O(app_env_files) holds (C(DB_USER)/C(DB_PASSWORD)
    or C(DATABASE_URL)) must work, against the server of the connection options."
  - "Backups (V(backups)): hours since the newest backup of O(backup_repo) completed (its newest manifest; nothing
    decrypted) and days since the last passing DR drill report in O(drill_report_dir). Spool (V(spool)): the alerts
    waiting in O(spool_dir) for a SIEM."
  - An info module. It changes nothing on the host; the only file it writes is the report, when O(report_path) is set.
author:
  - ransomeye.ops contributors (@ransomeye)
attributes:
  check_mode:
    details: Runs the same read-only checks (and writes O(report_path), which is output, not a change).
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
options:
  checks:
    description:
      - Checks to run. V(system) means V(disk), V(inodes), V(io), V(load), V(memory) and V(swap); V(all) means every
        check. V(services), V(processes) and V(certificates) do nothing when their lists are empty, V(app),
        V(backups) and V(spool) when their options are unset.
    type: list
    elements: str
    default: [all]
  thresholds:
    description:
      - "Overrides of the default thresholds, as C(name: {warning: W, critical: C}) or C(name: [W, C]). Use V(null) to
        switch a level off."
      - "Higher is worse for all but C(memory_available_percent) and C(cert_days_left). Names and defaults:
        C(disk_used_percent) 80/90, C(inodes_used_percent) 80/90, C(io_util_percent) 80/95, C(io_latency_ms) 50/200,
        C(io_read_bytes_per_s) and C(io_write_bytes_per_s) none, C(load_per_core) 2/4, C(memory_available_percent)
        10/5, C(swap_used_percent) 50/80, C(pg_connect_ms) 500/2000, C(pg_query_ms) 100/1000, C(pg_backends_percent)
        90/95, C(pg_idle_in_transaction) 5/20, C(pg_longest_query_seconds) 300/1800, C(pg_wraparound_age)
        1300000000/1400000000, C(pg_replication_lag_bytes) 16MiB/256MiB, C(pg_replication_lag_seconds) 60/300,
        C(pg_wal_archive_ready) 3/10 (WAL files waiting for the archive command), C(cert_days_left) 30/7,
        C(backup_age_hours) 26/50, C(drill_age_days) 8/none (no passing drill at all is a warning),
        C(siem_spool_backlog) 500/9000."
    type: dict
    default: {}
  paths:
    description:
      - Paths whose filesystems are checked for space and inodes, and whose devices are sampled for I/O.
    type: list
    elements: path
    default: [/]
  sample_seconds:
    description:
      - Seconds between the two I/O samples (0 to 300). The other checks run inside this window.
    type: float
    default: 1
  services:
    description:
      - Services that must be running, asked of O(service_manager).
    type: list
    elements: str
    default: []
  service_manager:
    description:
      - V(auto) uses systemd when it runs, else supervisord when O(supervisor_conf) is set, else looks for processes
        of that name.
    type: str
    choices: [auto, systemd, supervisord, process]
    default: auto
  supervisor_conf:
    description:
      - supervisord configuration file (for C(supervisorctl -c)).
    type: path
  processes:
    description:
      - Processes that must be running, matched by process name or as a substring of the command line.
    type: list
    elements: str
    default: []
  certificates:
    description:
      - Certificate files (PEM or DER; the first certificate counts) whose expiry is checked. An unreadable file is
        V(critical).
    type: list
    elements: path
    default: []
  app_health_url:
    description:
      - Health URL of the RansomEye web app (check V(app)).
    type: str
    version_added: "0.2.0"
  app_env_files:
    description:
      - The app's C(.env) files; each one's database credentials must log in (check V(app)). The password is never
        returned.
    type: list
    elements: path
    default: []
    version_added: "0.2.0"
  backup_repo:
    description:
      - Backup repository whose newest backup's age is checked (check V(backups)).
    type: path
    version_added: "0.2.0"
  drill_report_dir:
    description:
      - Directory of the C(dr-drill-*.json) reports; the age of the newest passing one is checked (check V(backups)).
    type: path
    version_added: "0.2.0"
  pre_restore_db:
    description:
      - Database whose C(<name>_pre_restore_*) copies (kept by M(ransomeye.ops.ransomeye_restore)) are counted, as
        C(pg_pre_restore_bytes) with the copies' names (check V(backups)).
    type: str
    version_added: "0.2.0"
  spool_dir:
    description:
      - Alert spool of M(ransomeye.ops.ransomeye_alert_forward); its backlog is checked (check V(spool)).
    type: path
    version_added: "0.2.0"
  pg_samples:
    description:
      - Number of connections and probe queries timed for the PostgreSQL latency checks.
    type: int
    default: 5
  query_timeout:
    description:
      - Seconds each PostgreSQL query may take (C(statement_timeout)).
    type: float
    default: 5
  fail_on:
    description:
      - Fail the task when the overall status is this bad or worse. The result (and the report) is complete either way.
    type: str
    choices: [critical, warning, unknown, never]
    default: critical
  report_path:
    description:
      - Write the full report as JSON to this file, atomically (mode 0640). Its directory must exist.
    type: path
requirements:
  - psutil on the managed host (system checks)
  - psycopg2 (or psycopg2-binary) on the managed host (PostgreSQL checks)
  - cryptography on the managed host (certificate checks)
seealso:
  - module: ransomeye.ops.ransomeye_alert_forward
  - name: Nagios plugin output and performance data
    description: The format of the RV(nagios) line.
    link: https://nagios-plugins.org/doc/guidelines.html#AEN200
'''

EXAMPLES = r'''
- name: Check the host and its database
  ransomeye.ops.ransomeye_health_info:
    login_host: 127.0.0.1
    login_port: 5432
    login_password: "{{ ransomeye_db_admin_password }}"
    connect_timeout: 5
    paths: [/, /var/lib/ransomeye]
    services: [ransomeye-web, ransomeye-worker]
    certificates: [/etc/ransomeye/tls/server.crt]
    thresholds:
      disk_used_percent: {warning: 75, critical: 90}
      cert_days_left: [21, 7]
    report_path: /var/lib/ransomeye/reports/health.json
    fail_on: never
  register: health

- name: Only the system checks, failing on warnings
  ransomeye.ops.ransomeye_health_info:
    checks: [system]
    fail_on: warning

- name: Feed Nagios
  ansible.builtin.debug:
    msg: "{{ health.nagios }}"
'''

RETURN = r'''
status:
  description: Overall status, the worst of all checks.
  returned: always
  type: str
  sample: warning
exit_code:
  description: Nagios exit code of RV(status) (0 ok, 1 warning, 2 critical, 3 unknown).
  returned: always
  type: int
  sample: 1
checks:
  description: One entry per check and target. Entries may carry extra details (C(p50), C(max), C(not_after), ...).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Check name (also its threshold name).
      type: str
      sample: disk_used_percent
    target:
      description: What was checked (path, device, service, certificate, server).
      type: str
      sample: /var/lib/ransomeye
    value:
      description: Measured value, or null when it could not be measured.
      type: float
      sample: 85.2
    unit:
      description: Unit of O(thresholds) and RV(checks[].value).
      type: str
      sample: "%"
    warning:
      description: Warning threshold (null when off).
      type: float
      sample: 80
    critical:
      description: Critical threshold (null when off).
      type: float
      sample: 90
    status:
      description: V(ok), V(warning), V(critical) or V(unknown).
      type: str
      sample: warning
    message:
      description: Why a value is missing, or other detail.
      type: str
      sample: ""
counts:
  description: Number of checks per status.
  returned: always
  type: dict
  sample: {ok: 17, warning: 1, critical: 0, unknown: 0}
nagios:
  description: Nagios-style one-line summary with performance data.
  returned: always
  type: str
  sample: "RANSOMEYE WARNING - 1 warning: disk_used_percent[/]=85.2% | 'disk_used_percent[/]'=85.2%;80;90;0;100"
host:
  description: Host name of the managed host.
  returned: always
  type: str
  sample: ransomeye01
time:
  description: When the checks ran (local time with offset).
  returned: always
  type: str
  sample: "2026-11-27T17:41:28+00:00"
report_path:
  description: Where the JSON report was written, when O(report_path) is set.
  returned: when O(report_path) is set
  type: str
  sample: /var/lib/ransomeye/reports/health.json
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import should_fail
from ansible_collections.ransomeye.ops.plugins.module_utils._health_run import (
    SYSTEM, expand_checks, run_health, write_report,
)
from ansible_collections.ransomeye.ops.plugins.module_utils._psutil import HAS_PSUTIL
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec, require_psycopg2


def health(module):
    params = module.params
    selected = expand_checks(params["checks"])
    if not HAS_PSUTIL and (set(selected) & set(SYSTEM + ("processes",))):
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("psutil"))
    if "postgres" in selected or ("app" in selected and params["app_env_files"]) or \
            ("backups" in selected and params["pre_restore_db"]):
        require_psycopg2(module)
    if params["pg_samples"] < 1 or params["pg_samples"] > 100:
        raise RansomeyeError("pg_samples must be between 1 and 100, not %d" % params["pg_samples"])
    if params["query_timeout"] <= 0:
        raise RansomeyeError("query_timeout must be a positive number of seconds")
    report = run_health(params)
    if params["report_path"]:
        write_report(params["report_path"], report)
        report["report_path"] = params["report_path"]
    report["changed"] = False
    if should_fail(report["status"], params["fail_on"]):
        bad = ["%s%s" % (c["name"], "[%s]" % c["target"] if c["target"] else "")
               for c in report["checks"] if c["status"] == report["status"]]
        raise RansomeyeError("health status is %s (fail_on: %s): %s" % (report["status"], params["fail_on"], ", ".join(bad)),
                             **report)
    return report


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            checks=dict(type="list", elements="str", default=["all"]),
            thresholds=dict(type="dict", default={}),
            paths=dict(type="list", elements="path", default=["/"]),
            sample_seconds=dict(type="float", default=1),
            services=dict(type="list", elements="str", default=[]),
            service_manager=dict(type="str", default="auto", choices=["auto", "systemd", "supervisord", "process"]),
            supervisor_conf=dict(type="path"),
            processes=dict(type="list", elements="str", default=[]),
            certificates=dict(type="list", elements="path", default=[]),
            app_health_url=dict(type="str"),
            app_env_files=dict(type="list", elements="path", default=[]),
            backup_repo=dict(type="path"),
            drill_report_dir=dict(type="path"),
            spool_dir=dict(type="path"),
            pre_restore_db=dict(type="str"),
            pg_samples=dict(type="int", default=5),
            query_timeout=dict(type="float", default=5),
            fail_on=dict(type="str", default="critical", choices=["critical", "warning", "unknown", "never"]),
            report_path=dict(type="path"),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
    )
    module.run(health)


if __name__ == "__main__":
    main()
