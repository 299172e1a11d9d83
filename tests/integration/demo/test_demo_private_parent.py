"""`make demo` from a checkout the postgres OS user cannot reach (a clone under /root, any 0700 parent).

As root, initdb and the server run as `postgres`; under a 0700 parent initdb failed with "could not open file
.../.demo/pg/pwfile for reading: Permission denied". The demo host now puts its cluster where postgres can
reach it and links DIR/pg to it. This builds a whole (small) demo host under a 0700 parent, exactly as
`make demo` does (python -m tests.harness.demo up), and checks the database answers and the tear-down leaves
nothing behind.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.harness.paths import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")


def _demo(command: str, root: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.harness.demo", command, "--dir", root, "--scale", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_demo_up_from_a_0700_parent_directory():
    from tests.harness.demo import host
    from tests.harness.demo.layout import Layout, load_state
    from tests.harness.pgcluster import PgCluster

    parent = tempfile.mkdtemp(prefix="re-private-")  # mkdtemp makes it 0700, owned by root: like /root
    assert os.stat(parent).st_mode & 0o777 == 0o700
    root = os.path.join(parent, "clone", ".demo")
    layout = Layout(root)
    relocated = None
    try:
        proc = _demo("up", root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "cannot reach" in proc.stdout  # it says where the cluster went, and why
        assert os.path.islink(layout.pg_base)
        relocated = os.path.realpath(layout.pg_base)
        assert not relocated.startswith(parent + os.sep)
        # The parent stays private: nothing was chmod-ed open to make this work.
        assert os.stat(parent).st_mode & 0o777 == 0o700
        state = load_state(layout)
        cluster = PgCluster(base=relocated, superuser_password=state["admin_password"], port=state["pg_port"])
        assert cluster.execute("SELECT count(*) FROM alerts", dbname="ransomeye")[0][0] > 0
        # A second `up` (make demo run again) reuses the same cluster.
        proc = _demo("up", root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert os.path.realpath(layout.pg_base) == relocated
        # The inventory the playbooks use restarts PostgreSQL through the relocated path.
        assert relocated in open(layout.inventory).read()
    finally:
        _demo("down", root)
        host.remove_cluster_dir(layout)
        shutil.rmtree(parent, ignore_errors=True)
    assert relocated and not os.path.exists(relocated)
