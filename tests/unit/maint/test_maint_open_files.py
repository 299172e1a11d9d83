"""Open and locked files are seen through /proc (real processes, real locks)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from ansible_collections.ransomeye.ops.plugins.module_utils._open_files import OpenFiles, _proc_locks


def _holder(path, mode):
    """A child process that opens (and with mode 'flock' locks) ``path`` until killed."""
    code = (
        "import fcntl, sys, time\n"
        "f = open(sys.argv[1], 'rb')\n"
        "if sys.argv[2] == 'flock':\n"
        "    fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, path, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_file_open_by_another_process_is_busy_and_free_after(tmp_path):
    path = tmp_path / "held.log"
    path.write_text("x")
    other = tmp_path / "free.log"
    other.write_text("y")
    proc = _holder(str(path), "open")
    try:
        files = OpenFiles()
        assert files.why_busy(os.stat(path)) == "open"
        assert files.why_busy(os.stat(other)) is None
    finally:
        proc.kill()
        proc.wait()
    assert OpenFiles().why_busy(os.stat(path)) is None


def test_our_own_descriptors_do_not_count(tmp_path):
    path = tmp_path / "mine.log"
    path.write_text("x")
    with open(path, "rb"):
        assert OpenFiles().why_busy(os.stat(path)) is None


def test_flock_appears_in_proc_locks(tmp_path):
    path = tmp_path / "locked"
    path.write_text("x")
    st = os.stat(path)
    with open(path, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        locks = _proc_locks()
        assert (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locks
        # our own flock: not "open" (own pid excluded) but "locked"
        assert OpenFiles().why_busy(st) == "locked"
    assert (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) not in _proc_locks()


def test_snapshot_is_refreshed_on_demand(tmp_path):
    path = tmp_path / "later.log"
    path.write_text("x")
    files = OpenFiles(max_age=3600)
    assert files.why_busy(os.stat(path)) is None
    proc = _holder(str(path), "open")
    try:
        assert files.why_busy(os.stat(path)) is None  # stale snapshot
        assert files.why_busy(os.stat(path), refresh=True) == "open"
    finally:
        proc.kill()
        proc.wait()
