# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: remove stale temp files, orphaned upload chunks and empty directories.

Safety rules, in the order they are applied to every entry:

* only below the allowlisted roots; directories are opened relative to their
  parent's descriptor with O_NOFOLLOW and checked to be the inode that was
  listed, so a directory swapped for a symlink mid-run is never entered;
* never onto another filesystem or through a mount point (also bind mounts of
  the same filesystem, found in /proc/self/mountinfo);
* symlinks are neither followed nor removed; sockets, FIFOs and devices are
  skipped; exclusion globs win over every rule;
* a file open or locked by any process is skipped;
* just before unlinking, the entry is stat'ed again through the directory
  descriptor and must still be the same regular file (device, inode, mtime,
  ctime); it is then unlinked by name relative to that descriptor;
* a runtime cap stops the scan (reported as ``truncated``).

The walker is written for speed (scandir on directory descriptors, no per-entry
objects for young files): a scan finding nothing to delete costs about what
``find ROOT -mmin +N`` costs (see bench/bench_maint.py).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import errno
import fnmatch
import gc
import json
import operator
import os
import re
import stat
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import is_within
from ansible_collections.ransomeye.ops.plugins.module_utils._open_files import OpenFiles
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
CHUNK_RE = re.compile(r"^chunk-\d{4,}$")
MARKER_SUFFIX = ".session"
MAX_MARKER_BYTES = 65536
MAX_DEPTH = 400

Hook = t.Callable[[str, str], None]
_BY_NAME = operator.attrgetter("name")


class Options(t.NamedTuple):
    roots: t.List[str]
    temp_age: t.Optional[float]
    buffer_dirs: t.List[str]
    orphan_age: float
    remove_empty_dirs: bool
    exclude: t.List[str]
    max_runtime: t.Optional[float]
    use_atime: bool
    remove_complete_sessions: bool
    report_limit: int


def _abs_dir(value: str, what: str) -> str:
    if not os.path.isabs(value):
        raise RansomeyeError("%s must be absolute paths; %r is relative" % (what, value))
    path = os.path.normpath(value)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RansomeyeError("%s entry %s does not exist" % (what, path))
    if stat.S_ISLNK(st.st_mode):
        raise RansomeyeError("%s entry %s is a symlink; give the real directory" % (what, path))
    if not stat.S_ISDIR(st.st_mode):
        raise RansomeyeError("%s entry %s is not a directory" % (what, path))
    return path


def build_options(params: dict) -> Options:
    roots = [_abs_dir(str(r), "roots") for r in (params.get("roots") or [])]
    if not roots:
        raise RansomeyeError("roots must list at least one directory")
    for root in roots:
        if root == os.sep:
            raise RansomeyeError("refusing to clean / : give the temp and buffer directories themselves")
    # a root inside another root is walked once, as part of the outer one
    roots = sorted({r for r in roots if not any(o != r and is_within(o, r) for o in roots)})
    buffers = [_abs_dir(str(b), "buffer_dirs") for b in (params.get("buffer_dirs") or [])]
    for buf in buffers:
        if not any(is_within(root, buf) for root in roots):
            raise RansomeyeError("buffer_dirs entry %s is not inside any of the roots %s" % (buf, ", ".join(roots)))
    temp_age = parse_duration(params.get("temp_age"), "temp_age")
    orphan_age = parse_duration(params.get("orphan_age"), "orphan_age")
    if orphan_age is None:
        raise RansomeyeError("orphan_age is required")
    max_runtime = parse_duration(params.get("max_runtime"), "max_runtime")
    if max_runtime is not None and max_runtime <= 0:
        raise RansomeyeError("max_runtime must be positive")
    exclude = [str(p) for p in (params.get("exclude") or [])]
    limit = params.get("report_limit")
    limit = 1000 if limit is None else int(limit)
    if limit < 0:
        raise RansomeyeError("report_limit must not be negative")
    return Options(roots, temp_age, sorted(set(buffers)), orphan_age,
                   bool(params.get("remove_empty_dirs", True)), exclude, max_runtime,
                   bool(params.get("use_atime", False)), bool(params.get("remove_complete_sessions", False)), limit)


def mount_points() -> t.Set[str]:
    """Every mount point of this mount namespace (bind mounts included)."""
    points: t.Set[str] = set()
    try:
        with open("/proc/self/mountinfo", "r") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4:
                    points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    except OSError:
        pass  # no /proc: the st_dev check still keeps us on one filesystem
    return points


