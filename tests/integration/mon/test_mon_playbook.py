"""playbooks/health_check.yml with the monitoring role: reports, alerts for hosts not ok, spool without a server."""
from __future__ import annotations

import json
import os
import sys

from tests.harness.paths import REPO

PLAYBOOK = os.path.join(REPO, "playbooks", "health_check.yml")


def _inventory(tmp_path, pg, report_dir, **host_vars):
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ransomeye_db_host": "127.0.0.1",
        "ransomeye_db_port": pg.port,
        "ransomeye_db_name": "postgres",
        "ransomeye_db_admin_user": "postgres",
        "ransomeye_db_admin_password": pg.password,
        "ransomeye_db_ssl_mode": "disable",
        "ransomeye_report_dir": str(report_dir),
        "monitoring_checks": ["disk", "postgres"],
        "monitoring_sample_seconds": 0,
    }
    host.update(host_vars)
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    return str(path)


def test_healthy_host_gets_reports_and_no_alert(pg, run_playbook, tmp_path):
    reports = tmp_path / "reports"
    run = run_playbook(PLAYBOOK, inventory=_inventory(tmp_path, pg, reports))
    assert run.rc == 0, run.stdout + run.stderr
    report = json.loads((reports / "health-localhost.json").read_text())
    assert report["status"] == "ok"
    assert (reports / "health-localhost.nagios").read_text().startswith("RANSOMEYE OK - ")
    assert run.task("Forward an alert for a host that is not ok")["status"] == "skipped"
    assert pg.password not in run.stdout + run.stderr


def test_unhealthy_host_alert_is_spooled_then_delivered_in_order(pg, rsyslog, run_playbook, tmp_path):
    reports = tmp_path / "reports"
    force = {"disk_used_percent": {"warning": 0, "critical": 100}}
    # No syslog server configured: the alert is queued on the host.
    inventory = _inventory(tmp_path, pg, reports, monitoring_thresholds=force)
    run = run_playbook(PLAYBOOK, inventory=inventory)
    assert run.rc == 0, run.stdout + run.stderr
    alert = run.task("Forward an alert for a host that is not ok")["result"]
    assert (alert["spooled"], alert["queued"], alert["sent"]) == (True, 1, 0)
    assert json.loads((reports / "health-localhost.json").read_text())["status"] == "warning"
    # With a server configured (and the host now critical), the queued alert goes first, then the new one.
    inventory = _inventory(tmp_path, pg, reports,
                           monitoring_thresholds={"disk_used_percent": {"warning": 0, "critical": 0}},
                           ransomeye_syslog_server="127.0.0.1", ransomeye_syslog_port=rsyslog.ports["tcp"],
                           ransomeye_syslog_protocol="tcp")
    run = run_playbook(PLAYBOOK, inventory=inventory)
    assert run.rc == 0, run.stdout + run.stderr
    alert = run.task("Forward an alert for a host that is not ok")["result"]
    assert (alert["sent"], alert["sent_from_spool"], alert["queued"]) == (2, 1, 0)
    records = rsyslog.wait_for(lambda r: r["msgid"] == "HEALTH" and str(reports) in r["structured_data"],
                               count=2, settle=0.5)
    assert [r["msg"].split(":")[0] for r in records] == [
        "RansomEye health warning on localhost", "RansomEye health critical on localhost"]
    assert int(records[1]["pri"]) == 20 * 8 + 2  # local4.crit for a critical host
    assert 'failing="disk_used_percent"' in records[1]["structured_data"]


def test_fail_on_critical_fails_the_host(pg, run_playbook, tmp_path):
    inventory = _inventory(tmp_path, pg, tmp_path / "r",
                           monitoring_thresholds={"disk_used_percent": {"warning": 0, "critical": 0}},
                           monitoring_fail_on="critical")
    run = run_playbook(PLAYBOOK, inventory=inventory)
    assert run.rc != 0
    failed = run.task("Fail when the host is worse than allowed")
    assert failed["status"] == "failed"
    assert "RANSOMEYE CRITICAL" in failed["result"]["msg"]
    # The alert was still queued before the play failed.
    assert len([n for n in os.listdir(tmp_path / "r" / "alert-spool") if n.endswith(".alert")]) == 1


def test_role_argument_spec_rejects_bad_values(pg, run_playbook, tmp_path):
    inventory = _inventory(tmp_path, pg, tmp_path / "r", monitoring_fail_on="sometimes")
    run = run_playbook(PLAYBOOK, inventory=inventory)
    assert run.rc != 0
    assert "monitoring_fail_on" in run.stdout + run.stderr


def test_check_mode_writes_nothing_and_sends_and_queues_nothing(pg, run_playbook, tmp_path):
    reports = tmp_path / "reports"
    inventory = _inventory(tmp_path, pg, reports,
                           monitoring_thresholds={"disk_used_percent": {"warning": 0, "critical": 100}})
    run = run_playbook(PLAYBOOK, inventory=inventory, check=True)
    assert run.rc == 0, run.stdout + run.stderr
    # Check mode writes nothing (not even the report directory); the status is on screen.
    assert not reports.exists()
    assert run.task("Health of localhost")["result"]["msg"].startswith("RANSOMEYE WARNING")
    alert = run.task("Forward an alert for a host that is not ok")["result"]
    assert alert["sent"] == 0 and "RansomEye health warning" in alert["rendered"]
