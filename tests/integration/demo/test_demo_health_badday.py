"""playbooks/health_check.yml sees what is down and says so (issue 12, section 2), on one demo host."""
from __future__ import annotations

import datetime
import json
import os

import pytest

from tests.harness.ansible_runner import run_playbook
from tests.harness.demo import services
from tests.harness.paths import REPO

HEALTH = os.path.join(REPO, "playbooks", "health_check.yml")
BACKUP = os.path.join(REPO, "playbooks", "backup.yml")


def _checks(run) -> dict:
    result = run.task("Run the health check")["result"]
    return {(c["name"], c["target"]): c for c in result["checks"]}


@pytest.fixture(scope="module")
def demo(demo_host):
    """The demo host with a fresh backup and a passing drill report (written as the drill writes it)."""
    run = run_playbook(BACKUP, inventory=demo_host.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(demo_host.layout.report_dir, "dr-drill-20990101T000000Z.json"), "w") as handle:
        json.dump({"report": "ransomeye.ops dr_drill", "result": "passed", "finished": finished}, handle)
    return demo_host


def test_a_healthy_host_reads_ok_on_screen_with_app_backup_and_drill_checks(demo):
    # The demo's server certificate is due for renewal and this shared box may be loaded: read OK (or a warning
    # naming only those) on screen.
    run = run_playbook(HEALTH, inventory=demo.inventory, extra_vars={
        "monitoring_thresholds": {"cert_days_left": [10, 5], "load_per_core": [50, 100]}})
    assert run.rc == 0, run.stdout[-3000:]
    line = run.task("Health of localhost")["result"]["msg"]
    assert line.startswith("RANSOMEYE OK") and line in run.stdout, line
    checks = _checks(run)
    assert checks[("app_http_status", demo.health_url)]["value"] == 200
    for env_file in (demo.layout.app_env, demo.layout.worker_env):
        assert checks[("app_db_login", env_file)]["status"] == "ok"
    assert checks[("backup_age_hours", demo.layout.backup_repo)]["value"] < 1
    assert checks[("drill_age_days", demo.layout.report_dir)]["value"] < 1
    assert checks[("siem_spool_backlog", os.path.join(demo.layout.report_dir, "alert-spool"))]["status"] == "ok"
    for secret in (demo.state["admin_password"], demo.state["app_password"]):
        assert secret not in run.stdout + run.stderr


def test_an_app_that_cannot_log_in_answers_503_and_reads_critical_and_fail_on_fails(demo):
    cluster = demo.cluster()
    cluster.execute("ALTER ROLE ransomeye_app NOLOGIN")
    try:
        assert services.health(demo.health_url)[0] == 503
        run = run_playbook(HEALTH, inventory=demo.inventory, extra_vars={"health_fail_on": "critical"})
    finally:
        cluster.execute("ALTER ROLE ransomeye_app LOGIN")
    assert run.rc != 0
    line = run.task("Health of localhost")["result"]["msg"]
    assert line.startswith("RANSOMEYE CRITICAL") and "app_http_status" in line and "app_db_login" in line, line
    assert run.failed()[-1]["task"].endswith("Fail when the host is worse than allowed")
    checks = _checks(run)
    assert checks[("app_http_status", demo.health_url)]["value"] == 503
    assert "do not log in" in checks[("app_db_login", demo.layout.app_env)]["message"]
    assert demo.state["app_password"] not in run.stdout + run.stderr


def test_postgresql_stopped_reads_critical(demo):
    cluster = demo.cluster()
    cluster.stop()
    try:
        run = run_playbook(HEALTH, inventory=demo.inventory, extra_vars={"health_fail_on": "critical"})
    finally:
        cluster.start()
    assert run.rc != 0
    line = run.task("Health of localhost")["result"]["msg"]
    assert line.startswith("RANSOMEYE CRITICAL") and "pg_connect_ms" in line and "app_http_status" in line, line


def test_check_mode_writes_no_report_and_changes_no_mode(demo, tmp_path):
    report_dir = tmp_path / "reports"
    run = run_playbook(HEALTH, inventory=demo.inventory, check=True,
                       extra_vars={"monitoring_report_dir": str(report_dir)})
    assert run.rc == 0, run.stdout[-3000:]
    assert not report_dir.exists()
    os.chmod(demo.layout.report_dir, 0o755)
    nagios = os.path.join(demo.layout.report_dir, "health-localhost.nagios")
    before = os.stat(nagios).st_mtime_ns
    run = run_playbook(HEALTH, inventory=demo.inventory, check=True)
    assert run.rc == 0
    assert os.stat(demo.layout.report_dir).st_mode & 0o777 == 0o755
    assert os.stat(nagios).st_mtime_ns == before
    assert run.task("Health of localhost")["result"]["msg"].startswith("RANSOMEYE")
