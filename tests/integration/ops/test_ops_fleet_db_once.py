"""Database-wide work runs once per fleet, on the host named by ransomeye_db_delegate_to."""
from __future__ import annotations

import os
import shutil
import tempfile

import yaml

from tests.harness.paths import REPO


def test_vacuum_runs_once_from_the_database_host(run_playbook):
    from tests.harness.demo import host

    root = tempfile.mkdtemp(prefix="re-dbonce-")
    try:
        host.up(root, scale=2, seed=21, quiet=True)
        with open(os.path.join(root, "inventory", "hosts.yml")) as handle:
            demo = yaml.safe_load(handle)["all"]["hosts"]["localhost"]
        # Two app hosts share the one database; the first is also the database host.
        inventory = os.path.join(root, "fleet.yml")
        with open(inventory, "w") as handle:
            yaml.safe_dump({"all": {"vars": dict(demo, ransomeye_db_delegate_to="app-a"),
                                    "hosts": {"app-a": None, "app-b": None}}}, handle)
        run = run_playbook(os.path.join(REPO, "playbooks", "nightly_maintenance.yml"), inventory=inventory,
                           extra_vars={"maintenance_log_archive": False, "maintenance_disk_clean": False,
                                       "maintenance_run_health_check": False},
                           args=["--forks", "2"])
        assert run.rc == 0, run.stdout[-3000:]
        vacuums = [r for r in run.results if r["task"].endswith("VACUUM (ANALYZE) the tables over the thresholds")]
        assert len(vacuums) == 1, [(r["host"], r["status"]) for r in vacuums]
        assert vacuums[0]["status"] == "ok" and "table_stats" in vacuums[0]["result"]
        assert set(run.stats) == {"app-a", "app-b"} and all(s["failures"] == 0 for s in run.stats.values())
    finally:
        host.down(root, quiet=True)
        shutil.rmtree(root, ignore_errors=True)
