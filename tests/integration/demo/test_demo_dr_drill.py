"""playbooks/dr_drill.yml and playbooks/restore.yml end to end on a small demo host (real cluster, files, services)."""
from __future__ import annotations

import glob
import json
import os
import re
import threading
import time

from tests.harness.demo import content, database, services
from tests.harness.paths import REPO

DRILL = os.path.join(REPO, "playbooks", "dr_drill.yml")
RESTORE = os.path.join(REPO, "playbooks", "restore.yml")
BACKUP = os.path.join(REPO, "playbooks", "backup.yml")


def _reports(demo) -> list:
    return sorted(glob.glob(os.path.join(demo.layout.report_dir, "dr-drill-*.json")))


def _task(run, name: str) -> dict:
    """The last result of a task, with or without its role prefix (``role : name``)."""
    for record in reversed(run.results):
        if record["task"] == name or record["task"].endswith(" : " + name):
            return record
    raise KeyError(name)


def _no_secret(demo, run) -> None:
    for secret in (demo.state["admin_password"], demo.state["app_password"]):
        assert secret not in run.stdout + run.stderr
        for path in _reports(demo):
            assert secret not in open(path).read()


def test_demo_dr_drill_passes_end_to_end_and_proves_the_restore(demo_factory, run_playbook):
    demo = demo_factory(scale=2, seed=21)
    before = content.tree_hashes(demo.layout.artifact_dir)
    counts = database.row_counts(demo.cluster())
    pids = services.program_pids(demo.layout)

    run = run_playbook(DRILL, inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    [path] = _reports(demo)
    report = json.load(open(path))
    assert report["result"] == "passed" and report["error"] is None
    checks = {c["check"]: c for c in report["proof"]["checks"]}
    for name in ("files_present", "content_hashes_vs_pre_disaster", "content_hashes_vs_manifest", "modes",
                 "symlinks", "row_counts_restored", "app_health_from_restored_db", "app_restarted"):
        assert checks[name]["ok"], checks[name]
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] > 0 and report["restore_wall_seconds"] > 0
    assert report["rto_seconds"] >= report["restore_wall_seconds"]
    assert report["verify"]["verified"] == [report["backup"]["backup_id"]] and report["verify"]["problems"] == []
    assert report["backup"]["tables"] == {"public." + k: v for k, v in counts.items()}
    assert report["restore"]["previous_db"] is None  # the disaster dropped it
    # What the drill proved, checked again from outside: same bytes, same rows, new service processes answering.
    assert content.tree_hashes(demo.layout.artifact_dir) == before
    assert database.row_counts(demo.cluster()) == counts
    status, body = services.health(demo.health_url)
    assert status == 200 and body["counts"] == counts
    new_pids = services.program_pids(demo.layout)
    assert all(new_pids.values()) and set(new_pids.values()).isdisjoint(pids.values())
    summary = _task(run, "Drill summary")["result"]["msg"]
    assert any("PASSED" in line for line in summary) and any("RTO" in line for line in summary)
    # Long steps: a start and an end line with sizes and rates, and an async heartbeat for each (AWX shows them).
    assert re.match(r"Verifying backup \S+ at full level .*: [\d.]+ MiB stored\.$",
                    _task(run, "Step 2, the full verification starts")["result"]["msg"])
    assert re.match(r"Verified backup \S+ at full level: \d+ objects, [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\), "
                    r"0 problem\(s\)\.$", _task(run, "Step 2, the full verification")["result"]["msg"])
    assert re.match(r"Restoring backup \S+ \(database, config, artifacts\): [\d.]+ MiB stored\.$",
                    _task(run, "Step 4, the restore starts")["result"]["msg"])
    restored = _task(run, "Step 4, the restore")["result"]["msg"]
    assert re.match(r"Restored backup \S+: [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\): database [\d.]+ MiB in [\d.]+ s; "
                    r"config [\d.]+ MiB in [\d.]+ s; artifacts [\d.]+ MiB in [\d.]+ s\.$", restored), restored
    assert run.stdout.count("ASYNC OK on localhost") >= 2
    _no_secret(demo, run)


