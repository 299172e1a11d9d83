# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: reading repository v2 (tree walk, full verify, restore of config and artifacts).

Restore walks the trees once, checking every entry (names, roots, symlink
targets, that every blob is in the backup's index), and stages each file under
a temp name in its final directory, through directory file descriptors
(O_NOFOLLOW at every level: a planted symlink cannot redirect it), on worker
threads that decrypt the packs in the order they are first needed. A pack's
plaintext is authenticated against the signed manifest before any of its blobs
is used, and each file's SHA-256 is checked before it counts as staged; only
when everything is staged and every listed pack authenticated are the files
renamed into place (a failure removes the temp files: nothing is replaced).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import collections
import concurrent.futures
import hashlib
import os
import posixpath
import stat
import struct
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _malloc
from ansible_collections.ransomeye.ops.plugins.module_utils._files import (BeneathRefused, open_dir_at, open_dir_beneath,
                                                                           open_restore_base)
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, pack as bpack

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# opening what an lstat showed to be a regular file: should it have been swapped for a FIFO since, the open must
# not wait for a writer (O_NONBLOCK changes nothing for a regular file), and an fstat then tells
_READ_EXISTING = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
_DIRFLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
RESULT_LIMIT = 10000     # at most this many paths in a restore's files/links results
_RENAME = struct.Struct(">IH")   # a staged file: temp number, name length (the name follows)


class EntryRefused(RansomeyeError):
    """An entry that would escape its target."""


def is_v2(comp: t.Any) -> bool:
    return isinstance(comp, dict) and comp.get("format") == fmt.COMPONENT_FORMAT


def _within(root: bytes, path: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


WRITEBACK_FROM = 256 << 10     # restored files at least this large start their write-back when written


class Event(t.NamedTuple):
    kind: str          # dir, enddir, file, symlink, hardlink
    path: bytes        # absolute original path
    entry: dict


class TreeReader:
    """Trees and blob locations of one manifest (only its packs and indexes are used)."""

    def __init__(self, repo: brepo.Repo, body: dict, decrypt: dict,
                 executor: t.Optional[concurrent.futures.Executor] = None) -> None:
        objects = {k: v for k, v in (body.get("objects") or {}).items() if isinstance(v, dict)}
        self.index = bpack.load_indexes(repo, objects)
        # a few packs decrypted (4 MiB each): enough for two writer threads in pack order, memory stays small;
        # one pack decrypted ahead keeps them fed (two ahead only raised the peak: bench shape A, 94-97 MiB
        # against 98-108 MiB, with no shorter restore)
        self.data = bpack.PackCache(repo, objects, decrypt, executor, keep=4, ahead=1)
        self.trees = bpack.PackCache(repo, objects, decrypt, None, keep=4)

    def locate(self, blob_hex: str, kind: int) -> fmt.IndexEntry:
        found = self.index.lookup(bytes.fromhex(blob_hex))
        if found is None or found.kind != kind:
            raise RansomeyeError("blob %s is not in the backup's index (missing pack or index)" % blob_hex)
        return found

    def tree(self, tree_hex: str, top: bool = False) -> t.List[t.Tuple[bytes, dict]]:
        return fmt.decode_tree(bpack.read_blob(self.trees, self.locate(tree_hex, fmt.BLOB_TREE)), top=top)

    def walk(self, comp: dict) -> t.Iterator[Event]:
        """Every entry, depth first; in a directory its non-directories (by name) before its subdirectories."""
        roots = comp.get("paths")
        if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
            raise EntryRefused("the manifest records no roots")
        root_bytes = [os.fsencode(r) for r in roots]
        for root in root_bytes:
            if not root.startswith(b"/") or posixpath.normpath(root) != root or root == b"/":
                raise EntryRefused("refusing root %r (must be an absolute, normalised path other than /)"
                                   % os.fsdecode(root))
        top = self.tree(str(comp.get("tree")), top=True)
        for name, _entry in top:
            if name not in root_bytes:
                raise EntryRefused("the backup's top tree names %s, which is not a recorded root" % os.fsdecode(name))
        yield from self._entries(top, b"", root_bytes, True, 0)

    def _entries(self, entries: t.List[t.Tuple[bytes, dict]], path: bytes, roots: t.List[bytes], top: bool,
                 depth: int) -> t.Iterator[Event]:
        if depth > 512:
            raise EntryRefused("directory tree deeper than 512 levels")
        dirs = []
        for name, entry in entries:
            full = name if top else path + b"/" + name
            kind = entry["type"]
            if kind == "dir":
                dirs.append((full, entry))
                continue
            if kind == "symlink":
                target = fmt.unb64(entry["target"], "symlink target")
                resolved = posixpath.normpath(target if target.startswith(b"/")
                                              else posixpath.join(posixpath.dirname(full), target))
                if not any(_within(r, resolved) for r in roots):
                    raise EntryRefused("refusing symlink %s -> %s pointing outside the restored tree"
                                       % (os.fsdecode(full), os.fsdecode(target)))
            elif kind == "hardlink":
                target = fmt.unb64(entry["target"], "hard link target")
                if posixpath.normpath(target) != target or not any(_within(r, target) for r in roots):
                    raise EntryRefused("refusing hard link %s to %s outside the restored tree"
                                       % (os.fsdecode(full), os.fsdecode(target)))
            yield Event(kind, full, entry)
        for full, entry in dirs:
            yield Event("dir", full, entry)
            yield from self._entries(self.tree(entry["tree"]), full, roots, False, depth + 1)
            yield Event("enddir", full, entry)

    def plan(self, comp: dict) -> t.Tuple[t.List[str], dict]:
        """Check every entry and blob; return (packs in the order the restore needs them, counts)."""
        order: t.List[str] = []
        seen: t.Set[str] = set()
        counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0}
        for event in self.walk(comp):
            if event.kind == "file":
                counts["files"] += 1
                counts["bytes"] += event.entry["size"]
                total = 0
                for blob in event.entry["chunks"]:
                    found = self.locate(blob, fmt.BLOB_DATA)
                    total += found.raw_length
                    if found.pack not in seen:
                        seen.add(found.pack)
                        order.append(found.pack)
                if total != event.entry["size"]:
                    raise RansomeyeError("file %s: its chunks hold %d bytes, its entry says %d"
                                         % (os.fsdecode(event.path), total, event.entry["size"]))
            elif event.kind == "dir":
                counts["dirs"] += 1
            elif event.kind in ("symlink", "hardlink"):
                counts[event.kind + "s"] += 1
        return order, counts

    def close(self) -> None:
        self.data.close()
        self.trees.close()


def verify_component(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict,
                     proven: t.Optional[t.Set[str]] = None) -> t.Optional[str]:
    """Full verify of a v2 component (None: fine): every tree decodes, every blob is located, and every file's
    chunks, read from packs authenticated against the signed manifest, hash to the size and SHA-256 its entry
    records, the check a restore makes before it keeps a file. ``proven``: ids of trees whose whole subtree an
    earlier call of this verify run proved (backups share unchanged trees); they are not read again, and the
    trees this call proves are added."""
    proven = set() if proven is None else proven
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as executor:
        reader = TreeReader(repo, body, decrypt, executor)
        try:
            order, _counts = reader.plan(comp)
            reader.data.set_order(order)
            top_id = str(comp.get("tree"))
            if top_id not in proven:
                _prove_tree(reader, reader.tree(top_id, top=True), b"", True, proven)
                proven.add(top_id)
        except RansomeyeError as exc:
            return exc.msg
        finally:
            reader.close()
    return None


def _prove_tree(reader: TreeReader, entries: t.List[t.Tuple[bytes, dict]], path: bytes, top: bool,
                proven: t.Set[str]) -> None:
    """Hash the content of every file below a tree (files before subdirectories, the order ``plan`` gave the
    packs in); the structure was checked by ``plan`` already."""
    dirs = []
    for name, entry in entries:
        full = name if top else path + b"/" + name
        if entry["type"] == "dir":
            dirs.append((full, entry["tree"]))
        elif entry["type"] == "file":
            digest = hashlib.sha256()
            size = 0
            for blob in entry["chunks"]:
                data = bpack.read_blob(reader.data, reader.locate(blob, fmt.BLOB_DATA))
                digest.update(data)
                size += len(data)
            if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
                raise RansomeyeError("file %s: its chunks do not hash to the size and SHA-256 its entry records "
                                     "(a restore would refuse it)" % os.fsdecode(full))
    for full, tree_id in dirs:
        if tree_id not in proven:
            _prove_tree(reader, reader.tree(tree_id), full, False, proven)
            proven.add(tree_id)


def stream_segments(reader: TreeReader, comp: dict) -> t.Iterator[t.Tuple[dict, t.List[fmt.IndexEntry]]]:
    """(file entry, its located chunks) of each segment of a v2 stream (the database dump), in stream order.

    Every entry is checked against the format (5.12): the top tree holds ``dir`` entries named 00000000,
    00000001, ...; each of their trees holds exactly one ``file`` entry with the stream's name, whose chunks are
    located data blobs adding up to its size. The sizes of all segments must add up to the signed ``size``
    (checked once the last segment was given out). One segment's chunk list is in memory at a time.
    """
    top = reader.tree(str(comp.get("tree")))
    if not top:
        raise RansomeyeError("the stream's tree is empty")
    total = 0
    for number, (name, seg) in enumerate(top):
        if name != b"%08d" % number or seg["type"] != "dir":
            raise RansomeyeError("the stream's tree has an unexpected entry %r" % name[:40])
        entries = reader.tree(seg["tree"])
        if len(entries) != 1 or entries[0][1]["type"] != "file" or fmt.b64(entries[0][0]) != comp.get("name"):
            raise RansomeyeError("stream segment %d does not hold exactly one file entry named as the stream"
                                 % number)
        entry = entries[0][1]
        located = [reader.locate(blob, fmt.BLOB_DATA) for blob in entry["chunks"]]
        if sum(found.raw_length for found in located) != entry["size"]:
            raise RansomeyeError("the chunks of stream segment %d do not add up to its size" % number)
        total += entry["size"]
        yield entry, located
    if total != comp.get("size"):
        raise RansomeyeError("the stream's segments hold %d bytes, the manifest says %s" % (total, comp.get("size")))


def verify_stream(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict,
                  proven: t.Optional[t.Set[str]] = None) -> t.Optional[str]:
    """Full verify of a v2 stream (None: fine): its trees, every chunk located, sizes adding up, and its
    plaintext read as a restore reads it, each segment's and the whole stream's SHA-256 compared. ``proven``: as
    for verify_component (the same dump in several backups is read once per verify run)."""
    proven = set() if proven is None else proven
    key = "stream:%s:%s" % (comp.get("tree"), comp.get("sha256"))
    if key in proven:
        return None
    try:
        for _data in stream_chunks(repo, body, comp, decrypt):
            pass
    except RansomeyeError as exc:
        return exc.msg
    proven.add(key)
    return None


def stream_chunks(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict) -> t.Iterator[bytes]:
    """The stream's plaintext in order, for pg_restore's stdin: packs are decrypted ahead by worker threads and
    each is authenticated against the signed manifest before a byte of it is yielded; nothing touches the disk.
    Each segment's and the whole stream's SHA-256 are compared as they end (a mismatch raises, failing the
    restore before anything is swapped)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        reader = TreeReader(repo, body, decrypt, executor)
        try:
            whole = hashlib.sha256()
            for entry, located in stream_segments(reader, comp):
                order: t.List[str] = []
                seen: t.Set[str] = set()
                for found in located:
                    if found.pack not in seen:
                        seen.add(found.pack)
                        order.append(found.pack)
                reader.data.set_order(order)
                part = hashlib.sha256()
                for found in located:
                    data = bpack.read_blob(reader.data, found)
                    part.update(data)
                    whole.update(data)
                    yield data
                if part.hexdigest() != entry["sha256"]:
                    raise RansomeyeError("a segment of the restored stream does not match its recorded SHA-256")
            if whole.hexdigest() != comp.get("sha256"):
                raise RansomeyeError("the restored stream does not match its recorded SHA-256")
        finally:
            reader.close()


class _Dir:
    """A directory the restore writes into: its descriptor while entries are being staged, and what its commit
    does (renames of staged temp files, mode fixes), then its own mode and mtime."""

    __slots__ = ("root", "rel", "meta", "fd", "busy", "ended", "renames", "fixes", "created", "plain")

    def __init__(self, root: bytes, rel: t.Tuple[bytes, ...], entry: t.Optional[dict], fd: t.Optional[int]) -> None:
        self.root = root          # the recorded root this directory belongs to
        self.rel = rel            # names below the root's parent directory (() = that parent itself)
        # (mode, uid, gid, mtime_ns) from its tree entry; None: a root's parent, left as it is
        self.meta = None if entry is None else (entry["mode"], entry.get("uid"), entry.get("gid"), entry.get("mtime_ns"))
        self.fd = fd
        self.busy = 0             # staged files not finished yet
        self.ended = False
        # staged temp files to rename, packed (_RENAME + name: a few bytes each, a restore of a million files
        # keeps them all until the commit), and existing files whose mode or owner must be fixed
        self.renames = bytearray()
        self.fixes: t.List[t.Tuple[bytes, int, t.Any, t.Any]] = []
        self.created = False
        self.plain = False        # created by this run, ours, no set-group-id bit: new files in it are ours too

    def add_rename(self, number: int, name: bytes) -> None:
        self.renames += _RENAME.pack(number, len(name)) + name

    def iter_renames(self) -> t.Iterator[t.Tuple[int, bytes]]:
        data, pos = self.renames, 0
        while pos < len(data):
            number, length = _RENAME.unpack_from(data, pos)
            pos += _RENAME.size
            yield number, bytes(data[pos:pos + length])
            pos += length


class Restorer:
    """Writes one v2 component under ``dest`` (or at the original paths), in two steps.

    ``stage`` writes every file to a temp name in its final directory (worker
    threads decrypt the packs in the order they are needed, authenticate each
    against the signed manifest, and hash each file against its tree entry
    before it counts as staged); ``commit`` then renames them into place and
    sets directory modes and times. Nothing is renamed before every pack the
    restore reads has been authenticated, so a damaged or forged pack stops
    the restore with nothing written: ``abort`` removes the temp files and the
    directories this run created.
    """

    BATCH_FILES = 64
    BATCH_BYTES = 8 << 20
    INLINE_MEAN_BYTES = 64 << 10   # batches of smaller files on average are written inline (see _flush)

    def __init__(self, reader: TreeReader, dest: t.Optional[str], check_mode: bool,
                 writers: t.Optional[concurrent.futures.Executor] = None,
                 keep_live: t.AbstractSet[str] = frozenset()) -> None:
        self.reader = reader
        # Live files the restore leaves as they are (the certificate guard): never replaced, not even briefly.
        self.keep_live = frozenset(os.fsencode(p) for p in keep_live) if not dest else frozenset()
        self.dest = os.fsencode(os.path.abspath(dest)) if dest else b""
        self.check_mode = check_mode
        self.writers = writers
        self.is_root = os.geteuid() == 0
        self.owner = (os.geteuid(), os.getegid())
        self.umask = os.umask(0o077)   # read it (there is no other way), and put it back at once
        os.umask(self.umask)
        self.stats = {"files_restored": 0, "files_unchanged": 0, "links_restored": 0, "hardlinks_restored": 0,
                      "dirs_created": 0, "modes_fixed": 0, "bytes_written": 0, "packs_read": 0,
                      "files_kept_live": 0}
        self.files: t.Dict[str, str] = {}
        self.links: t.Dict[str, str] = {}
        self.truncated = False
        self.changed = False
        self.counter = 0
        self.token = b"%d-%s" % (os.getpid(), os.urandom(6).hex().encode())   # temp names unique to this run
        self.started = time.monotonic()
        self.dirs: t.List[_Dir] = []          # every directory touched, in the order it was opened
        self.commit_order: t.List[_Dir] = []  # post-order: a directory after everything below it
        self.hardlinks: t.List[t.Tuple[_Dir, bytes, bytes, dict]] = []
        self.created_paths: t.List[bytes] = []  # directories this run created (absolute, in creation order)
        self.devices: t.Dict[int, bytes] = {}   # filesystems written to -> a directory on each (for syncfs)
        self.futures: "collections.deque[t.Tuple[list, concurrent.futures.Future]]" = collections.deque()
        self.batch: t.List[tuple] = []
        self.batch_bytes = 0

    # ---- helpers
    def _note(self, table: t.Dict[str, str], path: bytes, value: str) -> None:
        if len(table) < RESULT_LIMIT:
            table[os.fsdecode(path)] = value
        else:
            self.truncated = True

    def _tmp_name(self, number: int) -> bytes:
        return b".ransomeye-tmp-%s-%d" % (self.token, number)

    def _tmp(self) -> t.Tuple[int, bytes]:
        self.counter += 1
        return self.counter, self._tmp_name(self.counter)

    def _lstat(self, dir_fd: t.Optional[int], name: bytes) -> t.Optional[os.stat_result]:
        if dir_fd is None:
            return None
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _needs_owner_mode(self, entry: dict, st: t.Optional[os.stat_result]) -> bool:
        if st is None or stat.S_IMODE(st.st_mode) != entry["mode"]:
            return True
        return self.is_root and (st.st_uid, st.st_gid) != (entry.get("uid"), entry.get("gid"))

    def _apply_owner_mode(self, fd: int, mode: int, uid: t.Any, gid: t.Any) -> None:
        # owner first: a chown clears the set-user-id and set-group-id bits, also for root
        if self.is_root:
            os.fchown(fd, int(uid if uid is not None else -1), int(gid if gid is not None else -1))
        os.fchmod(fd, mode)

    def _open_root_parent(self, root: bytes) -> t.Tuple[t.Optional[int], bytes]:
        """(descriptor of the directory that holds the root's target, its name); under ``dest`` every directory
        from ``dest`` down is opened with O_NOFOLLOW (_files.open_dir_beneath), so a symlink planted anywhere
        below ``dest`` cannot take the restore elsewhere."""
        if self.dest:
            base, parts = self.dest, [p for p in root.split(b"/") if p]
        else:
            base, parts = posixpath.dirname(root), [posixpath.basename(root)]
        if not self.check_mode:
            missing = base
            while missing != b"/" and not os.path.lexists(missing):
                self.created_paths.append(missing)   # made by open_restore_base below (removed on abort)
                missing = posixpath.dirname(missing)
        base_fd = open_restore_base(base, create=not self.check_mode)
        if base_fd is None:
            return None, parts[-1]
        try:
            return open_dir_beneath(base_fd, [os.fsdecode(p) for p in parts[:-1]], create=not self.check_mode,
                                    created=self._created, where=os.fsdecode(base)), parts[-1]
        except FileNotFoundError:
            return None, parts[-1]  # check mode: the restore would create it
        except BeneathRefused as exc:
            raise EntryRefused("refusing to restore %s: %s" % (os.fsdecode(self.dest + root), exc.msg))
        finally:
            os.close(base_fd)

    def _created(self, path: str) -> None:
        self.changed = True
        self.stats["dirs_created"] += 1
        self.created_paths.append(os.fsencode(path))

    # ---- staging
    def _dir(self, parent_fd: t.Optional[int], name: bytes, path: bytes,
             fresh: bool = False) -> t.Tuple[t.Optional[int], bool]:
        st = None if fresh else self._lstat(parent_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a symlink" % os.fsdecode(self.dest + path))
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a non-directory" % os.fsdecode(self.dest + path))
        created = False
        if st is None:
            self.changed = True
            self.stats["dirs_created"] += 1
            if self.check_mode or parent_fd is None:
                return None, False
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            self.created_paths.append(self.dest + path)
            created = True
        if parent_fd is None:
            return None, False  # check mode below a directory that does not exist yet
        try:
            return os.open(name, _DIRFLAGS, dir_fd=parent_fd), created
        except OSError as exc:
            raise EntryRefused("refusing to restore into %s: %s" % (os.fsdecode(self.dest + path), exc.strerror))

    def _file_job(self, dir_fd: t.Optional[int], name: bytes, path: bytes, entry: dict, tmp: bytes,
                  blobs: t.List[fmt.IndexEntry], fresh: bool = False, plain: bool = False) -> t.Tuple[str, int]:
        """On a worker thread: ("same" | "mode" | "would" | "written", bytes written). ``fresh``: the directory
        was created by this run, so there is nothing to compare with (one lstat less per file); ``plain``: a new
        file in it is owned by this process's user and group."""
        st = None if fresh else self._lstat(dir_fd, name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a file" % os.fsdecode(self.dest + path))
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry["size"] and dir_fd is not None:
            if _hash_at(dir_fd, name) == entry["sha256"]:
                return ("mode" if self._needs_owner_mode(entry, st) else "same"), 0
        if self.check_mode or dir_fd is None:
            return "would", 0
        # Created with its permission bits, so that most files need no chmod (nor a chown in a directory this run
        # created, when the owner is ours): two system calls less per file, which a restore of many small files
        # feels. Its content comes only from packs already authenticated against the signed manifest.
        created_mode = entry["mode"] & 0o777 & ~self.umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, created_mode, dir_fd=dir_fd)
        try:
            digest = hashlib.sha256()
            offset = 0
            sparse = bool(entry.get("sparse"))
            for located in blobs:
                data = bpack.read_blob(self.reader.data, located)
                digest.update(data)
                if not sparse:
                    os.pwrite(fd, data, offset)
                else:
                    # holes come back as holes: all-zero 64 KiB pieces are skipped (ftruncate sets the size)
                    view = memoryview(data)
                    for start in range(0, len(data), 65536):
                        piece = view[start:start + 65536]
                        if data.count(0, start, start + 65536) != len(piece):
                            os.pwrite(fd, piece, offset + start)
                offset += len(data)
            if sparse:
                os.ftruncate(fd, offset)   # a trailing hole
            if digest.hexdigest() != entry["sha256"] or offset != entry["size"]:
                raise RansomeyeError("restored content of %s does not match the backup; the file was left as it was"
                                     % os.fsdecode(path))
            if self.is_root and not (plain and (entry.get("uid"), entry.get("gid")) == self.owner):
                os.fchown(fd, int(entry["uid"] if entry.get("uid") is not None else -1),
                          int(entry["gid"] if entry.get("gid") is not None else -1))
            if entry["mode"] & 0o7777 != created_mode:
                os.fchmod(fd, entry["mode"])   # after the chown, which would clear set-user-id and set-group-id
            os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            if offset >= WRITEBACK_FROM:
                # its write-back starts now, while later files are written: the flush at the end of the restore
                # then waits for what is left, not for every byte written
                brepo.start_writeback(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        return "written", offset

    def _run_batch(self, batch: t.List[tuple]) -> t.List[t.Tuple[str, int]]:
        results: t.List[t.Tuple[str, int]] = []
        try:
            for holder, name, path, entry, number, blobs in batch:
                results.append(self._file_job(holder.fd, name, path, entry, self._tmp_name(number), blobs,
                                              holder.created, holder.plain))
        except BaseException:
            # the batch fails as a whole: its files staged so far are never handed back, so remove them here
            for (holder, _name, _path, _entry, number, _blobs), (outcome, _n) in zip(batch, results):
                if outcome == "written":
                    try:
                        os.unlink(self._tmp_name(number), dir_fd=holder.fd)
                    except FileNotFoundError:
                        pass
            raise
        return results

    def _queue_file(self, holder: _Dir, name: bytes, path: bytes, entry: dict) -> None:
        if path in self.keep_live:
            self._note(self.files, self.dest + path, entry["sha256"])
            self.stats["files_kept_live"] += 1
            return
        blobs = []
        total = 0
        for blob in entry["chunks"]:
            located = self.reader.locate(blob, fmt.BLOB_DATA)
            self.reader.data.note(located.pack)
            total += located.raw_length
            blobs.append(located)
        if total != entry["size"]:
            raise RansomeyeError("file %s: its chunks hold %d bytes, its entry says %d"
                                 % (os.fsdecode(path), total, entry["size"]))
        self._note(self.files, self.dest + path, entry["sha256"])
        number, _tmp = self._tmp()
        holder.busy += 1
        self.batch.append((holder, name, path, entry, number, blobs))
        self.batch_bytes += entry["size"]
        if len(self.batch) >= self.BATCH_FILES or self.batch_bytes >= self.BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, batch_bytes, self.batch, self.batch_bytes = self.batch, self.batch_bytes, [], 0
        if self.writers is None or batch_bytes < len(batch) * self.INLINE_MEAN_BYTES:
            # Small files are written here, not on the writer threads: each of their six or so system calls
            # would hand the GIL between this thread and a writer (two futex calls each, 13 per file counted).
            # A restore of 200,000 files of 1-4 KiB to tmpfs took 16.7-17.8 s (sys 7.5-8.0 s) on the writers,
            # 10.6-10.8 s (sys 3.7-3.8 s) written here; big files still overlap their hashing and writing there.
            self._collect(batch, self._run_batch(batch))
            return
        self.futures.append((batch, self.writers.submit(self._run_batch, batch)))
        while len(self.futures) > 4:
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        batch, future = self.futures.popleft()
        self._collect(batch, future.result())

    def _collect(self, batch: t.List[tuple], results: t.List[t.Tuple[str, int]]) -> None:
        for (holder, name, _path, entry, number, _blobs), (outcome, written) in zip(batch, results):
            holder.busy -= 1
            if outcome == "written":
                holder.add_rename(number, name)
                self.stats["files_restored"] += 1
                self.stats["bytes_written"] += written
                self.changed = True
            elif outcome == "would":
                self.stats["files_restored"] += 1
                self.changed = True
            elif outcome == "mode":
                holder.fixes.append((name, entry["mode"], entry.get("uid"), entry.get("gid")))
                self.stats["modes_fixed"] += 1
                self.changed = True
            else:
                self.stats["files_unchanged"] += 1
            self._release(holder)

    def _release(self, holder: _Dir) -> None:
        if holder.ended and holder.busy == 0 and holder.fd is not None:
            os.close(holder.fd)
            holder.fd = None

    def _symlink(self, holder: _Dir, name: bytes, path: bytes, entry: dict) -> None:
        dir_fd = holder.fd
        target = fmt.unb64(entry["target"], "symlink target")
        if self.dest and target.startswith(b"/"):
            target = self.dest + target  # keep absolute links inside the restored tree
        self._note(self.links, self.dest + path, os.fsdecode(target))
        st = self._lstat(dir_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dir_fd) == target:
            return
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a symlink" % os.fsdecode(self.dest + path))
        self.changed = True
        self.stats["links_restored"] += 1
        if self.check_mode or dir_fd is None:
            return
        number, tmp = self._tmp()
        os.symlink(target, tmp, dir_fd=dir_fd)
        holder.add_rename(number, name)
        if self.is_root:
            os.chown(tmp, int(entry.get("uid", -1)), int(entry.get("gid", -1)), dir_fd=dir_fd, follow_symlinks=False)

    def stage(self, comp: dict) -> None:
        """Write every file to a temp name beside its target, checking each entry on the way (nothing is
        replaced yet: a refusal anywhere, or a pack that fails authentication, leaves ``abort`` to undo it)."""
        stack: t.List[_Dir] = []
        holder: t.Optional[_Dir] = None   # the directory that holds the current root
        try:
            for event in self.reader.walk(comp):
                top = not stack
                if top:
                    parent_fd, name = self._open_root_parent(event.path)
                    holder = _Dir(event.path, (), None, parent_fd)
                    self.dirs.append(holder)
                    if parent_fd is not None and not self.check_mode:
                        self.devices.setdefault(os.fstat(parent_fd).st_dev, self.dest + posixpath.dirname(event.path))
                    parent = holder
                else:
                    parent, name = stack[-1], posixpath.basename(event.path)
                if event.kind == "dir":
                    fd, created = self._dir(parent.fd, name, event.path, parent.created)
                    child = _Dir(parent.root, parent.rel + (name,), event.entry, fd)
                    child.created = created
                    if created and fd is not None:
                        st = os.fstat(fd)
                        child.plain = (st.st_uid, st.st_gid) == self.owner and not st.st_mode & stat.S_ISGID
                    self.dirs.append(child)
                    stack.append(child)
                    continue
                if event.kind == "enddir":
                    done = stack.pop()
                    done.ended = True
                    self.commit_order.append(done)
                    self._release(done)
                elif event.kind == "file":
                    self._queue_file(parent, name, event.path, event.entry)
                elif event.kind == "symlink":
                    self._symlink(parent, name, event.path, event.entry)
                else:
                    self.hardlinks.append((parent, name, event.path, event.entry))
                if not stack and holder is not None:
                    holder.ended = True
                    self.commit_order.append(holder)
                    self._release(holder)
                    holder = None
            self._flush()
            while self.futures:
                self._collect_oldest()
        finally:
            for pending in stack:
                pending.ended = True
            if holder is not None:
                holder.ended = True
        self.stats["packs_read"] = self.reader.data.packs_read

    # ---- commit / abort
    def _opener(self) -> t.Tuple[t.Callable[[_Dir], int], t.Callable[[_Dir], None], t.Callable[[], None]]:
        """open(dir), done(dir), close_all(): directories reopened by name from the root's parent down, each
        component with O_NOFOLLOW (a symlink swapped in since the staging is refused)."""
        cache: t.Dict[t.Tuple[bytes, t.Tuple[bytes, ...]], int] = {}

        def open_key(root: bytes, rel: t.Tuple[bytes, ...]) -> int:
            key = (root, rel)
            if key in cache:
                return cache[key]
            if not rel:
                fd, _name = self._open_root_parent(root)
                if fd is None:
                    raise RansomeyeError("the directory holding %s vanished during the restore" % os.fsdecode(root))
            else:
                parent = open_key(root, rel[:-1])
                try:
                    fd = open_dir_at(parent, os.fsdecode(rel[-1]), os.fsdecode(self.dest + root))
                except BeneathRefused as exc:
                    raise EntryRefused("refusing to restore into %s: %s" % (os.fsdecode(self.dest + root), exc.msg))
            cache[key] = fd
            return fd

        def done(d: _Dir) -> None:
            fd = cache.pop((d.root, d.rel), None)
            if fd is not None:
                os.close(fd)

        def close_all() -> None:
            while cache:
                os.close(cache.popitem()[1])
        return (lambda d: open_key(d.root, d.rel)), done, close_all

    def commit(self) -> None:
        """Rename the staged files into place, then hard links, then directory modes and times (post-order)."""
        if self.check_mode:
            return
        open_dir, done, close_all = self._opener()
        try:
            separate = bool(self.hardlinks)   # links need every file in place before any directory's mtime is set
            for d in self.commit_order:
                if not d.renames and not d.fixes and (d.meta is None or separate):
                    continue
                fd = open_dir(d)
                for number, name in d.iter_renames():
                    os.rename(self._tmp_name(number), name, src_dir_fd=fd, dst_dir_fd=fd)
                    hook("file_restored")
                for name, mode, uid, gid in d.fixes:
                    file_fd = os.open(name, _READ_EXISTING, dir_fd=fd)
                    try:
                        if stat.S_ISREG(os.fstat(file_fd).st_mode):   # not whatever was swapped in since
                            self._apply_owner_mode(file_fd, mode, uid, gid)
                    finally:
                        os.close(file_fd)
                d.renames, d.fixes = bytearray(), []
                if d.meta is not None and not separate:
                    self._end_dir(fd, d.meta)
                done(d)
            if separate:
                for holder, name, path, entry in self.hardlinks:
                    self._hardlink(open_dir(holder), name, path, entry)
                close_all()
                for d in self.commit_order:
                    if d.meta is not None:
                        self._end_dir(open_dir(d), d.meta)
                        done(d)
        finally:
            close_all()

    def _end_dir(self, fd: int, meta: t.Tuple[int, t.Any, t.Any, t.Any]) -> None:
        entry = {"mode": meta[0], "uid": meta[1], "gid": meta[2], "mtime_ns": meta[3]}
        st = os.fstat(fd)
        if self._needs_owner_mode(entry, st):
            self._apply_owner_mode(fd, entry["mode"], entry.get("uid"), entry.get("gid"))
            self.stats["modes_fixed"] += 1
            self.changed = True
        if st.st_mtime_ns != entry.get("mtime_ns") and isinstance(entry.get("mtime_ns"), int):
            os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))

    def _hardlink(self, dir_fd: int, name: bytes, path: bytes, entry: dict) -> None:
        target = self.dest + fmt.unb64(entry["target"], "hard link target")
        try:
            tst = os.lstat(target)
        except FileNotFoundError:
            tst = None
        if tst is None or not stat.S_ISREG(tst.st_mode):
            raise EntryRefused("hard link %s: its target %s was not restored as a file"
                               % (os.fsdecode(self.dest + path), os.fsdecode(target)))
        st = self._lstat(dir_fd, name)
        if st is not None and (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
            return
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a hard link" % os.fsdecode(self.dest + path))
        self.changed = True
        self.stats["hardlinks_restored"] += 1
        _number, tmp = self._tmp()
        os.link(target, tmp, dst_dir_fd=dir_fd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def check_hardlinks(self) -> None:
        """Check mode: what the commit would do with the hard links."""
        for holder, name, path, entry in self.hardlinks:
            target = self.dest + fmt.unb64(entry["target"], "hard link target")
            st = self._lstat(holder.fd, name) if holder.fd is not None else None
            try:
                tst = os.lstat(target)
            except FileNotFoundError:
                tst = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise EntryRefused("refusing to replace directory %s with a hard link"
                                   % os.fsdecode(self.dest + path))
            if st is None or tst is None or (st.st_dev, st.st_ino) != (tst.st_dev, tst.st_ino):
                self.changed = True
                self.stats["hardlinks_restored"] += 1

    def abort(self) -> None:
        """Undo the staging: wait for the workers, remove every temp file, then the directories this run made."""
        while self.futures:
            batch, future = self.futures.popleft()
            try:
                self._collect(batch, future.result())
            except BaseException:  # noqa: B902 - the first failure is what the caller reports
                for holder, *_rest in batch:
                    holder.busy -= 1
        for d in self.dirs:
            d.ended = True
            d.busy = 0
            self._release(d)
        if self.check_mode:
            return
        open_dir, done, close_all = self._opener()
        try:
            for d in self.dirs:
                temps = [number for number, _name in d.iter_renames()]
                if not temps:
                    continue
                try:
                    fd = open_dir(d)
                except (OSError, RansomeyeError):
                    continue
                for number in temps:
                    try:
                        os.unlink(self._tmp_name(number), dir_fd=fd)
                    except FileNotFoundError:
                        pass
                d.renames = bytearray()
        finally:
            close_all()
        for path in reversed(self.created_paths):
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty: something else is in it now; left as it is
        self.created_paths = []

    def close_all(self) -> None:
        for d in self.dirs:
            if d.fd is not None:
                os.close(d.fd)
                d.fd = None

    def result_stats(self) -> dict:
        out = dict(self.stats)
        out["duration"] = round(time.monotonic() - self.started, 3)
        return out


def _hash_at(dir_fd: int, name: bytes) -> str:
    """SHA-256 hex of an existing regular file; "" (equal to no recorded hash) when ``name`` is no longer one."""
    fd = os.open(name, _READ_EXISTING, dir_fd=dir_fd)
    digest = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def restore_components(repo: brepo.Repo, body: dict, comps: t.List[t.Tuple[str, dict]], decrypt: dict,
                       dest: t.Optional[str], check_mode: bool,
                       keep_live: t.Optional[t.Dict[str, t.AbstractSet[str]]] = None) -> t.Dict[str, Restorer]:
    """Restore v2 components: stage all, authenticate every pack the manifest lists, then commit all.

    One read of each pack: its container is decrypted and authenticated, its
    plaintext compared with the signed SHA-256, while the files are staged
    (the restore's verify step checks the packs' sizes only). A pack nothing
    reads is authenticated as well before the first rename, so a damaged
    backup is refused with nothing written, as before.
    """
    _malloc.one_arena()   # before the pools below start their threads
    workers = max(1, min(4, os.cpu_count() or 1))
    restorers: t.Dict[str, Restorer] = {}
    readers: t.List[TreeReader] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as loaders, \
            concurrent.futures.ThreadPoolExecutor(max_workers=workers) as writers:
        try:
            loaded: t.Set[str] = set()
            for name, comp in comps:
                reader = TreeReader(repo, body, decrypt, loaders)
                readers.append(reader)
                restorer = restorers[name] = Restorer(reader, dest, check_mode, writers,
                                                      (keep_live or {}).get(name, frozenset()))
                restorer.stage(comp)
                loaded |= reader.data.loaded | reader.trees.loaded
            objects = {k: v for k, v in (body.get("objects") or {}).items() if isinstance(v, dict)}
            rest = sorted(oid for oid, rec in objects.items() if rec.get("kind") == "pack" and oid not in loaded)
            if rest:
                checker = bpack.PackCache(repo, objects, decrypt)
                for future in [loaders.submit(checker.authenticate, oid) for oid in rest]:
                    future.result()
            for restorer in restorers.values():
                if check_mode:
                    restorer.check_hardlinks()
                restorer.close_all()
                restorer.commit()
        except BaseException as exc:
            for restorer in reversed(list(restorers.values())):
                restorer.abort()
            if isinstance(exc, RansomeyeError) and not isinstance(exc, EntryRefused):
                raise RansomeyeError("refusing to restore: %s (this run's temp files and new directories were "
                                     "removed; nothing was replaced)" % exc.msg, **exc.details)
            raise
        finally:
            for reader in readers:
                reader.close()
            for restorer in restorers.values():
                restorer.close_all()
    if not check_mode and any(r.changed for r in restorers.values()):
        devices: t.Dict[int, bytes] = {}
        for restorer in restorers.values():
            devices.update(restorer.devices)
        # one flush per filesystem written to (roots may lie on several) instead of an fsync per file and per
        # directory: on ext4 each fsync waits for a journal commit, a restore of many small files would wait for
        # one per file
        for path in sorted(set(devices.values())) or [os.fsencode(os.path.abspath(dest) if dest else "/")]:
            brepo._syncfs(os.fsdecode(path))
    return restorers


def restore_component(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict, dest: t.Optional[str],
                      check_mode: bool, keep_live: t.AbstractSet[str] = frozenset()) -> Restorer:
    return restore_components(repo, body, [("component", comp)], decrypt, dest, check_mode,
                              {"component": keep_live})["component"]
