"""The demo web app answers /health from the database; the service role drives supervisord."""
from __future__ import annotations

import os
import tempfile

from tests.harness.demo import database, services

ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: service role
      ansible.builtin.include_role:
        name: ransomeye.ops.service
      vars:
        service_state: {state}
"""


def test_demo_web_health_from_db_then_503_when_db_down(demo_factory):
    demo = demo_factory(scale=1, seed=5)
    status, body = services.health(demo.health_url)
    assert status == 200
    assert body["counts"] == database.row_counts(demo.cluster())
    assert body["db_user"] == "ransomeye_app" and body["database"] == "ransomeye"
    cluster = demo.cluster()
    cluster.stop()
    try:
        status, body = services.health(demo.health_url)
        assert status == 503
        assert body["status"] == "unavailable" and body["error"]
        assert demo.state["app_password"] not in str(body)
    finally:
        cluster.start()
    assert services.wait_health(demo.health_url, 200, timeout=20)[0] == 200


def _play(run_playbook, demo, state, check=False):
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write(ROLE_PLAY.format(state=state))
    try:
        return run_playbook(handle.name, inventory=demo.inventory, check=check)
    finally:
        os.unlink(handle.name)


def _changed(run):
    return any(r["result"].get("changed") for r in run.results)


def test_demo_service_role_stop_start_restart_via_supervisord(demo_host, run_playbook):
    pids0 = services.program_pids(demo_host.layout)
    assert all(pids0.values())

    run = _play(run_playbook, demo_host, "stopped", check=True)
    assert run.rc == 0 and _changed(run)
    assert services.program_pids(demo_host.layout) == pids0  # check mode changed nothing

    run = _play(run_playbook, demo_host, "stopped")
    assert run.rc == 0, run.stdout + run.stderr
    assert _changed(run)
    assert services.program_pids(demo_host.layout) == {n: 0 for n in services.PROGRAMS}
    assert services.health(demo_host.health_url, timeout=2)[0] == 0

    run = _play(run_playbook, demo_host, "stopped", check=True)
    assert run.rc == 0 and not _changed(run)
    run = _play(run_playbook, demo_host, "stopped")
    assert run.rc == 0 and not _changed(run)

    run = _play(run_playbook, demo_host, "started")
    assert run.rc == 0 and _changed(run)
    pids1 = services.program_pids(demo_host.layout)
    assert all(pids1.values()) and set(pids1.values()).isdisjoint(pids0.values())
    assert services.health(demo_host.health_url)[0] == 200  # the role waited for it

    run = _play(run_playbook, demo_host, "started")
    assert run.rc == 0 and not _changed(run)
    assert services.program_pids(demo_host.layout) == pids1

    run = _play(run_playbook, demo_host, "restarted")
    assert run.rc == 0 and _changed(run)
    pids2 = services.program_pids(demo_host.layout)
    assert all(pids2.values()) and set(pids2.values()).isdisjoint(pids1.values())
    assert services.health(demo_host.health_url)[0] == 200


def test_demo_service_role_fails_clearly_on_unknown_service(demo_host, run_playbook, tmp_path):
    play = tmp_path / "p.yml"
    play.write_text(ROLE_PLAY.format(state="started").replace(
        "service_state: started", "service_state: started\n        service_names: [no-such-program]"))
    run = run_playbook(str(play), inventory=demo_host.inventory)
    assert run.rc != 0
    failed = run.failed()
    assert failed and "no-such-program" in failed[0]["result"]["msg"] and "exited" in failed[0]["result"]["msg"]
    assert "Traceback" not in run.stdout
    run = run_playbook(str(play), inventory=demo_host.inventory, args=["-e", "service_state=bogus"])
    assert run.rc != 0
    assert "service_state" in run.failed()[0]["result"]["msg"]  # the role's argument spec rejects it
    # supervisord down: a clear message naming the config, not a traceback.
    run = run_playbook(str(play), inventory=demo_host.inventory,
                       args=["-e", "service_supervisor_conf=/nonexistent/supervisord.conf"])
    assert run.rc != 0
    assert "/nonexistent/supervisord.conf" in run.failed()[0]["result"]["msg"]
    assert "Traceback" not in run.stdout
