# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: installing the WAL program and running it as the PostgreSQL OS user.

The program is not a copy of the container and signing code: the very
module_utils files the modules use are written beside a small launcher
(``<program_dir>/lib/ansible_collections/ransomeye/ops/plugins/module_utils/``),
read from the collection (or the AnsiballZ payload) with pkgutil.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import json
import os
import importlib
import pwd
import shlex
import stat
import subprocess
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory
# Imported so that AnsiballZ ships them: they are what gets installed.
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_program  # noqa: F401  pylint: disable=unused-import
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format  # noqa: F401  pylint: disable=unused-import
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_spool  # noqa: F401  pylint: disable=unused-import
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_resident
from ansible_collections.ransomeye.ops.plugins.module_utils import _compress  # noqa: F401  pylint: disable=unused-import

PACKAGE = "ansible_collections.ransomeye.ops.plugins.module_utils"
PROGRAM_MODULES = ("_errors.py", "_files.py", "_crypto_container.py", "_signing.py", "_compress.py",
                   "_wal_format.py", "_wal_spool.py", "_wal_resident.py", "_wal_program.py")
SPOOL = "spool"
RUN = _wal_resident.RUN
LAUNCHER = _wal_resident.LAUNCHER
LIB_PACKAGE_DIRS = ("ansible_collections", "ansible_collections/ransomeye", "ansible_collections/ransomeye/ops",
                    "ansible_collections/ransomeye/ops/plugins", "ansible_collections/ransomeye/ops/plugins/module_utils")

_LAUNCHER_TEMPLATE = """#!%(python)s -IS
# ransomeye.ops WAL archive/restore program, installed by ransomeye.ops.ransomeye_wal_archive. Do not edit.
# PostgreSQL runs it as archive_command (push) and restore_command (get); see docs/BACKUP_FORMAT.md section 4.
# -S: it starts once per segment, and the site module is a good part of the start-up; a virtualenv's
# site-packages is added directly, anything else falls back to the site module.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "lib"))
_venv = os.path.dirname(os.path.dirname(sys.executable))
_packages = os.path.join(_venv, "lib", "python%%d.%%d" %% sys.version_info[:2], "site-packages")
if os.path.isfile(os.path.join(_venv, "pyvenv.cfg")) and os.path.isdir(_packages):
    sys.path.append(_packages)
if len(sys.argv) == 6 and sys.argv[1:3] == ["push", "--config"]:
    # A segment an earlier run already archived ahead answers here, before cryptography is loaded.
    from ansible_collections.ransomeye.ops.plugins.module_utils._wal_spool import acknowledged
    if acknowledged(sys.argv[3], sys.argv[4], sys.argv[5]):
        os._exit(0)
    # The resident archiver, when one runs, pushes it in full and answers (see _wal_resident).
    from ansible_collections.ransomeye.ops.plugins.module_utils._wal_resident import ask
    _answer = ask(sys.argv[3], sys.argv[4], sys.argv[5])
    if _answer is not None:
        sys.stderr.write(_answer[1])
        sys.stderr.flush()
        os._exit(_answer[0])
try:
    import cryptography  # noqa: F401
except ImportError:
    import site
    site.main()
from ansible_collections.ransomeye.ops.plugins.module_utils._wal_program import main
_status = main()
# Everything is closed and durable by now; skipping the interpreter's teardown saves a few ms per segment.
sys.stdout.flush()
sys.stderr.flush()
os._exit(_status)
"""


def program_files(python: str) -> t.Dict[str, t.Tuple[bytes, int]]:
    """relative path -> (content, mode) of everything the program needs."""
    if not python or not os.path.isabs(python) or "\n" in python or " " in python:
        raise RansomeyeError("python must be an absolute interpreter path without spaces, not %r" % (python,))
    files: t.Dict[str, t.Tuple[bytes, int]] = {LAUNCHER: ((_LAUNCHER_TEMPLATE % {"python": python}).encode(), 0o755)}
    for directory in LIB_PACKAGE_DIRS:
        files["lib/%s/__init__.py" % directory] = (b"", 0o644)
    for name in PROGRAM_MODULES:
        data = _source_of(name[:-3])
        files["lib/%s/%s" % (LIB_PACKAGE_DIRS[-1], name)] = (data, 0o644)
    return files


def _source_of(name: str) -> bytes:
    """The source of one module_utils file, from the collection on disk or the AnsiballZ zip."""
    full = "%s.%s" % (PACKAGE, name)
    module = importlib.import_module(full)
    loader = getattr(module, "__loader__", None)
    path = getattr(module, "__file__", None)
    data: t.Optional[bytes] = None
    try:
        if loader is not None and path and hasattr(loader, "get_data"):
            data = loader.get_data(path)
        elif loader is not None and hasattr(loader, "get_source"):
            source = loader.get_source(full)
            data = source.encode("utf-8") if source is not None else None
    except (OSError, ImportError):
        data = None
    if data is None and path and os.path.isfile(path):
        with open(path, "rb") as handle:
            data = handle.read()
    if not data:
        raise RansomeyeError("cannot read module_utils/%s.py from the collection" % name)
    return data


