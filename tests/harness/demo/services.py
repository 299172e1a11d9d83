"""The demo host's services under supervisord: ``ransomeye-web`` (gunicorn) and ``ransomeye-worker``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import typing as t
import urllib.error
import urllib.request

from tests.harness.demo.layout import Layout
from tests.harness.paths import COLLECTIONS

PROGRAMS = ("ransomeye-web", "ransomeye-worker")


def supervisor_conf_text(layout: Layout) -> str:
    pythonpath = "%s:%s" % (layout.repo, COLLECTIONS)
    sup = layout.supervisor_dir
    return """; supervisord of the RansomEye demo host (the demo host has no systemd)
[unix_http_server]
file=%(sock)s
chmod=0700

[supervisord]
logfile=%(sup)s/supervisord.log
pidfile=%(pid)s
childlogdir=%(sup)s
directory=%(repo)s
identifier=ransomeye-demo

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(sock)s

[program:ransomeye-web]
command=%(bindir)s/gunicorn -c %(gconf)s tests.harness.demo_app.web:app
directory=%(repo)s
environment=RANSOMEYE_ENV_FILE="%(app_env)s",PYTHONPATH="%(pythonpath)s"
autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=15
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=%(sup)s/ransomeye-web.out.log

[program:ransomeye-worker]
command=%(bindir)s/python -m tests.harness.demo_app.worker
directory=%(repo)s
environment=RANSOMEYE_ENV_FILE="%(worker_env)s",PYTHONPATH="%(pythonpath)s"
autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=10
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=%(sup)s/ransomeye-worker.out.log
""" % dict(sock=layout.supervisor_sock, sup=sup, pid=layout.supervisor_pid, repo=layout.repo,
           bindir=layout.bindir, gconf=layout.gunicorn_config, app_env=layout.app_env,
           worker_env=layout.worker_env, pythonpath=pythonpath)


def write_supervisor_conf(layout: Layout) -> None:
    os.makedirs(layout.supervisor_dir, mode=0o700, exist_ok=True)
    with open(layout.supervisor_conf, "w", encoding="utf-8") as handle:
        handle.write(supervisor_conf_text(layout))


def supervisorctl(layout: Layout, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(layout.bindir, "supervisorctl"), "-c", layout.supervisor_conf] + list(args),
                          capture_output=True, text=True, timeout=timeout, check=False)


def supervisord_pid(layout: Layout) -> t.Optional[int]:
    try:
        with open(layout.supervisor_pid) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def program_pids(layout: Layout) -> t.Dict[str, int]:
    """Running programs and their pids (0 when not running)."""
    out = {}
    for name in PROGRAMS:
        proc = supervisorctl(layout, "pid", name)
        try:
            out[name] = int(proc.stdout.strip())
        except ValueError:
            out[name] = 0
    return out


def health(url: str, timeout: float = 5.0) -> t.Tuple[int, dict]:
    """(status, body) of the health URL; (0, {error}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # nosec: loopback demo URL
            return resp.status, json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read().decode() or "{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, {"error": str(exc)}


def wait_health(url: str, want: int = 200, timeout: float = 60.0) -> t.Tuple[int, dict]:
    deadline = time.time() + timeout
    status, body = 0, {}
    while time.time() < deadline:
        status, body = health(url)
        if status == want:
            return status, body
        time.sleep(0.3)
    return status, body


def start(layout: Layout, health_url: str, timeout: float = 60.0) -> None:
    """Start supervisord (if not running), both programs, and wait for the health URL."""
    if supervisord_pid(layout) is None:
        if os.path.exists(layout.supervisor_sock):
            os.unlink(layout.supervisor_sock)
        # supervisord daemonizes; its output goes to its own log, never to a pipe we would wait on.
        subprocess.run([os.path.join(layout.bindir, "supervisord"), "-c", layout.supervisor_conf],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=layout.repo, timeout=60)
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc = supervisorctl(layout, "status")
        if proc.returncode == 0:
            break
        if proc.returncode == 3 and "FATAL" not in proc.stdout and "BACKOFF" not in proc.stdout:
            supervisorctl(layout, "start", *PROGRAMS)
        time.sleep(0.3)
    else:
        raise RuntimeError("supervisord programs did not start: %s%s" % (proc.stdout, proc.stderr))
    status, body = wait_health(health_url, 200, timeout)
    if status != 200:
        raise RuntimeError("%s answered %s: %s" % (health_url, status, body))


def stop(layout: Layout, timeout: float = 30.0) -> None:
    """Stop the programs and supervisord itself (by its pid file; only the process we started)."""
    pid = supervisord_pid(layout)
    if pid is None:
        return
    supervisorctl(layout, "shutdown")
    deadline = time.time() + timeout
    while time.time() < deadline and supervisord_pid(layout) is not None:
        time.sleep(0.2)
    pid = supervisord_pid(layout)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
