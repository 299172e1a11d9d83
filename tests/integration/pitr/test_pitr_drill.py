"""dr_drill.yml with dr_drill_mode: pitr against a real cluster: attack, restore to T, proof, RPO/RTO report."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

import pytest

from tests.harness.ansible_runner import run_playbook
from tests.harness.paths import REPO
from tests.harness.pitrsite import Site, table_hashes


@pytest.mark.slow
def test_pitr_drill_restores_to_just_before_the_attack(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.pg.execute("CREATE DATABASE ransomeye")
        conn = site.pg.connect("ransomeye")
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE alerts (id bigserial PRIMARY KEY, summary text NOT NULL)")
            cur.execute("INSERT INTO alerts (summary) SELECT 'alert ' || g FROM generate_series(1, 3000) g")
            cur.execute("CREATE TABLE hosts (id serial PRIMARY KEY, hostname text NOT NULL)")
            cur.execute("INSERT INTO hosts (hostname) SELECT 'host-' || g FROM generate_series(1, 40) g")
        conn.close()
        for name in ("etc", "artifacts", "reports", "keys"):
            os.makedirs(os.path.join(site.base, name))
        os.chmod(os.path.join(site.base, "keys"), 0o755)
        pg_ctl = os.path.join(site.pg.bindir, "pg_ctl")
        extra = {
            "ransomeye_backup_repo": site.repo, "ransomeye_config_dir": os.path.join(site.base, "etc"),
            "ransomeye_artifact_dir": os.path.join(site.base, "artifacts"),
            "ransomeye_backup_key_dir": os.path.join(site.base, "keys"),
            "ransomeye_signing_key_dir": os.path.dirname(pitr_keys["signing_key"]),
            "ransomeye_report_dir": os.path.join(site.base, "reports"),
            "dr_drill_allow_destroy": True, "dr_drill_mode": "pitr", "dr_drill_db": "ransomeye",
            "dr_drill_recipients": [pitr_keys["recipient_pub"]], "dr_drill_private_key": pitr_keys["recipient_key"],
            "dr_drill_signing_key": pitr_keys["signing_key"], "dr_drill_trusted_keys": [pitr_keys["signing_pub"]],
            "dr_drill_login_host": site.pg.host, "dr_drill_login_port": site.pg.port,
            "dr_drill_login_user": "postgres", "dr_drill_login_password": site.pg.password,
            "dr_drill_ssl_mode": "disable", "dr_drill_python": sys.executable,
            "dr_drill_pitr_python": pitr_keys["python"], "dr_drill_pitr_program_dir": site.program_dir,
            "dr_drill_pitr_server_log": site.pg.logfile, "dr_drill_pitr_workload_rows": 500,
            "dr_drill_pitr_restart_command": ["runuser", "-u", "postgres", "--", pg_ctl, "-D", site.pg.data, "-l",
                                              site.pg.logfile, "-w", "-t", "60", "-m", "fast", "restart"],
        }
        run = run_playbook(os.path.join(REPO, "playbooks", "dr_drill.yml"), extra_vars=extra)
        assert run.rc == 0, [(r["task"], r["result"].get("msg"), r["result"].get("stderr")) for r in run.failed()]
        # the operator sees a start and an end line with the restore's figures (polled as an async job)
        assert "Restoring the cluster to " in run.stdout
        assert re.search(r"base backup [0-9.]+ MiB extracted in [0-9.]+ s, WAL replayed in [0-9.]+ s", run.stdout), \
            run.stdout[-2000:]
        reports = glob.glob(os.path.join(site.base, "reports", "dr-drill-pitr-*.json"))
        assert len(reports) == 1
        report = json.load(open(reports[0]))
        assert report["result"] == "passed" and report["tables_differing"] == []
        assert report["tables_proven"] == 3  # alerts, hosts and the workload table
        assert report["attack"]["garbled"] and report["attack"]["dropped"]
        assert report["rpo_seconds"] is not None and 0 <= report["rpo_seconds"] <= 120
        assert report["rto_seconds"] > 0 and report["restore"]["timeline"] >= 2
        # the live cluster answers with the data of T: the dropped table is back, no row is garbled
        hashes = table_hashes(site.pg, "ransomeye")
        assert len(hashes) == 3
        assert site.pg.execute("SELECT count(*) FROM alerts WHERE summary LIKE '%%.locked'", dbname="ransomeye")[0][0] == 0
        assert not glob.glob(os.path.join(site.base, "artifacts", "*.locked"))
    finally:
        for leftover in glob.glob(site.pg.data + ".pre_pitr_*"):
            shutil.rmtree(leftover, ignore_errors=True)
        site.destroy()
