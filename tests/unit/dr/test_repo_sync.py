"""Repo.sync (plugins/module_utils/_backup_repo.py): the objects a run wrote are fsynced one by one when every
writer started their write-back (packs, indexes), and the whole filesystem is flushed as before as soon as one
object was committed any other way (a v1 object). Durability itself cannot be observed without cutting the power:
these tests record which flush ``sync`` asks the kernel for (``_syncfs`` and ``os.fsync`` wrapped, still called)."""
from __future__ import annotations

import os

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_keys as bkeys
from ansible_collections.ransomeye.ops.plugins.module_utils import _malloc
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import pack as bpack
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import NewObject


def _encryption() -> bkeys.Encryption:
    key = os.urandom(32)
    return bkeys.Encryption("aes", None, key, [], os.urandom(32))


def _record_flushes(monkeypatch):
    calls = {"syncfs": 0, "fsync": []}
    real_syncfs, real_fsync = brepo._syncfs, os.fsync

    def syncfs(path):
        calls["syncfs"] += 1
        real_syncfs(path)

    def fsync(fd):
        calls["fsync"].append(os.readlink("/proc/self/fd/%d" % fd))
        real_fsync(fd)

    monkeypatch.setattr(brepo, "_syncfs", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_packs_and_indexes_are_fsynced_one_by_one_not_the_whole_filesystem(tmp_path, monkeypatch):
    repo = brepo.Repo.create(str(tmp_path / "repo"))
    enc = _encryption()
    pack_id = brepo.new_object_id()
    record = bpack.write_object(repo, enc, pack_id, bytearray(b"blob" * 5000), "pack")
    index_id, _rec = bpack.write_plain_object(repo, b"an index", "index")
    calls = _record_flushes(monkeypatch)
    repo.sync()
    assert calls["syncfs"] == 0
    for object_id in (pack_id, index_id):
        assert calls["fsync"].count(repo.object_path(object_id)) == 1
        assert os.path.dirname(repo.object_path(object_id)) in calls["fsync"]
    assert repo.objects_dir in calls["fsync"] and repo.path in calls["fsync"]
    # the write-back advice changes nothing in the file
    assert repo.object_size(pack_id) == record["ciphertext_size"]
    # a second sync has nothing left to fsync but the directories
    calls["fsync"].clear()
    repo.sync()
    assert repo.object_path(pack_id) not in calls["fsync"]


def test_one_object_committed_without_write_back_makes_sync_flush_the_filesystem(tmp_path, monkeypatch):
    repo = brepo.Repo.create(str(tmp_path / "repo"))
    enc = _encryption()
    bpack.write_object(repo, enc, brepo.new_object_id(), b"packed", "pack")
    with NewObject(repo, enc, brepo.new_object_id(), "artifact") as obj:   # a v1 object: no write-back started
        obj.write(b"v1 data")
    calls = _record_flushes(monkeypatch)
    repo.sync()
    assert calls["syncfs"] == 1


def test_one_arena_is_accepted_by_glibc_and_idempotent():
    import ctypes
    glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert _malloc.one_arena() is glibc
    assert _malloc.one_arena() is glibc
