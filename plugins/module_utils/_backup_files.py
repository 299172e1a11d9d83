# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: restoring config and artifact entries safely.

Every entry of the (signed) manifest is checked before anything is written:
its original path must be absolute, normalised (no ``..``), inside one of the
component's recorded roots; a symlink's target must stay inside those roots.
While writing, no existing directory on the way below the target root may be
a symlink (a planted link cannot redirect the restore), and files are written
atomically after their plaintext SHA-256 matched the manifest.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import stat
import tarfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import AtomicWriter, is_within

READ_CHUNK = 1 << 20


class EntryRefused(RansomeyeError):
    """An entry that would escape its target."""


def _lexical_target(link_path: str, target: str) -> str:
    if os.path.isabs(target):
        return os.path.normpath(target)
    return os.path.normpath(os.path.join(os.path.dirname(link_path), target))


def check_entries(component: str, roots: t.List[str], files: t.Dict[str, dict]) -> None:
    """Refuse the whole component when any entry could escape its roots."""
    if not isinstance(roots, list) or not roots:
        raise EntryRefused("%s: the manifest records no roots" % component)
    for root in roots:
        if not isinstance(root, str) or not os.path.isabs(root) or os.path.normpath(root) != root or root == "/":
            raise EntryRefused("%s: refusing root %r (must be an absolute, normalised path other than /)"
                               % (component, root))
    for path, record in files.items():
        if not isinstance(record, dict) or record.get("type") not in ("file", "dir", "symlink"):
            raise EntryRefused("%s: entry %r has an unknown type" % (component, path))
        if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path \
                or "/../" in path + "/" or "\x00" in path:
            raise EntryRefused("%s: refusing entry %r (not an absolute normalised path)" % (component, path))
        if not any(is_within(root, path) for root in roots):
            raise EntryRefused("%s: refusing entry %s outside the backed-up roots" % (component, path))
        if record["type"] == "symlink":
            target = record.get("target")
            if not isinstance(target, str) or not target or "\x00" in target:
                raise EntryRefused("%s: symlink %s has no valid target" % (component, path))
            resolved = _lexical_target(path, target)
            if not any(is_within(root, resolved) for root in roots):
                raise EntryRefused("%s: refusing symlink %s -> %s pointing outside the restored tree"
                                   % (component, path, target))
        mode = record.get("mode")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
            raise EntryRefused("%s: entry %s has an invalid mode" % (component, path))


