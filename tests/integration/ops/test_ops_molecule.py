"""Every role's molecule scenario (syntax, converge, idempotence, verify) passes against a demo host.

The scenarios use molecule's unmanaged `default` driver on the control node
itself (no containers); they read the demo host's inventory from
RANSOMEYE_MOLECULE_INVENTORY and scratch space from RANSOMEYE_MOLECULE_TMP.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.harness.ansible_runner import ansible_env
from tests.harness.paths import REPO

ROLES_DIR = os.path.join(REPO, "roles")
ROLES = sorted(
    name for name in os.listdir(ROLES_DIR)
    if os.path.isfile(os.path.join(ROLES_DIR, name, "molecule", "default", "molecule.yml"))
)


@pytest.fixture(scope="module")
def demo_inventory():
    from tests.harness.demo import host

    root = tempfile.mkdtemp(prefix="re-mol-")
    os.chmod(root, 0o755)  # the postgres OS user must reach the cluster below it
    try:
        host.up(root, scale=4, seed=7, quiet=True)
        yield os.path.join(root, "inventory", "hosts.yml")
    finally:
        host.down(root, quiet=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario_passes(role, demo_inventory, tmp_path):
    env = ansible_env({
        "RANSOMEYE_MOLECULE_INVENTORY": demo_inventory,
        "RANSOMEYE_MOLECULE_TMP": str(tmp_path),
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "ephemeral"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "NO_COLOR": "1",
    })
    molecule = os.path.join(os.path.dirname(sys.executable), "molecule")
    proc = subprocess.run([molecule, "test"], cwd=os.path.join(ROLES_DIR, role), env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for step in ("syntax", "converge", "idempotence", "verify"):
        assert re.search(r"\b%s\W+Executed: Successful" % step, output), "step %s did not succeed" % step
