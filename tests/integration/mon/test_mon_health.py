"""ransomeye_health_info against the real PostgreSQL cluster and the real host."""
from __future__ import annotations

import datetime
import json
import os
import signal
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PG_FAST = dict(pg_samples=2, sample_seconds=0)


def _pg_args(pg, **extra):
    args = dict(pg.conn_params(), checks=["postgres"], fail_on="never", **PG_FAST)
    args.update(extra)
    return args


def _by_name(result, name):
    return [c for c in result["checks"] if c["name"] == name]


def _cert(path, days):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "health-%d" % days)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_postgres_checks_report_every_metric_ok_with_defaults(pg, run_module_direct):
    result = run_module_direct("ransomeye_health_info", _pg_args(pg, pg_samples=5))
    assert result.get("failed") is not True, result
    assert result["status"] == "ok" and result["exit_code"] == 0 and result["changed"] is False
    names = {c["name"] for c in result["checks"]}
    assert {"pg_connect_ms", "pg_query_ms", "pg_backends_percent", "pg_idle_in_transaction",
            "pg_longest_query_seconds", "pg_wraparound_age"} <= names
    (connect,) = _by_name(result, "pg_connect_ms")
    assert connect["samples"] == 5 and 0 < connect["p50"] <= connect["max"]
    (backends,) = _by_name(result, "pg_backends_percent")
    max_conn = int(pg.execute("SHOW max_connections")[0][0])
    reserved = int(pg.execute("SHOW superuser_reserved_connections")[0][0])
    assert backends["usable_connections"] == max_conn - reserved
    assert backends["backends"] >= 1
    (age,) = _by_name(result, "pg_wraparound_age")
    real_age = max(int(r[0]) for r in pg.execute("SELECT age(datfrozenxid) FROM pg_database"))
    assert abs(age["value"] - real_age) <= 5
    # No replication on this cluster: no replication check at all.
    assert not names & {"pg_replication_lag_bytes", "pg_replication_lag_seconds"}
    for check in result["checks"]:
        assert set(check) >= {"name", "target", "value", "unit", "warning", "critical", "status", "message"}
        assert check["status"] == "ok"


@pytest.mark.parametrize("thresholds, status", [
    ({"pg_backends_percent": {"warning": 0.001, "critical": 100}}, "warning"),
    ({"pg_wraparound_age": [0, 1]}, "critical"),
    ({"pg_connect_ms": {"warning": 0, "critical": None}}, "warning"),
    ({"pg_query_ms": {"warning": 0, "critical": 0}}, "critical"),
])
def test_thresholds_force_each_status(pg, run_module_direct, thresholds, status):
    result = run_module_direct("ransomeye_health_info", _pg_args(pg, thresholds=thresholds))
    assert result.get("failed") is not True, result
    assert result["status"] == status
    (name,) = thresholds
    (check,) = _by_name(result, name)
    assert check["status"] == status
    assert result["nagios"].startswith("RANSOMEYE %s - " % status.upper())
    assert result["exit_code"] == {"warning": 1, "critical": 2}[status]


def test_unreadable_path_is_unknown_and_overall_is_worst(pg, run_module_direct, tmp_path):
    result = run_module_direct("ransomeye_health_info", dict(
        checks=["disk", "inodes"], paths=[str(tmp_path), str(tmp_path / "missing")], fail_on="never",
        thresholds={"disk_used_percent": {"warning": 0, "critical": 100}}))
    statuses = {(c["name"], c["target"]): c["status"] for c in result["checks"]}
    assert statuses[("disk_used_percent", str(tmp_path / "missing"))] == "unknown"
    assert statuses[("disk_used_percent", str(tmp_path))] == "warning"
    assert statuses[("inodes_used_percent", str(tmp_path))] == "ok"
    assert result["status"] == "warning"  # ok < unknown < warning < critical
    st = os.statvfs(str(tmp_path))
    (disk,) = [c for c in result["checks"] if c["name"] == "disk_used_percent" and c["target"] == str(tmp_path)]
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    expected = 100.0 * used / (used + st.f_bavail * st.f_frsize)
    assert abs(disk["value"] - expected) < 1.0


