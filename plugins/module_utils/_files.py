# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: crash-safe file writes, a symlink-proof tree walk, streaming hashes."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

READ_CHUNK = 1024 * 1024


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str, chunk_size: int = READ_CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks (flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_stream(handle: t.BinaryIO, chunk_size: int = READ_CHUNK) -> t.Tuple[str, int]:
    """Hex SHA-256 and byte count of everything left in ``handle``."""
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: handle.read(chunk_size), b""):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def backup_copy(path: str) -> str:
    """Copy ``path`` next to itself as ``path.<timestamp>~`` (mode and owner kept); return its name."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime())
    dest = "%s.%d.%s~" % (path, os.getpid(), stamp)
    suffix = 0
    while os.path.lexists(dest):
        suffix += 1
        dest = "%s.%d.%s.%d~" % (path, os.getpid(), stamp, suffix)
    import shutil  # here, not at the top: the WAL program (a process per segment) imports this module
    with open(path, "rb") as src, _exclusive(dest, stat.S_IMODE(os.stat(path).st_mode)) as dst:
        shutil.copyfileobj(src, dst, READ_CHUNK)
        dst.flush()
        os.fsync(dst.fileno())
    st = os.stat(path)
    _chown_quietly(dest, st.st_uid, st.st_gid)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return dest


@contextlib.contextmanager
def _exclusive(path: str, mode: int) -> t.Iterator[t.BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def _chown_quietly(path: str, uid: int, gid: int) -> None:
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        # An unprivileged user cannot give a file away; keeping our own
        # ownership is the only possible outcome and not an error.
        pass


class AtomicWriter:
    """Write a file so that readers see the old content or the new, never a mix.

    The temp file lives in the target directory (so the rename is atomic and on
    one filesystem), is created 0600 with O_EXCL, fsynced, renamed over the
    target, and the directory is fsynced. Mode and owner of an existing target
    are kept unless given. Use as a context manager; on an exception the temp
    file is removed and the target is untouched.
    """

    def __init__(
        self,
        path: str,
        mode: t.Optional[int] = None,
        uid: t.Optional[int] = None,
        gid: t.Optional[int] = None,
        backup: bool = False,
    ) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.backup = backup
        self.backup_file: t.Optional[str] = None
        self.handle: t.Optional[t.BinaryIO] = None
        self.tmp_path: t.Optional[str] = None

    def __enter__(self) -> t.BinaryIO:
        if not os.path.isdir(self.directory):
            raise RansomeyeError("directory %s does not exist" % self.directory)
        import tempfile  # here, not at the top: see backup_copy
        fd, self.tmp_path = tempfile.mkstemp(
            prefix=".%s." % os.path.basename(self.path), suffix=".tmp", dir=self.directory
        )
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, exc_type: t.Any, exc: t.Any, tb: t.Any) -> None:
        if self.handle is None or self.tmp_path is None:
            raise RuntimeError("AtomicWriter exited without being entered")
        if exc_type is not None:
            self.handle.close()
            unlink_quietly(self.tmp_path)
            return
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            self._apply_metadata()
            if self.backup and os.path.exists(self.path):
                self.backup_file = backup_copy(self.path)
            os.rename(self.tmp_path, self.path)
        except BaseException:
            self.handle.close()
            unlink_quietly(self.tmp_path)
            raise
        fsync_dir(self.directory)

    def _apply_metadata(self) -> None:
        if self.tmp_path is None:
            raise RuntimeError("AtomicWriter has no temp file")
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        mode = self.mode
        if mode is None:
            mode = stat.S_IMODE(current.st_mode) if current else 0o644 & ~_umask()
        os.chmod(self.tmp_path, mode)
        uid = self.uid if self.uid is not None else (current.st_uid if current else -1)
        gid = self.gid if self.gid is not None else (current.st_gid if current else -1)
        if uid != -1 or gid != -1:
            _chown_quietly(self.tmp_path, uid, gid)


def atomic_write(
    path: str,
    data: bytes,
    mode: t.Optional[int] = None,
    backup: bool = False,
    uid: t.Optional[int] = None,
    gid: t.Optional[int] = None,
) -> t.Optional[str]:
    """Atomically replace ``path`` with ``data``; return the backup file name, if one was made."""
    writer = AtomicWriter(path, mode=mode, backup=backup, uid=uid, gid=gid)
    with writer as handle:
        handle.write(data)
    return writer.backup_file


def read_regular(path: str, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (small files only); refuse a FIFO, device or directory.

    Opened non-blocking, so a FIFO planted where a file is expected cannot
    hang the run waiting for a writer, then checked with fstat.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RansomeyeError("%s %s is not a regular file (a FIFO, device, socket or directory); refusing to "
                                 "read it" % (what, path), path=path)
        return handle.read()


def read_if_exists(path: str) -> t.Optional[bytes]:
    """The file's bytes, or None when it does not exist (small regular files only: config, keys)."""
    try:
        return read_regular(path)
    except FileNotFoundError:
        return None


