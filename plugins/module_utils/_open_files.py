# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: which files are open or locked by some process.

On Linux the answer comes from ``/proc/<pid>/fd`` (every descriptor of every
process, identified by device and inode, so renamed or hard-linked names are
caught too) and ``/proc/locks`` (flock, POSIX and OFD locks). Where /proc is
missing, psutil's ``open_files()`` is used when installed. A process we cannot
inspect is simply not seen: run as root to see them all.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._psutil import HAS_PSUTIL, psutil

FileId = t.Tuple[int, int]  # (st_dev, st_ino)


def _proc_open_files(exclude_pids: t.Container[int]) -> t.Set[FileId]:
    found: t.Set[FileId] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude_pids:
            continue
        fd_dir = "/proc/%s/fd" % name
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # exited, or not ours to inspect
        for fd in fds:
            try:
                st = os.stat("%s/%s" % (fd_dir, fd))  # follows the magic link to the open file
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found


def _psutil_open_files(exclude_pids: t.Container[int]) -> t.Set[FileId]:  # pragma: no cover - non-Linux
    found: t.Set[FileId] = set()
    if not HAS_PSUTIL:
        return found
    for proc in psutil.process_iter():
        try:
            if proc.pid in exclude_pids:
                continue
            for item in proc.open_files():
                try:
                    st = os.stat(item.path)
                except OSError:
                    continue
                found.add((st.st_dev, st.st_ino))
        except (psutil.Error, OSError):
            continue
    return found


def _proc_locks() -> t.Set[t.Tuple[int, int, int]]:
    """(major, minor, inode) of every locked file in /proc/locks."""
    locked: t.Set[t.Tuple[int, int, int]] = set()
    try:
        with open("/proc/locks", "r") as handle:
            lines = handle.readlines()
    except OSError:
        return locked
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:1310738 0 EOF" (waiters carry a "->" field)
        for field in line.split():
            parts = field.split(":")
            if len(parts) == 3 and all(parts):
                try:
                    locked.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
                except ValueError:
                    continue
                break
    return locked


class OpenFiles:
    """A snapshot of open and locked files, refreshed when older than ``max_age`` seconds.

    The scan costs one readdir per process plus one stat per descriptor, so it
    is taken lazily (first question) and reused for ``max_age`` seconds.
    """

    def __init__(self, max_age: float = 2.0, exclude_pids: t.Optional[t.Iterable[int]] = None) -> None:
        self.max_age = max_age
        self.exclude_pids = set(exclude_pids or ()) | {os.getpid()}
        self._open: t.Set[FileId] = set()
        self._locked: t.Set[t.Tuple[int, int, int]] = set()
        self._taken: t.Optional[float] = None

    def refresh(self) -> None:
        if os.path.isdir("/proc/self/fd"):
            self._open = _proc_open_files(self.exclude_pids)
        else:  # pragma: no cover - non-Linux
            self._open = _psutil_open_files(self.exclude_pids)
        self._locked = _proc_locks()
        self._taken = time.monotonic()

    def _fresh(self) -> None:
        if self._taken is None or time.monotonic() - self._taken > self.max_age:
            self.refresh()

    def why_busy(self, st: os.stat_result, refresh: bool = False) -> t.Optional[str]:
        """``"open"``, ``"locked"`` or None for the file with this stat result."""
        if refresh:
            self.refresh()
        else:
            self._fresh()
        if (st.st_dev, st.st_ino) in self._open:
            return "open"
        if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in self._locked:
            return "locked"
        return None