def test_idle_in_transaction_session_is_seen(pg, run_module_direct):
    conn = pg.connect("postgres")
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # opens a transaction, then stays idle in it
        time.sleep(0.2)
        result = run_module_direct("ransomeye_health_info", _pg_args(pg, thresholds={"pg_idle_in_transaction": [1, 10]}))
    finally:
        conn.rollback()
        conn.close()
    (check,) = _by_name(result, "pg_idle_in_transaction")
    assert check["value"] >= 1 and check["status"] == "warning"
    assert check["longest_seconds"] >= 0.1


def test_hung_database_is_critical_within_connect_timeout(fresh_pg, run_module_direct):
    pid = fresh_pg.postmaster_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_module_direct("ransomeye_health_info", _pg_args(fresh_pg, connect_timeout=2, fail_on="critical"),
                                   timeout=60)
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result["failed"] is True
    assert result["status"] == "critical"
    (check,) = _by_name(result, "pg_connect_ms")
    assert check["status"] == "critical" and check["value"] is None
    assert "timeout" in check["message"]
    assert "health status is critical" in result["msg"]
    # connect_timeout (2 s) plus the module's start-up; never the default 10 s or a hang.
    assert elapsed < 2 + 4, elapsed
    assert "Traceback" not in result["_stderr"]
    # Once continued, the same server is ok again.
    again = run_module_direct("ransomeye_health_info", _pg_args(fresh_pg))
    assert again["status"] == "ok"


def test_fail_on_levels_and_report_written_atomically(pg, run_module_direct, tmp_path):
    report = tmp_path / "reports" / "health.json"
    report.parent.mkdir()
    warn = {"pg_backends_percent": {"warning": 0.001, "critical": 100}}
    passed = run_module_direct("ransomeye_health_info", _pg_args(pg, thresholds=warn, fail_on="critical",
                                                                 report_path=str(report)))
    assert passed.get("failed") is not True and passed["status"] == "warning"
    on_disk = json.loads(report.read_text())
    assert on_disk["status"] == "warning"
    assert on_disk["checks"] == passed["checks"] and on_disk["nagios"] == passed["nagios"]
    assert oct(report.stat().st_mode & 0o777) == "0o640"
    assert [p for p in os.listdir(report.parent) if p != "health.json"] == []  # no temp file left
    failed = run_module_direct("ransomeye_health_info", _pg_args(pg, thresholds=warn, fail_on="warning",
                                                                 report_path=str(report)))
    assert failed["failed"] is True and "health status is warning (fail_on: warning)" in failed["msg"]
    assert "pg_backends_percent" in failed["msg"]
    assert failed["checks"] and failed["nagios"].startswith("RANSOMEYE WARNING")


def test_certificates_expiry_statuses(run_module_direct, tmp_path):
    paths = [_cert(tmp_path / "long.pem", 90), _cert(tmp_path / "soon.pem", 20), _cert(tmp_path / "now.pem", 3)]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    result = run_module_direct("ransomeye_health_info", dict(checks=["certificates"], fail_on="never",
                                                             certificates=paths + [str(garbage)]))
    statuses = [c["status"] for c in result["checks"]]
    assert statuses == ["ok", "warning", "critical", "critical"]
    assert 19 < result["checks"][1]["value"] <= 20
    assert "cannot read certificate" in result["checks"][3]["message"]
    assert result["status"] == "critical"


