# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the backup side of repository v2 (config and artifacts as Merkle trees in packs).

One streaming walk per component: directories are read through file
descriptors (O_NOFOLLOW, one filesystem), entries sorted by name bytes, and a
tree object is built for each directory after its children, so memory holds
at most LOOKAHEAD directories per level. Each file is read once: its 1 MiB
chunks are hashed, keyed (blob id), compressed when that pays and appended to
a pack on worker threads, while this thread walks on; full packs are encrypted
and written on a thread of their own. Unchanged files (same size, mtime, ctime, inode,
mode and owner as in the authenticated host-local cache, and not racy) are
not read; an unchanged directory yields the same tree id, so a backup after
nothing changed stores no blob at all.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import collections
import concurrent.futures
import errno
import hashlib
import hmac
import os
import random
import stat
import struct
import sys
import threading
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _malloc
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import signing
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, pack as bpack, cache as bcache, \
    spill as bspill

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRFLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)   # a FIFO swapped in after the listing: no wait
# O_NOATIME: reading a file for a backup does not update its access time (as borg does), which would otherwise
# dirty and journal each file's inode on the first read after a change (relatime). Allowed to the file's owner
# and to a process with CAP_FOWNER; EPERM otherwise, then the file is opened without it.
_READ_NOATIME = _READ | getattr(os, "O_NOATIME", 0)
_HAS_BLOCKS = hasattr(os.stat_result, "st_blocks")
BIG_FILE = 8 << 20           # larger files are streamed chunk by chunk by the walking thread
BATCH_FILES = 128            # small files per batch: fewer thread hand-offs (200,000 files of 1-4 KiB: 9.0 -> 8.3 s)
BATCH_BYTES = 4 << 20
INFLIGHT_BYTES = 24 << 20    # file bytes queued for the worker threads and not yet stored
LOOKAHEAD = 16               # subdirectories of one directory waiting for their reads at a time
RACY_NS = 2 * 10 ** 9
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SAMPLE = 20


class _Job:
    """A directory whose entries are built and whose changed files are being read on the worker threads."""

    __slots__ = ("entries", "packs", "children", "old", "signature", "outstanding", "fd", "path", "top")

    def __init__(self, entries: t.List[t.Optional[dict]], packs: t.Set[str], children: t.Dict[bytes, int],
                 old: t.Optional[t.Any], signature: bytes, path: bytes = b"", top: bool = False) -> None:
        self.entries, self.packs, self.children, self.old, self.signature = entries, packs, children, old, signature
        self.outstanding = 0               # files queued and not yet stored
        self.fd: t.Optional[int] = None    # its directory, closed when the job completes
        self.path, self.top = path, top    # for messages about its entries

    def full(self, name: bytes) -> bytes:
        return name if self.top else self.path + b"/" + name


_Check = t.Tuple[concurrent.futures.Future, dict]     # a rehash on a worker thread, and the cached entry it checks


class _PendingReuse:
    """A directory the cache describes, waiting for the rehash of its picked files (on the worker threads, while
    the walk goes on): ``complete`` reuses its cached tree when they all match, and reads the whole directory
    otherwise."""

    __slots__ = ("items", "path", "old", "dev", "top", "signature", "done", "checks", "files", "symlinks", "fd")

    def __init__(self, items: t.List[t.Tuple[bytes, os.stat_result]], path: bytes, old: t.Any, dev: t.Optional[int],
                 top: bool, signature: bytes, checks: t.List[_Check],
                 files: int, symlinks: int) -> None:
        self.items, self.path, self.old, self.dev, self.top, self.signature = items, path, old, dev, top, signature
        self.checks, self.files, self.symlinks = checks, files, symlinks
        self.done: t.Dict[bytes, t.Tuple[str, int]] = {}
        self.fd: t.Optional[int] = None    # its directory (for the full path), closed when it completes

    @property
    def outstanding(self) -> int:
        return sum(1 for future, _entry in self.checks if not future.done())


_Done = t.Union[t.Tuple[str, int], _Job, _PendingReuse]
_GONE = ("", -1)    # the result of a subdirectory deleted between its parent's listing and its own opening
VANISHED = "vanished during the backup"
REPLACED = "replaced during the backup"   # another inode now: never read with the listed entry's owner and mode


class FileResult(t.NamedTuple):
    size: int
    sha256: str
    chunks: t.List[t.Tuple[bytes, t.Optional[bytes], int, int]]   # blob id, stored bytes (None: known), raw len, comp
    sparse: bool


class Base(t.NamedTuple):
    manifest: brepo.LoadedManifest
    objects: t.Dict[str, dict]


def choose_base(manifests: t.List[brepo.LoadedManifest], repo: brepo.Repo, signer_public: t.Any, describe: dict,
                component: str, accept: t.Optional[t.Callable[[t.Any], bool]] = None) -> t.Optional[Base]:
    """The newest manifest with a v2 ``component``, same encryption, a valid signature by our signing key.

    Only its packs that exist with their recorded size may be reused; nothing
    from an unsigned, foreign or damaged manifest is ever reused. ``accept``
    says which component records count as v2 (default: a tree-v2 component).
    """
    for item in reversed(manifests):
        body = item.body
        comp = (body.get("components") or {}).get(component)
        if not isinstance(comp, dict) or not (accept(comp) if accept is not None
                                              else comp.get("format") == fmt.COMPONENT_FORMAT):
            continue
        if body.get("encryption") != describe or body.get("repo_id") != repo.repo_id:
            continue
        try:
            signing.verify(signer_public, signing.canonical_json(body), (item.document.get("signatures") or [None])[0])
        except RansomeyeError:
            continue
        if signing.canonical_json(item.document) != item.raw:
            continue
        objects = {}
        for oid, rec in (body.get("objects") or {}).items():
            if isinstance(rec, dict) and rec.get("kind") in ("pack", "index") and repo.object_size(oid) == rec.get(
                    "ciphertext_size"):
                objects[oid] = rec
        return Base(item, objects)
    return None


