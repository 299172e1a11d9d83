"""Point-in-time restore of a cluster laid out as Debian and Ubuntu do, against a real cluster.

The configuration (postgresql.conf, pg_hba.conf, pg_ident.conf) lives outside
the data directory and names the data directory and an external pid file, so a
base backup holds no configuration. The restore must refuse without
pg_config_file before anything live is touched, recover on the side port with
that file without sharing the live server's pid file, and swap.

systemd cannot run in this container: the pg_service test puts a stand-in
``systemctl`` first on PATH that logs its calls and runs pg_ctl as Debian's
unit would (a mock, for that one test only; the cluster, the archive, the
recovery and the swap are real).
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time

import pytest

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pitrsite import Site, table_hashes
from tests.harness.pgcluster import free_port

UNIT = "postgresql@15-test"


def _as_postgres(argv: list, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--"] + argv, capture_output=True, text=True, cwd="/",
                          check=check, timeout=120)


def _pg_ctl(site) -> str:
    return os.path.join(site.pg.bindir, "pg_ctl")


def _start_live(site) -> None:
    _as_postgres([_pg_ctl(site), "-D", site.pg.data, "-l", site.pg.logfile, "-w", "-t", "60",
                  "-o", "-c config_file=%s" % site.conf, "start"])


def _debianize(site) -> None:
    """Stop the cluster, move its configuration to <base>/etc as Debian keeps it, start it from there."""
    _as_postgres([_pg_ctl(site), "-D", site.pg.data, "-m", "fast", "-w", "stop"])
    etc = os.path.join(site.base, "etc")
    run = os.path.join(site.base, "run")
    for path in (etc, run):
        os.makedirs(path, 0o755)
        shutil.chown(path, "postgres", "postgres")
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        shutil.move(os.path.join(site.pg.data, name), os.path.join(etc, name))
    site.conf = os.path.join(etc, "postgresql.conf")
    site.pidfile = os.path.join(run, "live.pid")
    with open(site.conf, "a") as handle:
        handle.write("data_directory = '%s'\nhba_file = '%s/pg_hba.conf'\nident_file = '%s/pg_ident.conf'\n"
                     "external_pid_file = '%s'\n" % (site.pg.data, etc, etc, site.pidfile))
    _start_live(site)


def _stopped_hashes(site, data_dir: str) -> dict:
    """Start a restored, stopped cluster with the outside configuration on a spare port; hash it; stop it."""
    import psycopg2
    port = free_port()
    log = data_dir + ".log"
    open(log, "a").close()
    shutil.chown(log, "postgres", "postgres")
    _as_postgres([_pg_ctl(site), "-D", data_dir, "-l", log, "-w", "-t", "60", "-o",
                  "-c config_file=%s -c data_directory=%s -p %d -c archive_mode=off -c external_pid_file="
                  % (site.conf, data_dir, port), "start"])
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=site.pg.password,
                                dbname="app", sslmode="disable")
        try:
            return table_hashes(conn, "app")
        finally:
            conn.close()
    finally:
        _as_postgres([_pg_ctl(site), "-D", data_dir, "-m", "fast", "-w", "stop"], check=False)


@pytest.fixture(scope="module")
def debian(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.enable()
        _debianize(site)
        site.pg.execute("CREATE DATABASE app")
        site.pg.execute("CREATE TABLE alerts (id bigserial PRIMARY KEY, summary text NOT NULL)", dbname="app")
        site.pg.execute("INSERT INTO alerts (summary) SELECT 'alert ' || g FROM generate_series(1, 3000) g",
                        dbname="app")
        base = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
        assert base["_rc"] == 0, base.get("msg")
        site.pg.execute("INSERT INTO alerts (summary) SELECT 'later ' || g FROM generate_series(1, 500) g",
                        dbname="app")
        site.before = table_hashes(site.pg, "app")
        time.sleep(1.1)
        point = run_module_direct("ransomeye_restore_point", dict(site.pg.conn_params(), name="before_attack"))
        assert point["_rc"] == 0, point
        site.pg.execute("UPDATE alerts SET summary = md5(summary) || '.locked'", dbname="app")
        site.attacked = table_hashes(site.pg, "app")
        site.switch_and_wait()
        yield site
    finally:
        site.destroy()


def _args(site, data_dir, **extra):
    args = dict(site.pg.conn_params(), repo=site.repo, trusted_keys=site.trusted, data_dir=data_dir,
                python=site.keys["python"], db="app", target_name="before_attack", **site.decrypt)
    args.update(extra)
    return args


def _live_pid(site) -> int:
    with open(os.path.join(site.pg.data, "postmaster.pid")) as handle:
        return int(handle.readline())


def test_refused_without_pg_config_file_before_anything_is_touched(debian):
    site = debian
    data_dir = os.path.join(site.base, "no-config")
    pid = _live_pid(site)
    swap = run_module_direct("ransomeye_restore", _args(site, data_dir, live_data_dir=site.pg.data))
    assert swap["_rc"] != 0 and "pg_config_file" in swap["msg"] and "live_data_dir" in swap["msg"], swap["msg"]
    side = run_module_direct("ransomeye_restore", _args(site, data_dir))
    assert side["_rc"] != 0 and "pg_config_file" in side["msg"] and "base backup" in side["msg"], side["msg"]
    assert not os.path.exists(data_dir) and not os.path.exists(data_dir + ".ransomeye-pitr")
    missing = run_module_direct("ransomeye_restore", _args(site, data_dir, pg_config_file=site.conf + ".nope"))
    assert missing["_rc"] != 0 and "is not a file" in missing["msg"], missing["msg"]
    assert _live_pid(site) == pid and table_hashes(site.pg, "app") == site.attacked


def test_side_recovery_uses_the_outside_config_and_leaves_the_live_pid_file(debian):
    site = debian
    data_dir = os.path.join(site.base, "side-only")
    pid = _live_pid(site)
    result = run_module_direct("ransomeye_restore", _args(site, data_dir, pg_config_file=site.conf))
    assert result["_rc"] == 0, result.get("msg", "")[-1500:]
    assert result["previous_data_dir"] is None and result["tables"]["public.alerts"] == 3500
    # the side instance read the live config (data_directory, port, external_pid_file) yet shared none of it
    with open(site.pidfile) as handle:
        assert int(handle.readline()) == pid
    assert _live_pid(site) == pid and table_hashes(site.pg, "app") == site.attacked
    assert not os.path.exists(os.path.join(data_dir, "postgresql.conf"))
    with open(os.path.join(data_dir, "postgresql.auto.conf")) as handle:
        assert "ransomeye.ops point-in-time recovery" not in handle.read()
    assert _stopped_hashes(site, data_dir) == site.before
    shutil.rmtree(data_dir)


def _fake_systemctl(site) -> tuple:
    """A stand-in systemctl (no systemd here): logs each call, knows one unit, runs pg_ctl as its unit would."""
    bindir = os.path.join(site.base, "fakebin")
    os.makedirs(bindir, exist_ok=True)
    calls = os.path.join(site.base, "systemctl.calls")
    script = os.path.join(bindir, "systemctl")
    text = """#!/bin/sh