def canonical_path(path: str) -> str:
    """``path`` without ``//``, ``.``, ``..`` or a trailing slash; ``..`` keeps the meaning the kernel gives it.

    ``os.path.normpath`` alone keeps a leading ``//`` (so ``//`` would slip
    past a refusal of ``/``) and drops ``x/..`` lexically, which names
    another directory when ``x`` is a symlink. The part up to the last
    ``..`` is therefore resolved as the kernel would (when it exists).
    """
    if not isinstance(path, str) or not path:
        return path
    parts = path.split("/")
    if ".." in parts:
        last = len(parts) - 1 - parts[::-1].index("..")
        head = "/".join(parts[:last + 1]) or "/"
        if os.path.exists(head):
            rest = "/".join(parts[last + 1:])
            path = os.path.join(os.path.realpath(head), rest) if rest else os.path.realpath(head)
    out = os.path.normpath(path)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def unlink_quietly(path: str) -> None:
    """Remove ``path``; one already gone is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def unlink_on_error(path: str) -> t.Iterator[None]:
    """Remove ``path``, a temp file of this run, when the block raises (even KeyboardInterrupt), then re-raise.

    For a temp file whose last step is not AtomicWriter's plain rename (a
    repository commit, a rename after a content check, a symlink): nothing half
    written outlives a failed run.
    """
    try:
        yield
    except BaseException:
        unlink_quietly(path)
        raise


class WalkEntry(t.NamedTuple):
    """One entry found by safe_walk.

    ``dir_fd`` is an open descriptor of the parent directory, valid only until
    the walk moves on: use it (``os.unlink(name, dir_fd=...)``) to act on the
    entry without resolving its path again, which a symlink swap could redirect.
    """

    path: str
    relpath: str
    name: str
    stat: os.stat_result
    dir_fd: int


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def safe_walk(
    root: str,
    one_filesystem: bool = True,
    include_dirs: bool = False,
    dirs_last: bool = True,
    on_skip: t.Optional[t.Callable[[str], None]] = None,
) -> t.Iterator[WalkEntry]:
    """Yield every entry below ``root`` without following a symlink or leaving its filesystem.

    Each directory is opened relative to its parent's descriptor with
    O_NOFOLLOW and checked to be the directory that was listed, so a directory
    swapped for a symlink mid-walk is never entered. Symlinks are yielded as
    symlinks (lstat), never resolved. Mount points below the root are skipped
    when ``one_filesystem``. With ``include_dirs`` directories are yielded too,
    after their contents when ``dirs_last`` (the order for removing empty ones).
    Entries come in sorted order, so results are deterministic. ``on_skip`` is called with the path of each
    listed directory that could not be entered (removed, swapped or unreadable since it was listed), so a
    caller can report what it left out.
    """
    root = os.path.abspath(root)
    try:
        root_stat = os.lstat(root)
    except FileNotFoundError:
        raise RansomeyeError("root %s does not exist" % root)
    if stat.S_ISLNK(root_stat.st_mode):
        raise RansomeyeError("root %s is a symlink; give the real directory" % root)
    if not stat.S_ISDIR(root_stat.st_mode):
        raise RansomeyeError("root %s is not a directory" % root)
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        yield from _walk_fd(root_fd, root, "", root_stat.st_dev if one_filesystem else None,
                            include_dirs, dirs_last, on_skip)
    finally:
        os.close(root_fd)


def _walk_fd(
    dir_fd: int,
    dir_path: str,
    rel: str,
    only_dev: t.Optional[int],
    include_dirs: bool,
    dirs_last: bool,
    on_skip: t.Optional[t.Callable[[str], None]] = None,
) -> t.Iterator[WalkEntry]:
    names = sorted(os.listdir(dir_fd))
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        path = os.path.join(dir_path, name)
        relpath = os.path.join(rel, name) if rel else name
        entry = WalkEntry(path, relpath, name, st, dir_fd)
        if not stat.S_ISDIR(st.st_mode):
            yield entry
            continue
        if only_dev is not None and st.st_dev != only_dev:
            continue
        try:
            child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            if on_skip is not None:
                on_skip(path)  # replaced by a symlink, removed or unreadable since it was listed
            continue
        try:
            opened = os.fstat(child_fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                if on_skip is not None:
                    on_skip(path)
                continue
            if include_dirs and not dirs_last:
                yield entry
            yield from _walk_fd(child_fd, path, relpath, only_dev, include_dirs, dirs_last, on_skip)
        finally:
            os.close(child_fd)
        if include_dirs and dirs_last:
            yield entry


def is_within(root: str, path: str) -> bool:
    """True when ``path`` (already resolved) lies inside ``root`` (already resolved)."""
    root = os.path.abspath(root)
    path = os.path.abspath(path)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def ensure_directory(path: str, mode: int = 0o700) -> bool:
    """Create ``path`` (and parents) when missing; return True when it created something."""
    try:
        os.makedirs(path, mode=mode)
        return True
    except OSError as exc:
        if exc.errno == errno.EEXIST and os.path.isdir(path):
            return False
        raise


def wait_flock(fd: int, exclusive: bool, timeout: float, busy: t.Callable[[], Exception],
               poll: float = 0.2) -> None:
    """flock ``fd``, retrying for up to ``timeout`` seconds (0: one try), then raise ``busy()``.

    Non-blocking tries in a loop rather than a blocking flock: a run stuck behind
    another must give up with a clear message, not hang an Ansible task.
    """
    operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + max(0.0, float(timeout))
    while True:
        try:
            fcntl.flock(fd, operation)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if time.monotonic() >= deadline:
                raise busy()
            time.sleep(poll)


@contextlib.contextmanager
def file_lock(path: str, what: str, timeout: float = 10.0, exclusive: bool = True) -> t.Iterator[None]:
    """flock ``path`` (created 0600, never through a symlink) so two runs never interleave.

    Waits up to ``timeout`` seconds for the other run, then fails with a
    message naming ``what`` is running. The lock dies with the process, so a
    killed run never leaves a stale lock behind.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        wait_flock(fd, exclusive, timeout, lambda: RansomeyeError(
            "another %s is running (%s is locked); try again when it has finished" % (what, path)))
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- writing beneath a root

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_BENEATH = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _O_CLOEXEC


