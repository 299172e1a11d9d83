"""One module runner for the bench scripts: a module file run directly, its wall time and peak RSS.

Not a benchmark itself (``make bench`` runs bench/bench_*.py only). The module's stdout and stderr go to temp
files, not pipes: a result larger than a pipe's buffer (64 KiB) would block the module while we wait for it to
end. ``run_timed`` also times the peers (bench_repo.py), so every tool is measured the same way.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_timed(argv, env, stdout, stderr):
    """(exit status, wall seconds, peak RSS bytes) of one command, timed the same way for every tool.

    ``os.wait4`` gives the end time and the child's own peak RSS exactly: no polling interval in the wall time, and
    no wrapper process whose start-up would be counted with the command."""
    started = time.monotonic()
    pid = os.posix_spawn(argv[0] if os.path.isabs(argv[0]) else _which(argv[0]), argv, env,
                         file_actions=[(os.POSIX_SPAWN_DUP2, stdout.fileno(), 1),
                                       (os.POSIX_SPAWN_DUP2, stderr.fileno(), 2)])
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss * 1024


def _which(name):
    import shutil
    found = shutil.which(name)
    if found is None:
        raise SystemExit("%s: not found on PATH" % name)
    return found


def bench_env(extra=None):
    """The environment every timed command runs in.

    This machine exports PYTHONDONTWRITEBYTECODE=1, which Python does not set by default: it would make our module
    compile its sources on every run while borg (Debian) runs from compiled bytecode. Both run as on an ordinary
    host, with bytecode cached."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def run_module(name, args, collections, env=None, check=True):
    """Run plugins/modules/<name>.py with ``args``; (result, wall seconds, peak RSS bytes of the module process).

    ``check``: raise SystemExit when the module fails or prints no JSON.
    """
    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    data = dict(args, _ansible_check_mode=False, _ansible_diff=False, _ansible_tmpdir=None,
                _ansible_remote_tmp=tempfile.gettempdir())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": data}, handle)
    run_env = bench_env(dict(PYTHONPATH=collections, LC_ALL="C.UTF-8"))
    run_env.update(env or {})
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            _code, wall, peak = run_timed([sys.executable, path, handle.name], run_env, out, err)
            out.seek(0)
            err.seek(0)
            text, errors = out.read(), err.read()
    finally:
        os.unlink(handle.name)
    try:
        result = json.loads(text)
    except ValueError:
        raise SystemExit("%s printed no JSON: %s %s" % (name, text[-2000:], errors[-2000:]))
    if check and result.get("failed"):
        raise SystemExit("%s failed: %s" % (name, result.get("msg")))
    return result, wall, peak
