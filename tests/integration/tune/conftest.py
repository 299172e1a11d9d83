"""Fixtures of the tuning tests: a real supervisord with two stand-in RansomEye services."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

BIN = os.path.dirname(sys.executable)


class Supervisor:
    def __init__(self, base: str) -> None:
        self.base = base
        self.conf = os.path.join(base, "supervisord.conf")
        self.pidfile = os.path.join(base, "supervisord.pid")
        self.sock = os.path.join(base, "s.sock")

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "supervisorctl"), "-c", self.conf] + list(args),
                              capture_output=True, text=True, timeout=60, check=False)

    def pids(self) -> dict:
        out = self.ctl("status").stdout
        result = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[1] == "RUNNING":
                result[fields[0]] = int(fields[3].rstrip(","))
        return result


@pytest.fixture
def supervisor():
    base = tempfile.mkdtemp(prefix="re-sv-", dir="/tmp")
    sup = Supervisor(base)
    programs = "".join(
        "[program:%s]\ncommand=%s -c \"import time; time.sleep(3600)\"\nautorestart=false\nstartsecs=0\n"
        "stopsignal=KILL\n\n" % (name, sys.executable) for name in ("ransomeye-web", "ransomeye-worker"))
    with open(sup.conf, "w") as handle:
        handle.write("[unix_http_server]\nfile=%s\n\n[supervisord]\npidfile=%s\nlogfile=%s\nnodaemon=false\n\n"
                     "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                     "supervisor.rpcinterface:make_main_rpcinterface\n\n[supervisorctl]\nserverurl=unix://%s\n\n%s"
                     % (sup.sock, sup.pidfile, os.path.join(base, "supervisord.log"), sup.sock, programs))
    subprocess.run([os.path.join(BIN, "supervisord"), "-c", sup.conf], check=True, timeout=60)
    try:
        deadline = time.time() + 30
        while len(sup.pids()) < 2:
            if time.time() > deadline:
                raise RuntimeError("supervisord did not start its programs: %s" % sup.ctl("status").stdout)
            time.sleep(0.2)
        yield sup
    finally:
        sup.ctl("shutdown")
        try:
            with open(sup.pidfile) as handle:
                os.kill(int(handle.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        shutil.rmtree(base, ignore_errors=True)
