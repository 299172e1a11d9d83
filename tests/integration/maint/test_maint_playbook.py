"""playbooks/nightly_maintenance.yml against a small demo host (real PostgreSQL, services, files)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile

import pytest

from tests.harness.paths import REPO

PLAYBOOK = os.path.join(REPO, "playbooks", "nightly_maintenance.yml")


@pytest.fixture(scope="module")
def demo():
    from tests.harness.demo import host

    root = tempfile.mkdtemp(prefix="re-maint-")
    try:
        host.up(root, scale=4, seed=11, quiet=True)
        yield dict(root=root, inventory=os.path.join(root, "inventory", "hosts.yml"))
    finally:
        host.down(root, quiet=True)
        shutil.rmtree(root, ignore_errors=True)


def names(path):
    return set(os.listdir(path))


def test_nightly_maintenance_on_the_demo_host(demo, run_playbook):
    buffer_dir = os.path.join(demo["root"], "var", "spool", "ransomeye", "buffer")
    log_dir = os.path.join(demo["root"], "var", "log", "ransomeye")
    before_buffer = names(buffer_dir)
    rotated = sorted(glob.glob(os.path.join(log_dir, "*.log.*")))
    assert len(rotated) == 11

    check = run_playbook(PLAYBOOK, inventory=demo["inventory"], check=True, diff=True,
                         extra_vars={"maintenance_plan_limit": 3})
    assert check.rc == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert check.task("Archive old logs (verified before the originals are removed)")["result"]["changed"] is True
    assert names(buffer_dir) == before_buffer
    assert sorted(glob.glob(os.path.join(log_dir, "*.log.*"))) == rotated
    # --check --diff names the first files a real run would archive and remove, and how many in all.
    archive_line, remove_line = check.task("What a real run would archive and remove")["result"]["msg"]
    assert archive_line.startswith("would archive 11 log(s): ") and archive_line.endswith(" ...")
    assert len(archive_line.split(": ", 1)[1][:-4].split(", ")) == 3
    assert all(p in rotated for p in archive_line.split(": ", 1)[1][:-4].split(", "))
    assert re.match(r"would remove \d+ entr(y|ies): ", remove_line) and buffer_dir in remove_line
    assert re.match(r"Would archive 11 log file\(s\): [\d.]+ MiB; 0 old archive\(s\) pruned\.$",
                    check.task("The log archiving")["result"]["msg"])
    assert "ASYNC" not in check.stdout   # check mode runs the long steps synchronously (never async + check)
    assert not glob.glob(os.path.join(demo["root"], "reports", "nightly-health-*.json"))  # check mode writes nothing

    run = run_playbook(PLAYBOOK, inventory=demo["inventory"])
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.failed() == []
    archived = run.task("Archive old logs (verified before the originals are removed)")["result"]
    assert sorted(a["path"] for a in archived["archived"]) == rotated
    assert glob.glob(os.path.join(log_dir, "*.log.*")) == []
    # The end line of the (async) archive run: files, sizes, duration and rate, shown without -v.
    assert re.match(r"Archived 11 log file\(s\): [\d.]+ MiB into [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\); "
                    r"\d+ old archive\(s\) pruned\.$", run.task("The log archiving")["result"]["msg"])
    assert "ASYNC OK on localhost" in run.stdout
    clean = run.task("Clean temp files, orphaned upload chunks and empty directories")["result"]
    left = names(buffer_dir)
    expected_gone = {n for n in before_buffer if n.startswith("orphan-")} | {"chunk-9999"}
    assert left == before_buffer - expected_gone
    assert clean["counts"]["orphan_session"] == len([n for n in expected_gone if not n.endswith(".session")
                                                     and n != "chunk-9999"])
    assert clean["bytes_freed"] > 0
    vacuum = run.task("VACUUM (ANALYZE) the tables over the thresholds")["result"]
    assert "table_stats" in vacuum and vacuum["database_age"]["datfrozenxid_age"] > 0
    health = run.task("Health check after maintenance")["result"]
    assert health["status"] in ("ok", "warning", "critical", "unknown")
    assert glob.glob(os.path.join(demo["root"], "reports", "nightly-health-*.json"))

    again = run_playbook(PLAYBOOK, inventory=demo["inventory"],
                         extra_vars={"maintenance_vacuum_min_dead_tuples": 100000000})
    assert again.rc == 0
    changed = [r["task"] for r in again.results if r["result"].get("changed")]
    assert changed == []


def test_health_check_can_be_switched_off(demo, run_playbook):
    run = run_playbook(PLAYBOOK, inventory=demo["inventory"], check=True,
                       extra_vars={"maintenance_run_health_check": False})
    assert run.rc == 0
    assert run.task("Health check after maintenance")["status"] == "skipped"
