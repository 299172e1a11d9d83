"""An interpreter the PostgreSQL OS user can run, with cryptography >= 41 and zstandard, for the WAL program in tests.

The test venv lives under /root (mode 0700 here), which the ``postgres`` user
cannot reach, and Debian 12's /usr/bin/python3 ships cryptography 38 (the
collection needs 41+). So the tests build, once per machine, a small venv from
the system interpreter in /var/tmp and install cryptography into it with pip.
"""
from __future__ import annotations

import fcntl
import os
import subprocess

PGPYTHON_DIR = os.environ.get("RANSOMEYE_TEST_PGPYTHON_DIR", "/var/tmp/ransomeye-ops-pgpython")


def _works(python: str) -> bool:
    if not os.access(python, os.X_OK):
        return False
    probe = subprocess.run([python, "-c", "import cryptography, sys; "
                            "sys.exit(0 if int(cryptography.__version__.split('.')[0]) >= 41 else 1)"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def _has_zstd(python: str) -> bool:
    return subprocess.run([python, "-c", "import zstandard"], capture_output=True, check=False).returncode == 0


def pg_python() -> str:
    """Path of the interpreter (created on first use; ~15 s, then cached)."""
    python = os.path.join(PGPYTHON_DIR, "bin", "python")
    if _works(python) and _has_zstd(python):
        return python
    os.makedirs(os.path.dirname(PGPYTHON_DIR), exist_ok=True)
    with open(PGPYTHON_DIR + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(python):
            base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
            subprocess.run([base, "-m", "venv", "--clear", PGPYTHON_DIR], check=True, capture_output=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "cryptography>=41"], check=True,
                           capture_output=True)
        if not _has_zstd(python):
            # added to an existing venv in place (never --clear: other test runs may be using it right now)
            subprocess.run([python, "-m", "pip", "install", "-q", "zstandard>=0.22"], check=True, capture_output=True)
            for root, dirs, files in os.walk(PGPYTHON_DIR):
                os.chmod(root, 0o755)
    if not _works(python):
        raise RuntimeError("could not build an interpreter with cryptography>=41 in %s" % PGPYTHON_DIR)
    return python
