"""playbooks/quarterly_rotation.yml on a real demo host: PostgreSQL, supervisord, gunicorn web app, worker."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from tests.harness.demo import services
from tests.harness.paths import REPO
from tests.harness.trees import tree_snapshot
from tests.integration.demo.conftest import destroy_demo, make_demo

PLAYBOOK = os.path.join(REPO, "playbooks", "quarterly_rotation.yml")


@pytest.fixture(scope="module")
def demo():
    host = make_demo(scale=1, seed=3)
    try:
        yield host
    finally:
        destroy_demo(host.root)


def _env_text(demo):
    return {p: open(p).read() for p in (demo.layout.app_env, demo.layout.worker_env)}


def _snapshot(demo):
    return (_env_text(demo), tree_snapshot(demo.layout.tls_dir), tree_snapshot(demo.layout.signing_key_dir))


def _password(demo):
    for line in open(demo.layout.app_env):
        if line.startswith("DB_PASSWORD="):
            return line.strip().split("=", 1)[1]
    raise AssertionError("no DB_PASSWORD")


def _health(demo):
    status, body = services.wait_health(demo.health_url, 200, timeout=30)
    assert status == 200, body
    return body


def test_quarterly_rotation_plan_apply_idempotent_and_app_keeps_working(demo, run_playbook):
    fast = dict(key_rotation_signing_key_type="ed25519", key_rotation_signing_force=True)
    before = _snapshot(demo)
    pids0 = services.program_pids(demo.layout)

    plan = run_playbook(PLAYBOOK, fast, inventory=demo.inventory, check=True)
    assert plan.rc == 0, plan.stdout + plan.stderr
    assert plan.task("Rotate the signing key when older than max_age")["result"]["changed"] is True
    assert plan.task("Rotate the database credentials of the services")["result"]["changed"] is True
    certs = plan.task("Renew the mTLS certificates that expire within renew_before")["result"]["results"]
    assert [c["reason"] for c in certs] == ["expiring", "valid"]  # server: 20 days left, client: 365
    assert _snapshot(demo) == before, "check mode changed files"
    assert services.program_pids(demo.layout) == pids0, "check mode restarted services"

    old_password = _password(demo)
    applied = run_playbook(PLAYBOOK, fast, inventory=demo.inventory)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert old_password not in applied.stdout
    new_password = _password(demo)
    assert new_password != old_password and new_password not in applied.stdout
    signing = applied.task("Rotate the signing key when older than max_age")["result"]
    assert signing["changed"] and signing["seq"] == 2
    # Restarted by the handler (through ransomeye.ops.service), answering from the DB with the new password.
    pids1 = services.program_pids(demo.layout)
    assert all(pids1.values()) and set(pids1.values()).isdisjoint(pids0.values())
    body = _health(demo)
    assert body["db_user"] == "ransomeye_app" and body["started"] > time.time() - 120
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(demo.layout.tls_dir, "ca.crt"),
                             os.path.join(demo.layout.tls_dir, "server.crt")], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert applied.task("Fail when a rotation step failed (it was rolled back)")["status"] == "skipped"

    again = run_playbook(PLAYBOOK, dict(key_rotation_signing_key_type="ed25519"), inventory=demo.inventory)
    assert again.rc == 0, again.stdout + again.stderr
    assert again.stats["localhost"]["changed"] == 0, again.stats
    assert services.program_pids(demo.layout) == pids1, "restarted although nothing changed"


def _hammer(url, stop, outcomes):
    while not stop.is_set():
        outcomes.append(services.health(url, timeout=5)[0])
        time.sleep(0.02)


def test_alternating_rotation_serves_every_request_then_switches_role(demo, run_module_direct, run_playbook):
    inventory_vars = dict(login_host="127.0.0.1", login_port=demo.state["pg_port"], login_user="postgres",
                          login_password=demo.state["admin_password"], ssl_mode="disable")
    stop = threading.Event()
    outcomes: list = []
    client = threading.Thread(target=_hammer, args=(demo.health_url, stop, outcomes), daemon=True)
    client.start()
    try:
        time.sleep(0.5)
        result = run_module_direct("ransomeye_rotate_db_creds", dict(
            inventory_vars, role="ransomeye_app", alternate_role="ransomeye_app_b", strategy="alternating",
            env_files=[demo.layout.app_env, demo.layout.worker_env], force=True))
        time.sleep(0.5)
    finally:
        stop.set()
        client.join()
    assert result["changed"] is True and result["active_role"] == "ransomeye_app_b", result
    assert len(outcomes) > 10 and set(outcomes) == {200}, outcomes
    assert "DB_USER=ransomeye_app_b" in open(demo.layout.app_env).read()
    # After the restart (service layer), the app uses the freshly rotated role.
    play = os.path.join(os.path.dirname(demo.inventory), "restart.yml")
    with open(play, "w") as handle:
        json.dump([{"hosts": "all", "gather_facts": False, "tasks": [{
            "name": "restart", "ansible.builtin.include_role": {"name": "ransomeye.ops.service"},
            "vars": {"service_state": "restarted"}}]}], handle)
    run = run_playbook(play, inventory=demo.inventory)
    assert run.rc == 0, run.stdout + run.stderr
    assert _health(demo)["db_user"] == "ransomeye_app_b"


def test_failed_steps_are_rolled_back_reported_and_fail_the_play(demo, run_playbook):
    before = _snapshot(demo)
    pids = services.program_pids(demo.layout)
    user = _health(demo)["db_user"]
    tls = demo.layout.tls_dir
    extra = dict(key_rotation_signing_enabled=False, key_rotation_db_force=True,
                 key_rotation_db_strategy="alternating", key_rotation_cert_force=True,
                 key_rotation_ca_key=os.path.join(tls, "client.key"))  # a CA key that does not match the CA
    run = run_playbook(PLAYBOOK, extra, inventory=demo.inventory, env={"RANSOMEYE_TEST_FAIL_AT": "verify"})
    assert run.rc != 0
    final = run.task("Fail when a rotation step failed (it was rolled back)")
    assert final["status"] == "failed"
    assert "db_credentials" in final["result"]["msg"] and "certificates" in final["result"]["msg"]
    assert "rolled back" in final["result"]["msg"] and "does not match CA certificate" in final["result"]["msg"]
    assert run.task("Record the failed credential rotation")["status"] == "ok"
    assert run.task("Record the failed certificate renewal")["status"] == "ok"
    assert _snapshot(demo) == before
    assert run.task("Restart the RansomEye services through the service layer for what did change")["status"] == "skipped"
    assert services.program_pids(demo.layout) == pids  # nothing changed, nothing restarted
    assert _health(demo)["db_user"] == user
