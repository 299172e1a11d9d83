# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: run the selected health checks and assemble the report.

The I/O sample window overlaps the other checks: the first I/O sample is
taken first, the PostgreSQL and other checks run, and the second sample is
taken once at least ``sample_seconds`` have passed.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import json
import socket
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write
from ansible_collections.ransomeye.ops.plugins.module_utils._health_app import app_checks, backup_checks, spool_checks
from ansible_collections.ransomeye.ops.plugins.module_utils._health_certs import certificate_checks
from ansible_collections.ransomeye.ops.plugins.module_utils._health_postgres import postgres_checks
from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import (
    NAGIOS_CODE, merge_thresholds, nagios_line, worst,
)
from ansible_collections.ransomeye.ops.plugins.module_utils._health_services import process_checks, service_checks
from ansible_collections.ransomeye.ops.plugins.module_utils._health_system import (
    disk_checks, io_checks, io_sample, load_checks, memory_checks, swap_checks,
)
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ConnInfo

SYSTEM = ("disk", "inodes", "io", "load", "memory", "swap")
CHECK_NAMES = SYSTEM + ("postgres", "services", "processes", "certificates", "app", "backups", "spool")
GROUPS = {"system": SYSTEM, "all": CHECK_NAMES}


def expand_checks(selected: t.Sequence[str]) -> t.List[str]:
    result: t.List[str] = []
    for name in selected:
        names = GROUPS.get(name, (name,))
        for item in names:
            if item not in CHECK_NAMES:
                raise RansomeyeError("unknown check %r; use %s" % (
                    name, ", ".join(list(GROUPS) + list(CHECK_NAMES))))
            if item not in result:
                result.append(item)
    return result


def run_health(params: t.Mapping[str, t.Any]) -> dict:
    """The full report (``status``, ``exit_code``, ``checks``, ``nagios``...) for the module options."""
    selected = expand_checks(params["checks"])
    thresholds = merge_thresholds(params.get("thresholds"))
    sample_seconds = float(params.get("sample_seconds") or 0)
    if sample_seconds < 0 or sample_seconds > 300:
        raise RansomeyeError("sample_seconds must be between 0 and 300, not %s" % sample_seconds)
    paths = params.get("paths") or ["/"]
    checks: t.List[dict] = []
    before = io_sample() if "io" in selected else None
    started = time.monotonic()
    if "disk" in selected or "inodes" in selected:
        checks += disk_checks(paths, thresholds, inodes="inodes" in selected, space="disk" in selected)
    if "load" in selected:
        checks += load_checks(thresholds)
    if "memory" in selected:
        checks += memory_checks(thresholds)
    if "swap" in selected:
        checks += swap_checks(thresholds)
    if "postgres" in selected:
        checks += postgres_checks(ConnInfo.from_params(params), thresholds,
                                  samples=params.get("pg_samples") or 5,
                                  query_timeout=float(params.get("query_timeout") or 5))
    if "services" in selected:
        checks += service_checks(params.get("services") or [], thresholds, params.get("service_manager") or "auto",
                                 params.get("supervisor_conf"))
    if "processes" in selected:
        checks += process_checks(params.get("processes") or [], thresholds)
    if "certificates" in selected:
        checks += certificate_checks(params.get("certificates") or [], thresholds)
    if "app" in selected:
        checks += app_checks(params, thresholds)
    if "backups" in selected:
        checks += backup_checks(params, thresholds)
    if "spool" in selected:
        checks += spool_checks(params, thresholds)
    if before is not None:
        remaining = sample_seconds - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        checks += io_checks(paths, thresholds, before, io_sample())
    status = worst(checks)
    counts = dict((name, sum(1 for c in checks if c["status"] == name)) for name in NAGIOS_CODE)
    return dict(
        status=status,
        exit_code=NAGIOS_CODE[status],
        checks=checks,
        counts=counts,
        nagios=nagios_line(checks, status),
        host=socket.gethostname(),
        time=datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
    )


def write_report(path: str, report: dict) -> None:
    """The report as JSON, replaced atomically (readers never see half a report)."""
    data = json.dumps(report, indent=2, sort_keys=True, default=str).encode("utf-8") + b"\n"
    atomic_write(path, data, mode=0o640)