def _no_symlinks(root: str, relpath: str) -> None:
    current = root
    for part in relpath.split("/"):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise RansomeyeError("%s is a symlink; refusing to install through it" % current)


def install_files(root: str, files: t.Dict[str, t.Tuple[bytes, int]], check_mode: bool,
                  gid: t.Optional[int] = None) -> t.List[str]:
    """Write each file whose content or mode differs (atomically); return the relative paths changed."""
    root = os.path.abspath(root)
    if os.path.islink(root):
        raise RansomeyeError("program_dir %s is a symlink; give the real directory" % root)
    changed = []
    for relpath, (data, mode) in sorted(files.items()):
        path = os.path.join(root, relpath)
        _no_symlinks(root, relpath)
        try:
            st = os.lstat(path)
            with open(path, "rb") as handle:
                same = handle.read(len(data) + 1) == data
            same = same and stat.S_IMODE(st.st_mode) == mode and (gid is None or st.st_gid == gid)
        except FileNotFoundError:
            same = False
        if same:
            continue
        changed.append(relpath)
        if check_mode:
            continue
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
            os.chmod(directory, 0o755)
        atomic_write(path, data, mode=mode, gid=gid)
    if LAUNCHER in files and not check_mode:
        compile_program(root, files[LAUNCHER][0])
    return changed


def compile_program(root: str, launcher: bytes) -> None:
    """Byte-compile the program's modules with its own interpreter (hash-checked .pyc beside them).

    PostgreSQL starts the program once per segment as a user who cannot write
    here, so without this every run would compile ~100 KB of source again: about
    a fifth of its CPU time. A failure only costs that time, so it is not fatal.
    """
    python = launcher.split(b"\n", 1)[0][2:].split(b" ", 1)[0].decode("utf-8", "replace")
    if not os.path.isabs(python):
        return
    try:
        subprocess.run([python, "-I", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                        os.path.join(root, "lib")], capture_output=True, timeout=120, cwd="/", check=False)
    except (OSError, subprocess.SubprocessError):
        pass


class OsUser(t.NamedTuple):
    name: str
    uid: int
    gid: int


def os_user(name: str) -> OsUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RansomeyeError("OS user %s (the user PostgreSQL runs as) does not exist" % name)
    return OsUser(name, entry.pw_uid, entry.pw_gid)


def as_user(user: OsUser, argv: t.List[str]) -> t.List[str]:
    """argv run as ``user``: through runuser when we are root and someone else, else directly."""
    if os.geteuid() == 0 and user.uid != 0:
        return ["runuser", "-u", user.name, "--"] + argv
    return argv


def run_program(program_dir: str, user: OsUser, args: t.List[str], timeout: int = 120) -> subprocess.CompletedProcess:
    argv = as_user(user, [os.path.join(program_dir, LAUNCHER)] + args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", check=False)


def archive_command(program_dir: str, config_path: str) -> str:
    """The archive_command: paths shell-quoted, %p and %f substituted by PostgreSQL; no secret on argv."""
    return "%s push --config %s %%p %%f" % (shlex.quote(os.path.join(program_dir, LAUNCHER)),
                                            shlex.quote(config_path))


def restore_command(program_dir: str, config_path: str) -> str:
    return "%s get --config %s %%f %%p" % (shlex.quote(os.path.join(program_dir, LAUNCHER)),
                                           shlex.quote(config_path))


def config_bytes(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True, indent=1).encode("utf-8") + b"\n"


def ensure_owned_dir(path: str, user: OsUser, mode: int, check_mode: bool) -> bool:
    """``path`` exists, is a real directory owned by ``user`` with ``mode``; True when something changed."""
    if os.path.islink(path):
        raise RansomeyeError("%s is a symlink; refusing to use it" % path)
    changed = False
    if not os.path.isdir(path):
        changed = True
        if check_mode:
            return True
        ensure_directory(path, mode)
    st = os.lstat(path)
    if stat.S_IMODE(st.st_mode) != mode:
        changed = True
        if not check_mode:
            os.chmod(path, mode)
    if (st.st_uid, st.st_gid) != (user.uid, user.gid) and os.geteuid() == 0:
        changed = True
        if not check_mode:
            os.chown(path, user.uid, user.gid)
    return changed


def allow_traverse(path: str, user: OsUser, check_mode: bool) -> bool:
    """Let ``user`` traverse (not list) the repository root: group ``user``, mode g+x. True when changed."""
    st = os.lstat(path)
    if st.st_uid == user.uid:
        return False
    changed = False
    if os.geteuid() == 0 and st.st_gid != user.gid:
        changed = True
        if not check_mode:
            os.chown(path, -1, user.gid)
    if not st.st_mode & stat.S_IXGRP:
        changed = True
        if not check_mode:
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IXGRP)
    return changed
