# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: file trees of a backup (config tar, deduplicated artifacts, stat cache).

Both components walk their roots with _files.safe_walk: symlinks are recorded
as links and never followed, the walk stays on one filesystem, and entries
come in sorted order. Every entry is keyed by its absolute original path.

* config: one deterministic PAX tar (sorted, numeric owners, no user/group
  names, integer mtimes) streamed into one encrypted object.
* artifacts: one object per distinct content, named by the keyed content id
  (_backup_keys.Encryption.blob_id). An unchanged file (same size, mtime_ns,
  ctime_ns and inode as in the stat cache) is not read again, except for a
  random ``rehash_percent`` sample; the whole cache is ignored when the clock
  went backwards or a file's timestamps lie in the future, and for files
  modified within two seconds of the previous run (racy timestamps).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import json
import os
import random
import stat
import tarfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, safe_walk
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import NewObject, store_fd
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook

READ_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Entry(t.NamedTuple):
    path: str
    st: os.stat_result
    dir_fd: t.Optional[int]
    name: str


def walk_roots(roots: t.Sequence[str], skipped: t.List[str]) -> t.Iterator[Entry]:
    """Every entry below the roots (the roots included), parents before children, sorted; directories that
    could not be entered after they were listed (deleted while the backup ran) are added to ``skipped``."""
    for root in roots:
        st = os.lstat(root)
        yield Entry(root, st, None, root)
        if stat.S_ISDIR(st.st_mode):
            for item in safe_walk(root, one_filesystem=True, include_dirs=True, dirs_last=False,
                                  on_skip=skipped.append):
                yield Entry(item.path, item.stat, item.dir_fd, item.name)


def _open_entry(entry: Entry) -> int:
    # O_NONBLOCK: a FIFO swapped in since the walk listed a file must not make the open wait for a writer (the
    # inode check below then refuses it); it changes nothing for a regular file
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    if entry.dir_fd is not None:
        fd = os.open(entry.name, flags, dir_fd=entry.dir_fd)
    else:
        fd = os.open(entry.path, flags)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (entry.st.st_dev, entry.st.st_ino):
        os.close(fd)
        raise RansomeyeError("%s was replaced while it was being backed up" % entry.path, path=entry.path)
    return fd


def _base_record(st: os.stat_result) -> dict:
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def describe(entry: Entry) -> t.Optional[dict]:
    """The manifest record of an entry (without content hash), or None for unsupported types and for a symlink
    deleted since the walk listed it (the caller reports both as skipped)."""
    st = entry.st
    record = _base_record(st)
    if stat.S_ISDIR(st.st_mode):
        record["type"] = "dir"
    elif stat.S_ISLNK(st.st_mode):
        record["type"] = "symlink"
        try:
            if entry.dir_fd is not None:
                record["target"] = os.readlink(entry.name, dir_fd=entry.dir_fd)
            else:
                record["target"] = os.readlink(entry.path)
        except FileNotFoundError:
            return None
    elif stat.S_ISREG(st.st_mode):
        record["type"] = "file"
        record["size"] = st.st_size
        record["mtime_ns"] = st.st_mtime_ns
    else:
        return None
    return record


class _HashingReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = os.read(self.fd, READ_CHUNK if size is None or size < 0 else size)
        self.digest.update(data)
        self.size += len(data)
        return data


# ----------------------------------------------------------------------------- config


def backup_config(repo: t.Any, enc: t.Any, roots: t.List[str], object_id: str) -> t.Tuple[dict, dict, dict]:
    """Tar ``roots`` into one object; return (component record, object record, stats)."""
    started = time.monotonic()
    files: t.Dict[str, dict] = {}
    skipped: t.List[str] = []
    stats = {"bytes_read": 0, "files_new": 0, "files_changed": 0, "files_unchanged": 0}
    with NewObject(repo, enc, object_id, "config") as obj:
        with tarfile.open(fileobj=obj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in walk_roots(roots, skipped):
                record = describe(entry)
                if record is None:
                    skipped.append(entry.path)
                    continue
                info = tarfile.TarInfo(entry.path.lstrip("/"))
                info.mode = record["mode"]
                info.uid, info.gid = record["uid"], record["gid"]
                info.uname = info.gname = ""
                info.mtime = int(entry.st.st_mtime)
                if record["type"] == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif record["type"] == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = record["target"]
                    tar.addfile(info)
                else:
                    fd = _open_entry(entry)
                    try:
                        info.size = entry.st.st_size
                        reader = _HashingReader(fd)
                        tar.addfile(info, reader)
                        if reader.size != entry.st.st_size or os.read(fd, 1):
                            raise RansomeyeError("%s changed size while it was being backed up" % entry.path,
                                                 path=entry.path)
                    finally:
                        os.close(fd)
                    record["sha256"] = reader.digest.hexdigest()
                    stats["bytes_read"] += reader.size
                files[entry.path] = record
    if obj.record is None:
        raise RansomeyeError("config object was not written")
    stats.update(bytes_stored=obj.record["ciphertext_size"], bytes_deduplicated=0, objects_new=1, objects_reused=0,
                 files_new=sum(1 for r in files.values() if r["type"] == "file"),
                 duration=round(time.monotonic() - started, 3))
    component = {"paths": roots, "object": object_id, "format": "tar-pax", "files": files, "skipped": skipped}
    return component, obj.record, stats


# ----------------------------------------------------------------------------- stat cache


class StatCache:
    """path -> (size, mtime_ns, ctime_ns, ino, sha256) from the previous run (a hint, never trusted for restore)."""

    def __init__(self, path: str, context: str, now: float, rehash_percent: float) -> None:
        self.path = path
        self.context = context
        self.now = now
        self.rehash_fraction = max(0.0, min(100.0, float(rehash_percent))) / 100.0
        self.entries: t.Dict[str, list] = {}
        self.new_entries: t.Dict[str, list] = {}
        self.previous_run = 0.0
        self.disabled_reason = ""
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read().decode("utf-8"))
            if isinstance(data, dict) and data.get("context") == context and isinstance(data.get("entries"), dict):
                self.entries = data["entries"]
                self.previous_run = float(data.get("run_started") or 0)
            elif isinstance(data, dict) and data.get("context") != context:
                self.disabled_reason = "encryption context changed"
        except FileNotFoundError:
            self.disabled_reason = "no stat cache yet"
        except (ValueError, UnicodeDecodeError, TypeError):
            self.disabled_reason = "stat cache unreadable"
        if self.previous_run and now + 1 < self.previous_run:
            self.disable("the clock went backwards since the previous run")

    def disable(self, reason: str) -> None:
        if not self.disabled_reason:
            self.disabled_reason = reason
        self.entries = {}

    def lookup(self, path: str, st: os.stat_result) -> t.Tuple[t.Optional[str], bool]:
        """(cached sha256 or None, forced rehash): the caller must read the file when sha is None or forced."""
        cached = self.entries.get(path)
        if not cached or len(cached) != 5:
            return None, False
        now_ns = int(self.now * 1e9)
        if st.st_mtime_ns > now_ns + 1_000_000_000 or st.st_ctime_ns > now_ns + 1_000_000_000:
            self.disable("a file has timestamps in the future (%s)" % path)
            return None, False
        if [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] != cached[:4]:
            return None, False
        if max(st.st_mtime_ns, st.st_ctime_ns) >= int((self.previous_run - 2) * 1e9):
            return None, False  # racy: modified around the previous run, the stat may not show a change
        return str(cached[4]), random.random() < self.rehash_fraction

    def remember(self, path: str, st: os.stat_result, sha256: str) -> None:
        self.new_entries[path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256]

    def save(self, run_started: float) -> None:
        data = {"context": self.context, "run_started": run_started, "entries": self.new_entries}
        atomic_write(self.path, json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), mode=0o600)


