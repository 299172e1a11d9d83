# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: archive old log files with verify-before-delete.

For each log file older than the retention:

1. skip it when a process has it open or locked, or when it changes while read;
2. stream it into an O_EXCL temp file ``.ransomeye-archive.*.tmp`` in the
   archive directory (gzip through zlib, or the ``zstd`` binary), hashing the
   original while reading it; fsync the temp file;
3. decompress the temp file completely and compare SHA-256 and size with the
   original;
4. publish it under ``<name>.<YYYYMMDD>.<sha12>.<gz|zst>`` with link(2), which
   never replaces an existing file, then fsync the directory. If an archive of
   that name exists already, it is decompressed and compared instead: identical
   means the original may go, different means the original is kept and the run
   fails;
5. re-stat the original (same inode, size, mtime, still not open) and only then
   unlink it and fsync its directory.

A crash at any point leaves either the original, or a verified archive, or both;
temp files are removed by the next run (only our own name pattern, under a lock).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import errno
import fcntl
import glob
import gzip
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import (
    BeneathRefused, fsync_dir, lstat_at, open_parent_nofollow, sha256_file, unlink_quietly, wait_flock)
from ansible_collections.ransomeye.ops.plugins.module_utils._open_files import OpenFiles
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration, throughput

CHUNK = 1024 * 1024
SUFFIXES = {"gzip": "gz", "zstd": "zst"}
DEFAULT_LEVELS = {"gzip": 5, "zstd": 3}  # gzip 5: see compression_level in the module docs
LEVEL_RANGES = {"gzip": (1, 9), "zstd": (1, 19)}
ARCHIVE_RE = re.compile(r"^(?P<name>.+)\.(?P<date>\d{8})\.(?P<hash>[0-9a-f]{12})\.(?P<ext>gz|zst)$")
TEMP_PREFIX = ".ransomeye-archive."
TEMP_RE = re.compile(r"^\.ransomeye-archive\..+\.tmp$")
LOCK_NAME = ".ransomeye-archive.lock"
COMPRESSED_SUFFIXES = (".gz", ".zst", ".xz", ".bz2", ".lz4", ".zip", ".tgz")

# Test-only: "kill:<point>" SIGKILLs the module at that point, "corrupt" damages
# the temp archive before verification. Never set it in production.
TEST_HOOK_ENV = "RANSOMEYE_OPS_TEST_HOOK"
KILL_POINTS = ("compressed", "verified", "linked", "tmp_removed", "deleted")


def _hook(point: str) -> None:
    value = os.environ.get(TEST_HOOK_ENV, "")
    if value == "kill:" + point:
        os.kill(os.getpid(), signal.SIGKILL)


class Options(t.NamedTuple):
    paths: t.List[str]
    archive_dir: t.Optional[str]
    retention: float
    archive_retention: float
    compression: str
    level: int


def build_options(params: dict) -> Options:
    """Validate the module parameters; every problem is a RansomeyeError with a clear message."""
    paths = [str(p) for p in (params.get("paths") or [])]
    if not paths:
        raise RansomeyeError("paths must list at least one file or glob")
    for path in paths:
        if not os.path.isabs(path):
            raise RansomeyeError("paths must be absolute; %r is relative" % path)
        parent = os.path.dirname(path)
        if not glob.has_magic(parent) and not os.path.isdir(parent):
            raise RansomeyeError("directory %s (of %s) does not exist" % (parent, path))
    archive_dir = params.get("archive_dir")
    if archive_dir:
        if not os.path.isabs(archive_dir):
            raise RansomeyeError("archive_dir must be absolute; %r is relative" % archive_dir)
        archive_dir = os.path.normpath(archive_dir)
        if os.path.islink(archive_dir) or (os.path.lexists(archive_dir) and not os.path.isdir(archive_dir)):
            raise RansomeyeError("archive_dir %s exists and is not a directory (symlinks are refused)" % archive_dir)
        if not os.path.isdir(os.path.dirname(archive_dir)):
            raise RansomeyeError("the parent of archive_dir %s does not exist" % archive_dir)
    retention = parse_duration(params.get("retention_days"), "retention_days")
    archive_retention = parse_duration(params.get("archive_retention_days"), "archive_retention_days")
    if retention is None:
        raise RansomeyeError("retention_days is required")
    if archive_retention is None:
        archive_retention = float("inf")
    if archive_retention < retention:
        raise RansomeyeError(
            "archive_retention_days (%s) must not be shorter than retention_days (%s): archives would be "
            "pruned as soon as they are made" % (params.get("archive_retention_days"), params.get("retention_days"))
        )
    compression = params.get("compression") or "gzip"
    if compression not in SUFFIXES:
        raise RansomeyeError("compression must be gzip or zstd, not %r" % compression)
    level = params.get("compression_level")
    if level is None:
        level = DEFAULT_LEVELS[compression]
    low, high = LEVEL_RANGES[compression]
    if not low <= int(level) <= high:
        raise RansomeyeError("compression_level for %s must be between %d and %d, not %s" % (compression, low, high, level))
    if compression == "zstd" and not shutil.which("zstd"):
        raise RansomeyeError("compression zstd needs the zstd command on the managed host (Debian/RHEL package zstd)")
    return Options(paths, archive_dir, retention, archive_retention, compression, int(level))


