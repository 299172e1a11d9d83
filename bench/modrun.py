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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Run by a fresh, small interpreter: it starts the command, waits for it and writes "status wall maxrss" to the
# file named by argv[1]. Timing from inside it leaves its own start-up out of the wall time; and the command is
# spawned by a process of a few MiB, because on Linux the peak RSS a child reports includes the RSS of the process
# it was forked or vforked from (exec records the old address space's high-water mark): spawned straight from
# this script, which holds the data set's file list, a backup of 1,000,000 files "peaked" at 162.6 MiB where its
# own peak was 97-101 MiB.
_TIMER = ("import os,sys,time\n"
          "t=time.monotonic();p=os.posix_spawnp(sys.argv[2],sys.argv[2:],os.environ)\n"
          "_,s,r=os.wait4(p,0);w=time.monotonic()-t\n"
          "open(sys.argv[1],'w').write('%d %.6f %d'%(os.waitstatus_to_exitcode(s),w,r.ru_maxrss))\n")


def run_timed(argv, env, stdout, stderr):
    """(exit status, wall seconds, peak RSS bytes) of one command, measured the same way for every tool: by
    ``os.wait4`` in a small timer process (see _TIMER), with no polling interval and no start-up of the timer in the
    wall time."""
    import subprocess
    with tempfile.NamedTemporaryFile("r", suffix=".timed") as report:
        subprocess.run([sys.executable, "-I", "-S", "-c", _TIMER, report.name] + list(argv), env=env,
                       stdout=stdout, stderr=stderr, check=False)
        code, wall, maxrss = report.read().split()
    return int(code), float(wall), int(maxrss) * 1024


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
