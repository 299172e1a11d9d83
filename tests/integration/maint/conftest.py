"""Fixtures for the maintenance tests: processes that hold files open or locked."""
from __future__ import annotations

import subprocess
import sys

import pytest

_HOLDER = (
    "import fcntl, sys, time\n"
    "handles = []\n"
    "for spec in sys.argv[1:]:\n"
    "    mode, path = spec.split(':', 1)\n"
    "    f = open(path, 'rb')\n"
    "    if mode == 'flock':\n"
    "        fcntl.flock(f, fcntl.LOCK_EX)\n"
    "    handles.append(f)\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.fixture
def hold_files():
    """``hold_files(open=[paths], flock=[paths])``: a live process holding them until the test ends."""
    procs = []

    def start(open=(), flock=()):  # pylint: disable=redefined-builtin
        specs = ["open:%s" % p for p in open] + ["flock:%s" % p for p in flock]
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER] + specs, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
