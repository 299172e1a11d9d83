"""ransomeye_pg_tune against real PostgreSQL clusters: ALTER SYSTEM, restart, pending configuration, quoting."""
from __future__ import annotations

import json
import os

import pytest

psycopg2 = pytest.importorskip("psycopg2")

TUNE = dict(memory="1GB", cpus=4, db_type="mixed", storage="ssd")


def _show(cluster, name):
    return cluster.execute("SHOW %s" % name)[0][0]


def _args(cluster, **extra):
    args = dict(TUNE)
    args.update(cluster.conn_params())
    args.update(extra)
    return args


def test_alter_system_four_steps_restart_and_show(fresh_pg, run_module_direct):
    before_buffers = _show(fresh_pg, "shared_buffers")
    check = run_module_direct("ransomeye_pg_tune", _args(fresh_pg), check=True, diff=True)
    assert check["_rc"] == 0, check
    assert check["changed"] is True
    assert check["settings"]["shared_buffers"] == "256MB"
    assert check["settings"]["work_mem"] == "4MB"
    assert "shared_buffers" in check["changed_settings"]
    assert check["restart_required"] is True
    assert "shared_buffers = 256MB" in check["diff"]["after"]
    assert _show(fresh_pg, "shared_buffers") == before_buffers  # check mode changed nothing
    assert fresh_pg.execute("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%%auto.conf'")[0][0] == 0

    applied = run_module_direct("ransomeye_pg_tune", _args(fresh_pg))
    assert applied["changed"] is True
    assert applied["restart_required"] is True and applied["reload_required"] is True
    assert applied["reloaded"] is True
    # reloadable settings are live after the module's reload, restart-only ones are pending
    assert _show(fresh_pg, "effective_cache_size") == "768MB"
    assert _show(fresh_pg, "shared_buffers") == before_buffers

    # Before the restart: nothing to change, including restart-only parameters.
    again_check = run_module_direct("ransomeye_pg_tune", _args(fresh_pg), check=True)
    assert again_check["changed"] is False, again_check["changed_settings"]
    assert again_check["restart_required"] is True
    again = run_module_direct("ransomeye_pg_tune", _args(fresh_pg))
    assert again["changed"] is False and again["changed_settings"] == {}
    assert again["restart_required"] is True

    fresh_pg.restart()
    for name, value in applied["settings"].items():
        shown = _show(fresh_pg, name)
        assert shown == value, (name, shown, value)
    after_restart = run_module_direct("ransomeye_pg_tune", _args(fresh_pg))
    assert after_restart["changed"] is False
    assert after_restart["restart_required"] is False and after_restart["reload_required"] is False


def test_quoted_value_cannot_inject_sql(fresh_pg, run_module_direct):
    fresh_pg.execute("CREATE TABLE canary (id int)")
    evil = "%m [%p] '; DROP TABLE canary; SELECT '"
    result = run_module_direct("ransomeye_pg_tune", _args(fresh_pg, overrides={"log_line_prefix": evil}))
    assert result["_rc"] == 0, result
    assert result["settings"]["log_line_prefix"] == evil
    assert fresh_pg.execute("SELECT count(*) FROM canary")[0][0] == 0  # the table survived
    assert _show(fresh_pg, "log_line_prefix") == evil  # reloaded, stored verbatim
    assert run_module_direct("ransomeye_pg_tune", _args(fresh_pg, overrides={"log_line_prefix": evil}))["changed"] is False


def test_unknown_override_and_bad_input_fail_cleanly(pg, run_module_direct):
    unknown = run_module_direct("ransomeye_pg_tune", _args(pg, overrides={"no_such_setting": "1"}), check=True)
    assert unknown["failed"] is True and "unknown PostgreSQL parameter" in unknown["msg"]
    bad_name = run_module_direct("ransomeye_pg_tune", _args(pg, overrides={"x; DROP TABLE y": "1"}), check=True)
    assert bad_name["failed"] is True and "not a valid PostgreSQL parameter name" in bad_name["msg"]
    for args, fragment in [(dict(memory="12 parsecs"), "memory must be a size"), (dict(cpus=0), "cpus must be"),
                           (dict(db_type="nosql"), "db_type must be one of")]:
        result = run_module_direct("ransomeye_pg_tune", _args(pg, **args), check=True)
        assert result["failed"] is True and fragment in result["msg"], result
        assert "Traceback" not in result.get("_stderr", "") and "exception" not in result


def test_pg_version_taken_from_the_server(pg, run_module_direct):
    result = run_module_direct("ransomeye_pg_tune", _args(pg, apply="none"))
    assert result["inputs"]["pg_version"] == int(pg.execute("SHOW server_version_num")[0][0]) // 10000
    assert result["inputs"]["pg_version_source"] == "server"
    assert result["changed"] is False


def test_enum_value_the_server_lacks_is_refused_before_any_change(pg, run_module_direct):
    result = run_module_direct("ransomeye_pg_tune", _args(pg, overrides={"wal_compression": "brotli"}), check=True)
    assert result["failed"] is True and "not supported by this server" in result["msg"]


