"""playbooks/restore.yml during an incident: it never makes things worse (issue 12, section 1).

One small demo host for the whole file (real cluster, files, services); the tests run in file order and each leaves
the host with the app answering.
"""
from __future__ import annotations

import os

import pytest

from tests.harness.ansible_runner import run_playbook
from tests.harness.demo import database, services
from tests.harness.paths import REPO

RESTORE = os.path.join(REPO, "playbooks", "restore.yml")
BACKUP = os.path.join(REPO, "playbooks", "backup.yml")


@pytest.fixture(scope="module")
def restored(demo_host):
    """A backup, ransomware-like damage, then a successful restore of that backup: the state before the bad runs."""
    demo = demo_host
    run = run_playbook(BACKUP, inventory=demo.inventory)
    assert run.rc == 0, run.stdout[-3000:]
    backup_id = run.task("Back up the RansomEye components into %s" % demo.layout.backup_repo)["result"]["backup_id"]
    counts = database.row_counts(demo.cluster())
    demo.cluster().execute("DELETE FROM artifacts", dbname="ransomeye")
    run = run_playbook(RESTORE, inventory=demo.inventory, extra_vars={"restore_backup": backup_id})
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert database.row_counts(demo.cluster()) == counts
    previous = run.task("Restore the backup")["result"]["previous_db"]
    assert previous
    return {"backup_id": backup_id, "counts": counts, "previous_db": previous}


def _databases(demo) -> set:
    return {row[0] for row in demo.cluster().execute("SELECT datname FROM pg_database")}


def test_a_failed_second_restore_keeps_the_first_restore_live(demo_host, restored):
    demo = demo_host
    pids = services.program_pids(demo.layout)
    run = run_playbook(RESTORE, inventory=demo.inventory, extra_vars={"restore_backup": "99999999-nope"})
    assert run.rc != 0
    assert "Traceback" not in run.stdout
    # The clean, restored database is still live; the damaged one is still kept aside.
    assert database.row_counts(demo.cluster()) == restored["counts"]
    assert restored["previous_db"] in _databases(demo)
    msg = run.failed()[-1]["result"]["msg"]
    assert "99999999-nope" in msg and "ransomeye" in msg
    assert "nothing was stopped" in msg.lower() or "untouched" in msg.lower(), msg
    # Preflight failed before any service stopped: the same processes still answer.
    assert services.program_pids(demo.layout) == pids
    assert services.health(demo.health_url)[0] == 200


def test_a_missing_key_fails_in_preflight_before_anything_stops(demo_host, restored):
    demo = demo_host
    pids = services.program_pids(demo.layout)
    run = run_playbook(RESTORE, inventory=demo.inventory,
                       extra_vars={"restore_backup": restored["backup_id"],
                                   "restore_private_key": os.path.join(demo.root, "no-such.key")})
    assert run.rc != 0
    assert database.row_counts(demo.cluster()) == restored["counts"]
    assert restored["previous_db"] in _databases(demo)
    assert services.program_pids(demo.layout) == pids
    assert not [r for r in run.results if r["task"].endswith("Roll the database back to the one this run replaced")
                and r["status"] == "changed"]


def test_a_typo_in_the_backup_variable_does_not_mean_latest(demo_host, restored):
    demo = demo_host
    pids = services.program_pids(demo.layout)
    run = run_playbook(RESTORE, inventory=demo.inventory, extra_vars={"restore_backup_id": restored["backup_id"]})
    assert run.rc != 0
    msg = run.failed()[0]["result"]["msg"]
    assert "restore_backup_id" in msg and "restore_backup" in msg
    run = run_playbook(RESTORE, inventory=demo.inventory)
    assert run.rc != 0
    assert "restore_backup=latest" in run.failed()[0]["result"]["msg"]
    assert services.program_pids(demo.layout) == pids


def test_check_mode_reports_the_backup_and_never_says_restored(demo_host, restored):
    demo = demo_host
    run = run_playbook(RESTORE, inventory=demo.inventory, check=True, extra_vars={"restore_backup": "latest"})
    assert run.rc == 0, run.stdout[-3000:]
    assert "Restored " not in run.stdout
    plan = run.task("The backup this run restores")["result"]["msg"]
    assert restored["backup_id"] in plan and "seq 1" in plan and "taken 20" in plan
    assert "free" in plan  # the side-by-side space figures
    assert database.row_counts(demo.cluster()) == restored["counts"]


def test_pre_restore_copies_are_bounded_and_counted_by_the_health_check(demo_host, restored):
    demo = demo_host
    demo.cluster().execute("DELETE FROM artifacts", dbname="ransomeye")  # new damage: the restore runs again
    run = run_playbook(RESTORE, inventory=demo.inventory,
                       extra_vars={"restore_backup": restored["backup_id"], "restore_keep_pre_restore": 1})
    assert run.rc == 0, run.stdout[-3000:]
    result = run.task("Restore the backup")["result"]
    copies = sorted(n for n in _databases(demo) if "_pre_restore_" in n)
    assert copies == [result["previous_db"]] and result["pre_restore_dropped"] == [restored["previous_db"]]
    assert database.row_counts(demo.cluster()) == restored["counts"]
    run = run_playbook(os.path.join(REPO, "playbooks", "health_check.yml"), inventory=demo.inventory,
                       check=True, extra_vars={"monitoring_checks": ["backups"]})
    check = next(c for c in run.task("Run the health check")["result"]["checks"] if c["name"] == "pg_pre_restore_bytes")
    assert check["copies"] == copies and check["value"] > 0
