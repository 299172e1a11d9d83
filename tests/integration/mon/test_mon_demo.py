"""health_check.yml end to end on the demo host: DB, supervisord services, mTLS certificates, SIEM alert."""
from __future__ import annotations

import json
import os

from tests.harness.demo import services
from tests.harness.paths import REPO

PLAYBOOK = os.path.join(REPO, "playbooks", "health_check.yml")
# The machine is shared: keep load and I/O from deciding the outcome of this test.
CALM = {"load_per_core": [1000, 2000], "io_latency_ms": [100000, 200000], "io_util_percent": [100, None]}


def test_health_check_on_the_demo_host(mon_demo, rsyslog, run_playbook):
    layout, _state = mon_demo
    extra = {"monitoring_thresholds": CALM, "monitoring_sample_seconds": 0.2,
             "ransomeye_syslog_server": "127.0.0.1", "ransomeye_syslog_port": rsyslog.ports["tcp"],
             "ransomeye_syslog_protocol": "tcp",
             # This host was never backed up nor drilled (tests/integration/demo/test_demo_health_badday.py checks those).
             "monitoring_backup_repo": "", "monitoring_drill_report_dir": ""}
    run = run_playbook(PLAYBOOK, inventory=layout.inventory, extra_vars=extra)
    assert run.rc == 0, run.stdout + run.stderr
    report = json.loads(open(os.path.join(layout.report_dir, "health-localhost.json")).read())
    by_name = {}
    for check in report["checks"]:
        by_name.setdefault(check["name"], []).append(check)
    assert sorted(c["target"] for c in by_name["service_running"]) == sorted(services.PROGRAMS)
    assert all(c["status"] == "ok" for c in by_name["service_running"])
    assert [os.path.basename(c["target"]) for c in by_name["cert_days_left"]] == ["ca.crt", "server.crt", "client.crt"]
    # The demo's server certificate is due for renewal (20 days left): warning; CA and client are fine.
    assert [c["status"] for c in by_name["cert_days_left"]] == ["ok", "warning", "ok"]
    assert {c["target"] for c in by_name["disk_used_percent"]} == {"/", layout.artifact_dir}
    assert by_name["pg_connect_ms"][0]["status"] == "ok"
    assert report["status"] == "warning", report["nagios"]
    assert run.task("Forward an alert for a host that is not ok")["result"]["sent"] == 1
    (first,) = rsyslog.wait_for(lambda r: r["msgid"] == "HEALTH" and layout.report_dir in r["structured_data"])
    assert first["msg"].startswith("RansomEye health warning on localhost: RANSOMEYE WARNING - 1 warning: "
                                   "cert_days_left[%s/server.crt]" % layout.tls_dir)
    assert int(first["pri"]) == 20 * 8 + 4  # local4.warning

    # A service goes down: the host is critical and the SIEM hears about it.
    services.supervisorctl(layout, "stop", "ransomeye-worker")
    try:
        run = run_playbook(PLAYBOOK, inventory=layout.inventory, extra_vars=extra)
    finally:
        services.supervisorctl(layout, "start", "ransomeye-worker")
    assert run.rc == 0, run.stdout + run.stderr
    alert = run.task("Forward an alert for a host that is not ok")["result"]
    assert alert["sent"] == 1
    records = rsyslog.wait_for(lambda r: r["msgid"] == "HEALTH" and layout.report_dir in r["structured_data"], count=2)
    assert records[1]["msg"].startswith("RansomEye health critical on localhost: RANSOMEYE CRITICAL - 1 critical, "
                                        "1 warning: service_running[ransomeye-worker]")
    assert 'failing="service_running,cert_days_left"' in records[1]["structured_data"] or \
        'failing="cert_days_left,service_running"' in records[1]["structured_data"]
    assert int(records[1]["pri"]) == 20 * 8 + 2  # local4.crit