def pid_alive(pid: t.Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True


def _glob_re(patterns: t.Sequence[str]) -> t.Optional[t.Pattern[str]]:
    if not patterns:
        return None
    return re.compile("|".join("(?:%s)" % fnmatch.translate(p) for p in patterns))


class _Timeout(Exception):
    pass


class Cleaner:
    """One run over all roots. ``check_mode`` decides and reports without touching anything."""

    def __init__(self, opts: Options, check_mode: bool, now: t.Optional[float] = None,
                 hook: t.Optional[Hook] = None) -> None:
        self.opts = opts
        self.check_mode = check_mode
        self.now = time.time() if now is None else now
        self.temp_cutoff = None if opts.temp_age is None else self.now - opts.temp_age
        self.orphan_cutoff = self.now - opts.orphan_age
        self.hook = hook
        self.busy = OpenFiles()
        self.mounts = mount_points()
        self.buffer_set = set(opts.buffer_dirs)
        name_pats = [p for p in opts.exclude if os.sep not in p]
        path_pats = [p for p in opts.exclude if os.sep in p]
        self.exclude_name_re = _glob_re(name_pats)
        self.exclude_path_re = _glob_re(path_pats)
        self.exclude_re = self.exclude_name_re or self.exclude_path_re
        self.deadline = None if opts.max_runtime is None else time.monotonic() + opts.max_runtime
        self.removed: t.List[dict] = []
        self.removed_count = 0
        self.counts: t.Dict[str, int] = {}
        self.skipped: t.Dict[str, int] = {}
        self.skipped_paths: t.List[dict] = []
        self.bytes_freed = 0
        self._planned_inodes: t.Dict[t.Tuple[int, int], t.List[int]] = {}
        self.truncated = False
        self.scanned = 0

    # ------------------------------------------------------------ reporting
    def _skip(self, path: str, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_paths) < self.opts.report_limit:
            self.skipped_paths.append(dict(path=path, reason=reason))

    def _record(self, path: str, reason: str, size: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.removed_count += 1
        if len(self.removed) < self.opts.report_limit:
            self.removed.append(dict(path=path, reason=reason, size=size))

    def _time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Timeout()

    def _excluded(self, path: str, rel: str, name: str) -> bool:
        """A pattern without ``/`` matches the name; one with ``/`` the absolute or root-relative path."""
        if self.exclude_name_re is not None and self.exclude_name_re.match(name):
            return True
        rx = self.exclude_path_re
        return rx is not None and bool(rx.match(rel) or rx.match(path))

    # ------------------------------------------------------------ actions
    def _remove_file(self, dir_fd: int, name: str, path: str, st: os.stat_result, reason: str) -> bool:
        """Unlink one regular file if still safe; True when removed (or would be)."""
        why = self.busy.why_busy(st)
        if why:
            self._skip(path, why)
            return False
        if self.hook:
            self.hook("before_remove", path)
        if self.check_mode:
            key = (st.st_dev, st.st_ino)
            acc = self._planned_inodes.setdefault(key, [st.st_nlink, 0, st.st_blocks * 512])
            acc[1] += 1
            self._record(path, reason, st.st_size)
            return True
        try:
            now_st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self._skip(path, "vanished")
            return False
        if not stat.S_ISREG(now_st.st_mode) or (now_st.st_dev, now_st.st_ino, now_st.st_mtime_ns, now_st.st_ctime_ns) \
                != (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
            self._skip(path, "changed during the run")
            return False
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            self._skip(path, "vanished")
            return False
        if now_st.st_nlink == 1:
            self.bytes_freed += now_st.st_blocks * 512
        self._record(path, reason, now_st.st_size)
        return True

    def _remove_dir(self, parent_fd: int, name: str, path: str, reason: str) -> bool:
        if self.hook:
            self.hook("before_rmdir", path)
        if not self.check_mode:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY, errno.ENOENT, errno.ENOTDIR):
                    return False
                raise
        self._record(path, reason, 0)
        return True

    def _open_subdir(self, parent_fd: int, name: str, st: os.stat_result) -> t.Optional[int]:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            return None  # replaced by a symlink, or removed, since it was listed
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            return None
        return fd

    def _age(self, st: os.stat_result) -> float:
        newest = st.st_mtime if st.st_mtime > st.st_ctime else st.st_ctime
        if self.opts.use_atime and st.st_atime > newest:
            newest = st.st_atime
        return newest

    # ------------------------------------------------------------ the walk
    def run(self) -> None:
        collecting = gc.isenabled()
        gc.disable()  # the walk allocates millions of short-lived objects and no cycles
        try:
            for root in self.opts.roots:
                root_st = os.lstat(root)
                fd = os.open(root, _DIR_FLAGS)
                try:
                    if root in self.buffer_set:
                        self._buffer(fd, root, root_st.st_dev, os.path.realpath(root))
                    else:
                        self._walk(fd, root, "", root_st.st_dev, os.path.realpath(root), 0)
                finally:
                    os.close(fd)
        except _Timeout:
            self.truncated = True
        finally:
            if collecting:
                gc.enable()
        if self.check_mode:
            self.bytes_freed = sum(blocks for nlink, count, blocks in self._planned_inodes.values() if count >= nlink)

    def _walk(self, fd: int, path: str, rel: str, dev: int, real: str, depth: int) -> bool:
        """Clean one directory; True when nothing is left in it (so it may go too)."""
        kept = 0
        cutoff = self.temp_cutoff
        cheap = self.exclude_re is None  # young regular files need no more than their stat
        S_ISREG = stat.S_ISREG  # pylint: disable=invalid-name
        with os.scandir(fd) as it:
            entries = sorted(it, key=_BY_NAME)  # deterministic order, as safe_walk
        self.scanned += len(entries)
        for first in range(0, len(entries), 1024):
            self._time()  # a flood of entries in one directory still meets max_runtime
            for entry in entries[first:first + 1024]:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if cheap and S_ISREG(st.st_mode) and (
                        cutoff is None or st.st_mtime >= cutoff or st.st_ctime >= cutoff):
                    kept += 1  # the common case, kept cheap
                    continue
                if not self._entry(fd, entry.name, st, path, rel, dev, real, depth):
                    kept += 1
        return kept == 0

    def _entry(self, fd: int, name: str, st: os.stat_result, path: str, rel: str, dev: int, real: str,
               depth: int) -> bool:
        """Apply the rules to one entry of a directory; True when it was removed (or would be)."""
        mode = st.st_mode
        cutoff = self.temp_cutoff
        child = path + os.sep + name
        child_rel = rel + os.sep + name if rel else name
        if self.exclude_re is not None and self._excluded(child, child_rel, name):
            self._skip(child, "excluded")
            return False
        if stat.S_ISREG(mode):
            if cutoff is None or st.st_mtime >= cutoff or st.st_ctime >= cutoff or \
                    (self.opts.use_atime and st.st_atime >= cutoff):
                return False
            return self._remove_file(fd, name, child, st, "temp")
        if stat.S_ISDIR(mode):
            return self._subdir(fd, name, child, child_rel, st, dev, real + os.sep + name, depth)
        if stat.S_ISLNK(mode):
            self._skip(child, "symlink")
        elif stat.S_ISFIFO(mode):
            self._skip(child, "fifo")
        elif stat.S_ISSOCK(mode):
            self._skip(child, "socket")
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self._skip(child, "device")
        else:
            self._skip(child, "other file type")
        return False

    def _subdir(self, fd: int, name: str, child: str, child_rel: str, st: os.stat_result, dev: int,
                real: str, depth: int) -> bool:
        """Walk a subdirectory; True when it was removed (or would be)."""
        if st.st_dev != dev or real in self.mounts:
            self._skip(child, "other filesystem or mount point")
            return False
        if depth >= MAX_DEPTH:
            self._skip(child, "too deep")
            return False
        sub_fd = self._open_subdir(fd, name, st)
        if sub_fd is None:
            self._skip(child, "changed during the run")
            return False
        try:
            if child in self.buffer_set:
                self._buffer(sub_fd, child, dev, real)
                return False
            empty = self._walk(sub_fd, child, child_rel, dev, real, depth + 1)
        finally:
            os.close(sub_fd)
        if not (empty and self.opts.remove_empty_dirs):
            return False
        if self.temp_cutoff is None or self._age(st) >= self.temp_cutoff:
            return False  # judged by its times before we emptied it; no temp_age, no removal
        return self._remove_dir(fd, name, child, "empty_dir")

    # ------------------------------------------------------------ upload buffer
    def _marker_state(self, fd: int, name: str) -> t.Tuple[str, t.Optional[os.stat_result]]:
        """``live``, ``complete``, ``dead`` (uploader gone), ``invalid`` or ``missing``."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return "missing", None
        if not stat.S_ISREG(st.st_mode):
            return "not_a_file", st
        try:
            mfd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
        except OSError:
            return "invalid", st
        with os.fdopen(mfd, "rb") as handle:
            raw = handle.read(MAX_MARKER_BYTES + 1)
        try:
            data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_MARKER_BYTES else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return "invalid", st
        state = data.get("state")
        if state == "complete":
            return "complete", st
        if state == "uploading":
            return ("live" if pid_alive(data.get("pid")) else "dead"), st
        return "invalid", st

    def _orphan(self, state: str) -> bool:
        if state == "complete":
            return self.opts.remove_complete_sessions
        return state in ("missing", "invalid", "dead")

    def _buffer(self, fd: int, path: str, dev: int, real: str) -> None:
        with os.scandir(fd) as it:
            entries = {e.name: e for e in it}
        sessions = set()
        self.scanned += len(entries)
        for name in sorted(entries):
            self._time()
            entry = entries[name]
            child = path + os.sep + name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if self._excluded(child, name, name):
                self._skip(child, "excluded")
                continue
            if stat.S_ISDIR(st.st_mode):
                sessions.add(name)
                self._session(fd, name, child, st, dev, real + os.sep + name)
            elif stat.S_ISREG(st.st_mode) and CHUNK_RE.match(name):
                if st.st_mtime < self.orphan_cutoff:
                    self._remove_file(fd, name, child, st, "orphan_chunk")
            elif stat.S_ISLNK(st.st_mode):
                self._skip(child, "symlink")
        for name in sorted(entries):
            if not name.endswith(MARKER_SUFFIX) or name[:-len(MARKER_SUFFIX)] in sessions:
                continue
            child = path + os.sep + name
            if self._excluded(child, name, name):
                continue
            state, st = self._marker_state(fd, name)
            if st is None or not stat.S_ISREG(st.st_mode) or not self._orphan(state):
                continue
            if st.st_mtime < self.orphan_cutoff:
                self._remove_file(fd, name, child, st, "orphan_marker")

    def _session(self, fd: int, name: str, child: str, st: os.stat_result, dev: int, real: str) -> None:
        marker = name + MARKER_SUFFIX
        state, marker_st = self._marker_state(fd, marker)
        if not self._orphan(state):
            return  # live, complete (kept for ingestion), or a marker that is not a file
        if st.st_dev != dev or real in self.mounts:
            self._skip(child, "other filesystem or mount point")
            return
        sub_fd = self._open_subdir(fd, name, st)
        if sub_fd is None:
            self._skip(child, "changed during the run")
            return
        try:
            with os.scandir(sub_fd) as it:
                items = [(e.name, e.stat(follow_symlinks=False)) for e in it]
            mtimes = [st.st_mtime] + [item[1].st_mtime for item in items]
            if marker_st is not None:
                mtimes.append(marker_st.st_mtime)
            newest = max(mtimes)
            if newest >= self.orphan_cutoff:
                return  # touched recently: the uploader may come back
            items.sort()
            blockers = 0
            for item_name, item_st in items:
                item_path = child + os.sep + item_name
                if not (stat.S_ISREG(item_st.st_mode) and CHUNK_RE.match(item_name)):
                    self._skip(item_path, "unexpected entry in upload session")
                    blockers += 1
                elif self._excluded(item_path, name + os.sep + item_name, item_name):
                    self._skip(item_path, "excluded")
                    blockers += 1
                elif self.busy.why_busy(item_st):
                    self._skip(item_path, self.busy.why_busy(item_st) or "open")
                    blockers += 1
            if blockers:
                return  # the session stays whole: nothing of it is removed
            left = 0
            for item_name, item_st in items:
                if not self._remove_file(sub_fd, item_name, child + os.sep + item_name, item_st, "orphan_chunk"):
                    left += 1
        finally:
            os.close(sub_fd)
        if left:
            return  # the session stays whole (directory and marker) until its chunks can go
        if self._remove_dir(fd, name, child, "orphan_session") and marker_st is not None \
                and stat.S_ISREG(marker_st.st_mode):
            self._remove_file(fd, marker, child + MARKER_SUFFIX, marker_st, "orphan_marker")

    def result(self) -> dict:
        return dict(
            changed=self.removed_count > 0,
            removed=self.removed,
            removed_count=self.removed_count,
            counts=self.counts,
            bytes_freed=self.bytes_freed,
            skipped_entries=self.skipped,
            skipped_paths=self.skipped_paths,
            truncated=self.truncated,
            scanned=self.scanned,
        )


def run(params: dict, check_mode: bool, now: t.Optional[float] = None, hook: t.Optional[Hook] = None) -> dict:
    opts = build_options(params)
    cleaner = Cleaner(opts, check_mode, now=now, hook=hook)
    started = time.monotonic()
    cleaner.run()
    result = cleaner.result()
    result["elapsed"] = round(time.monotonic() - started, 3)
    return result
