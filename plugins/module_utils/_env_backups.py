# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: bounded backup copies of ``.env`` files (they hold passwords).

Copies go to one 0700 directory (default ``<env dir>/.env-backups``) instead of
piling up next to the files, and only the newest ``keep`` copies of each file
are kept. A symlinked backup directory is refused (it could point anywhere).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import shutil
import stat
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import ensure_directory, fsync_dir

READ_CHUNK = 1 << 20


def backup_dir_for(path: str, backup_dir: t.Optional[str]) -> str:
    return backup_dir or os.path.join(os.path.dirname(os.path.abspath(path)), ".env-backups")


def _prepare(directory: str) -> None:
    ensure_directory(directory, 0o700)
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RansomeyeError("env backup directory %s is a symlink or not a directory" % directory)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def backup_env(path: str, backup_dir: t.Optional[str], keep: int) -> str:
    """Copy ``path`` into the backup directory as ``<name>.<UTC time>.<pid>~`` (mode kept); prune to ``keep``."""
    directory = backup_dir_for(path, backup_dir)
    _prepare(directory)
    name = os.path.basename(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = os.path.join(directory, "%s.%s.%d~" % (name, stamp, os.getpid()))
    suffix = 0
    while os.path.lexists(dest):
        suffix += 1
        dest = os.path.join(directory, "%s.%s.%d.%d~" % (name, stamp, os.getpid(), suffix))
    mode = stat.S_IMODE(os.stat(path).st_mode) & 0o600 or 0o600
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, READ_CHUNK)
        dst.flush()
        os.fsync(dst.fileno())
    fsync_dir(directory)
    prune(directory, name, keep)
    return dest


def prune(directory: str, name: str, keep: int) -> t.List[str]:
    """Remove all but the newest ``keep`` copies of ``name`` (by modification time, then name)."""
    if keep < 1:
        return []
    copies = []
    for entry in os.scandir(directory):
        if entry.name.startswith(name + ".") and entry.name.endswith("~") and entry.is_file(follow_symlinks=False):
            copies.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    removed = []
    for _mtime, old in sorted(copies)[:-keep]:
        os.unlink(os.path.join(directory, old))
        removed.append(old)
    if removed:
        fsync_dir(directory)
    return removed