def test_processes_and_services_by_process_name(pg, run_module_direct):
    result = run_module_direct("ransomeye_health_info", dict(
        checks=["processes", "services"], processes=["postgres", "no-such-daemon-xyz"],
        services=["no-such-service-xyz"], service_manager="process", fail_on="never"))
    by_target = {(c["name"], c["target"]): c for c in result["checks"]}
    assert by_target[("process_count", "postgres")]["status"] == "ok"
    assert by_target[("process_count", "postgres")]["value"] >= 1
    assert by_target[("process_count", "no-such-daemon-xyz")]["status"] == "critical"
    assert by_target[("service_running", "no-such-service-xyz")]["status"] == "critical"


def test_system_checks_and_io_sampling(run_module_direct):
    started = time.monotonic()
    result = run_module_direct("ransomeye_health_info", dict(checks=["system"], sample_seconds=0.5, fail_on="never"))
    assert time.monotonic() - started >= 0.5
    names = {c["name"] for c in result["checks"]}
    assert {"disk_used_percent", "inodes_used_percent", "load_per_core", "memory_available_percent",
            "swap_used_percent", "io_util_percent", "io_latency_ms", "io_read_bytes_per_s",
            "io_write_bytes_per_s"} <= names
    (mem,) = _by_name(result, "memory_available_percent")
    assert 0 < mem["value"] <= 100
    (load,) = _by_name(result, "load_per_core")
    assert load["cpus"] == len(os.sched_getaffinity(0))
    assert abs(load["value"] - os.getloadavg()[0] / load["cpus"]) < 1.0
    # Perfdata: one quoted label per measured check.
    perf = result["nagios"].split(" | ", 1)[1]
    assert perf.count("=") == len([c for c in result["checks"] if c["value"] is not None])


def test_check_mode_runs_the_same_checks(pg, run_module):
    result = run_module("ransomeye_health_info", _pg_args(pg), check=True)
    assert result["status"] == "ok" and result["changed"] is False
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" not in result["nagios"]
    assert pg.password not in result["_stdout"]


@pytest.mark.parametrize("args, expected", [
    (dict(checks=["disk", "bogus"]), "unknown check 'bogus'"),
    (dict(thresholds={"disk_full": [1, 2]}), "unknown threshold 'disk_full'"),
    (dict(thresholds={"disk_used_percent": [90, 80]}), "critical (80.0) must be higher than warning (90.0)"),
    (dict(thresholds={"disk_used_percent": {"warning": "lots"}}), "must be a number"),
    (dict(sample_seconds=-1), "sample_seconds must be between 0 and 300"),
    (dict(fail_on="sometimes"), "value of fail_on must be one of"),
])
def test_bad_input_fails_clearly(run_module_direct, args, expected):
    result = run_module_direct("ransomeye_health_info", dict(dict(checks=["disk"]), **args))
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert "Traceback" not in result["_stderr"]


def test_services_under_a_real_supervisord(run_module_direct, tmp_path):
    """The demo host's service manager: RUNNING is ok, a stopped or unknown program is critical."""
    import subprocess
    import sys

    bindir = os.path.dirname(sys.executable)
    conf = tmp_path / "supervisord.conf"
    sock = tmp_path / "s.sock"
    conf.write_text(
        "[unix_http_server]\nfile=%s\n\n[supervisord]\nlogfile=%s\npidfile=%s\nnodaemon=false\n\n"
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        "[supervisorctl]\nserverurl=unix://%s\n\n"
        "[program:re-up]\ncommand=/bin/sleep 600\nautostart=true\nstartsecs=0\n\n"
        "[program:re-down]\ncommand=/bin/sleep 600\nautostart=false\n"
        % (sock, tmp_path / "supervisord.log", tmp_path / "supervisord.pid", sock))
    subprocess.run([os.path.join(bindir, "supervisord"), "-c", str(conf)], check=True, timeout=30)
    try:
        deadline = time.monotonic() + 20
        while True:
            out = subprocess.run([os.path.join(bindir, "supervisorctl"), "-c", str(conf), "status", "re-up"],
                                 capture_output=True, text=True, check=False).stdout
            if "RUNNING" in out or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result = run_module_direct("ransomeye_health_info", dict(
            checks=["services"], services=["re-up", "re-down", "re-missing"], service_manager="supervisord",
            supervisor_conf=str(conf), fail_on="never"))
    finally:
        subprocess.run([os.path.join(bindir, "supervisorctl"), "-c", str(conf), "shutdown"],
                       capture_output=True, timeout=30, check=False)
    by_target = {c["target"]: c for c in result["checks"]}
    assert by_target["re-up"]["status"] == "ok" and by_target["re-up"]["message"] == "RUNNING"
    assert by_target["re-down"]["status"] == "critical" and by_target["re-down"]["message"] == "STOPPED"
    assert by_target["re-missing"]["status"] == "critical"
    assert result["status"] == "critical"


