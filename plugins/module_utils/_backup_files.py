# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: restoring config and artifact entries safely.

Every entry of the (signed) manifest is checked before anything is written:
roots and paths must be absolute and canonical (no ``//``, ``.`` or ``..``),
every entry inside one of the component's recorded roots and below no
recorded symlink; a symlink must resolve, through the manifest's own links,
inside those roots. While writing, every directory below the target root is
opened with O_NOFOLLOW relative to its parent (a planted link cannot redirect
the restore), and files are written atomically after their plaintext SHA-256
matched the manifest.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import stat
import tarfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import (
    AtomicWriterAt, BeneathRefused, is_canonical_abs, is_within, lstat_at, open_dir_at, open_dir_beneath,
    open_restore_base)

READ_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class EntryRefused(RansomeyeError):
    """An entry that would escape its target."""


MAX_LINK_HOPS = 40  # as the kernel's own limit on nested symlinks


def _within_any(roots: t.Sequence[str], path: str) -> bool:
    return any(is_within(root, path) for root in roots)


def _ancestor_of_any(roots: t.Sequence[str], path: str) -> bool:
    return path == "/" or any(root.startswith(path + "/") for root in roots)


def resolve_in_manifest(link: str, links: t.Dict[str, str], roots: t.Sequence[str]) -> str:
    """Where the symlink ``link`` leads once restored: resolved through the manifest's own links.

    Every intermediate path must lie inside a root, or be an ancestor of a
    root (directories the restore itself creates or checks); a step anywhere
    else would resolve through a directory the manifest does not describe,
    and a planted link there could lead anywhere. Raises EntryRefused.
    """
    resolved = [p for p in os.path.dirname(link).split("/") if p]
    todo = links[link].split("/")
    if links[link].startswith("/"):
        resolved = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
        else:
            resolved.append(part)
        current = "/" + "/".join(resolved)
        if not (_within_any(roots, current) or _ancestor_of_any(roots, current)):
            raise EntryRefused("refusing symlink %s -> %s pointing outside the restored tree (it resolves through %s)"
                               % (link, links[link], current))
        if part != ".." and current in links:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise EntryRefused("refusing symlink %s -> %s: too many levels of links (a loop?)"
                                   % (link, links[link]))
            target = links[current]
            resolved.pop()
            if target.startswith("/"):
                resolved = []
            todo = target.split("/") + todo
    final = "/" + "/".join(resolved)
    if not _within_any(roots, final):
        raise EntryRefused("refusing symlink %s -> %s pointing outside the restored tree (it resolves to %s)"
                           % (link, links[link], final))
    return final


def check_entries(component: str, roots: t.List[str], files: t.Dict[str, dict]) -> None:
    """Refuse the whole component when any entry could escape its roots."""
    if not isinstance(roots, list) or not roots:
        raise EntryRefused("%s: the manifest records no roots" % component)
    for root in roots:
        if not is_canonical_abs(root):
            raise EntryRefused("%s: refusing root %r (must be an absolute, canonical path other than /: "
                               "no //, /./ or /../)" % (component, root))
    links: t.Dict[str, str] = {}
    for path, record in files.items():
        if not isinstance(record, dict) or record.get("type") not in ("file", "dir", "symlink"):
            raise EntryRefused("%s: entry %r has an unknown type" % (component, path))
        if not is_canonical_abs(path):
            raise EntryRefused("%s: refusing entry %r (not an absolute normalised path: no //, . or ..)" % (component, path))
        if not _within_any(roots, path):
            raise EntryRefused("%s: refusing entry %s outside the backed-up roots" % (component, path))
        if record["type"] == "symlink":
            target = record.get("target")
            if not isinstance(target, str) or not target or "\x00" in target:
                raise EntryRefused("%s: symlink %s has no valid target" % (component, path))
            links[path] = target
        mode = record.get("mode")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
            raise EntryRefused("%s: entry %s has an invalid mode" % (component, path))
    for path in files:
        parent = os.path.dirname(path)
        while _within_any(roots, parent) and parent != path:
            if parent in links:
                raise EntryRefused("%s: refusing entry %s below the symlink %s" % (component, path, parent))
            parent = os.path.dirname(parent)
    for link in links:
        try:
            resolve_in_manifest(link, links, roots)
        except EntryRefused as exc:
            raise EntryRefused("%s: %s" % (component, exc.msg))


class Restorer:
    """Writes entries under ``dest`` (or at their original paths when dest is None).

    Nothing is resolved by path below the target root: every directory is
    opened relative to its parent's descriptor with O_NOFOLLOW (a planted
    symlink or a link the restore itself created is never gone through), and
    every file, link and mode change acts on a descriptor. With ``dest``, the
    walk starts at ``dest`` itself; without, at the parent of each root (the
    host's own directories above a root are taken as they are).
    """

    def __init__(self, roots: t.List[str], dest: t.Optional[str], check_mode: bool,
                 keep_live: t.AbstractSet[str] = frozenset()) -> None:
        self.roots = roots
        # Live files the restore leaves as they are (the certificate guard): never replaced, not even briefly.
        self.keep_live = keep_live
        self.dest = os.path.normpath(os.path.abspath(dest)) if dest else None
        if self.dest == "/" or (self.dest and self.dest.startswith("//")):
            self.dest = None if self.dest == "/" else "/" + self.dest.lstrip("/")
        self.check_mode = check_mode
        self.is_root = os.geteuid() == 0
        self.stats = {"files_restored": 0, "files_unchanged": 0, "links_restored": 0, "dirs_created": 0,
                      "modes_fixed": 0, "bytes_written": 0, "files_kept_live": 0}
        self.files: t.Dict[str, str] = {}
        self.links: t.Dict[str, str] = {}
        self.changed_paths: t.List[str] = []
        self.started = time.monotonic()

    def target(self, original: str) -> str:
        return self.dest + original if self.dest else original

    def _root_of(self, original: str) -> str:
        for root in self.roots:
            if is_within(root, original):
                return root
        raise EntryRefused("entry %s outside the backed-up roots" % original)

    def _created(self, _path: str) -> None:
        self.stats["dirs_created"] += 1

    def _parent_fd(self, original: str) -> t.Tuple[t.Optional[int], str]:
        """(descriptor of the entry's parent directory or None in check mode when it is missing, entry name)."""
        if self.dest:
            base, rel = self.dest, original
        else:
            base = os.path.dirname(self._root_of(original))
            rel = original[len(base):]
        self._root_of(original)
        parts = [p for p in rel.split("/") if p]
        base_fd = open_restore_base(base, create=not self.check_mode)
        if base_fd is None:
            return None, parts[-1]
        try:
            try:
                fd = open_dir_beneath(base_fd, parts[:-1], create=not self.check_mode, created=self._created,
                                      where=base)
            except FileNotFoundError:
                return None, parts[-1]  # check mode: the restore would create it
            except BeneathRefused as exc:
                raise EntryRefused("refusing to restore %s: %s" % (self.target(original), exc.msg))
        finally:
            os.close(base_fd)
        return fd, parts[-1]

    def _chmod_chown_fd(self, fd: int, record: dict, mode: int, st: t.Optional[os.stat_result]) -> bool:
        changed = chowned = False
        # owner first: a chown clears the set-user-id and set-group-id bits, also for root
        if self.is_root and (st is None or (st.st_uid, st.st_gid) != (record.get("uid"), record.get("gid"))):
            changed = chowned = True
            if not self.check_mode:
                os.fchown(fd, int(record.get("uid", -1)), int(record.get("gid", -1)))
        if st is None or stat.S_IMODE(st.st_mode) != mode or (chowned and mode & 0o6000):
            changed = True
            if not self.check_mode:
                os.fchmod(fd, mode)
        return changed

    def restore_dir(self, original: str, record: dict) -> None:
        path = self.target(original)
        parent, name = self._parent_fd(original)
        if parent is None:
            self.changed_paths.append(path)
            return
        try:
            st = lstat_at(parent, name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise EntryRefused("refusing to restore directory %s over a symlink" % path)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise EntryRefused("refusing to restore directory %s over a non-directory" % path)
            # While restoring, a directory stays owner-writable; restore_tree_entries sets the exact mode last.
            working = record["mode"] | 0o700
            if st is None:
                self.changed_paths.append(path)
                if self.check_mode:
                    return
                os.mkdir(name, 0o700, dir_fd=parent)
                self.stats["dirs_created"] += 1
                fd = open_dir_at(parent, name, path)
                try:
                    self._chmod_chown_fd(fd, record, working, None)
                finally:
                    os.close(fd)
                return
            mode_differs = stat.S_IMODE(st.st_mode) != record["mode"]
            owner_differs = self.is_root and (st.st_uid, st.st_gid) != (record.get("uid"), record.get("gid"))
            if mode_differs or owner_differs:
                self.stats["modes_fixed"] += 1
                self.changed_paths.append(path)
                if not self.check_mode:
                    fd = open_dir_at(parent, name, path)
                    try:
                        self._chmod_chown_fd(fd, record, working, st)
                    finally:
                        os.close(fd)
        finally:
            os.close(parent)

    def set_dir_mode(self, original: str, mode: int) -> None:
        parent, name = self._parent_fd(original)
        if parent is None:
            return
        try:
            fd = open_dir_at(parent, name, self.target(original))
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(parent)

    def restore_symlink(self, original: str, record: dict) -> None:
        path = self.target(original)
        target = record["target"]
        if self.dest and os.path.isabs(target):
            target = self.dest + target  # keep absolute links inside the restored tree
        self.links[path] = target
        parent, name = self._parent_fd(original)
        if parent is None:
            self.changed_paths.append(path)
            self.stats["links_restored"] += 1
            return
        try:
            st = lstat_at(parent, name)
            if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=parent) == target:
                return
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise EntryRefused("refusing to replace directory %s with a symlink" % path)
            self.changed_paths.append(path)
            self.stats["links_restored"] += 1
            if self.check_mode:
                return
            tmp = ".%s.ransomeye-tmp-%s" % (name[:200], os.urandom(6).hex())
            os.symlink(target, tmp, dir_fd=parent)
            try:
                if self.is_root:
                    os.chown(tmp, int(record.get("uid", -1)), int(record.get("gid", -1)), dir_fd=parent,
                             follow_symlinks=False)
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=parent)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(parent)

    def _file_matches(self, parent: int, name: str, path: str,
                      record: dict) -> t.Tuple[bool, t.Optional[os.stat_result]]:
        st = lstat_at(parent, name)
        if st is None:
            return False, None
        if stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a file" % path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != record.get("size"):
            return False, st
        digest = hashlib.sha256()
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(handle.fileno())
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                return False, st
            for block in iter(lambda: handle.read(READ_CHUNK), b""):
                digest.update(block)
        return digest.hexdigest() == record.get("sha256"), st

    def restore_file(self, original: str, record: dict, chunks: t.Callable[[], t.Iterable[bytes]]) -> None:
        """Restore one file; ``chunks()`` yields its authenticated plaintext (called only when needed)."""
        path = self.target(original)
        self.files[path] = str(record.get("sha256"))
        if not self.dest and original in self.keep_live:
            self.stats["files_kept_live"] += 1
            return
        parent, name = self._parent_fd(original)
        if parent is None:
            self.changed_paths.append(path)
            self.stats["files_restored"] += 1
            return
        try:
            same, st = self._file_matches(parent, name, path, record)
            if same:
                fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
                try:
                    changed = self._chmod_chown_fd(fd, record, record["mode"], st)
                finally:
                    os.close(fd)
                if changed:
                    self.stats["modes_fixed"] += 1
                    self.changed_paths.append(path)
                else:
                    self.stats["files_unchanged"] += 1
                return
            self.changed_paths.append(path)
            self.stats["files_restored"] += 1
            if self.check_mode:
                return
            writer = AtomicWriterAt(parent, name, mode=record["mode"],
                                    uid=record.get("uid") if self.is_root else None,
                                    gid=record.get("gid") if self.is_root else None)
            with writer as handle:
                digest = hashlib.sha256()
                size = 0
                for chunk in chunks():
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                if digest.hexdigest() != record.get("sha256") or size != record.get("size"):
                    raise RansomeyeError("restored content of %s does not match the manifest; the file was left "
                                         "as it was" % original, path=original)
            self.stats["bytes_written"] += size
            mtime = record.get("mtime_ns")
            if isinstance(mtime, int):
                os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        hook("file_restored")

    def result_stats(self) -> dict:
        out = dict(self.stats)
        out["duration"] = round(time.monotonic() - self.started, 3)
        return out