class BeneathRefused(RansomeyeError):
    """A path below a root that would leave it (a symlink, a non-directory, ``..``)."""


def is_canonical_abs(path: t.Any) -> bool:
    """True for ``/a/b``: absolute, one leading slash, no empty, ``.`` or ``..`` component, no trailing slash.

    ``os.path.normpath`` keeps a leading ``//`` (POSIX leaves it
    implementation-defined), so ``//`` would pass a normpath comparison and
    then contain every path under a prefix test.
    """
    if not isinstance(path, str) or not path.startswith("/") or path == "/" or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path[1:].split("/"))


def split_beneath(rel: str) -> t.List[str]:
    """The components of a plain relative path (``a/b/c``); refuse anything that could leave a root."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\x00" in rel:
        raise BeneathRefused("refusing path %r: not a plain relative path" % (rel,))
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BeneathRefused("refusing path %r: empty, '.' or '..' component" % (rel,))
    return parts


def lstat_at(dir_fd: int, name: str) -> t.Optional[os.stat_result]:
    """lstat of ``name`` in the directory ``dir_fd``, or None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir_at(dir_fd: int, name: str, where: str = "") -> int:
    """Open the directory ``name`` in ``dir_fd``; refuse (BeneathRefused) a symlink or a non-directory."""
    try:
        return os.open(name, _DIR_BENEATH, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            st = lstat_at(dir_fd, name)
            kind = "a symlink" if st is not None and stat.S_ISLNK(st.st_mode) else "not a directory"
            raise BeneathRefused("refusing to go through %s: it is %s" % (where or name, kind))
        raise


def open_parent_nofollow(path: str) -> t.Tuple[int, str]:
    """(descriptor of the directory holding ``path``, base name), every component opened with O_NOFOLLOW.

    Refuses (BeneathRefused) a path that passes through a symlink anywhere,
    also one swapped in after an earlier check. The caller closes the result.
    """
    if not is_canonical_abs(path):
        raise BeneathRefused("refusing path %r: not an absolute canonical path" % (path,))
    parts = path[1:].split("/")
    root_fd = os.open("/", _DIR_BENEATH)
    try:
        return open_dir_beneath(root_fd, parts[:-1], where=""), parts[-1]
    finally:
        os.close(root_fd)


def open_restore_base(path: str, create: bool) -> t.Optional[int]:
    """A descriptor of the directory a restore writes beneath, created 0700 when missing and ``create``.

    None when it is missing and not ``create`` (check mode: nothing may be made).
    """
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        if not create:
            return None
        os.makedirs(path, 0o700, exist_ok=True)
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def open_dir_beneath(base_fd: int, parts: t.Sequence[str], create: bool = False, mode: int = 0o700,
                     created: t.Optional[t.Callable[[str], None]] = None, where: str = "") -> int:
    """A new descriptor of ``base/parts...``, opened one component at a time, never through a symlink.

    Missing directories are created (``mode``) when ``create``, and reported
    to ``created``; otherwise FileNotFoundError. The caller closes the result.
    """
    fd = os.dup(base_fd)
    walked = where.rstrip("/")
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise BeneathRefused("refusing path component %r below %s" % (part, where or "the root"))
            walked = walked + "/" + part
            try:
                child = open_dir_at(fd, part, walked)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    if created is not None:
                        created(walked)
                except FileExistsError:
                    pass  # created meanwhile; the open below checks what it is
                child = open_dir_at(fd, part, walked)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


class AtomicWriterAt:
    """AtomicWriter for the entry ``name`` of the directory open as ``dir_fd`` (nothing resolved by path).

    The temp file is created O_EXCL|O_NOFOLLOW next to the target, fsynced,
    given its mode and owner through its descriptor, renamed over ``name``
    (a symlink there is replaced, never written through), and the directory
    is fsynced. On an exception the temp file is removed and ``name`` untouched.
    """

    def __init__(self, dir_fd: int, name: str, mode: int = 0o600, uid: t.Optional[int] = None,
                 gid: t.Optional[int] = None) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise BeneathRefused("refusing file name %r" % (name,))
        self.dir_fd = dir_fd
        self.name = name
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.tmp_name: t.Optional[str] = None
        self.handle: t.Optional[t.BinaryIO] = None

    def __enter__(self) -> t.BinaryIO:
        for _attempt in range(100):
            tmp = ".%s.%s.tmp" % (self.name[:200], os.urandom(6).hex())
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _O_CLOEXEC, 0o600,
                             dir_fd=self.dir_fd)
            except FileExistsError:
                continue
            self.tmp_name = tmp
            self.handle = os.fdopen(fd, "wb")
            return self.handle
        raise RansomeyeError("could not create a temporary file next to %s" % self.name)

    def __exit__(self, exc_type: t.Any, exc: t.Any, tb: t.Any) -> None:
        if self.handle is None or self.tmp_name is None:
            raise RuntimeError("AtomicWriterAt exited without being entered")
        try:
            if exc_type is None:
                self.handle.flush()
                if self.uid is not None or self.gid is not None:
                    try:
                        os.fchown(self.handle.fileno(), -1 if self.uid is None else self.uid,
                                  -1 if self.gid is None else self.gid)
                    except PermissionError:
                        pass  # an unprivileged run keeps its own ownership
                # after the chown, which clears the set-user-id and set-group-id bits, also for root
                os.fchmod(self.handle.fileno(), self.mode)
                os.fsync(self.handle.fileno())
                self.handle.close()
                os.rename(self.tmp_name, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
                os.fsync(self.dir_fd)
                return
        except BaseException:
            self.handle.close()
            _unlink_at_quietly(self.dir_fd, self.tmp_name)
            raise
        self.handle.close()
        _unlink_at_quietly(self.dir_fd, self.tmp_name)


def _unlink_at_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def write_beneath(root: str, rel: str, chunks: t.Iterable[bytes], mode: int = 0o600, dir_mode: int = 0o700,
                  uid: t.Optional[int] = None, gid: t.Optional[int] = None) -> int:
    """Atomically write ``chunks`` to ``root/rel`` without following a link at any component; return the size.

    ``root`` itself is opened as given (the operator's choice, its last
    component must not be a symlink); every component below it is opened with
    O_NOFOLLOW relative to its parent's descriptor, missing directories are
    created with ``dir_mode``. No byte can land outside ``root``.
    """
    parts = split_beneath(rel)
    root_fd = os.open(root, _DIR_BENEATH)
    try:
        parent = open_dir_beneath(root_fd, parts[:-1], create=True, mode=dir_mode, where=root)
    finally:
        os.close(root_fd)
    size = 0
    try:
        with AtomicWriterAt(parent, parts[-1], mode=mode, uid=uid, gid=gid) as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
    finally:
        os.close(parent)
    return size
