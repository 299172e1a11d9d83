# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the WAL program's local acknowledgement spool (look-ahead, docs/BACKUP_FORMAT.md 4.3.2).

When ``ransomeye-wal push`` archives segments that PostgreSQL has marked
``.ready`` but not yet handed over, it leaves one marker per segment in
``<program_dir>/spool/``, written only after the segment's chain entry is
durable. PostgreSQL's later call for that segment is answered from the marker
without loading cryptography: the marker must match, field for field, the
current state of the program's config, of the WAL file PostgreSQL passes, and
of the stored file in the repository. Anything else (no marker, a changed file,
a stored file that is gone, another config) falls through to the full push,
which finds the chain entry and answers as before.

This module runs first in every push, so it imports nothing but ``os`` (not
even ``typing``: each import costs every segment).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os

MARKER_MAGIC = "ransomeye-wal-ack 1"
SUFFIX = ".ok"
_HEX = frozenset("0123456789ABCDEF")


def spool_dir(config_path: str) -> str:
    """The spool of the program whose config is ``config_path`` (``<program_dir>/spool``)."""
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), "spool")


def is_segment_name(name: str) -> bool:
    return len(name) == 24 and not set(name) - _HEX


def _fields(st: os.stat_result, with_mtime: bool = True) -> str:
    if with_mtime:
        return "%d:%d:%d:%d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return "%d:%d:%d" % (st.st_dev, st.st_ino, st.st_size)


def marker_text(config_path: str, source: str, stored_path: str, source_stat: "os.stat_result | None" = None) -> str:
    """The marker for ``source`` as it is now (or as ``source_stat`` says), archived to ``stored_path``.

    Raises OSError when one of the three files cannot be stat'ed. The stored path comes last: it may hold spaces.
    """
    config = os.stat(config_path)
    wal = source_stat if source_stat is not None else os.stat(source)
    stored = os.lstat(stored_path)
    return "%s %s %s %s %s\n" % (MARKER_MAGIC, _fields(config), _fields(wal), _fields(stored, False), stored_path)


def config_value(config_path: str, key: str) -> "bytes | None":
    """The raw JSON value of ``key`` in the program's config (written by the installer as indented JSON, one key a
    line), read without the json module: the text after ``"key": `` without its trailing comma; None when missing."""
    try:
        fd = os.open(config_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    prefix = b' "%s": ' % key.encode("ascii")
    for line in data.split(b"\n"):
        if line.startswith(prefix):
            value = line[len(prefix):]
            return value[:-1] if value.endswith(b",") else value
    return None


def configured_repo(config_path: str) -> "str | None":
    """The ``repo`` of the program's config; None when it is not there in its plain form (escapes: the full push
    decides)."""
    value = config_value(config_path, "repo")
    if not value or len(value) < 2 or value[:1] != b'"' or value[-1:] != b'"':
        return None
    value = value[1:-1]
    if not value or b"\\" in value or b'"' in value or not value.startswith(b"/"):
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def acknowledged(config_path: str, source: str, name: str) -> bool:
    """True (and the marker is consumed) when a look-ahead run already made ``source`` durable as ``name``."""
    if not is_segment_name(name):
        return False
    path = os.path.join(spool_dir(config_path), name + SUFFIX)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        data = os.read(fd, 8192).decode("utf-8", "replace")
    finally:
        os.close(fd)
    if not data.startswith(MARKER_MAGIC + " ") or not data.endswith("\n"):
        return False
    stored_path = data[:-1].split(" ", 5)[-1]
    repo = configured_repo(config_path)
    if repo is None or stored_path != os.path.join(repo, "wal", "segments", name[:16], name):
        return False  # only a stored file of the configured repository counts
    try:
        if marker_text(config_path, source, stored_path) != data:
            return False
    except OSError:
        return False
    try:
        os.unlink(path)  # one use: a retry of the same name goes through the full push
    except OSError:
        pass
    return True


def write_marker(spool: str, name: str, text: str) -> None:
    """Write ``spool/<name>.ok`` atomically (temp file, rename). Not fsynced: a marker lost in a crash only sends
    PostgreSQL's call through the full push, and it is written after the entry it vouches for is durable."""
    tmp = os.path.join(spool, "%s.%d.tmp" % (name, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        data = text.encode("utf-8")
        if os.write(fd, data) != len(data):
            raise OSError(28, "short write to the spool", tmp)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, os.path.join(spool, name + SUFFIX))


def prune(spool: str, ready: "set[str]") -> None:
    """Remove markers of segments that are no longer ``.ready`` (acknowledged by another path) and temp files."""
    try:
        names = os.listdir(spool)
    except OSError:
        return
    for entry in names:
        stale = entry.endswith(".tmp") or (entry.endswith(SUFFIX) and entry[:-len(SUFFIX)] not in ready)
        if stale:
            try:
                os.unlink(os.path.join(spool, entry))
            except OSError:
                pass
