# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the resident WAL archiver (docs/BACKUP_FORMAT.md 4.3.3).

PostgreSQL starts the archive command once per segment, and most of a push's
CPU time is the interpreter starting and importing cryptography. So the first
push that runs in full also starts ``ransomeye-wal serve``: one process, as
the server's OS user, that runs later pushes in full, exactly as a push of
their own would (same code, same lock, same checks, its alarm bounding each).
PostgreSQL's call then only connects to it over a Unix socket in
``<program_dir>/run/`` (0700, the server's user) and exits with the answer.

What keeps this as safe as a push of its own:

- the caller exits 0 only on the archiver's "0" answer, which it sends after
  the push returned (the segment and its chain entry durable); no answer at
  all (the archiver died) runs the push in the caller, from the start;
- the caller believes only an archiver of its own user (SO_PEERCRED);
- the archiver answers "retry" (the caller pushes itself) when the config or
  any installed program file changed since it started, and then exits;
- it exits after a failed push (the next one starts clean), when idle for
  ``resident_idle`` seconds, when its config is gone, and when the cluster
  whose push started it has no postmaster.pid any more;
- a caller waits at most ``timeout`` + 10 seconds, then stops the archiver
  (SIGKILL) and fails; PostgreSQL keeps the segment and retries.

The client half runs first in every push, so it imports only ``os``, ``sys``
and the C ``_socket`` module (``socket.py`` loads ``enum`` and ``selectors``).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import sys

import _socket

from ansible_collections.ransomeye.ops.plugins.module_utils._wal_spool import config_value

RUN = "run"
SOCKET = "archiver.sock"
LOCK = "archiver.lock"
LAUNCHER = "ransomeye-wal"
HOOK_ENV = "RANSOMEYE_WAL_TEST_HOOK"                    # the crash tests' hook of a push (see _wal_program._hook)
RESIDENT_HOOK_ENV = "RANSOMEYE_WAL_TEST_RESIDENT_HOOK"  # the same, applied in the archiver to this call's push
GRACE = 10              # seconds a caller waits beyond the archiver's own timeout
TICK = 2.0              # how often an idle archiver looks whether it should go
_SUN_PATH_MAX = 107     # sockaddr_un.sun_path on Linux, less the terminating NUL
_MAX_MESSAGE = 1 << 16
_SIGKILL = 9            # the signal module loads enum: a literal keeps the client's start-up small


def run_dir(config_path: str) -> str:
    """Where the archiver's socket and lock live (``<program_dir>/run``)."""
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), RUN)


def socket_path(config_path: str) -> "str | None":
    """The archiver's socket, or None when its path does not fit a Unix socket address."""
    path = os.path.join(run_dir(config_path), SOCKET)
    return path if len(os.fsencode(path)) <= _SUN_PATH_MAX else None


def config_int(config_path: str, key: str, default: int) -> int:
    """An integer of the program's config, read without the json module (``default`` when not a plain number)."""
    value = config_value(config_path, key)
    return int(value) if value is not None and value.isdigit() else default


