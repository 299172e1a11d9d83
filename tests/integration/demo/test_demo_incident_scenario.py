"""The runbook's ransomware incident from start to end on one demo host (issue 12, section 6).

1. a good backup; 2. a credential rotation after it (the app restarts on the new password); 3. ransomware damages
tables and drops .locked files, and a later backup captures the damage; 4. the operator lists the backups and
picks the last clean one; 5. the restore re-syncs the role to the restored credentials; 6. the app answers 200
from the restored rows and the health check reads OK for everything the incident touched.
"""
from __future__ import annotations

import glob
import os

from tests.harness.ansible_runner import run_module_direct
from tests.harness.demo import database, services
from tests.harness.paths import REPO

PLAY = os.path.join(REPO, "playbooks")


def _backup_id(run, demo) -> str:
    return run.task("Back up the RansomEye components into %s" % demo.layout.backup_repo)["result"]["backup_id"]


def test_ransomware_after_a_credential_rotation_restore_resyncs_and_the_app_is_healthy(demo_host, run_playbook):
    demo = demo_host
    cluster = demo.cluster()
    run = run_playbook(os.path.join(PLAY, "backup.yml"), inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    clean = _backup_id(run, demo)
    counts = database.row_counts(cluster)

    # 2. A credential rotation after the last good backup; the services restart on the new password.
    rotated = run_module_direct("ransomeye_rotate_db_creds", dict(
        login_host="127.0.0.1", login_port=demo.state["pg_port"], login_user="postgres",
        login_password=demo.state["admin_password"], ssl_mode="disable", role="ransomeye_app",
        env_files=[demo.layout.app_env, demo.layout.worker_env], force=True))
    assert rotated["_rc"] == 0 and rotated["rotated"], rotated.get("msg")
    for program in services.PROGRAMS:
        services.supervisorctl(demo.layout, "restart", program)
    assert services.health(demo.health_url)[0] == 200

    # 3. Ransomware: tables emptied, artifacts encrypted under new names; the nightly backup captures it.
    cluster.execute("TRUNCATE artifacts, detections", dbname="ransomeye")
    artifacts = sorted(p for p in glob.glob(os.path.join(demo.layout.artifact_dir, "**", "*"), recursive=True)
                       if os.path.isfile(p))[:5]
    for path in artifacts:
        with open(path, "rb") as src, open(path + ".locked", "wb") as dst:
            dst.write(bytes(b ^ 0x5A for b in src.read()))
        os.unlink(path)
    run = run_playbook(os.path.join(PLAY, "backup.yml"), inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    damaged = _backup_id(run, demo)

    # 4. The operator lists the backups and picks the last one taken before the infection (smaller row totals
    # give the damaged one away; it is also the latest, which is why restore.yml has no default).
    run = run_playbook(os.path.join(PLAY, "list_backups.yml"), inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    listed = {b["backup_id"]: b for b in run.task("Read the manifests")["result"]["backups"]}
    assert listed[clean]["verified"] and listed[damaged]["verified"]
    assert listed[damaged]["rows"] < listed[clean]["rows"]
    pick = max((b for b in listed.values() if b["rows"] == listed[clean]["rows"]), key=lambda b: b["seq"])
    assert pick["backup_id"] == clean

    # 5. Restore it, re-syncing the role to the restored .env credentials (detected before anything changed).
    run = run_playbook(os.path.join(PLAY, "restore.yml"), inventory=demo.inventory,
                       extra_vars={"restore_backup": pick["backup_id"], "restore_credentials": "resync_role"})
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    plan = run.task("The backup this run restores")["result"]["msg"]
    assert "Credentials:" in plan and "resync_role" in plan, plan
    result = run.task("Restore the backup")["result"]
    assert result["credentials"]["mismatch"] and result["credentials"]["action"] == "resync_role"
    assert result["credentials"]["role"] == "ransomeye_app"
    for path in artifacts:
        assert os.path.exists(path)

    # 6. The app answers from the restored rows, and the health check reads OK for the app and the database.
    status, body = services.health(demo.health_url)
    assert status == 200 and body["counts"] == counts
    run = run_playbook(os.path.join(PLAY, "health_check.yml"), inventory=demo.inventory, extra_vars={
        "health_fail_on": "warning", "monitoring_drill_report_dir": "",
        "monitoring_thresholds": {"cert_days_left": [10, 5], "load_per_core": [50, 100]}})
    line = run.task("Health of localhost")["result"]["msg"]
    assert run.rc == 0 and line.startswith("RANSOMEYE OK"), line
    for secret in (demo.state["admin_password"], demo.state["app_password"]):
        assert secret not in run.stdout


def test_the_default_keeps_the_live_credentials_in_the_restored_env_files(demo_host, run_playbook):
    demo = demo_host
    run = run_playbook(os.path.join(PLAY, "backup.yml"), inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    old_backup = _backup_id(run, demo)
    rotated = run_module_direct("ransomeye_rotate_db_creds", dict(
        login_host="127.0.0.1", login_port=demo.state["pg_port"], login_user="postgres",
        login_password=demo.state["admin_password"], ssl_mode="disable", role="ransomeye_app",
        env_files=[demo.layout.app_env, demo.layout.worker_env], force=True))
    assert rotated["_rc"] == 0 and rotated["rotated"], rotated.get("msg")
    live = open(demo.layout.app_env).read()
    # The server certificate was renewed after the backup too: the backup's is older and must not come back.
    tls = demo.layout.tls_dir
    renewed = run_module_direct("ransomeye_cert_renew", dict(
        path=os.path.join(tls, "server.crt"), key_path=os.path.join(tls, "server.key"),
        ca_cert=os.path.join(tls, "ca.crt"), ca_key=os.path.join(tls, "ca.key"), force=True))
    assert renewed["_rc"] == 0 and renewed["changed"], renewed.get("msg")
    live_cert = open(os.path.join(tls, "server.crt"), "rb").read()
    live_key = open(os.path.join(tls, "server.key"), "rb").read()
    run = run_playbook(os.path.join(PLAY, "restore.yml"), inventory=demo.inventory,
                       extra_vars={"restore_backup": old_backup, "restore_components": ["config"]})
    assert run.rc == 0, run.stdout[-3000:]
    plan = run.task("The backup this run restores")["result"]["msg"]
    assert "Credentials:" in plan and "Certificates:" in plan and "server.crt" in plan, plan
    result = run.task("Restore the backup")["result"]
    assert result["credentials"]["mismatch"] and result["credentials"]["action"] == "keep_current"
    assert open(demo.layout.app_env).read() == live  # the restored file carries the live password again
    assert [o["path"] for o in result["certificates"]["older_in_backup"]] == [os.path.join(tls, "server.crt")]
    assert open(os.path.join(tls, "server.crt"), "rb").read() == live_cert
    assert open(os.path.join(tls, "server.key"), "rb").read() == live_key
    status, _body = services.health(demo.health_url)
    assert status == 200