class ComponentRun:
    """Per-component state: its base, its dedup index, its caches."""

    def __init__(self, engine: "Engine", component: str, roots: t.List[str]) -> None:
        self.engine = engine
        self.component = component
        self.roots = roots
        self.base = choose_base(engine.manifests, engine.repo, engine.signer_public, engine.enc.describe(), component)
        self._index: t.Optional[fmt.IndexSet] = None
        self._index_lock = threading.Lock()
        self.cache_reader: t.Optional[bcache.CacheReader] = None
        self.racy_before = 0
        self.stats = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "files_unchanged": 0, "files_read": 0,
                      "bytes_read": 0, "blobs_new": 0, "blobs_reused": 0, "trees_new": 0, "trees_reused": 0,
                      "skipped_count": 0}
        self.skipped: t.List[str] = []
        self.hardlinks: t.Dict[t.Tuple[int, int], bytes] = {}
        self.used_packs: t.Set[str] = set()
        # files queued for the worker threads: the batch being collected, and batches in flight (oldest first)
        self._batch: t.List[t.Tuple[t.Optional[int], bytes, os.stat_result, _Job, int]] = []
        self._batch_bytes = 0
        self._inflight: "collections.deque[t.Tuple[list, int, int, concurrent.futures.Future]]" = \
            collections.deque()
        self._inflight_bytes = 0
        self.open_fds: t.Set[int] = set()      # directories whose jobs still wait for reads
        self._batches = 0                      # batches queued so far (each stores after the one before)
        self._store_lock = threading.Lock()
        self._ready: t.Dict[int, t.Any] = {}   # read, waiting for an earlier batch to be stored
        self._store_next = 0
        self._stored_cond = threading.Condition()
        self._stored: t.Dict[int, t.Any] = {}  # stored, waiting for the walking thread
        self._rehashing: t.Set[concurrent.futures.Future] = set()   # rehash reads still on the worker threads
        self._rehash_buffers = threading.local()                      # one pair of read buffers per worker

    # ---- dedup lookups against verified data
    def index(self) -> fmt.IndexSet:
        if self._index is not None:      # loaded once, then only read (worker threads ask for every blob)
            return self._index
        with self._index_lock:
            if self._index is None:
                if self.base is None:
                    self._index = fmt.IndexSet({})
                else:
                    try:
                        self._index = bpack.load_indexes(self.engine.repo, self.base.objects)
                    except RansomeyeError as exc:
                        self.engine.warn("%s: not deduplicating against the previous backup: %s"
                                         % (self.component, exc.msg))
                        self._index = fmt.IndexSet({})
            return self._index

    def known(self, blob: bytes) -> bool:
        return self.engine.new_blobs.get(blob) is not None or self.index().lookup(blob) is not None

    def skip(self, path: bytes, why: str) -> None:
        self.stats["skipped_count"] += 1
        if len(self.skipped) < SAMPLE:
            # shown, not used to find the entry: a name that is not UTF-8 is escaped (\xe9), since the signed
            # manifest is canonical JSON and cannot hold the lone surrogates os.fsdecode would give
            self.skipped.append("%s (%s)" % (path.decode("utf-8", "backslashreplace"), why))

    # ---- cache
    def open_cache(self) -> t.Optional[bcache.CacheRecord]:
        eng = self.engine
        self.state_path = os.path.join(eng.cache_root, "%s.state" % self.component)
        self.cache_path = os.path.join(eng.cache_root, "%s.cache" % self.component)
        self.writer = bcache.CacheWriter(self.cache_path, eng.mac_key)
        if eng.clock_backwards:
            eng.warn("%s: the clock went backwards since the previous backup; every file is read again"
                     % self.component)
            return None
        try:
            state = bcache.read_state(self.state_path, eng.mac_key)
        except (bcache.CacheError, ValueError) as exc:
            eng.warn("%s: ignoring the host-local cache: %s" % (self.component, getattr(exc, "msg", exc)))
            return None
        if not state:
            return None
        base = self.base
        if base is None or state.get("manifest_seq") != base.manifest.body["seq"] \
                or state.get("manifest_sha256") != base.manifest.sha256 or state.get("repo_id") != eng.repo.repo_id \
                or state.get("context") != eng.enc.context or state.get("roots") != self.roots:
            return None
        missing = [p for p in state.get("packs") or [] if p not in base.objects]
        if missing:
            eng.warn("%s: ignoring the host-local cache: pack %s of the previous backup is missing or damaged"
                     % (self.component, missing[0]))
            return None
        try:
            self.cache_reader = bcache.CacheReader(self.cache_path, eng.mac_key, bytes.fromhex(state["nonce"]))
            top = self.cache_reader.read(int(state["top"]))
        except (bcache.CacheError, OSError, ValueError, KeyError) as exc:
            eng.warn("%s: ignoring the host-local cache: %s" % (self.component, getattr(exc, "msg", exc)))
            self.cache_reader = None
            return None
        self.racy_before = int(state.get("run_start_ns", 0)) - RACY_NS
        return top

    def old_child(self, old: t.Optional[bcache.CacheRecord], name: bytes) -> t.Optional[bcache.CacheRecord]:
        if old is None or self.cache_reader is None or name not in old.children:
            return None
        try:
            return self.cache_reader.read(old.children[name])
        except (bcache.CacheError, ValueError, KeyError) as exc:
            self.engine.warn("%s: ignoring the rest of the host-local cache: %s"
                             % (self.component, getattr(exc, "msg", exc)))
            self.cache_reader = None
            return None

    # ---- walking
    def reusable(self, old: t.Optional[dict], st: os.stat_result) -> bool:
        if old is None or old.get("type") != "file" or self.cache_reader is None:
            return False
        if (old.get("size"), old.get("mtime_ns"), old.get("ctime_ns"), old.get("inode"), old.get("mode"),
                old.get("uid"), old.get("gid")) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                                    stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid):
            return False
        if st.st_mtime_ns >= self.racy_before or st.st_ctime_ns >= self.racy_before:
            return False  # modified around the previous run: its cached content may be stale
        if self.engine.rehash_fraction and random.random() < self.engine.rehash_fraction:
            self.stats["files_rehashed"] = self.stats.get("files_rehashed", 0) + 1
            return False
        return True

    def _open_file(self, dir_fd: t.Optional[int], name: bytes, st: os.stat_result) -> int:
        if self.engine.noatime and (self.engine.euid == 0 or st.st_uid == self.engine.euid):
            try:
                return os.open(name, _READ_NOATIME, dir_fd=dir_fd)
            except PermissionError:
                if self.engine.euid == 0:
                    self.engine.noatime = False   # root without CAP_FOWNER (a container): on no file then
        return os.open(name, _READ, dir_fd=dir_fd)

    def read_file(self, dir_fd: t.Optional[int], name: bytes, st: os.stat_result) -> t.Union[FileResult, str]:
        """A str: why the listed file cannot be backed up (deleted or replaced after its directory was listed, as
        evidence aged out or rewritten while the backup runs); it is left out and reported."""
        try:
            fd = self._open_file(dir_fd, name, st)
        except FileNotFoundError:
            return VANISHED
        try:
            opened = os.fstat(fd)
            if not _same_file(opened, st):
                return REPLACED
            expected = opened.st_size
            if 0 < expected <= fmt.CHUNK:
                # most files: one read(2) of the size fstat gave, ending exactly there, is the whole file (as in
                # the loop below); its one chunk's SHA-256 is the file's
                data = os.read(fd, expected)
                if len(data) == expected:
                    digest = hashlib.sha256(data).digest()
                    state = self.engine._id_states[fmt.BLOB_DATA].copy()
                    state.update(digest)
                    blob = state.digest()
                    if self.known(blob):
                        chunk: t.Tuple[bytes, t.Optional[bytes], int, int] = (blob, None, expected, 0)
                    else:
                        stored, comp = fmt.encode_blob(data)
                        chunk = (blob, stored, expected, comp)
                    return FileResult(expected, digest.hex(), [chunk],
                                      _HAS_BLOCKS and opened.st_blocks * 512 < expected)
                return self._read_chunks(fd, opened, data)   # a short read: the file shrank, or grows
            return self._read_chunks(fd, opened, b"")
        finally:
            os.close(fd)

    def _read_chunks(self, fd: int, opened: os.stat_result, head: bytes) -> FileResult:
        """The general read loop (``head``: bytes already read from the start of the file)."""
        whole = None
        first = first_data = b""
        chunks = []
        size = 0
        blob_of = self.engine.data_blob_id
        known = self.known
        expected = opened.st_size
        while True:
            if head:
                # what a first short read returned, completed as _read_full would have
                more = _read_full(fd, fmt.CHUNK - len(head), expected - len(head)) if len(head) < fmt.CHUNK else b""
                data, head = head + more, b""
            else:
                # one read() for a small file: a short read that ends exactly at the size fstat gave is the end
                # (anything else reads on until read() returns nothing, as a file may be growing)
                data = _read_full(fd, fmt.CHUNK, expected - size)
            if not data:
                break
            digest = hashlib.sha256(data).digest()
            # a file of one chunk (most small files) is hashed once: its SHA-256 is the chunk's
            if size == 0:
                first, first_data = digest, data
            else:
                if whole is None:
                    whole = hashlib.sha256(first_data)
                    first_data = b""
                whole.update(data)
            blob = blob_of(digest)
            if known(blob):
                chunks.append((blob, None, len(data), 0))
            else:
                stored, comp = fmt.encode_blob(data)
                chunks.append((blob, stored, len(data), comp))
            size += len(data)
        sparse = bool(size and _HAS_BLOCKS and opened.st_blocks * 512 < size)
        if whole is not None:
            sha = whole.hexdigest()
        elif size:
            sha = first.hex()
        else:
            sha = _EMPTY_SHA256
        return FileResult(size, sha, chunks, sparse)

    def process(self, dir_fd: t.Optional[int], items: t.List[t.Tuple[bytes, os.stat_result]], path: bytes,
                old: t.Optional[bcache.CacheRecord], dev: t.Optional[int], top: bool) -> "_Done":
        """Back up one directory's entries: (tree id hex, cache offset of its record), or a _Job whose file reads
        are still in flight (``complete`` turns it into the pair)."""
        signature = _signature(items)
        if old is not None and old.signature == signature and self.cache_reader is not None:
            return self._reuse(dir_fd, items, path, old, dev, top, signature)
        return self._full(dir_fd, items, path, old, dev, top, signature, None)

    def _reuse(self, dir_fd: t.Optional[int], items: t.List[t.Tuple[bytes, os.stat_result]], path: bytes,
               old: bcache.CacheRecord, dev: t.Optional[int], top: bool, signature: bytes) -> "_Done":
        """A directory whose listing has the same stat signature as in the authenticated cache: once every
        subdirectory turns out unchanged too, its tree is the cached one, neither decoded nor encoded again (as
        restic compares with its parent snapshot's tree).

        The full path is taken for a directory holding hard links (which name is the "file" depends on the
        whole walk), entries other than files, directories and symlinks, a subdirectory on another filesystem,
        an entry changed within the racy window of the previous run, or a file picked for rehashing."""
        files = symlinks = 0
        subdirs: t.List[t.Tuple[bytes, os.stat_result]] = []
        full_path = False
        for name, st in items:
            mode = st.st_mode
            if st.st_mtime_ns >= self.racy_before or st.st_ctime_ns >= self.racy_before:
                full_path = True
            elif stat.S_ISREG(mode):
                full_path = full_path or st.st_nlink > 1
                files += 1
            elif stat.S_ISDIR(mode):
                full_path = full_path or (dev is not None and st.st_dev != dev)
                subdirs.append((name, st))
            elif stat.S_ISLNK(mode):
                symlinks += 1
            else:
                full_path = True
        if full_path:
            return self._full(dir_fd, items, path, old, dev, top, signature, None)
        fraction = self.engine.rehash_fraction
        picked = [(name, st) for name, st in items if stat.S_ISREG(st.st_mode) and random.random() < fraction] \
            if fraction and files else []
        checks = self._start_rehash(dir_fd, picked, old, top) if picked else []
        if checks is None:
            return self._full(dir_fd, items, path, old, dev, top, signature, None, distrust=True)
        olds = [(name, st, self.old_child(old, name)) for name, st in subdirs]
        done = self._subdirs(dir_fd, olds, path, dev, top)
        same = all(old_sub is not None and old_sub.tree_id == done[name][0] for name, _st, old_sub in olds)
        if not same or self.cache_reader is None:
            # a subdirectory changed: this directory's tree is built again (its files from the cache as usual,
            # unless the rehash found one the cache does not describe)
            return self._full(dir_fd, items, path, old, dev, top, signature, done,
                              distrust=not self._rehash_matched(checks))
        pending = _PendingReuse(items, path, old, dev, top, signature, checks, files, symlinks)
        pending.done = done
        if checks:
            return pending
        return self._finish_reuse(pending)

    def _finish_reuse(self, pending: "_PendingReuse") -> t.Tuple[str, int]:
        old, files, done = pending.old, pending.files, pending.done
        self.stats["files"] += files
        self.stats["files_unchanged"] += files
        self.stats["symlinks"] += pending.symlinks
        self.stats["dirs"] += len(done)
        self.stats["trees_reused"] += 1
        self.used_packs.update(old.packs)
        offset = self.writer.add(bcache.CacheRecord(old.tree, old.tree_id, old.packs,
                                                    {name: done[name][1] for name in done}, pending.signature))
        return old.tree_id, offset

    def _start_rehash(self, dir_fd: t.Optional[int], picked: t.List[t.Tuple[bytes, os.stat_result]],
                      old: bcache.CacheRecord, top: bool) -> t.Optional[t.List["_Check"]]:
        """Hash the files picked for rehashing on the worker threads: [(future of (sha256, size), cached entry)],
        or None when the cached tree does not describe one of them as a file."""
        try:
            old_entries = dict(fmt.decode_tree(old.tree, top=top))
        except fmt.FormatError:
            return None
        wanted = []
        for name, st in picked:
            previous = old_entries.get(name)
            if previous is None or previous.get("type") != "file":
                return None
            wanted.append((name, st, previous))
        checks = []
        for name, st, previous in wanted:
            self.stats["files_rehashed"] = self.stats.get("files_rehashed", 0) + 1
            future = self.engine.executor.submit(self._rehash_file, dir_fd, name, st)
            self._rehashing.add(future)
            future.add_done_callback(self._rehashing.discard)
            checks.append((future, previous))
        return checks

    def _rehash_file(self, dir_fd: t.Optional[int], name: bytes,
                     st: os.stat_result) -> t.Optional[t.Tuple[str, int]]:
        """On a worker thread: (SHA-256 hex, size) of one file (the hashing releases the GIL, so two files are
        hashed at once on two cores while the walk goes on)."""
        buffers = getattr(self._rehash_buffers, "pair", None)
        if buffers is None:
            buffers = self._rehash_buffers.pair = (bytearray(fmt.CHUNK), bytearray(fmt.CHUNK))
        try:
            fd = self._open_file(dir_fd, name, st)
        except FileNotFoundError:
            return None     # deleted since the listing: the directory takes the full path, which reports it
        try:
            opened = os.fstat(fd)
            if not _same_file(opened, st):
                return None     # replaced since the listing: as above (not content changed behind its stat)
            return _hash_fd(fd, buffers)
        finally:
            os.close(fd)

    def _rehash_matched(self, checks: t.List["_Check"]) -> bool:
        """Wait for a directory's rehash: True when each file still has the content its cached entry records."""
        matched = True
        for future, previous in checks:
            hashed = future.result()
            if hashed is None:
                matched = False
                continue
            digest, size = hashed
            self.stats["bytes_read"] += size
            if matched and (digest != previous.get("sha256") or size != previous.get("size")):
                self.stats["cache_mismatches"] = self.stats.get("cache_mismatches", 0) + 1
                matched = False
        return matched

    def _subdirs(self, dir_fd: t.Optional[int], subdirs: t.List[t.Tuple[bytes, os.stat_result,
                                                                        t.Optional[bcache.CacheRecord]]],
                 path: bytes, dev: t.Optional[int], top: bool) -> t.Dict[bytes, t.Tuple[str, int]]:
        """Back up subdirectories in order; up to LOOKAHEAD of them wait for their file reads at a time, so the
        worker threads always have files to read (a directory of a few small files would otherwise leave them
        idle while this thread walks) and memory stays bounded."""
        results: t.Dict[bytes, t.Tuple[str, int]] = {}
        waiting: "collections.deque[t.Tuple[bytes, _Job]]" = collections.deque()
        for name, st, old_sub in subdirs:
            started = self._subdir(dir_fd, name, st, path, old_sub, dev, top)
            if isinstance(started, tuple) or not started.outstanding:
                # nothing to wait for (a directory of directories, or of unchanged files): its entries are not
                # kept around, whatever the number of its siblings
                results[name] = self.complete(started)
            else:
                waiting.append((name, started))
            while waiting and (len(waiting) > LOOKAHEAD or not waiting[0][1].outstanding):
                first, job = waiting.popleft()
                results[first] = self.complete(job)
        while waiting:
            first, job = waiting.popleft()
            results[first] = self.complete(job)
        return results

    def _subdir(self, dir_fd: t.Optional[int], name: bytes, st: os.stat_result, path: bytes,
                old_sub: t.Optional[bcache.CacheRecord], dev: t.Optional[int], top: bool) -> "_Done":
        full = name if top else path + b"/" + name
        try:
            sub_fd = os.open(name, _DIRFLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            self.skip(full, VANISHED)
            return _GONE
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):     # swapped for a symlink or a file since the listing
                self.skip(full, REPLACED)
                return _GONE
            raise RansomeyeError("cannot open directory %s: %s" % (os.fsdecode(full), exc.strerror))
        self.open_fds.add(sub_fd)
        handed_over = False
        try:
            opened = os.fstat(sub_fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                self.skip(full, REPLACED)
                return _GONE
            result = self.process(sub_fd, _list_dir(sub_fd), full, old_sub, st.st_dev if dev is None else dev, False)
            if isinstance(result, _PendingReuse) or (isinstance(result, _Job) and result.outstanding):
                result.fd = sub_fd        # closed once its reads are done (complete)
                handed_over = True
            return result
        finally:
            if not handed_over:
                self.open_fds.discard(sub_fd)
                os.close(sub_fd)

    def _full(self, dir_fd: t.Optional[int], items: t.List[t.Tuple[bytes, os.stat_result]], path: bytes,
              old: t.Optional[bcache.CacheRecord], dev: t.Optional[int], top: bool, signature: bytes,
              done: t.Optional[t.Dict[bytes, t.Tuple[str, int]]], distrust: bool = False) -> "_Job":
        """Build the directory's entries (``done``: its subdirectories, already processed), start reading its
        changed files on the worker threads and back up its subdirectories meanwhile; ``complete`` encodes the
        tree once the reads are stored. ``distrust``: a rehash found content the cache does not describe, so
        every file of the directory is read (its subdirectories still use their own cache records)."""
        old_entries: t.Dict[bytes, dict] = {}
        if old is not None and not distrust:
            try:
                old_entries = dict(fmt.decode_tree(old.tree, top=top))
            except fmt.FormatError:
                old_entries = {}
        entries: t.List[t.Optional[dict]] = []
        packs: t.Set[str] = set()
        children: t.Dict[bytes, int] = {}
        reads: t.List[t.Tuple[int, bytes, os.stat_result]] = []
        subdirs: t.List[t.Tuple[int, bytes, os.stat_result]] = []
        used_old = False
        prefix = path + b"/"
        b64 = fmt.b64
        stats = self.stats
        for name, st in items:
            mode = st.st_mode
            # built inline (no helper call): this loop runs once per entry of the tree
            entry = {"mode": mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
                     "name": b64(name)}
            if stat.S_ISREG(mode) and st.st_nlink == 1:
                entry.update(type="file", size=st.st_size, ctime_ns=st.st_ctime_ns, inode=st.st_ino)
                stats["files"] += 1
                previous = old_entries.get(name) if old_entries else None
                if previous is not None and self.reusable(previous, st):
                    entry.update(sha256=previous["sha256"], chunks=previous["chunks"])
                    if previous.get("sparse"):
                        entry["sparse"] = True
                    used_old = True
                    stats["files_unchanged"] += 1
                else:
                    reads.append((len(entries), name, st))
                entries.append(entry)
                continue
            full = name if top else prefix + name
            if stat.S_ISDIR(mode):
                if dev is not None and st.st_dev != dev:
                    self.skip(full, "another filesystem")
                    continue
                entry["type"] = "dir"
                subdirs.append((len(entries), name, st))
            elif stat.S_ISLNK(mode):
                entry["type"] = "symlink"
                try:
                    entry["target"] = fmt.b64(os.readlink(name, dir_fd=dir_fd))
                except FileNotFoundError:
                    self.skip(full, VANISHED)
                    continue
                self.stats["symlinks"] += 1
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1:
                    first = self.hardlinks.get((st.st_dev, st.st_ino))
                    if first is not None:
                        entry["type"] = "hardlink"
                        entry["target"] = fmt.b64(first)
                        self.stats["hardlinks"] += 1
                        entries.append(entry)
                        continue
                entry.update(type="file", size=st.st_size, ctime_ns=st.st_ctime_ns, inode=st.st_ino)
                previous = old_entries.get(name)
                if previous is not None and self.reusable(previous, st):
                    entry.update(sha256=previous["sha256"], chunks=previous["chunks"])
                    if previous.get("sparse"):
                        entry["sparse"] = True
                    used_old = True
                    self.stats["files_unchanged"] += 1
                else:
                    # read now, not on the worker threads: the names linked to it, met later, point at this one,
                    # which must not turn out deleted or replaced after they did (they would name nothing)
                    result = self._read_big(dir_fd, name, st, packs)
                    if isinstance(result, str):
                        self.skip(full, result)
                        continue
                    self._set_entry(entry, [blob.hex() for blob, _s, _r, _c in result.chunks], result)
                self.hardlinks[(st.st_dev, st.st_ino)] = full
                self.stats["files"] += 1
            else:
                self.skip(full, "not a regular file, directory or symlink")
                continue
            entries.append(entry)
        if used_old and old is not None:
            packs.update(old.packs)
        job = _Job(entries, packs, children, old, signature, path, top)
        self._read_files(dir_fd, reads, job)
        todo = [(name, st, self.old_child(old, name)) for _pos, name, st in subdirs
                if done is None or name not in done]
        if todo:
            done = dict(done or {})
            done.update(self._subdirs(dir_fd, todo, path, dev, top))
        for position, name, st in subdirs:
            tree_id, offset = t.cast(dict, done)[name]
            if offset < 0:
                entries[position] = None      # deleted since the listing (reported by _subdir)
                continue
            entry = t.cast(dict, entries[position])
            entry["tree"] = tree_id
            children[name] = offset
            self.stats["dirs"] += 1
        return job

    def complete(self, job: "_Done") -> t.Tuple[str, int]:
        """(tree id hex, cache offset) of a directory: waits for its file reads, then encodes and stores its tree."""
        if isinstance(job, _PendingReuse):
            return self._complete_reuse(job)
        if not isinstance(job, _Job):
            return job
        if job.outstanding and any(item[3] is job for item in self._batch):
            self._flush()      # some of its files are still in the batch being collected
        while job.outstanding:
            self._pump()
        if job.fd is not None:
            self.open_fds.discard(job.fd)
            os.close(job.fd)
            job.fd = None
        eng = self.engine
        packs, old = job.packs, job.old
        tree = fmt.encode_tree([e for e in job.entries if e is not None])
        blob = eng.blob_id(fmt.BLOB_TREE, hashlib.sha256(tree).digest())
        if old is not None and old.tree_id == blob.hex():
            packs.update(old.packs)
            self.stats["trees_reused"] += 1
        elif blob in eng.new_blobs:
            packs.add(eng.new_blobs[blob])   # an identical subtree stored earlier in this run
            self.stats["trees_reused"] += 1
        else:
            found = self.index().lookup(blob)
            if found is not None:
                packs.add(found.pack)
                self.stats["trees_reused"] += 1
            else:
                stored, comp = fmt.encode_blob(tree)
                pack_id, new = eng.store_new(eng.tree_writer, blob, stored, len(tree), comp)
                packs.add(pack_id)
                self.stats["trees_new" if new else "trees_reused"] += 1
        self.used_packs.update(packs)
        offset = self.writer.add(bcache.CacheRecord(tree, blob.hex(), sorted(packs), job.children, job.signature))
        return blob.hex(), offset

    def _complete_reuse(self, pending: _PendingReuse) -> t.Tuple[str, int]:
        fd, pending.fd = pending.fd, None
        if self._rehash_matched(pending.checks):
            if fd is not None:
                self.open_fds.discard(fd)
                os.close(fd)
            return self._finish_reuse(pending)
        # the cache no longer describes this directory's content: none of its files is taken from it (a file not
        # picked this time may have changed behind an unchanged stat just as well)
        job = self._full(fd, pending.items, pending.path, pending.old, pending.dev, pending.top, pending.signature,
                         pending.done, distrust=True)
        job.fd = fd
        return self.complete(job)

    def _read_files(self, dir_fd: t.Optional[int], reads: t.List[t.Tuple[int, bytes, os.stat_result]],
                    job: "_Job") -> None:
        """Queue a directory's changed files for the worker threads. Batches mix directories (a directory of a
        few small files is not worth a thread hand-off of its own) and are stored in the order they were queued
        (``_pump``), within a bounded window of batches and bytes in flight."""
        for position, name, st in reads:
            if st.st_size > BIG_FILE:
                result = self._read_big(dir_fd, name, st, job.packs)
                if isinstance(result, str):
                    job.outstanding += 1        # (_vanished counts it down)
                    self._vanished(job, position, name, result)
                    continue
                self._set_entry(job.entries[position], [blob.hex() for blob, _s, _r, _c in result.chunks], result)
                continue
            self._batch.append((dir_fd, name, st, job, position))
            self._batch_bytes += st.st_size
            job.outstanding += 1
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        eng = self.engine
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        while self._inflight and (len(self._inflight) >= eng.window or self._inflight_bytes + size > INFLIGHT_BYTES):
            self._pump()
        self._inflight.append((batch, size, self._batches, eng.executor.submit(self._run_batch, batch, self._batches)))
        self._batches += 1
        self._inflight_bytes += size

    def _run_batch(self, batch: t.List[t.Tuple[t.Optional[int], bytes, os.stat_result, "_Job", int]],
                   number: int) -> None:
        """On a worker thread: read, hash and compress each file of a batch, then store the new blobs of every
        batch that is ready, in the order the batches were queued (whichever worker completes the sequence
        stores it; storing is quick next to reading), so that packs hold files in walk order and a restore,
        which goes in walk order, reads each pack once. ``_collected`` hands the walking thread, per file,
        (result, chunk ids, packs used, new blobs)."""
        outcome: t.Any = []
        try:
            for dir_fd, name, st, job, _pos in batch:
                try:
                    outcome.append(self.read_file(dir_fd, name, st))
                except OSError as exc:     # (unreadable: permission denied, an I/O error) named with its path
                    raise RansomeyeError("cannot read %s: %s" % (job.full(name).decode("utf-8", "backslashreplace"),
                                                                 exc.strerror or exc))
        except BaseException as exc:  # noqa: B902 - handed to the walking thread, which raises it
            outcome = exc
        with self._store_lock:
            self._ready[number] = outcome
            while self._store_next in self._ready:
                done = self._store_next
                results = self._ready.pop(done)
                if not isinstance(results, BaseException):
                    try:
                        with self.engine.lock:     # once per batch (store_new takes it again, cheaply)
                            results = [result if isinstance(result, str) else self._store_file(result)
                                       for result in results]
                    except BaseException as exc:  # noqa: B902 - as above
                        results = exc
                with self._stored_cond:
                    self._stored[done] = results
                    self._stored_cond.notify_all()
                self._store_next += 1

    def _store_file(self, result: FileResult) -> t.Tuple[FileResult, t.List[str], t.Set[str], int]:
        packs: t.Set[str] = set()
        new = 0
        for blob, stored, raw_length, comp in result.chunks:
            pack_id, is_new = self._place(blob, stored, raw_length, comp)
            packs.add(pack_id)
            new += is_new
        return result, [chunk[0].hex() for chunk in result.chunks], packs, new

    def _collected(self, number: int) -> t.List[t.Tuple[FileResult, t.List[str], t.Set[str], int]]:
        with self._stored_cond:
            while number not in self._stored:
                self._stored_cond.wait()
            results = self._stored.pop(number)
        if isinstance(results, BaseException):
            raise results
        return results

    def _place(self, blob: bytes, stored: t.Optional[bytes], raw_length: int, comp: int) -> t.Tuple[str, bool]:
        """(pack holding ``blob``, stored now). ``stored`` is None when the blob was known when it was read."""
        eng = self.engine
        if stored is not None:   # neither the base nor this run had it then: store it unless another file did
            return eng.store_new(eng.data_writer, blob, stored, raw_length, comp)
        earlier = eng.new_blobs.get(blob)
        if earlier is not None:
            # stored by this run for another file: this directory's record must name that pack too, or a
            # later run reusing the directory from the cache would list a manifest without it
            return earlier, False
        found = self.index().lookup(blob)
        if found is not None:
            return found.pack, False
        raise RansomeyeError("internal error: blob %s vanished from the dedup index" % blob.hex())

    def _pump(self) -> None:
        """Store the oldest batch in flight (submitting the one being collected first if nothing is in flight)."""
        if not self._inflight:
            self._flush()
        batch, size, number, future = self._inflight.popleft()
        future.result()
        results = self._collected(number)
        self._inflight_bytes -= size
        stats = self.stats
        for (_fd, name, _st, job, position), done in zip(batch, results):
            if isinstance(done, str):
                self._vanished(job, position, name, done)
                continue
            result, ids, packs, new = done
            self._set_entry(job.entries[position], ids, result)
            job.packs.update(packs)
            job.outstanding -= 1
            stats["blobs_new"] += new
            stats["blobs_reused"] += len(ids) - new
            stats["bytes_read"] += result.size
            stats["files_read"] += 1
        hook("during_artifacts")

    def _vanished(self, job: "_Job", position: int, name: bytes, why: str) -> None:
        """A file of ``job`` deleted or replaced after the listing: left out of its tree, and reported."""
        job.entries[position] = None
        job.outstanding -= 1
        self.stats["files"] -= 1
        self.skip(job.full(name), why)

    def _read_big(self, dir_fd: t.Optional[int], name: bytes, st: os.stat_result,
                  packs: t.Set[str]) -> t.Union[FileResult, str]:
        """A large file: this thread reads it and hashes the whole; its 1 MiB chunks are hashed, compressed and
        stored on the worker threads, a bounded window at a time (memory does not grow with the file). A str: as
        for read_file."""
        eng = self.engine
        try:
            fd = self._open_file(dir_fd, name, st)
        except FileNotFoundError:
            return VANISHED
        try:
            opened = os.fstat(fd)
            if not _same_file(opened, st):
                return REPLACED
            whole = hashlib.sha256()
            ids: t.List[t.Tuple[bytes, t.Optional[bytes], int, int]] = []
            pending: "collections.deque[concurrent.futures.Future]" = collections.deque()
            size = 0

            def drain(limit: int) -> None:
                while len(pending) > limit:
                    blob, stored, raw_length, comp = pending.popleft().result()
                    ids.append((blob, None, raw_length, comp))
                    self._store_chunk(blob, stored, raw_length, comp, packs)

            try:
                while True:
                    data = _read_full(fd, fmt.CHUNK)
                    if not data:
                        break
                    whole.update(data)
                    size += len(data)
                    pending.append(eng.executor.submit(self._encode_chunk, data))
                    drain(eng.window)
                drain(0)
            finally:
                for future in pending:
                    future.cancel()
            sparse = bool(size and hasattr(opened, "st_blocks") and opened.st_blocks * 512 < size)
            self.stats["bytes_read"] += size
            self.stats["files_read"] += 1
            return FileResult(size, whole.hexdigest(), ids, sparse)
        finally:
            os.close(fd)

    def _encode_chunk(self, data: bytes) -> t.Tuple[bytes, t.Optional[bytes], int, int]:
        blob = self.engine.data_blob_id(hashlib.sha256(data).digest())
        if self.known(blob):
            return blob, None, len(data), 0
        stored, comp = fmt.encode_blob(data)
        return blob, stored, len(data), comp

    def _store_chunk(self, blob: bytes, stored: t.Optional[bytes], raw_length: int, comp: int,
                     packs: t.Set[str]) -> None:
        pack_id, new = self._place(blob, stored, raw_length, comp)
        packs.add(pack_id)
        self.stats["blobs_new" if new else "blobs_reused"] += 1

    @staticmethod
    def _set_entry(entry: t.Optional[dict], chunk_ids: t.List[str], result: FileResult) -> None:
        entry = t.cast(dict, entry)
        entry["chunks"] = chunk_ids
        entry["sha256"] = result.sha256
        entry["size"] = result.size
        if result.sparse:
            entry["sparse"] = True

    def run(self) -> dict:
        old_top = self.open_cache()
        items = []
        for root in sorted(self.roots, key=os.fsencode):
            try:
                items.append((os.fsencode(root), os.lstat(root)))
            except FileNotFoundError:
                raise RansomeyeError("%s path %s does not exist" % (self.component, root), path=root)
        try:
            top_id, top_offset = self.complete(self.process(None, items, b"", old_top, None, True))
        except BaseException:
            # no worker may still read through a descriptor about to be closed (its number could be reused)
            for _batch, _size, _number, future in self._inflight:
                future.cancel()
            running = [future for _batch, _size, _number, future in self._inflight]
            running.extend(self._rehashing)
            concurrent.futures.wait(running)
            for fd in self.open_fds:
                os.close(fd)
            self.open_fds.clear()
            self.writer.abort()
            raise
        finally:
            if self.cache_reader is not None:
                self.cache_reader.close()
        self.top = (top_id, top_offset)
        return {"format": fmt.COMPONENT_FORMAT, "paths": list(self.roots), "tree": top_id,
                "skipped": list(self.skipped), "skipped_count": self.stats["skipped_count"],
                "entries": {"files": self.stats["files"], "dirs": self.stats["dirs"],
                            "symlinks": self.stats["symlinks"], "hardlinks": self.stats["hardlinks"]}}

    def commit_cache(self, manifest_seq: int, manifest_sha256: str) -> None:
        eng = self.engine
        self.writer.commit()
        bcache.write_state(self.state_path, eng.mac_key, {
            "v": 1, "repo_id": eng.repo.repo_id, "component": self.component, "context": eng.enc.context,
            "roots": self.roots, "nonce": self.writer.nonce.hex(), "top": self.top[1],
            "manifest_seq": manifest_seq, "manifest_sha256": manifest_sha256, "run_start_ns": eng.run_start_ns,
            "packs": sorted(self.used_packs)})


def _same_file(opened: os.stat_result, listed: os.stat_result) -> bool:
    """The descriptor opened is still the regular file the listing showed (not deleted and replaced by another
    inode, a planted hard link or a FIFO, since)."""
    return (opened.st_dev, opened.st_ino) == (listed.st_dev, listed.st_ino) and stat.S_ISREG(opened.st_mode)


def _hash_fd(fd: int, buffers: t.Tuple[bytearray, bytearray],
             executor: t.Optional[concurrent.futures.Executor] = None) -> t.Tuple[str, int]:
    """(SHA-256 hex, size) of an open file, read into two reused buffers: with an ``executor``, one block is
    hashed on a worker thread while the next is read (both release the GIL), so the rehash of a backup where
    nothing changed costs about the hashing alone."""
    digest = hashlib.sha256()
    size = 0
    hashing: t.Optional[concurrent.futures.Future] = None
    turn = 0
    try:
        while True:
            count = os.readv(fd, [buffers[turn]])
            if hashing is not None:
                hashing.result()      # the other buffer is free again, and the updates stay in order
                hashing = None
            if not count:
                return digest.hexdigest(), size
            block = memoryview(buffers[turn])[:count]
            if executor is None:
                digest.update(block)
            else:
                hashing = executor.submit(digest.update, block)
            size += count
            turn ^= 1
    finally:
        if hashing is not None:
            concurrent.futures.wait([hashing])   # no worker may still read a buffer the caller reuses


def _read_full(fd: int, size: int, left: int = -1) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the file). ``left``: the bytes fstat says remain; a read
    that returns exactly those (and less than ``size``) is taken as the end without asking again."""
    if left == 0:
        return b""
    parts = []
    # ask for no more than fstat says is left: read(2) allocates what it is asked for, and 1 MiB per small
    # file (shrunk right after) is a malloc/free pair per file that also fragments the heap
    wanted = size if left < 0 else min(size, left)
    while wanted:
        data = os.read(fd, wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
        if wanted and len(data) == left:
            break
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_FS_ENCODING = sys.getfilesystemencoding()
_SIG = struct.Struct(">QQIIIqqQQH")


def _signature(items: t.List[t.Tuple[bytes, os.stat_result]]) -> bytes:
    """SHA-256 over a directory's listing: each name and every stat field its tree entry or the cache depends on
    (mode with type bits, owner, times, inode, size, device, link count)."""
    pack = _SIG.pack
    return hashlib.sha256(b"".join([pack(st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                         st.st_ctime_ns, st.st_size, st.st_nlink, len(name)) + name
                                    for name, st in items])).digest()


def _list_dir(fd: int) -> t.List[t.Tuple[bytes, os.stat_result]]:
    with os.scandir(fd) as listing:
        # os.fsencode, inlined: the walk calls this for every entry
        out = [(item.name.encode(_FS_ENCODING, "surrogateescape"), item.stat(follow_symlinks=False))
               for item in listing]
    out.sort(key=lambda pair: pair[0])
    return out


class Engine:
    """One backup run's v2 state shared by its components (packs, new index, new blob set)."""

    def __init__(self, repo: brepo.Repo, enc: t.Any, signer_public: t.Any, manifests: t.List[brepo.LoadedManifest],
                 cache_dir: str, now: float, rehash_percent: float, clock_backwards: bool,
                 warn: t.Callable[[str], None]) -> None:
        self.repo, self.enc, self.signer_public, self.manifests = repo, enc, signer_public, manifests
        self.warn = warn
        self.clock_backwards = clock_backwards
        self.rehash_fraction = max(0.0, min(100.0, float(rehash_percent))) / 100.0
        self.euid = os.geteuid() if hasattr(os, "geteuid") else -1
        self.noatime = bool(_READ_NOATIME != _READ)
        self.run_start_ns = int(now * 1e9)
        secret = t.cast(bytes, bcache.host_secret(cache_dir, repo.repo_id, create=True))
        self.mac_key = bcache.mac_key(secret)
        # aes mode: every host with the key file shares blob ids (dedup across hosts); rsa mode: the
        # host-local secret, which the repository never holds.
        self.id_key = fmt.id_key_for(enc.key if enc.mode == "aes" else secret)
        self.cache_root = os.path.join(cache_dir, repo.repo_id)
        # this run's new blobs and their index records: a few MB in memory, the rest spilled to the host-local
        # cache directory, so memory stays flat however many files are new
        self.records = bspill.Records(self.cache_root)
        self.packs: t.List[str] = []
        self.new_packs: t.Dict[str, dict] = {}
        self.new_blobs = bspill.NewBlobs(self.cache_root)   # blobs this run stored -> the pack each went to
        _malloc.one_arena()   # before the pools below start their threads
        self.workers = max(1, min(4, os.cpu_count() or 1))
        self.window = 3 * self.workers    # batches (or chunks of a large file) in flight
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers)
        # full packs are encrypted and written here: worker threads that store blobs may wait for a pack to be
        # written, which must therefore never queue behind their own tasks
        self.sealer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        prefix = b"ransomeye.ops/v2 blob\x00" + enc.context.encode() + b"\x00"
        self._id_states = {kind: hmac.new(self.id_key, prefix + bytes([kind]), hashlib.sha256)
                           for kind in (fmt.BLOB_DATA, fmt.BLOB_TREE)}
        # A stream (the database dump) is stored from another thread while the walk runs: the pack table,
        # the index records and the new-blob set are shared under this lock.
        self.lock = threading.RLock()   # also the writers' table lock: store_new holds it around writer.add
        self.data_writer = self.new_data_writer()
        self.tree_writer = bpack.PackWriter(repo, enc, fmt.BLOB_TREE, self._on_pack, self.records, self.packs,
                                            self.lock, self.sealer)
        self.writers = [self.data_writer, self.tree_writer]
        self.runs: t.List[t.Any] = []

    def blob_id(self, kind: int, plaintext_sha256: bytes) -> bytes:
        """fmt.blob_id with this run's key and context, without redoing the HMAC key schedule per blob."""
        state = self._id_states[kind].copy()
        state.update(plaintext_sha256)
        return state.digest()

    def data_blob_id(self, plaintext_sha256: bytes) -> bytes:
        return self.blob_id(fmt.BLOB_DATA, plaintext_sha256)

    def _on_pack(self, pack_id: str, record: dict) -> None:
        self.new_packs[pack_id] = record

    def new_data_writer(self) -> bpack.PackWriter:
        writer = bpack.PackWriter(self.repo, self.enc, fmt.BLOB_DATA, self._on_pack, self.records, self.packs,
                                  self.lock, self.sealer)
        if hasattr(self, "writers"):
            self.writers.append(writer)
        return writer

    def store_new(self, writer: bpack.PackWriter, blob: bytes, stored: bytes, raw_length: int,
                  compression: int) -> t.Tuple[str, bool]:
        """(pack holding ``blob``, stored now): adds it to ``writer`` unless this run already stored it. Atomic,
        as a stream (the database dump) stores blobs from another thread while the walk runs."""
        with self.lock:
            earlier = self.new_blobs.get(blob)
            if earlier is not None:
                return earlier, False
            pack_id = writer.add(blob, stored, raw_length, compression)
            self.new_blobs.add(blob, pack_id)
            return pack_id, True

    def stream(self, component: str, params: t.Any) -> t.Any:
        """A StreamRun (plugins/module_utils/_backup/stream.py) for a stream such as a pg_dump."""
        from ansible_collections.ransomeye.ops.plugins.module_utils._backup import stream as bstream
        run = bstream.StreamRun(self, component, params)
        with self.lock:
            self.runs.append(run)
        return run

    def backup(self, component: str, roots: t.List[str]) -> t.Tuple[dict, dict]:
        run = ComponentRun(self, component, roots)
        self.runs.append(run)
        record = run.run()
        stats = dict(run.stats)
        return record, stats

    def finish(self) -> t.Dict[str, dict]:
        """Seal the last packs, write the run's index; return every object the manifest must list."""
        try:
            for writer in self.writers:
                writer.seal()
        finally:
            self.executor.shutdown(wait=True)
            self.sealer.shutdown(wait=True)
        objects: t.Dict[str, dict] = {}
        if len(self.records):
            index_id, index_record = self.records.write_index(self.repo, self.packs)
            self.records.close()
            self.new_blobs.close()
            objects[index_id] = index_record
            hook("index_written")
            for pack_id, record in self.new_packs.items():
                objects[pack_id] = dict(record, index=index_id)
        for run in self.runs:
            base_objects = run.base.objects if run.base is not None else {}
            for pack_id in run.used_packs:
                if pack_id in objects:
                    continue
                record = base_objects.get(pack_id)
                if record is None:
                    raise RansomeyeError("internal error: pack %s is used but was not verified" % pack_id)
                objects[pack_id] = record
                index_id = str(record.get("index"))
                if index_id not in objects:
                    if index_id not in base_objects:
                        raise RansomeyeError("pack %s names index %s that its manifest does not list"
                                             % (pack_id, index_id))
                    objects[index_id] = base_objects[index_id]
        return objects

    def abort(self) -> None:
        self.executor.shutdown(wait=True)
        for writer in self.writers:
            writer.abort()
        self.sealer.shutdown(wait=True)
        self.records.close()
        self.new_blobs.close()
        for run in self.runs:
            run.writer.abort()

    def commit_caches(self, manifest_seq: int, manifest_sha256: str) -> None:
        for run in self.runs:
            try:
                run.commit_cache(manifest_seq, manifest_sha256)
            except OSError as exc:
                self.warn("could not write the host-local cache (%s); the next backup reads every file" % exc)