def test_file_mode_four_steps_backup_and_server_accepts_it(fresh_pg, run_module_direct):
    dest = os.path.join(fresh_pg.base, "conf.d-ransomeye-tune.conf")
    args = dict(TUNE, pg_version=15, dest=dest, backup=True)
    check = run_module_direct("ransomeye_pg_tune", args, check=True, diff=True)
    assert check["changed"] is True and not os.path.exists(dest)
    assert "shared_buffers = 256MB" in check["diff"]["after"]
    applied = run_module_direct("ransomeye_pg_tune", args)
    assert applied["changed"] is True and os.path.exists(dest) and "backup_file" not in applied
    assert applied["restart_required"] is True
    assert run_module_direct("ransomeye_pg_tune", args, check=True)["changed"] is False
    assert run_module_direct("ransomeye_pg_tune", args)["changed"] is False

    bigger = run_module_direct("ransomeye_pg_tune", dict(args, memory="2GB"), diff=True)
    assert bigger["changed"] is True and os.path.exists(bigger["backup_file"])
    assert "shared_buffers = 256MB" in bigger["diff"]["before"] and "shared_buffers = 512MB" in bigger["diff"]["after"]
    assert set(bigger["changed_settings"]) >= {"shared_buffers", "effective_cache_size"}

    # The server reads the file without a single error, and uses it after a restart.
    with open(os.path.join(fresh_pg.data, "postgresql.conf"), "a") as handle:
        handle.write("include '%s'\n" % dest)
    errors = fresh_pg.execute("SELECT name, error FROM pg_file_settings WHERE sourcefile = %s AND error IS NOT NULL "
                              "AND error <> 'setting could not be applied'", [dest])
    assert errors == []
    fresh_pg.restart()
    assert _show(fresh_pg, "shared_buffers") == "512MB"
    assert _show(fresh_pg, "work_mem") == bigger["settings"]["work_mem"]


def test_through_ansible_with_module_defaults_group(pg, run_module):
    result = run_module("ransomeye.ops.ransomeye_pg_tune", _args(pg, apply="none", memory="8GB", cpus=2))
    assert result["_rc"] == 0, result["_stdout"]
    assert result["settings"]["shared_buffers"] == "2GB"
    assert "max_worker_processes" not in result["settings"]


def test_custom_parameter_is_idempotent_or_refused_clearly(fresh_pg, run_module_direct):
    # PostgreSQL 17 added ALTER SYSTEM for custom parameters no library has defined; before it, the
    # module must fail with the server's reason, naming the parameter.
    args = _args(fresh_pg, overrides={"ransomeye.tuned_by": "ransomeye.ops"})
    first = run_module_direct("ransomeye_pg_tune", args)
    if int(fresh_pg.execute("SHOW server_version_num")[0][0]) < 170000:
        assert first["failed"] is True and first["parameter"] == "ransomeye.tuned_by"
        assert "unrecognized configuration parameter" in first["msg"]
        # refused before anything was written
        assert fresh_pg.execute("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%%auto.conf'")[0][0] == 0
        return
    assert first["_rc"] == 0, first
    assert "ransomeye.tuned_by" in first["changed_settings"]
    second = run_module_direct("ransomeye_pg_tune", args)
    assert "ransomeye.tuned_by" not in second["changed_settings"] and second["changed"] is False


def test_refused_value_puts_back_what_was_written(fresh_pg, run_module_direct):
    fresh_pg.execute("ALTER SYSTEM SET effective_cache_size = '333MB'")  # a previous value in auto.conf
    # work_mem below PostgreSQL's 64kB minimum: the server refuses it after earlier settings were written.
    result = run_module_direct("ransomeye_pg_tune", _args(fresh_pg, overrides={"work_mem": "1kB"}))
    assert result["failed"] is True and result["parameter"] == "work_mem"
    assert "put back" in result["msg"]
    auto = dict(fresh_pg.execute("SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%%auto.conf'"))
    assert auto == {"effective_cache_size": "333MB"}


def test_unprivileged_login_fails_with_a_clear_message(pg, run_module_direct):
    pg.execute("DROP ROLE IF EXISTS tune_nobody")
    pg.execute("CREATE ROLE tune_nobody LOGIN PASSWORD 'tune-nobody-pw'")
    try:
        args = _args(pg, login_user="tune_nobody", login_password="tune-nobody-pw")
        result = run_module_direct("ransomeye_pg_tune", args, check=True)
        assert result["failed"] is True, result
        assert "permission denied" in result["msg"] and "Traceback" not in result["_stderr"]
        assert "tune-nobody-pw" not in json.dumps(result)
    finally:
        pg.execute("DROP ROLE IF EXISTS tune_nobody")


def test_detected_memory_and_cpus(pg, run_module_direct):
    result = run_module_direct("ransomeye_pg_tune", dict(pg.conn_params(), apply="none"))
    assert result["_rc"] == 0, result
    inputs = result["inputs"]
    assert inputs["memory"] % (1024 * 1024) == 0 and inputs["memory"] > 0
    assert 1 <= inputs["cpus"] <= len(os.sched_getaffinity(0))
    quarter_kb = inputs["memory"] // 1024 // 4  # mixed: RAM / 4, printed in the largest exact unit
    shown = result["settings"]["shared_buffers"]
    factor = {"kB": 1, "MB": 1024, "GB": 1024 * 1024}[shown[-2:]]
    assert int(shown[:-2]) * factor == quarter_kb