def archive_dir_for(opts: Options, path: str) -> str:
    return opts.archive_dir or os.path.join(os.path.dirname(path), "archive")


def archive_name(original: str, mtime: float, sha256: str, compression: str) -> str:
    date = time.strftime("%Y%m%d", time.gmtime(mtime))
    return "%s.%s.%s.%s" % (os.path.basename(original), date, sha256[:12], SUFFIXES[compression])


class Candidate(t.NamedTuple):
    path: str
    stat: os.stat_result


def find_candidates(opts: Options, now: float) -> t.Tuple[t.List[Candidate], t.List[dict]]:
    """Files to archive, and what was skipped (with the reason)."""
    seen: t.Set[str] = set()
    candidates: t.List[Candidate] = []
    skipped: t.List[dict] = []
    cutoff = now - opts.retention
    for pattern in opts.paths:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in matches:
            path = os.path.normpath(path)
            if path in seen:
                continue
            seen.add(path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # already archived, or never there: nothing to do
            name = os.path.basename(path)
            adir = archive_dir_for(opts, path)
            if os.path.dirname(path) == adir or ARCHIVE_RE.match(name) or TEMP_RE.match(name) or name == LOCK_NAME:
                continue  # our own output
            if stat.S_ISLNK(st.st_mode):
                skipped.append(dict(path=path, reason="symlink (never followed)"))
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if _through_symlink(path):
                skipped.append(dict(path=path, reason="path passes through a symlink (never followed)"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(dict(path=path, reason="not a regular file"))
                continue
            if name.endswith(COMPRESSED_SUFFIXES):
                skipped.append(dict(path=path, reason="already compressed"))
                continue
            if st.st_mtime > cutoff:
                continue  # younger than retention_days: not a candidate, not worth reporting
            candidates.append(Candidate(path, st))
    return candidates, skipped


# ---------------------------------------------------------------- compressors

def _compress(opts: Options, src: t.BinaryIO, dst: t.BinaryIO, name: str, mtime: float) -> t.Tuple[str, int]:
    """Stream ``src`` into ``dst`` compressed; return SHA-256 and size of what was read."""
    digest = hashlib.sha256()
    size = 0
    if opts.compression == "gzip":
        with gzip.GzipFile(filename=name, mode="wb", compresslevel=opts.level, fileobj=dst, mtime=int(mtime)) as gz:
            for block in iter(lambda: src.read(CHUNK), b""):
                digest.update(block)
                size += len(block)
                gz.write(block)
        return digest.hexdigest(), size
    # zstd reads the original itself through our descriptor (same inode: no path lookup a symlink swap
    # could redirect) while we hash it with pread on the other core; the full decompress-and-compare
    # afterwards proves that both saw the same bytes.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([shutil.which("zstd") or "zstd", "-q", "-c", "-%d" % opts.level],
                                stdin=src.fileno(), stdout=dst.fileno(), stderr=errors)
        try:
            fd = src.fileno()
            while True:
                block = os.pread(fd, CHUNK, size)
                if not block:
                    break
                digest.update(block)
                size += len(block)
        finally:
            rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            raise RansomeyeError("zstd failed (exit %d): %s" % (rc, errors.read().decode("utf-8", "replace").strip()))
    return digest.hexdigest(), size


def _grow_pipe(handle: t.BinaryIO) -> None:
    """Raise a pipe's capacity to 1 MiB (Linux): far fewer context switches per chunk."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        fcntl.fcntl(handle.fileno(), setsize, CHUNK)
    except OSError:
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default size still works


def decompressed_digest(path: str, compression: str) -> t.Tuple[str, int]:
    """SHA-256 and size of the fully decompressed archive; RansomeyeError when it is damaged."""
    digest = hashlib.sha256()
    size = 0
    if compression == "gzip":
        try:
            with gzip.open(path, "rb") as handle:
                for block in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(block)
                    size += len(block)
        except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile, zlib.error, truncated
            raise RansomeyeError("archive %s is damaged: %s" % (path, exc))
        return digest.hexdigest(), size
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([shutil.which("zstd") or "zstd", "-d", "-q", "-c", "--", path],
                                stdout=subprocess.PIPE, stderr=errors)
        stdout = t.cast(t.BinaryIO, proc.stdout)
        _grow_pipe(stdout)
        for block in iter(lambda: stdout.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
        rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            raise RansomeyeError("archive %s is damaged: zstd -d exit %d: %s"
                                 % (path, rc, errors.read().decode("utf-8", "replace").strip()))
    return digest.hexdigest(), size


def compression_of(path: str) -> str:
    return "zstd" if path.endswith(".zst") else "gzip"


# ---------------------------------------------------------------- one file

def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _through_symlink(path: str) -> bool:
    """True when a directory on the way to ``path`` is a symlink (a glob expanded through ``<log>/evil -> /x``)."""
    parent = os.path.dirname(path)
    return os.path.realpath(parent) != parent


def _open_original(path: str) -> int:
    """Open a candidate for reading, every component with O_NOFOLLOW; _Skip when it moved, vanished or changed type.

    A file rotated away or swapped (for a symlink, a FIFO...) between the scan
    and this open skips that one file; the run goes on with the others.
    """
    try:
        parent, name = open_parent_nofollow(path)
    except BeneathRefused:
        raise _Skip("path passes through a symlink (never followed)")
    except FileNotFoundError:
        raise _Skip("vanished before it was read")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0), dir_fd=parent)
    except FileNotFoundError:
        raise _Skip("vanished before it was read")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise _Skip("replaced by a symlink or a special file before it was read (never followed)")
        raise
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Skip("replaced by a special file before it was read")
    return fd


def _hash_original(path: str, st: os.stat_result) -> t.Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fd = _open_original(path)
    with os.fdopen(fd, "rb") as handle:
        if not _same_file(os.fstat(fd), st):
            raise _Skip("changed while being examined")
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
        if not _same_file(os.fstat(fd), st) or size != st.st_size:
            raise _Skip("changing (grew or was modified while read)")
    return digest.hexdigest(), size


class _Skip(Exception):
    """The file is left alone this run (not an error)."""


def plan_one(opts: Options, cand: Candidate, busy: OpenFiles) -> dict:
    """Check mode: what would happen to one file (reads it to name its archive)."""
    why = busy.why_busy(cand.stat)
    if why:
        raise _Skip("%s by a process" % why)
    digest, size = _hash_original(cand.path, cand.stat)
    adir = archive_dir_for(opts, cand.path)
    final = os.path.join(adir, archive_name(cand.path, cand.stat.st_mtime, digest, opts.compression))
    return dict(path=cand.path, archive=final, sha256=None, original_sha256=digest, bytes_before=size,
                bytes_after=None, reused=os.path.exists(final), original_removed=False)


def archive_one(opts: Options, cand: Candidate, busy: OpenFiles, delete: bool = True) -> dict:
    """Archive one file (and remove it unless ``delete`` is false); _Skip leaves it, RansomeyeError when unsafe."""
    why = busy.why_busy(cand.stat)
    if why:
        raise _Skip("%s by a process" % why)
    adir = archive_dir_for(opts, cand.path)
    fd = _open_original(cand.path)
    with os.fdopen(fd, "rb") as src:
        if not _same_file(os.fstat(fd), cand.stat):
            raise _Skip("changed while being examined")
        tmp_fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=adir)  # O_EXCL, 0600
        try:
            with os.fdopen(tmp_fd, "wb") as dst:
                digest, size = _compress(opts, src, dst, os.path.basename(cand.path), cand.stat.st_mtime)
                dst.flush()
                os.fsync(dst.fileno())
            if not _same_file(os.fstat(fd), cand.stat) or size != cand.stat.st_size:
                raise _Skip("changing (grew or was modified while read)")
            if os.environ.get(TEST_HOOK_ENV) == "corrupt":
                _corrupt(tmp_path)
            _hook("compressed")
            check_digest, check_size = decompressed_digest(tmp_path, opts.compression)
            if (check_digest, check_size) != (digest, size):
                raise RansomeyeError("verification failed for %s: the archive decompresses to %d bytes with "
                                     "SHA-256 %s, the original has %d bytes with %s; original kept"
                                     % (cand.path, check_size, check_digest, size, digest))
            _hook("verified")
            os.chmod(tmp_path, stat.S_IMODE(cand.stat.st_mode) & 0o666)
            try:
                os.chown(tmp_path, cand.stat.st_uid, cand.stat.st_gid)
            except PermissionError:
                pass  # an unprivileged run keeps its own ownership
            os.utime(tmp_path, ns=(cand.stat.st_atime_ns, cand.stat.st_mtime_ns))
            final = os.path.join(adir, archive_name(cand.path, cand.stat.st_mtime, digest, opts.compression))
            reused = _publish(tmp_path, final)
            if reused:
                existing = decompressed_digest_or_none(final)
                if existing != (digest, size):
                    raise RansomeyeError("archive %s exists with different content (not overwritten); original %s kept"
                                         % (final, cand.path))
            fsync_dir(adir)
            _hook("linked")
        finally:
            unlink_quietly(tmp_path)
    fsync_dir(adir)
    _hook("tmp_removed")
    item = dict(path=cand.path, archive=final, sha256=sha256_file(final), original_sha256=digest,
                bytes_before=size, bytes_after=os.stat(final).st_size, reused=reused, original_removed=False)
    if delete:
        delete_original(cand, item, busy, refresh=True)
    return item


def delete_original(cand: Candidate, item: dict, busy: OpenFiles, refresh: bool = False) -> None:
    """Remove the archived original, only if it is still the very file archived and nobody has it open."""
    try:
        parent, name = open_parent_nofollow(cand.path)
    except BeneathRefused:
        raise _Skip("a directory on its path was swapped for a symlink; original kept, archive %s kept"
                    % item["archive"])
    except FileNotFoundError:
        raise _Skip("vanished before deletion (the archive is kept)")
    try:
        now_st = lstat_at(parent, name)
        if now_st is None:
            raise _Skip("vanished before deletion (the archive is kept)")
        if not _same_file(now_st, cand.stat):
            raise _Skip("changed after archiving; original kept, archive %s kept" % item["archive"])
        why = busy.why_busy(now_st, refresh=refresh)
        if why:
            raise _Skip("%s by a process just before deletion; original kept" % why)
        os.unlink(name, dir_fd=parent)
    finally:
        os.close(parent)
    _hook("deleted")
    fsync_dir(os.path.dirname(cand.path))
    item["original_removed"] = True


def _publish(tmp_path: str, final: str) -> bool:
    """Give the temp file its final name without ever replacing a file; True when ``final`` existed."""
    try:
        os.link(tmp_path, final)
        return False
    except FileExistsError:
        return True
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    # A filesystem without hard links: we hold the directory lock, so no run of
    # ours can create ``final`` between this check and the rename.
    if os.path.lexists(final):
        return True
    os.rename(tmp_path, final)
    return False


def decompressed_digest_or_none(path: str) -> t.Optional[t.Tuple[str, int]]:
    try:
        return decompressed_digest(path, compression_of(path))
    except RansomeyeError:
        return None


def _corrupt(path: str) -> None:
    """Test-only: flip bytes in the middle of the compressed stream."""
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(max(10, size // 2))
        block = handle.read(4)
        handle.seek(max(10, size // 2))
        handle.write(bytes(b ^ 0xFF for b in block) or b"\xff")


# ---------------------------------------------------------------- directories

class DirLock:
    """flock on ``<archive_dir>/.ransomeye-archive.lock`` so two runs never share an archive dir."""

    def __init__(self) -> None:
        self.fds: t.List[int] = []

    def acquire(self, directory: str) -> None:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            wait_flock(fd, True, 0, lambda: RansomeyeError(
                "another ransomeye_log_archive run holds %s; try again later" % directory))
        except BaseException:
            os.close(fd)
            raise
        self.fds.append(fd)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def clean_temp_files(directory: str, busy: OpenFiles) -> t.List[str]:
    """Remove temp files left by a crashed run (our name pattern only, regular files, not open)."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if not TEMP_RE.match(name):
            continue
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or busy.why_busy(st, refresh=True):
            continue
        os.unlink(path)
        removed.append(path)
    if removed:
        fsync_dir(directory)
    return removed


def prunable(directory: str, cutoff: float, keep: t.Container[str]) -> t.List[str]:
    """Archives in ``directory`` (our name pattern, regular files) last modified before ``cutoff``."""
    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if not ARCHIVE_RE.match(name):
            continue
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff and path not in keep:
            found.append(path)
    return found


def archive_dirs(opts: Options, candidates: t.Sequence[Candidate]) -> t.List[str]:
    dirs = {archive_dir_for(opts, c.path) for c in candidates}
    if opts.archive_dir:
        dirs.add(opts.archive_dir)
    else:
        for pattern in opts.paths:
            parent = os.path.dirname(pattern)
            if not glob.has_magic(parent):
                dirs.add(os.path.join(parent, "archive"))
    return sorted(dirs)


def _ensure_archive_dir(path: str) -> bool:
    if os.path.islink(path):
        raise RansomeyeError("archive directory %s is a symlink; refusing to write through it" % path)
    if os.path.isdir(path):
        return False
    os.mkdir(path, 0o750)
    fsync_dir(os.path.dirname(path))
    return True


def run(params: dict, check_mode: bool, now: t.Optional[float] = None) -> dict:
    """The whole module: returns the result dict; raises RansomeyeError when a file failed its checks."""
    opts = build_options(params)
    started = time.monotonic()
    now = time.time() if now is None else now
    candidates, skipped = find_candidates(opts, now)
    busy = OpenFiles()
    dirs = archive_dirs(opts, candidates)
    result: t.Dict[str, t.Any] = dict(changed=False, archived=[], pruned=[], skipped_entries=skipped, cleaned_temp=[],
                                      created_dirs=[], errors=[], bytes_before=0, bytes_after=0)
    lock = DirLock()
    try:
        if not check_mode:
            for directory in dirs:
                if directory in {archive_dir_for(opts, c.path) for c in candidates} and _ensure_archive_dir(directory):
                    result["created_dirs"].append(directory)
                if os.path.isdir(directory) and not os.path.islink(directory):
                    lock.acquire(directory)
                    result["cleaned_temp"] += clean_temp_files(directory, busy)
        pending = []
        for cand in candidates:
            try:
                item = plan_one(opts, cand, busy) if check_mode else archive_one(opts, cand, busy, delete=False)
            except _Skip as exc:
                skipped.append(dict(path=cand.path, reason=str(exc)))
                continue
            except RansomeyeError as exc:
                result["errors"].append(dict(path=cand.path, reason=exc.msg))
                continue
            result["archived"].append(item)
            result["bytes_before"] += item["bytes_before"]
            result["bytes_after"] += item["bytes_after"] or 0
            pending.append((cand, item))
        if pending and not check_mode:
            # Originals go once every archive is verified, after one fresh look at who has what open
            # (scanning /proc costs tens of ms: once per run, not once per file).
            busy.refresh()
            for cand, item in pending:
                try:
                    delete_original(cand, item, busy)
                except _Skip as exc:
                    skipped.append(dict(path=cand.path, reason=str(exc)))
        made = {item["archive"] for item in result["archived"]}
        if opts.archive_retention != float("inf"):
            cutoff = now - opts.archive_retention
            for directory in dirs:
                if os.path.islink(directory):
                    continue
                for path in prunable(directory, cutoff, made):
                    if not check_mode:
                        unlink_quietly(path)
                    result["pruned"].append(path)
            if result["pruned"] and not check_mode:
                for directory in {os.path.dirname(p) for p in result["pruned"]}:
                    fsync_dir(directory)
    finally:
        lock.release()
    result["changed"] = bool(result["archived"] or result["pruned"] or result["cleaned_temp"] or result["created_dirs"])
    # Check mode compresses nothing: no rate to report.
    result.update(throughput(0 if check_mode else result["bytes_before"], time.monotonic() - started))
    result["files_archived"] = len(result["archived"])
    if result["errors"]:
        raise RansomeyeError(
            "%d file(s) could not be archived safely and were kept: %s"
            % (len(result["errors"]), "; ".join(e["reason"] for e in result["errors"])), **result
        )
    return result
