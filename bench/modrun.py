"""One module runner for the bench scripts: a module file run directly, its wall time and peak RSS.

Not a benchmark itself (``make bench`` runs bench/bench_*.py only). The module's stdout and stderr go to temp
files, not pipes: a result larger than a pipe's buffer (64 KiB) would block the module while we only poll its
memory, and the run would never end.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(name, args, collections, env=None, check=True):
    """Run plugins/modules/<name>.py with ``args``; (result, wall seconds, peak RSS bytes of the module process).

    ``check``: raise SystemExit when the module fails or prints no JSON.
    """
    import psutil
    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    data = dict(args, _ansible_check_mode=False, _ansible_diff=False, _ansible_tmpdir=None,
                _ansible_remote_tmp=tempfile.gettempdir())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": data}, handle)
    run_env = dict(os.environ, PYTHONPATH=collections, LC_ALL="C.UTF-8")
    run_env.update(env or {})
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = psutil.Popen([sys.executable, path, handle.name], stdout=out, stderr=err, env=run_env)
            peak = 0
            while proc.poll() is None:
                try:
                    peak = max(peak, proc.memory_info().rss)
                except psutil.Error:
                    pass
                time.sleep(0.02)
            wall = time.monotonic() - started
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
