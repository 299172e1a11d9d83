"""Atomic writes, the symlink-proof walk and streaming hashes, on real files."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _files
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from tests.harness.paths import COLLECTIONS


def test_atomic_write_replaces_content_and_keeps_mode(tmp_path):
    target = tmp_path / "app.env"
    target.write_text("OLD=1\n")
    os.chmod(target, 0o640)
    backup = _files.atomic_write(str(target), b"NEW=2\n", backup=True)
    assert target.read_text() == "NEW=2\n"
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o640)
    assert backup and open(backup).read() == "OLD=1\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_failure_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "conf"
    target.write_bytes(b"keep me")
    with pytest.raises(RuntimeError):
        with _files.AtomicWriter(str(target)) as handle:
            handle.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_unlink_on_error_removes_the_temp_file_and_reraises(tmp_path, error):
    tmp = tmp_path / "obj.tmp"
    with pytest.raises(type(error)):
        with _files.unlink_on_error(str(tmp)):
            tmp.write_bytes(b"half written")
            raise error
    assert list(tmp_path.iterdir()) == []


def test_unlink_on_error_keeps_the_file_on_success_and_tolerates_a_missing_temp(tmp_path):
    kept = tmp_path / "kept.tmp"
    with _files.unlink_on_error(str(kept)):
        kept.write_bytes(b"done")
    assert kept.read_bytes() == b"done"
    with pytest.raises(ValueError):  # the temp was never created: the block's own error comes out, not ENOENT
        with _files.unlink_on_error(str(tmp_path / "never.tmp")):
            raise ValueError("before the temp file existed")


def test_process_killed_before_rename_leaves_old_file_intact(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b'{"old": true}')
    ready = tmp_path / "ready"
    script = textwrap.dedent("""
        import os, sys, time
        sys.path.insert(0, %r)
        from ansible_collections.ransomeye.ops.plugins.module_utils import _files
        w = _files.AtomicWriter(%r)
        h = w.__enter__()
        h.write(b"x" * 1000000)
        h.flush(); os.fsync(h.fileno())
        open(%r, "w").close()
        time.sleep(60)
    """) % (COLLECTIONS, str(target), str(ready))
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _attempt in range(200):
            if ready.exists():
                break
            proc.poll()
            assert proc.returncode is None, "writer died early"
            import time
            time.sleep(0.05)
        assert ready.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == b'{"old": true}'
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".state.json.")


def test_safe_walk_never_follows_symlinks_or_leaves_root(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("do not touch")
    (root / "a" / "b" / "f.txt").write_text("x")
    os.symlink(outside, root / "a" / "link_dir")
    os.symlink(outside / "secret", root / "link_file")
    entries = {e.relpath: e for e in _files.safe_walk(str(root), include_dirs=True)}
    assert set(entries) == {"a", "a/b", "a/b/f.txt", "a/link_dir", "link_file"}
    assert os.path.islink(entries["a/link_dir"].path)
    # Directories come after their contents (bottom-up removal order).
    order = [e.relpath for e in _files.safe_walk(str(root), include_dirs=True)]
    assert order.index("a/b/f.txt") < order.index("a/b") < order.index("a")


def test_safe_walk_refuses_symlinked_or_missing_root(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    with pytest.raises(RansomeyeError, match="symlink"):
        list(_files.safe_walk(str(tmp_path / "alias")))
    with pytest.raises(RansomeyeError, match="does not exist"):
        list(_files.safe_walk(str(tmp_path / "nope")))


def test_sha256_file_streams_and_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert _files.sha256_file(str(path), chunk_size=65536) == hashlib.sha256(data).hexdigest()
    with open(path, "rb") as handle:
        assert _files.sha256_stream(handle) == (hashlib.sha256(data).hexdigest(), len(data))


def test_is_within():
    assert _files.is_within("/srv/root", "/srv/root/a/b")
    assert _files.is_within("/srv/root", "/srv/root")
    assert not _files.is_within("/srv/root", "/srv/rootkit/a")
    assert not _files.is_within("/srv/root", "/srv/root/../etc")
