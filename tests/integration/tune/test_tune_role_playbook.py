"""playbooks/tune.yml with the tuning role: PostgreSQL and the services restart through handlers only when needed."""
from __future__ import annotations

import os
import sys

import pytest

from tests.harness.paths import REPO

pytest.importorskip("psycopg2")


def _vars(cluster, supervisor, conf_dir):
    return dict(
        ransomeye_db_host=cluster.host, ransomeye_db_port=cluster.port, ransomeye_db_admin_user="postgres",
        ransomeye_db_admin_password=cluster.password, ransomeye_db_ssl_mode="disable",
        ransomeye_gunicorn_config=str(conf_dir / "gunicorn.conf.py"),
        ransomeye_celery_config=str(conf_dir / "celery_config.py"),
        ransomeye_service_manager="supervisord", ransomeye_supervisor_conf=supervisor.conf,
        ransomeye_supervisorctl=os.path.join(os.path.dirname(sys.executable), "supervisorctl"),
        ransomeye_services=["ransomeye-web", "ransomeye-worker"],
        tuning_pg_memory="1GB", tuning_pg_cpus=4, tuning_workers_cpus=2, tuning_workers_memory="8GB",
        tuning_reserve_memory="4GB",
        tuning_pg_restart_command=["runuser", "-u", "postgres", "--", os.path.join(cluster.bindir, "pg_ctl"),
                                   "-D", cluster.data, "-l", cluster.logfile, "-w", "-t", "60", "-m", "fast", "restart"]
        if os.geteuid() == 0 else [os.path.join(cluster.bindir, "pg_ctl"), "-D", cluster.data, "-l",
                                   cluster.logfile, "-w", "-t", "60", "-m", "fast", "restart"],
    )


def test_tune_playbook_restarts_only_when_needed(fresh_pg, supervisor, tmp_path, run_playbook):
    (tmp_path / "gunicorn.conf.py").write_text("bind = '127.0.0.1:18998'\n")
    (tmp_path / "celery_config.py").write_text("broker_url = 'memory://'\n")
    playbook = os.path.join(REPO, "playbooks", "tune.yml")
    extra = _vars(fresh_pg, supervisor, tmp_path)
    pids_before = supervisor.pids()
    postmaster_before = fresh_pg.postmaster_pid()

    check = run_playbook(playbook, extra, check=True)
    assert check.rc == 0, check.stdout + check.stderr
    assert check.task("Tune PostgreSQL with PGTune's formulas")["result"]["changed"] is True
    assert fresh_pg.postmaster_pid() == postmaster_before and supervisor.pids() == pids_before
    assert (tmp_path / "gunicorn.conf.py").read_text() == "bind = '127.0.0.1:18998'\n"

    first = run_playbook(playbook, extra)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.task("Restart PostgreSQL for tuned settings")["result"]["changed"] is True
    assert fresh_pg.postmaster_pid() != postmaster_before
    assert fresh_pg.execute("SHOW shared_buffers")[0][0] == "256MB"
    pids_after = supervisor.pids()
    assert set(pids_after) == set(pids_before) and all(pids_after[n] != pids_before[n] for n in pids_before)
    assert "workers = 5" in (tmp_path / "gunicorn.conf.py").read_text()

    postmaster = fresh_pg.postmaster_pid()
    second = run_playbook(playbook, extra)
    assert second.rc == 0, second.stdout + second.stderr
    assert second.stats["localhost"]["changed"] == 0, second.stats
    assert fresh_pg.postmaster_pid() == postmaster
    assert supervisor.pids() == pids_after