class Restorer:
    """Writes entries under ``dest`` (or at their original paths when dest is None)."""

    def __init__(self, roots: t.List[str], dest: t.Optional[str], check_mode: bool) -> None:
        self.roots = roots
        self.dest = os.path.abspath(dest) if dest else None
        self.check_mode = check_mode
        self.is_root = os.geteuid() == 0
        self.stats = {"files_restored": 0, "files_unchanged": 0, "links_restored": 0, "dirs_created": 0,
                      "modes_fixed": 0, "bytes_written": 0}
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

    def _prepare_parent(self, original: str) -> str:
        """Make sure every directory from the target root down to the parent exists and is no symlink."""
        root = self._root_of(original)
        target_root = self.target(root)
        parent = os.path.dirname(self.target(original))
        if original == root:
            parent_dir = os.path.dirname(target_root)
            if not self.check_mode:
                os.makedirs(parent_dir, exist_ok=True)
            return parent_dir
        rel = os.path.relpath(parent, target_root)
        current = target_root
        parts = [] if rel == "." else rel.split(os.sep)
        for part in [None] + parts:
            if part is not None:
                current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if self.check_mode:
                    return parent
                os.makedirs(current, 0o700)
                self.stats["dirs_created"] += 1
                continue
            if stat.S_ISLNK(st.st_mode):
                raise EntryRefused("refusing to restore %s: %s is a symlink" % (self.target(original), current))
            if not stat.S_ISDIR(st.st_mode):
                raise EntryRefused("refusing to restore %s: %s is not a directory" % (self.target(original), current))
        return parent

    def _apply_owner_mode(self, path: str, record: dict, st: t.Optional[os.stat_result]) -> bool:
        changed = False
        if st is None or stat.S_IMODE(st.st_mode) != record["mode"]:
            changed = True
            if not self.check_mode:
                os.chmod(path, record["mode"])
        if self.is_root and st is not None and (st.st_uid, st.st_gid) != (record.get("uid"), record.get("gid")):
            changed = True
            if not self.check_mode:
                os.lchown(path, int(record.get("uid", -1)), int(record.get("gid", -1)))
        return changed

    def restore_dir(self, original: str, record: dict) -> None:
        self._prepare_parent(original)
        path = self.target(original)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a symlink" % path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to restore directory %s over a non-directory" % path)
        # While restoring, a directory stays owner-writable; restore_tree_entries sets the exact mode last.
        working = dict(record, mode=record["mode"] | 0o700)
        if st is None:
            self.changed_paths.append(path)
            if self.check_mode:
                return
            os.mkdir(path, 0o700)
            self.stats["dirs_created"] += 1
            self._apply_owner_mode(path, working, None)
            if self.is_root:
                os.lchown(path, int(record.get("uid", -1)), int(record.get("gid", -1)))
            return
        mode_differs = stat.S_IMODE(st.st_mode) != record["mode"]
        owner_differs = self.is_root and (st.st_uid, st.st_gid) != (record.get("uid"), record.get("gid"))
        if mode_differs or owner_differs:
            self.stats["modes_fixed"] += 1
            self.changed_paths.append(path)
            if not self.check_mode:
                self._apply_owner_mode(path, working, st)

    def restore_symlink(self, original: str, record: dict) -> None:
        self._prepare_parent(original)
        path = self.target(original)
        target = record["target"]
        if self.dest and os.path.isabs(target):
            target = self.dest + target  # keep absolute links inside the restored tree
        self.links[path] = target
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(path) == target:
            return
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a symlink" % path)
        self.changed_paths.append(path)
        self.stats["links_restored"] += 1
        if self.check_mode:
            return
        tmp = "%s.ransomeye-tmp-%d" % (path, os.getpid())
        os.symlink(target, tmp)
        if self.is_root:
            os.lchown(tmp, int(record.get("uid", -1)), int(record.get("gid", -1)))
        os.rename(tmp, path)

    def file_matches(self, path: str, record: dict) -> t.Tuple[bool, t.Optional[os.stat_result]]:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False, None
        if stat.S_ISDIR(st.st_mode):
            raise EntryRefused("refusing to replace directory %s with a file" % path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != record.get("size"):
            return False, st
        digest = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            for block in iter(lambda: handle.read(READ_CHUNK), b""):
                digest.update(block)
        return digest.hexdigest() == record.get("sha256"), st

    def restore_file(self, original: str, record: dict, chunks: t.Callable[[], t.Iterable[bytes]]) -> None:
        """Restore one file; ``chunks()`` yields its authenticated plaintext (called only when needed)."""
        self._prepare_parent(original)
        path = self.target(original)
        self.files[path] = str(record.get("sha256"))
        same, st = self.file_matches(path, record)
        if same:
            if self._apply_owner_mode(path, record, st):
                self.stats["modes_fixed"] += 1
                self.changed_paths.append(path)
            else:
                self.stats["files_unchanged"] += 1
            return
        self.changed_paths.append(path)
        self.stats["files_restored"] += 1
        if self.check_mode:
            return
        writer = AtomicWriter(path, mode=record["mode"],
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
                raise RansomeyeError("restored content of %s does not match the manifest; the file was left as it was"
                                     % original, path=original)
        self.stats["bytes_written"] += size
        mtime = record.get("mtime_ns")
        if isinstance(mtime, int):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

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
            path = restorer.target(original)
            if stat.S_IMODE(os.lstat(path).st_mode) != record["mode"]:
                os.chmod(path, record["mode"])


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