def test_demo_dr_drill_fails_when_a_restored_artifact_is_tampered(demo_factory, run_playbook):
    demo = demo_factory(scale=2, seed=22)
    run = run_playbook(DRILL, inventory=demo.inventory, extra_vars={"dr_drill_test_tamper": True})
    assert run.rc != 0
    failed = run.failed()
    assert failed and failed[-1]["task"].endswith("A failed proof (or step) fails the drill")
    assert "content_hashes_vs_pre_disaster" in failed[-1]["result"]["msg"]
    [path] = _reports(demo)
    report = json.load(open(path))
    assert report["result"] == "failed"
    checks = {c["check"]: c for c in report["proof"]["checks"]}
    assert not checks["content_hashes_vs_pre_disaster"]["ok"]
    assert not checks["content_hashes_vs_manifest"]["ok"]
    tampered = checks["content_hashes_vs_pre_disaster"]["detail"]["mismatch"]
    assert len(tampered) == 1 and tampered[0].startswith(demo.layout.artifact_dir)
    assert checks["row_counts_restored"]["ok"]  # only the tampered file is reported
    # Services were started again after the restore even though the drill failed.
    assert services.health(demo.health_url)[0] == 200
    _no_secret(demo, run)


def test_demo_dr_drill_damage_then_rollback_returns_the_pre_drill_state(demo_factory, run_playbook):
    demo = demo_factory(scale=1, seed=23)
    counts = database.row_counts(demo.cluster())
    run = run_playbook(DRILL, inventory=demo.inventory,
                       extra_vars={"dr_drill_disaster": "damage", "dr_drill_rollback": True})
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = json.load(open(_reports(demo)[-1]))
    assert report["result"] == "passed"
    assert report["restore"]["previous_db"] and report["rollback"]["done"] is True
    # Rolled back to the state before the drill: the same rows as before, the app answers from them, and no copy
    # the drill made is left behind.
    assert report["rollback"]["row_counts_match_pre_drill"] is True
    assert database.row_counts(demo.cluster()) == counts
    status, body = services.health(demo.health_url)
    assert status == 200 and body["counts"] == counts
    names = {row[0] for row in demo.cluster().execute("SELECT datname FROM pg_database")}
    assert not [n for n in names if "drill" in n], names


def test_demo_dr_drill_refuses_a_host_that_is_not_a_demo_host(demo_host, run_playbook):
    run = run_playbook(DRILL, inventory=demo_host.inventory, extra_vars={"ransomeye_root": ""})
    assert run.rc != 0
    assert "dr_drill_allow_destroy" in run.failed()[0]["result"]["msg"]
    assert services.health(demo_host.health_url)[0] == 200
    assert database.row_counts(demo_host.cluster())["hosts"] > 0
    run = run_playbook(DRILL, inventory=demo_host.inventory, check=True)
    assert run.rc != 0 and "check mode" in run.failed()[0]["result"]["msg"]
    assert database.row_counts(demo_host.cluster())["hosts"] > 0


def test_demo_dr_drill_failed_at_the_backup_reports_only_the_steps_that_ran(demo_host, run_playbook):
    counts = database.row_counts(demo_host.cluster())
    before = set(_reports(demo_host))
    run = run_playbook(DRILL, inventory=demo_host.inventory,
                       extra_vars={"dr_drill_recipients": [os.path.join(demo_host.root, "no-such-recipient.pub")]})
    assert run.rc != 0
    [path] = sorted(set(_reports(demo_host)) - before)
    report = json.load(open(path))
    assert report["result"] == "failed" and report["failed_step"] == "backup"
    steps = {s["step"]: s["status"] for s in report["steps"]}
    assert steps["snapshot"] == "done" and steps["backup"] == "failed"
    assert all(steps[name] == "not run" for name in ("verify", "disaster", "restore", "proof", "rollback")), steps
    assert report["disaster"]["happened"] is False
    summary = "\n".join(_task(run, "Drill summary")["result"]["msg"])
    assert "drop database" not in summary and "deleted" not in summary
    assert "(seq )" not in summary and "RTO  s" not in summary and "RTO        None" not in summary
    assert "not run" in summary
    assert database.row_counts(demo_host.cluster()) == counts
    assert services.health(demo_host.health_url)[0] == 200


