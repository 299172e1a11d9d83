# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: reading repository v2 (tree walk, full verify, restore of config and artifacts).

Restore runs in two passes over the trees: the first checks every entry
(names, roots, symlink targets, that every blob is in the backup's index)
before anything is written and fixes the order in which packs are needed;
the second writes, through directory file descriptors (O_NOFOLLOW at every
level: a planted symlink cannot redirect it), while worker threads decrypt
the next packs. A pack's plaintext is authenticated against the signed
manifest before any of its blobs is used, and each file's SHA-256 is checked
before it is renamed into place; files are written to a temp name first.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import concurrent.futures
import hashlib
import os
import posixpath
import stat
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import BeneathRefused, open_dir_beneath, open_restore_base
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, pack as bpack

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRFLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
RESULT_LIMIT = 10000     # at most this many paths in a restore's files/links results


class EntryRefused(RansomeyeError):
    """An entry that would escape its target."""


def is_v2(comp: t.Any) -> bool:
    return isinstance(comp, dict) and comp.get("format") == fmt.COMPONENT_FORMAT


def _within(root: bytes, path: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


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
        self.data = bpack.PackCache(repo, objects, decrypt, executor)
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


def verify_component(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict) -> t.Optional[str]:
    """Full verify of a v2 component's structure: every tree decodes and every blob is located (None: fine)."""
    reader = TreeReader(repo, body, decrypt)
    try:
        reader.plan(comp)
    except RansomeyeError as exc:
        return exc.msg
    finally:
        reader.close()
    return None


def stream_entry(reader: TreeReader, comp: dict) -> dict:
    """The file entry of a v2 stream (the database dump), checked against the component's signed fields."""
    entries = reader.tree(str(comp.get("tree")))
    if len(entries) != 1 or entries[0][1]["type"] != "file":
        raise RansomeyeError("the stream's tree does not hold exactly one file entry")
    name, entry = entries[0]
    if fmt.b64(name) != comp.get("name") or entry["size"] != comp.get("size") or entry["sha256"] != comp.get("sha256"):
        raise RansomeyeError("the stream's file entry does not match the manifest (name, size or SHA-256)")
    return entry


def stream_plan(reader: TreeReader, comp: dict) -> t.Tuple[dict, t.List[fmt.IndexEntry], t.List[str]]:
    """(entry, located blobs in stream order, packs in first-use order); every blob located before any is read."""
    entry = stream_entry(reader, comp)
    located = [reader.locate(blob, fmt.BLOB_DATA) for blob in entry["chunks"]]
    if sum(found.raw_length for found in located) != entry["size"]:
        raise RansomeyeError("the stream's chunks do not add up to its recorded size")
    order: t.List[str] = []
    seen: t.Set[str] = set()
    for found in located:
        if found.pack not in seen:
            seen.add(found.pack)
            order.append(found.pack)
    return entry, located, order


def verify_stream(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict) -> t.Optional[str]:
    """Full verify of a v2 stream's structure (its tree, every chunk located, sizes add up); None: fine."""
    reader = TreeReader(repo, body, decrypt)
    try:
        stream_plan(reader, comp)
    except RansomeyeError as exc:
        return exc.msg
    finally:
        reader.close()
    return None


def stream_chunks(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict) -> t.Iterator[bytes]:
    """The stream's plaintext in order, for pg_restore's stdin: packs are decrypted ahead by worker threads and
    each is authenticated against the signed manifest before a byte of it is yielded; nothing touches the disk.
    The SHA-256 of the whole stream is compared at the end (a mismatch raises, failing the restore)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        reader = TreeReader(repo, body, decrypt, executor)
        try:
            entry, located, order = stream_plan(reader, comp)
            reader.data.set_order(order)
            digest = hashlib.sha256()
            size = 0
            for found in located:
                data = bpack.read_blob(reader.data, found)
                digest.update(data)
                size += len(data)
                yield data
            if digest.hexdigest() != entry["sha256"] or size != entry["size"]:
                raise RansomeyeError("the restored stream does not match its recorded SHA-256")
        finally:
            reader.close()


class Restorer:
    """Writes one v2 component under ``dest`` (or at the original paths)."""

    def __init__(self, reader: TreeReader, dest: t.Optional[str], check_mode: bool,
                 keep_live: t.AbstractSet[str] = frozenset()) -> None:
        self.reader = reader
        # Live files the restore leaves as they are (the certificate guard): never replaced, not even briefly.
        self.keep_live = frozenset(os.fsencode(p) for p in keep_live) if not dest else frozenset()
        self.dest = os.fsencode(os.path.abspath(dest)) if dest else b""
        self.check_mode = check_mode
        self.is_root = os.geteuid() == 0
        self.stats = {"files_restored": 0, "files_unchanged": 0, "links_restored": 0, "hardlinks_restored": 0,
                      "dirs_created": 0, "modes_fixed": 0, "bytes_written": 0, "packs_read": 0,
                      "files_kept_live": 0}
        self.files: t.Dict[str, str] = {}
        self.links: t.Dict[str, str] = {}
        self.truncated = False
        self.changed = False
        self.counter = 0
        self.started = time.monotonic()

    # ---- helpers
    def _note(self, table: t.Dict[str, str], path: bytes, value: str) -> None:
        if len(table) < RESULT_LIMIT:
            table[os.fsdecode(path)] = value
        else:
            self.truncated = True

    def _tmp(self) -> bytes:
        self.counter += 1
        return b".ransomeye-tmp-%d-%d" % (os.getpid(), self.counter)

    def _lstat(self, dir_fd: t.Optional[int], name: bytes) -> t.Optional[os.stat_result]:
        if dir_fd is None:
            return None
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _owner_mode(self, fd: int, entry: dict, st: t.Optional[os.stat_result]) -> bool:
        changed = False
        if st is None or stat.S_IMODE(st.st_mode) != entry["mode"]:
            changed = True
            if not self.check_mode:
                os.fchmod(fd, entry["mode"])
        if self.is_root and (st is None or (st.st_uid, st.st_gid) != (entry.get("uid"), entry.get("gid"))):
            changed = True
            if not self.check_mode:
                os.fchown(fd, int(entry.get("uid", -1)), int(entry.get("gid", -1)))
        return changed

    def _open_root_parent(self, root: bytes) -> t.Tuple[t.Optional[int], bytes]:
        """(descriptor of the directory that holds the root's target, its name); under ``dest`` every directory
        from ``dest`` down is opened with O_NOFOLLOW (_files.open_dir_beneath), so a symlink planted anywhere
        below ``dest`` cannot take the restore elsewhere."""
        if self.dest:
            base, parts = self.dest, [p for p in root.split(b"/") if p]
        else:
            base, parts = posixpath.dirname(root), [posixpath.basename(root)]
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

    def _created(self, _path: str) -> None:
        self.changed = True
        self.stats["dirs_created"] += 1

    # ---- entries
    def _dir(self, parent_fd: t.Optional[int], name: bytes, path: bytes) -> t.Optional[int]:
        st = self._lstat(parent_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a symlink" % os.fsdecode(self.dest + path))
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a non-directory" % os.fsdecode(self.dest + path))
        if st is None:
            self.changed = True
            self.stats["dirs_created"] += 1
            if self.check_mode:
                return None
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        if parent_fd is None:
            return None  # check mode below a directory that does not exist yet
        try:
            return os.open(name, _DIRFLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise EntryRefused("refusing to restore into %s: %s" % (os.fsdecode(self.dest + path), exc.strerror))

    def _end_dir(self, fd: t.Optional[int], entry: dict) -> None:
        if fd is None:
            return
        st = os.fstat(fd)
        if self._owner_mode(fd, entry, st) and st is not None:
            self.stats["modes_fixed"] += 1
            self.changed = True
        if not self.check_mode and st.st_mtime_ns != entry.get("mtime_ns") and isinstance(entry.get("mtime_ns"), int):
            os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        os.close(fd)

    def _file(self, dir_fd: t.Optional[int], name: bytes, path: bytes, entry: dict) -> None:
        self._note(self.files, self.dest + path, entry["sha256"])
        if path in self.keep_live:
            self.stats["files_kept_live"] += 1
            return
        st = self._lstat(dir_fd, name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a file" % os.fsdecode(self.dest + path))
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry["size"] and dir_fd is not None:
            if _hash_at(dir_fd, name) == entry["sha256"]:
                fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
                try:
                    if self._owner_mode(fd, entry, st):
                        self.stats["modes_fixed"] += 1
                        self.changed = True
                    else:
                        self.stats["files_unchanged"] += 1
                finally:
                    os.close(fd)
                return
        self.changed = True
        self.stats["files_restored"] += 1
        if self.check_mode or dir_fd is None:
            return
        tmp = self._tmp()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            digest = hashlib.sha256()
            offset = 0
            sparse = bool(entry.get("sparse"))
            for blob in entry["chunks"]:
                data = bpack.read_blob(self.reader.data, self.reader.locate(blob, fmt.BLOB_DATA))
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
            os.ftruncate(fd, offset)
            if digest.hexdigest() != entry["sha256"] or offset != entry["size"]:
                raise RansomeyeError("restored content of %s does not match the backup; the file was left as it was"
                                     % os.fsdecode(path))
            self._owner_mode(fd, entry, None)
            os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self.stats["bytes_written"] += offset
        hook("file_restored")

    def _symlink(self, dir_fd: t.Optional[int], name: bytes, path: bytes, entry: dict) -> None:
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
        tmp = self._tmp()
        os.symlink(target, tmp, dir_fd=dir_fd)
        if self.is_root:
            os.chown(tmp, int(entry.get("uid", -1)), int(entry.get("gid", -1)), dir_fd=dir_fd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def _hardlink(self, dir_fd: t.Optional[int], name: bytes, path: bytes, entry: dict) -> None:
        target = self.dest + fmt.unb64(entry["target"], "hard link target")
        try:
            tst = os.lstat(target)
        except FileNotFoundError:
            tst = None
        if not self.check_mode and (tst is None or not stat.S_ISREG(tst.st_mode)):
            raise EntryRefused("hard link %s: its target %s was not restored as a file"
                               % (os.fsdecode(self.dest + path), os.fsdecode(target)))
        st = self._lstat(dir_fd, name)
        if st is not None and tst is not None and (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
            return
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a hard link" % os.fsdecode(self.dest + path))
        self.changed = True
        self.stats["hardlinks_restored"] += 1
        if self.check_mode or dir_fd is None:
            return
        tmp = self._tmp()
        os.link(target, tmp, dst_dir_fd=dir_fd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def restore(self, comp: dict) -> None:
        order, _counts = self.reader.plan(comp)   # everything is checked before the first write
        self.reader.data.set_order(order)
        stack: t.List[t.Tuple[t.Optional[int], bool]] = []    # (fd, fd is a root's parent to close as well)
        parents: t.List[t.Optional[int]] = []
        try:
            for event in self.reader.walk(comp):
                top = not stack
                if top:
                    parent_fd, name = self._open_root_parent(event.path)
                    parents.append(parent_fd)
                else:
                    parent_fd, name = stack[-1][0], posixpath.basename(event.path)
                if event.kind == "dir":
                    stack.append((self._dir(parent_fd, name, event.path), top))
                    continue
                if event.kind == "enddir":
                    fd, _was_top = stack.pop()
                    self._end_dir(fd, event.entry)
                    if not stack:
                        self._close_parents(parents)
                    continue
                if event.kind == "file":
                    self._file(parent_fd, name, event.path, event.entry)
                elif event.kind == "symlink":
                    self._symlink(parent_fd, name, event.path, event.entry)
                else:
                    self._hardlink(parent_fd, name, event.path, event.entry)
                if top:
                    self._close_parents(parents)
        finally:
            for fd, _was_top in stack:
                if fd is not None:
                    os.close(fd)
            self._close_parents(parents)
        self.stats["packs_read"] = self.reader.data.packs_read

    @staticmethod
    def _close_parents(parents: t.List[t.Optional[int]]) -> None:
        while parents:
            fd = parents.pop()
            if fd is not None:
                os.close(fd)

    def result_stats(self) -> dict:
        out = dict(self.stats)
        out["duration"] = round(time.monotonic() - self.started, 3)
        return out


def _hash_at(dir_fd: int, name: bytes) -> str:
    fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
    digest = hashlib.sha256()
    try:
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def restore_component(repo: brepo.Repo, body: dict, comp: dict, decrypt: dict, dest: t.Optional[str],
                      check_mode: bool, keep_live: t.AbstractSet[str] = frozenset()) -> Restorer:
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        reader = TreeReader(repo, body, decrypt, executor)
        try:
            restorer = Restorer(reader, dest, check_mode, keep_live)
            restorer.restore(comp)
        finally:
            reader.close()
    if restorer.changed and not check_mode:
        brepo._syncfs(os.path.abspath(dest) if dest else "/")
    return restorer