echo "$*" >> %(calls)s
[ "$2" = "%(unit)s" ] || { echo "No files found for $2." >&2; exit 1; }
case "$1" in
  cat) exit 0 ;;
  stop) exec runuser -u postgres -- %(pg_ctl)s -D %(data)s -m fast -w stop ;;
  start) exec runuser -u postgres -- %(pg_ctl)s -D %(data)s -l %(log)s -w -t 60 -o "-c config_file=%(conf)s" start ;;
esac
exit 1
"""
    values = {"calls": calls, "unit": UNIT, "pg_ctl": _pg_ctl(site), "data": site.pg.data, "log": site.pg.logfile,
              "conf": site.conf}
    with open(script, "w") as handle:
        handle.write(text % values)
    os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": bindir + os.pathsep + os.environ.get("PATH", "")}, calls


def _calls(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [line.split() for line in handle if line.strip()]


def test_swap_and_rollback_through_the_systemd_unit(debian):
    site = debian
    env, calls = _fake_systemctl(site)
    data_dir = site.pg.data + "-pitr"
    wrong = run_module_direct("ransomeye_restore", _args(site, data_dir, live_data_dir=site.pg.data,
                                                         pg_config_file=site.conf, pg_service="postgresql@99-x"),
                              env=env)
    assert wrong["_rc"] != 0 and "is not a systemd unit" in wrong["msg"], wrong["msg"]
    assert not os.path.exists(data_dir) and table_hashes(site.pg, "app") == site.attacked
    assert [c[0] for c in _calls(calls)] == ["cat"]

    result = run_module_direct("ransomeye_restore", _args(site, data_dir, live_data_dir=site.pg.data,
                                                          pg_config_file=site.conf, pg_service=UNIT), env=env)
    assert result["_rc"] == 0, result.get("msg", "")[-1500:]
    assert [c[:2] for c in _calls(calls)][1:] == [["cat", UNIT], ["stop", UNIT], ["start", UNIT]]
    assert result["previous_data_dir"].startswith(site.pg.data + ".pre_pitr_")
    assert table_hashes(site.pg, "app") == site.before  # the unit started the recovered cluster in place
    assert pwd.getpwuid(os.stat(site.pg.data).st_uid).pw_name == "postgres"

    back = run_module_direct("ransomeye_restore", dict(repo=site.repo, state="rolled_back", live_data_dir=site.pg.data,
                                                       pg_config_file=site.conf, pg_service=UNIT), env=env)
    assert back["_rc"] == 0 and back["changed"], back.get("msg")
    assert [c[:2] for c in _calls(calls)][4:] == [["cat", UNIT], ["stop", UNIT], ["start", UNIT]]
    assert table_hashes(site.pg, "app") == site.attacked


def _drill_helper():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "dr_drill", "files", "pitr_helper.py")
    spec = importlib.util.spec_from_file_location("drill_pitr_helper", path)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    return helper


def test_the_pitr_drill_finds_a_configuration_outside_the_data_directory(debian, pitr_keys):
    helper = _drill_helper()
    params = debian.pg.conn_params()
    req = {"host": params["login_host"], "port": params["login_port"], "user": params["login_user"],
           "password": params["login_password"], "dbname": "app", "sslmode": "disable"}
    assert helper.mark(req)["config_file"] == debian.conf  # passed on to the restore as pg_config_file
    plain = Site(pitr_keys)
    try:
        params = plain.pg.conn_params()
        req.update(port=params["login_port"], password=params["login_password"], dbname="postgres")
        found = helper.mark(req)
        assert found["config_file"] is None and found["data_directory"] == plain.pg.data
    finally:
        plain.destroy()
