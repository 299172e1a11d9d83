"""A WAL repository on a full disk (a real, tiny tmpfs): the server keeps the WAL, the health check escalates,
and once the disk is enlarged every segment is archived and a restore to `latest` has every row.

Permission denied on the repository is the other unreachable case; it is tested in
test_wal_archive.py::test_unreachable_repository_keeps_wal_and_catches_up.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pitrsite import Site, hashes_of_stopped, table_hashes

MiB = 1024 * 1024


def _mount(path: str, size: str, remount: bool = False) -> subprocess.CompletedProcess:
    options = ("remount,size=%s" if remount else "size=%s,mode=0755") % size
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True,
                          check=False)


def _backlog(site) -> tuple:
    """(status, value, details) of pg_wal_archive_ready at the module's default thresholds (3 and 10)."""
    result = run_module_direct("ransomeye_health_info", dict(site.pg.conn_params(), checks=["postgres"],
                                                             fail_on="never", pg_samples=1))
    assert result["_rc"] == 0, result.get("msg")
    check = [c for c in result["checks"] if c["name"] == "pg_wal_archive_ready"][0]
    return check["status"], check["value"], check


@pytest.fixture
def full_disk_site(pitr_keys):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the repository needs root")
    site = Site(pitr_keys)
    os.makedirs(site.repo)
    mounted = _mount(site.repo, "96m")
    if mounted.returncode != 0:
        site.destroy()
        pytest.skip("mount -t tmpfs is not permitted here (%s): the full-disk test needs a small real filesystem"
                    % mounted.stderr.strip())
    try:
        yield site
    finally:
        site.pg.stop()
        subprocess.run(["umount", "-l", site.repo], capture_output=True, check=False)
        site.destroy()


def test_full_repository_disk_keeps_wal_escalates_and_loses_nothing(full_disk_site):
    site = full_disk_site
    site.enable()
    site.pg.execute("CREATE DATABASE app")
    site.pg.execute("CREATE TABLE events (id int PRIMARY KEY, note text)", dbname="app")
    site.pg.execute("INSERT INTO events SELECT g, md5(g::text) FROM generate_series(1, 1000) g", dbname="app")
    base = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
    assert base["_rc"] == 0, base.get("msg")
    site.switch_and_wait()
    before = set(site.chain_names())
    # Shrink the disk to what it holds: the next segment cannot fit. (Not "plus a few MiB": the archive compresses
    # WAL where it pays, and a segment switched after a small insert shrinks to far less than 16 MiB.)
    stat = os.statvfs(site.repo)
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    shrunk = _mount(site.repo, "%dk" % ((used + 1023) // 1024), remount=True)
    assert shrunk.returncode == 0, shrunk.stderr

    statuses = []
    names = []
    for i in range(10):
        site.pg.execute("INSERT INTO events SELECT g, md5(g::text) FROM generate_series(%s, %s) g",
                        [1001 + i * 1000, 2000 + i * 1000], dbname="app")
        names.append(site.pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        if i == 0:
            deadline = time.monotonic() + 30
            failed = (0, None)
            while time.monotonic() < deadline and failed[0] < 1:
                failed = site.pg.execute("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")[0]
                time.sleep(0.2)
            assert failed[0] >= 1 and failed[1] == names[0], failed
        if i in (0, 1, 2, 8, 9):
            status, value, check = _backlog(site)
            statuses.append((status, value))
            assert check["failing"] is True and check["last_failed_wal"] == names[0]
    expected = table_hashes(site.pg, "app")

    # The server keeps every segment and its .ready marker; the repository got none of them, left no temp file.
    status_dir = os.path.join(site.pg.data, "pg_wal", "archive_status")
    for name in names:
        assert os.path.exists(os.path.join(site.pg.data, "pg_wal", name)), name
        assert os.path.exists(os.path.join(status_dir, name + ".ready")), name
    assert not set(names) & set(site.chain_names())
    assert set(site.chain_names()) == before
    assert [f for f in os.listdir(os.path.join(site.repo, "wal", "tmp")) if f.endswith(".tmp")] == []
    log = site.pg.log_text()
    assert "ransomeye-wal: ERROR: push %s failed: No space left on device" % names[0] in log, log[-3000:]
    assert 'archive command failed with exit code 1' in log
    # WAL waiting: below WARNING's 3, at it, just below CRITICAL's 10, at it
    assert statuses == [("ok", 1.0), ("ok", 2.0), ("warning", 3.0), ("warning", 9.0), ("critical", 10.0)], statuses

    # The fix: a bigger disk. The archiver catches up by itself, in order, with nothing skipped.
    grown = _mount(site.repo, "512m", remount=True)
    assert grown.returncode == 0, grown.stderr
    site.wait_archived(names[-1], timeout=120)
    chain = site.chain_names()
    assert all(chain.count(name) == 1 for name in names), chain
    assert _backlog(site)[:2] == ("ok", 0.0)
    assert not [f for f in os.listdir(status_dir) if f.endswith(".ready")]
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trusted
    report = pchain.check_chain(site.repo, load_trusted(site.trusted), level="ciphertext")
    assert report.problems == [], report.problems
    verify = run_module_direct("ransomeye_backup_verify", dict(
        repo=site.repo, backup="all", level="ciphertext", trusted_keys=site.trusted))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("problems")

    # Nothing lost: replay from the base backup through every segment written while the disk was full.
    data_dir = os.path.join(site.base, "restored")
    restored = run_module_direct("ransomeye_restore", dict(
        site.pg.conn_params(), repo=site.repo, trusted_keys=site.trusted, data_dir=data_dir, target="latest",
        python=site.keys["python"], db="app", **site.decrypt))
    assert restored["_rc"] == 0, restored.get("msg", "")[-2000:]
    assert restored["tables"]["public.events"] == 11000
    assert restored["reachable"]["first_missing"] is None
    assert restored["reachable"]["last_segment"] >= names[-1]
    assert hashes_of_stopped(site, data_dir) == expected