def _peer(sock: "_socket.socket") -> "tuple[int, int]":
    """(pid, uid) of the process at the other end (Linux SO_PEERCRED: three native ints)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(raw[0:4], sys.byteorder), int.from_bytes(raw[4:8], sys.byteorder)


def _receive(sock: "_socket.socket") -> bytes:
    """Everything until the other end closes (at most _MAX_MESSAGE bytes)."""
    parts = []
    size = 0
    while size <= _MAX_MESSAGE:
        data = sock.recv(_MAX_MESSAGE)
        if not data:
            break
        parts.append(data)
        size += len(data)
    return b"".join(parts)


# ----------------------------------------------------------------------------- the caller (archive_command)


def ask(config_path: str, source: str, name: str) -> "tuple[int, str] | None":
    """(exit status, stderr text) of the push as the resident archiver ran it; None when there is no archiver
    of our own user to ask, it asks us to push ourselves, or it died before it answered: the caller then runs
    the push in full."""
    path = socket_path(config_path)
    if path is None or not hasattr(_socket, "SO_PEERCRED") or os.environ.get(HOOK_ENV):
        return None  # a crash test of the call's own push (4.3, 4.3.2) kills that push, not the archiver
    wait = config_int(config_path, "timeout", 60) + GRACE
    request = b"\0".join([b"push", os.fsencode(os.path.abspath(config_path)), os.fsencode(os.path.abspath(source)),
                          os.fsencode(name), os.fsencode(os.environ.get(RESIDENT_HOOK_ENV, ""))])
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(wait)
        try:
            sock.connect(path)
            pid, uid = _peer(sock)
        except OSError:
            return None  # none running (or a stale socket): the caller pushes, then starts one
        if uid != os.geteuid():
            return None  # not our own user's: never trust its answer
        try:
            sock.sendall(request)
            sock.shutdown(_socket.SHUT_WR)
            reply = _receive(sock)
        except _socket.timeout:
            try:
                os.kill(pid, _SIGKILL)
            except OSError:
                pass
            return 1, ("ransomeye-wal: ERROR: push %s failed: the resident archiver (pid %d) did not answer within "
                       "%d s and was stopped; the server keeps the segment and retries\n" % (name, pid, wait))
        except OSError:
            return None  # it died while we talked: push ourselves
    finally:
        sock.close()
    status, _sep, text = reply.partition(b"\n")
    if status not in (b"0", b"1"):
        return None  # "retry", or no answer at all
    return int(status), text.decode("utf-8", "replace")


def spawn(config_path: str) -> None:
    """Start the resident archiver for ``config_path`` in a session of its own (it exits at once when one runs).
    Never fails: an archiver is a saving, not a need (every push can run in full).

    The caller's working directory is the cluster's data directory when PostgreSQL runs us: the archiver
    watches its postmaster.pid and goes when the cluster does."""
    try:
        if socket_path(config_path) is None or not os.path.isdir(run_dir(config_path)):
            return
        config_path = os.path.abspath(config_path)
        launcher = os.path.join(os.path.dirname(config_path), LAUNCHER)
        cwd = os.getcwd()
        watch = cwd if os.path.isfile(os.path.join(cwd, "postmaster.pid")) else ""
        env = {key: value for key, value in os.environ.items() if key not in (HOOK_ENV, RESIDENT_HOOK_ENV)}
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.posix_spawn(launcher, [launcher, "serve", "--config", config_path, watch], env,
                           file_actions=[(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)], setsid=True)
        finally:
            os.close(devnull)
    except (OSError, AttributeError, NotImplementedError):
        pass


def _tell(path: str, message: bytes) -> "tuple[int, bytes] | None":
    """Send ``message`` to the archiver on ``path``: (its pid, from the socket's peer credentials, and its reply),
    or None when none answers. For the installer's short requests; a push goes through ``ask``."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(path)
        pid = _peer(sock)[0] if hasattr(_socket, "SO_PEERCRED") else 0
        sock.sendall(message)
        sock.shutdown(_socket.SHUT_WR)
        return pid, _receive(sock)
    except OSError:
        return None
    finally:
        sock.close()


def stop(config_path: str) -> bool:
    """Ask the running archiver to exit (the installer, after it changed the program or turned it off).

    Returns once it has said "bye" and removed its socket (at most a few seconds later), so that what the
    module reports afterwards (``running_pid``) is the state the host is in."""
    import time

    path = socket_path(config_path)
    answer = _tell(path, b"quit") if path is not None else None
    if answer is None or not answer[1].startswith(b"bye"):
        return False
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def running_pid(config_path: str) -> "int | None":
    """The pid of the archiver that answers on ``config_path``'s socket (None: none). It is sent an empty
    request, which is answered "retry" and changes nothing but the start of its idle period."""
    path = socket_path(config_path)
    if path is None or not hasattr(_socket, "SO_PEERCRED"):
        return None
    answer = _tell(path, b"")
    return (answer[0] or None) if answer is not None else None


# ----------------------------------------------------------------------------- the archiver (serve)


def _close_inherited() -> None:
    """Close what the spawning process left open (PostgreSQL's archiver has pipes the server log reads)."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def _identity(config_path: str) -> "list[tuple[str, int, int, int]]":
    """What the archiver started with: the config and every installed program file (inode, size, mtime).

    The installer replaces files by rename, so any change gives a new inode."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [config_path, os.path.join(os.path.dirname(config_path), LAUNCHER)]
    try:
        paths += [os.path.join(here, entry) for entry in sorted(os.listdir(here)) if entry.endswith(".py")]
    except OSError:
        pass
    seen = []
    for path in paths:
        try:
            st = os.stat(path)
            seen.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            seen.append((path, 0, 0, 0))
    return seen


def _should_go(config_path: str, watch: str) -> bool:
    if not os.path.exists(config_path):
        return True
    return bool(watch) and not os.path.exists(os.path.join(watch, "postmaster.pid"))


def serve(config_path: str, watch: str, idle: int, push: "object") -> int:
    """Run pushes for callers until idle for ``idle`` seconds (see the module docstring for when else it goes).

    ``push(source, name)`` runs one push in full and returns (exit status, stderr text), as the program would."""
    import fcntl
    import time

    _close_inherited()
    os.chdir("/")
    os.umask(0o077)
    config_path = os.path.abspath(config_path)
    path = socket_path(config_path)
    if path is None or idle <= 0:
        return 0
    lock = os.open(os.path.join(run_dir(config_path), LOCK),
                   os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return 0  # another archiver serves this config
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())
    identity = _identity(config_path)
    try:
        os.unlink(path)  # a dead archiver's socket: only the lock holder may remove it
    except FileNotFoundError:
        pass
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(path)
    bound = os.lstat(path)
    listener.listen(16)
    listener.settimeout(TICK)
    last = time.monotonic()
    try:
        while True:
            try:
                fd, _address = listener._accept()  # pylint: disable=protected-access  # _socket's accept gives an fd
            except _socket.timeout:
                if time.monotonic() - last > idle or _should_go(config_path, watch):
                    return 0
                continue
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            try:
                keep_going = _answer(conn, config_path, identity, push)
            except OSError:
                keep_going = True  # the caller went away; it pushes again (PostgreSQL retries)
            finally:
                conn.close()
            last = time.monotonic()
            if not keep_going:
                return 0
    finally:
        try:
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) == (bound.st_ino, bound.st_dev):
                os.unlink(path)
        except OSError:
            pass
        listener.close()
        os.close(lock)


def _answer(conn: "_socket.socket", config_path: str, identity: list, push: "object") -> bool:
    """Serve one connection; False when the archiver should exit."""
    conn.settimeout(5)
    _pid, uid = _peer(conn)
    if uid not in (os.geteuid(), 0):
        return True
    fields = _receive(conn).split(b"\0")
    if fields[0] == b"quit":
        conn.sendall(b"bye\n")
        return False
    if fields[0] != b"push" or len(fields) != 5 or os.fsdecode(fields[1]) != config_path:
        conn.sendall(b"retry\n")
        return True
    if _identity(config_path) != identity:
        conn.sendall(b"retry\n")  # new code or config: the caller runs it, and the next push starts a new archiver
        return False
    hook = os.fsdecode(fields[4])
    if hook:
        os.environ[HOOK_ENV] = hook
    else:
        os.environ.pop(HOOK_ENV, None)
    conn.settimeout(None)  # the push's own alarm bounds it
    status, text = push(os.fsdecode(fields[2]), os.fsdecode(fields[3]))  # type: ignore[operator]
    conn.sendall(b"%d\n" % status + text.encode("utf-8", "replace"))
    return status == 0