def walk_order(path: str) -> t.List[str]:
    """Sort key giving the backup walk's order: parents first, siblings sorted by name."""
    return path.split("/")


def restore_tree_entries(restorer: Restorer, files: t.Dict[str, dict],
                         file_chunks: t.Callable[[str, dict], t.Iterable[bytes]]) -> None:
    """Restore entries in path order (parents first), directories' modes last (a 0500 dir stays writable)."""
    dirs = []
    for original in sorted(files, key=walk_order):
        record = files[original]
        kind = record["type"]
        if kind == "dir":
            restorer.restore_dir(original, record)
            dirs.append((original, record))
        elif kind == "symlink":
            restorer.restore_symlink(original, record)
        else:
            restorer.restore_file(original, record,
                                  lambda o=original, r=record: file_chunks(o, r))
    if not restorer.check_mode:
        for original, record in reversed(dirs):
            restorer.set_dir_mode(original, record["mode"])


class TarContent:
    """Serves the regular files of a config tar stream, in the tar's order, to restore_tree_entries.

    The tar is read once, sequentially; members must appear in sorted path
    order (as the backup writes them) and match the manifest exactly.
    """

    def __init__(self, reader: t.Any, files: t.Dict[str, dict]) -> None:
        self.tar = tarfile.open(fileobj=reader, mode="r|")
        self.iter = iter(self.tar)
        self.files = files

    def chunks(self, original: str, record: dict) -> t.Iterator[bytes]:
        name = original.lstrip("/")
        for member in self.iter:
            if member.name.startswith("/") or ".." in member.name.split("/"):
                raise EntryRefused("config tar member %r is absolute or contains .." % member.name)
            if member.name != name:
                continue  # a dir/link/file already handled from the manifest, or unchanged and skipped
            if not member.isreg() or member.size != record.get("size"):
                raise EntryRefused("config tar member %s does not match the manifest" % member.name)
            handle = self.tar.extractfile(member)
            if handle is None:
                raise EntryRefused("config tar member %s has no content" % member.name)
            yield from iter(lambda: handle.read(READ_CHUNK), b"")
            return
        raise RansomeyeError("config tar has no member %s (the manifest lists it)" % name)