# ----------------------------------------------------------------------------- artifacts


def _hash_fd(fd: int) -> t.Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        block = os.read(fd, READ_CHUNK)
        if not block:
            break
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def backup_artifacts(
    repo: t.Any,
    enc: t.Any,
    roots: t.List[str],
    known_objects: t.Dict[str, dict],
    previous_files: t.Dict[str, dict],
    cache: StatCache,
) -> t.Tuple[dict, t.Dict[str, dict], dict]:
    """Store new content, reuse known content; return (component record, objects referenced, stats)."""
    started = time.monotonic()
    files: t.Dict[str, dict] = {}
    objects: t.Dict[str, dict] = {}
    skipped: t.List[str] = []
    stats = {"bytes_read": 0, "bytes_stored": 0, "bytes_deduplicated": 0, "files_new": 0, "files_changed": 0,
             "files_unchanged": 0, "files_rehashed": 0, "cache_mismatches": 0, "objects_new": 0, "objects_reused": 0}
    hooked = False
    for entry in walk_roots(roots, skipped):
        record = describe(entry)
        if record is None:
            skipped.append(entry.path)
            continue
        files[entry.path] = record
        if record["type"] != "file":
            continue
        cached_sha, forced = cache.lookup(entry.path, entry.st)
        fd = -1
        if cached_sha is None or forced:
            try:
                fd = _open_entry(entry)
            except FileNotFoundError:
                # deleted since the walk listed it (evidence aged out while the backup ran): left out, reported
                del files[entry.path]
                skipped.append(entry.path)
                continue
        try:
            if cached_sha is None or forced:
                sha, size = _hash_fd(fd)
                stats["bytes_read"] += size
                if forced:
                    stats["files_rehashed"] += 1
                    if sha != cached_sha:
                        stats["cache_mismatches"] += 1
                        cache.disable("a file changed content without changing its stat (%s)" % entry.path)
                if size != entry.st.st_size:
                    raise RansomeyeError("%s changed while it was being backed up" % entry.path, path=entry.path)
            else:
                sha, size = cached_sha, entry.st.st_size
            blob = enc.blob_id(sha)
            known = known_objects.get(blob) or objects.get(blob)
            if known is not None and known.get("plaintext_sha256") == sha \
                    and repo.object_size(blob) == known.get("ciphertext_size"):
                objects[blob] = known
                stats["bytes_deduplicated"] += size
            else:
                if fd < 0:
                    fd = _open_entry(entry)
                obj_record, stored_sha = store_fd(repo, enc, fd, blob, "artifact")
                stats["bytes_read"] += obj_record["plaintext_size"]
                if stored_sha != sha:
                    raise RansomeyeError("%s changed while it was being backed up" % entry.path, path=entry.path)
                objects[blob] = obj_record
                stats["objects_new"] += 1
                stats["bytes_stored"] += obj_record["ciphertext_size"]
                if not hooked:
                    hooked = True
                    hook("during_artifacts")
        finally:
            if fd >= 0:
                os.close(fd)
        record["sha256"] = sha
        record["object"] = blob
        cache.remember(entry.path, entry.st, sha)
        before = previous_files.get(entry.path)
        if before is None or before.get("type") != "file":
            stats["files_new"] += 1
        elif before.get("sha256") != sha:
            stats["files_changed"] += 1
        else:
            stats["files_unchanged"] += 1
    stats["objects_reused"] = len(objects) - stats["objects_new"]
    stats["duration"] = round(time.monotonic() - started, 3)
    component = {"paths": roots, "files": files, "skipped": skipped}
    if cache.disabled_reason:
        stats["cache_note"] = cache.disabled_reason
    return component, objects, stats
