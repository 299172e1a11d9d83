"""Unit tests of the DR helpers that need no database: path checks, markers, stream reader, stat cache, lock."""
from __future__ import annotations

import json
import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_files import EntryRefused, check_entries, walk_order
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import ChunkReader
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_restore import _name, marker_text, parse_marker
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_tree import StatCache
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

ROOT = "/srv/ransomeye/artifacts"


def _file(**extra):
    return dict({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1, "sha256": "0" * 64}, **extra)


@pytest.mark.parametrize("path,record,words", [
    (ROOT + "/../../etc/shadow", _file(), "normalised"),
    ("relative/path", _file(), "normalised"),
    ("/etc/shadow", _file(), "outside the backed-up roots"),
    (ROOT + "/a/./b", _file(), "normalised"),
    (ROOT + "/link", {"type": "symlink", "mode": 0o777, "target": "../../../etc/passwd"}, "pointing outside"),
    (ROOT + "/link", {"type": "symlink", "mode": 0o777, "target": "/etc/passwd"}, "pointing outside"),
    (ROOT + "/dev", {"type": "chardev", "mode": 0o600}, "unknown type"),
    (ROOT + "/f", _file(mode=0o170000), "invalid mode"),
])
def test_check_entries_refuses_escapes(path, record, words):
    with pytest.raises(EntryRefused) as info:
        check_entries("artifacts", [ROOT], {path: record})
    assert words in info.value.msg


def test_check_entries_accepts_links_inside_and_refuses_root_slash():
    check_entries("artifacts", [ROOT], {
        ROOT: {"type": "dir", "mode": 0o755},
        ROOT + "/a/link": {"type": "symlink", "mode": 0o777, "target": "../b/file"},
        ROOT + "/abs": {"type": "symlink", "mode": 0o777, "target": ROOT + "/b/file"},
        ROOT + "/b/file": _file(),
    })
    with pytest.raises(EntryRefused):
        check_entries("config", ["/"], {"/etc/x": _file()})


def test_walk_order_matches_the_backup_walk():
    paths = ["/r", "/r/b.txt", "/r/b", "/r/b/c", "/r/a"]
    assert sorted(paths, key=walk_order) == ["/r", "/r/a", "/r/b", "/r/b/c", "/r/b.txt"]


def test_restore_marker_round_trip_and_garbage():
    text = marker_text("restored", "00000003-20261127T010000Z", 3, "ransomeye_pre_restore_3")
    assert parse_marker(text) == {"state": "restored", "backup_id": "00000003-20261127T010000Z", "seq": 3,
                                  "previous": "ransomeye_pre_restore_3", "xid": None}
    assert parse_marker(marker_text("restored", "b", 2, None, 4294967295))["xid"] == 4294967295
    assert parse_marker(marker_text("rolled-back", "x", 1, None))["previous"] is None
    assert parse_marker("an operator's comment") is None and parse_marker(None) is None


def test_side_database_names_fit_postgres_limit_and_stay_distinct():
    long_a = "a" * 60
    long_b = "a" * 59 + "b"
    name_a, name_b = _name(long_a, "_pre_restore_12"), _name(long_b, "_pre_restore_12")
    assert len(name_a) <= 63 and len(name_b) <= 63 and name_a != name_b
    assert _name("ransomeye", "_pre_restore_1") == "ransomeye_pre_restore_1"


def test_chunk_reader_serves_exact_sizes_across_chunks():
    data = [b"abc", b"", b"defgh", b"i"]
    reader = ChunkReader(iter(data))
    assert reader.read(2) == b"ab"
    assert reader.read(4) == b"cdef"
    assert reader.read(-1) == b"ghi"
    assert reader.read(5) == b""


def test_backup_id_and_times():
    assert brepo.backup_id_for(7, 0) == "00000007-19700101T000000Z"
    assert brepo.seq_of_backup_id("00000007-19700101T000000Z") == 7
    assert brepo.seq_of_backup_id("latest") is None
    assert brepo.parse_iso_time(brepo.iso_time(1_700_000_000)) == 1_700_000_000
    assert brepo.parse_iso_time("yesterday") is None


def test_stat_cache_is_ignored_when_the_clock_went_backwards(tmp_path):
    path = str(tmp_path / "cache.json")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    st = os.lstat(target)
    cache = StatCache(path, "ctx", now=st.st_mtime + 100, rehash_percent=0)
    cache.remember(str(target), st, "ab" * 32)
    cache.save(run_started=st.st_mtime + 100)
    later = StatCache(path, "ctx", now=st.st_mtime + 200, rehash_percent=0)
    assert later.lookup(str(target), st) == ("ab" * 32, False)
    backwards = StatCache(path, "ctx", now=st.st_mtime + 50, rehash_percent=0)
    assert backwards.lookup(str(target), st) == (None, False)
    assert "backwards" in backwards.disabled_reason
    other = StatCache(path, "other-recipients", now=st.st_mtime + 200, rehash_percent=0)
    assert other.lookup(str(target), st) == (None, False)
    racy = StatCache(path, "ctx", now=st.st_mtime + 200, rehash_percent=0)
    racy.previous_run = st.st_mtime + 1  # the file changed within 2 s of the previous run
    assert racy.lookup(str(target), st) == (None, False)


def test_repository_refuses_foreign_directories_and_locks(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(RansomeyeError) as info:
        brepo.Repo.create(str(tmp_path / "junk"))
    assert "not empty" in info.value.msg
    repo = brepo.Repo.create(str(tmp_path / "repo"))
    assert brepo.Repo.open(repo.path).repo_id == repo.repo_id
    with open(os.path.join(repo.path, "repo.json")) as handle:
        assert json.load(handle)["format"] == brepo.REPO_FORMAT
    with repo.lock(exclusive=True, timeout=0):
        with pytest.raises(RansomeyeError) as info:
            with brepo.Repo.open(repo.path).lock(exclusive=False, timeout=0.3):
                pass
        assert "locked by another run" in info.value.msg
    with repo.lock(exclusive=False, timeout=0):
        with brepo.Repo.open(repo.path).lock(exclusive=False, timeout=0):
            pass  # readers share the lock
    with pytest.raises(RansomeyeError):
        repo.object_path("../../etc/passwd")


def test_read_only_directories_restore_idempotently(tmp_path):
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_files import Restorer, restore_tree_entries
    root = "/srv/ro"
    files = {root: {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0},
             root + "/sealed": {"type": "dir", "mode": 0o500, "uid": 0, "gid": 0},
             root + "/sealed/f": dict(_file(size=3, sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))}
    check_entries("artifacts", [root], files)
    changed = []
    for _round in range(2):
        restorer = Restorer([root], str(tmp_path), check_mode=False)
        restore_tree_entries(restorer, files, lambda original, record: iter([b"abc"]))
        changed.append(list(restorer.changed_paths))
    assert len(changed[0]) == 3 and changed[1] == []
    assert os.stat(str(tmp_path) + root + "/sealed").st_mode & 0o777 == 0o500
    with open(str(tmp_path) + root + "/sealed/f", "rb") as handle:
        assert handle.read() == b"abc"
