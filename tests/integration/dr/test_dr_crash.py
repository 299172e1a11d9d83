"""Crash safety: a SIGKILLed backup never leaves a backup that does not verify; failed dumps never become backups.

The kill points use the module's documented test hook RANSOMEYE_BACKUP_TEST_HOOK
(<point>:kill sends SIGKILL to the module process itself at that point).
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.ansible_runner import ansible_env
from tests.harness.paths import REPO


def _run_killed(args, point):
    """Run ransomeye_backup directly with the hook; return the process's exit status."""
    import json
    import tempfile
    path = os.path.join(REPO, "plugins", "modules", "ransomeye_backup.py")
    data = dict(args, _ansible_check_mode=False, _ansible_diff=False, _ansible_tmpdir=None,
                _ansible_remote_tmp=tempfile.gettempdir())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": data}, handle)
    try:
        proc = subprocess.run([sys.executable, path, handle.name], capture_output=True, text=True, timeout=300,
                              env=ansible_env({"RANSOMEYE_BACKUP_TEST_HOOK": point}), check=False)
    finally:
        os.unlink(handle.name)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode


def _manifests(repo):
    directory = os.path.join(repo, "manifests")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.mark.parametrize("point", ["during_dump", "during_artifacts", "pack_sealed", "index_written",
                                   "before_manifest", "after_manifest"])
def test_sigkill_at_each_point_leaves_a_clean_repository(dr_site, run_module_direct, point):
    site = dr_site
    first = run_module_direct("ransomeye_backup", site["args"])
    assert first["_rc"] == 0, first.get("msg")
    with open(os.path.join(site["artifacts"], "case-02", "new-evidence.bin"), "wb") as handle:
        handle.write(os.urandom(200_000))

    rc = _run_killed(site["args"], point + ":kill")
    assert rc == -signal.SIGKILL
    complete = _manifests(site["repo"])
    assert complete == (["00000001.json", "00000002.json"] if point == "after_manifest" else ["00000001.json"])

    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="full"))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    assert len(verify["verified"]) == len(complete)

    after = run_module_direct("ransomeye_backup", site["args"])
    assert after["_rc"] == 0, after.get("msg")
    assert after["seq"] == len(complete) + 1
    assert os.listdir(os.path.join(site["repo"], "tmp")) == []  # half-written objects were cleaned
    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="ciphertext"))
    assert verify["_rc"] == 0 and len(verify["verified"]) == len(complete) + 1, verify.get("msg")
    # no orphan object survives: every object file is referenced by a manifest
    import json
    referenced = set()
    for name in _manifests(site["repo"]):
        with open(os.path.join(site["repo"], "manifests", name)) as handle:
            referenced.update(json.load(handle)["manifest"]["objects"])
    on_disk = {n for _d, _s, files in os.walk(os.path.join(site["repo"], "objects")) for n in files}
    assert on_disk == referenced


def test_killed_pg_dump_fails_the_module_and_leaves_no_manifest(dr_site, run_module_direct):
    site = dr_site
    result = run_module_direct("ransomeye_backup", dict(site["args"], components=["database"]),
                               env={"RANSOMEYE_BACKUP_TEST_HOOK": "dump_started:kill_pg_dump"})
    assert result["_rc"] != 0 and result["failed"] is True
    assert "pg_dump failed" in result["msg"] and "signal 9" in result["msg"]
    assert _manifests(site["repo"]) == []
    assert os.listdir(os.path.join(site["repo"], "tmp")) == []
    assert "Traceback" not in result["_stderr"]


def test_wrong_password_fails_clearly_without_leaking_it(dr_site, run_module_direct):
    site = dr_site
    wrong = "not-the-password-%d" % os.getpid()
    result = run_module_direct("ransomeye_backup", dict(site["args"], login_password=wrong))
    assert result["_rc"] != 0 and result["failed"] is True
    assert "password authentication failed" in result["msg"]
    assert wrong not in result["msg"] and wrong not in result["_stderr"]
    assert wrong not in site["pg"].log_text()
    assert _manifests(site["repo"]) == []


def test_pg_dump_error_on_stderr_fails_even_with_exit_status_zero(dr_site, run_module_direct):
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import stderr_failed
    assert stderr_failed("pg_dump: error: query failed: ERROR:  permission denied for table alerts")
    assert stderr_failed("pg_dump: error: connection to server lost")
    assert not stderr_failed("pg_dump: warning: there are circular foreign-key constraints on this table")
    assert not stderr_failed("")


def test_second_run_waits_for_the_lock_then_fails_clearly(dr_site, run_module_direct):
    site = dr_site
    first = run_module_direct("ransomeye_backup", dict(site["args"], components=["config"]))
    assert first["_rc"] == 0, first.get("msg")
    fd = os.open(os.path.join(site["repo"], "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        blocked = run_module_direct("ransomeye_backup", dict(site["args"], components=["config"], lock_timeout=2))
        waited = time.monotonic() - started
        verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], lock_timeout=1))
    finally:
        os.close(fd)
    assert blocked["_rc"] != 0 and "locked by another run" in blocked["msg"]
    assert waited >= 2
    assert verify["_rc"] != 0 and "locked" in verify["msg"]
    assert _manifests(site["repo"]) == ["00000001.json"]
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["config"]))["seq"] == 2