def test_demo_restore_playbook_restores_and_rolls_back_on_failure(demo_factory, run_playbook):
    demo = demo_factory(scale=1, seed=24)
    run = run_playbook(BACKUP, inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-3000:]
    backup_id = _task(run, "Back up the RansomEye components into %s" % demo.layout.backup_repo)["result"]["backup_id"]
    counts = database.row_counts(demo.cluster())
    demo.cluster().execute("DELETE FROM artifacts", dbname="ransomeye")  # damage after the backup

    run = run_playbook(RESTORE, inventory=demo.inventory, extra_vars={"restore_backup": backup_id})
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert database.row_counts(demo.cluster()) == counts
    result = _task(run, "Restore the backup")["result"]
    assert result["changed"] and result["previous_db"]
    assert re.search(r", [\d.]+ MiB\), components ", _task(run, "The backup this run restores")["result"]["msg"])
    report = _task(run, "Report the restore")["result"]["msg"]
    assert re.match(r"Restored \S+; previous database kept as \w+\. [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\): "
                    r"database [\d.]+ MiB in [\d.]+ s; config .*; artifacts [\d.]+ MiB in [\d.]+ s\.", report), report
    assert "ASYNC OK on localhost" in run.stdout   # the restore ran as an async job
    status, body = services.health(demo.health_url)
    assert status == 200 and body["counts"] == counts

    # A restore that fails after the services stopped: once the preflight passed and the web service is down, a
    # symlink planted in the artifacts' path makes the file step refuse after the database swap. This run's swap is
    # rolled back, and the services start again.
    pids = services.program_pids(demo.layout)
    demo.cluster().execute("DELETE FROM artifacts", dbname="ransomeye")
    damaged = database.row_counts(demo.cluster())
    sub = sorted(e.path for e in os.scandir(demo.layout.artifact_dir) if e.is_dir(follow_symlinks=False))[0]
    planted = threading.Event()

    def plant_when_stopped() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if services.program_pids(demo.layout)["ransomeye-web"] == 0:
                os.rename(sub, sub + ".moved")
                os.symlink(sub + ".moved", sub)
                planted.set()
                return
            time.sleep(0.05)

    planter = threading.Thread(target=plant_when_stopped, daemon=True)
    planter.start()
    run = run_playbook(RESTORE, inventory=demo.inventory,
                       extra_vars={"restore_backup": backup_id, "restore_components": ["database", "artifacts"]})
    planter.join(5)
    assert planted.is_set()
    assert run.rc != 0
    assert "Traceback" not in run.stdout
    msg = _task(run, "The restore failed")["result"]["msg"]
    assert "rolled back" in msg and "live database ransomeye is again the one from before this run" in msg, msg
    assert database.row_counts(demo.cluster()) == damaged
    # always: the services were started again (new processes, answering from the database).
    new_pids = services.program_pids(demo.layout)
    assert all(new_pids.values()) and set(new_pids.values()).isdisjoint(pids.values())
    assert services.health(demo.health_url)[0] == 200


def test_demo_dr_drill_stops_before_the_disaster_when_the_backup_is_corrupt(demo_factory, run_playbook):
    demo = demo_factory(scale=1, seed=25)
    run = run_playbook(BACKUP, inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-3000:]
    # Corrupt every stored object in place (same size): the drill's new backup reuses the deduplicated artifact
    # objects, so its full verify must catch them.
    objects = glob.glob(os.path.join(demo.layout.backup_repo, "objects", "*", "*"))
    assert objects
    for path in objects:
        with open(path, "r+b") as handle:
            handle.seek(os.path.getsize(path) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0x01]))
    before = content.tree_hashes(demo.layout.artifact_dir)
    counts = database.row_counts(demo.cluster())
    pids = services.program_pids(demo.layout)

    run = run_playbook(DRILL, inventory=demo.inventory)
    assert run.rc != 0
    report = json.load(open(_reports(demo)[-1]))
    assert report["result"] == "failed" and report["failed_step"] == "verify"
    assert "verify" in report["error"]
    # Nothing was destroyed: the disaster step never ran, the services were never stopped.
    assert content.tree_hashes(demo.layout.artifact_dir) == before
    assert database.row_counts(demo.cluster()) == counts
    assert services.program_pids(demo.layout) == pids
    assert services.health(demo.health_url)[0] == 200