def test_longest_running_query_is_reported(pg, run_module_direct):
    import threading

    conn = pg.connect("postgres")
    worker = threading.Thread(target=lambda: conn.cursor().execute("SELECT pg_sleep(4)"))
    worker.start()
    try:
        time.sleep(1.2)
        result = run_module_direct("ransomeye_health_info", _pg_args(pg, thresholds={"pg_longest_query_seconds": [1, 60]}))
    finally:
        worker.join(10)
        conn.close()
    (check,) = _by_name(result, "pg_longest_query_seconds")
    assert check["value"] >= 1 and check["status"] == "warning" and check["pid"]


def test_replication_lag_on_primary_and_standby(fresh_pg, run_module_direct):
    """A real streaming standby (pg_basebackup): the primary reports lag in bytes, the standby in seconds."""
    import pwd
    import subprocess

    from tests.harness.pgcluster import PgCluster

    standby = PgCluster(superuser_password=fresh_pg.password)
    as_postgres = os.geteuid() == 0
    try:
        os.makedirs(standby.sockdir, exist_ok=True)
        passfile = os.path.join(standby.base, "pgpass")
        with open(passfile, "w") as handle:
            handle.write("*:*:*:*:%s\n" % fresh_pg.password)
        os.chmod(passfile, 0o600)
        if as_postgres:
            ids = pwd.getpwnam("postgres")
            for path in (standby.base, standby.sockdir, passfile):
                os.chown(path, ids.pw_uid, ids.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
        subprocess.run(prefix + [os.path.join(standby.bindir, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                                 str(fresh_pg.port), "-U", "postgres", "-D", standby.data, "-X", "stream", "-c", "fast",
                                 "-R", "-w"], env=dict(os.environ, PGPASSFILE=passfile), check=True,
                       capture_output=True, timeout=120, cwd="/")
        with open(os.path.join(standby.data, "postgresql.conf"), "a") as handle:
            handle.write("port = %d\nunix_socket_directories = '%s'\n" % (standby.port, standby.sockdir))
        with open(os.path.join(standby.data, "postgresql.auto.conf"), "a") as handle:
            handle.write("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres passfile=%s'\n"
                         % (fresh_pg.port, passfile))
        standby.start()
        deadline = time.monotonic() + 30
        while not fresh_pg.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0][0]:
            assert time.monotonic() < deadline, "standby never streamed"
            time.sleep(0.2)
        primary = run_module_direct("ransomeye_health_info", _pg_args(fresh_pg))
        (lag_bytes,) = _by_name(primary, "pg_replication_lag_bytes")
        assert lag_bytes["role"] == "primary" and lag_bytes["value"] is not None and lag_bytes["status"] == "ok"
        on_standby = run_module_direct("ransomeye_health_info", _pg_args(
            standby, thresholds={"pg_replication_lag_seconds": {"warning": -1, "critical": None}}))
        (lag_seconds,) = _by_name(on_standby, "pg_replication_lag_seconds")
        assert lag_seconds["role"] == "standby" and lag_seconds["value"] is not None
        assert lag_seconds["status"] == "warning"  # forced: any lag >= -1 s
    finally:
        standby.destroy()
