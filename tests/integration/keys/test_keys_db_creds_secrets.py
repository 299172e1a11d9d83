"""The new password never reaches the server log, the module output at -vvv, or any command line."""
from __future__ import annotations

import os
import threading

from tests.integration.keys.conftest import make_creds_setup


def _scan_cmdlines(stop: threading.Event, seen: list) -> None:
    """Collect every process command line while the rotation runs."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    seen.append(handle.read().replace(b"\0", b" "))
            except OSError:
                continue
        stop.wait(0.02)


def test_new_password_is_not_in_server_log_pg_stat_statements_output_or_argv(fresh_pg, tmp_path, run_module):
    fresh_pg.execute("ALTER SYSTEM SET log_statement = 'all'")
    fresh_pg.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
    fresh_pg.execute("ALTER SYSTEM SET log_connections = on")
    fresh_pg.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    fresh_pg.restart()
    fresh_pg.execute("CREATE EXTENSION pg_stat_statements")
    fresh_pg.execute("CREATE DATABASE ransomeye")
    creds = make_creds_setup(fresh_pg, str(tmp_path), "ransomeye")
    old_password = creds.file_credentials()[1]

    stop = threading.Event()
    cmdlines: list = []
    scanner = threading.Thread(target=_scan_cmdlines, args=(stop, cmdlines), daemon=True)
    scanner.start()
    try:
        result = run_module("ransomeye_rotate_db_creds", creds.module_args(backup=True), verbosity=3)
    finally:
        stop.set()
        scanner.join()
    assert result.get("rotated") is True, result
    new_password = creds.file_credentials()[1]
    assert new_password != old_password and creds.login_works()

    log = fresh_pg.log_text()
    assert "ALTER ROLE" in log and "SCRAM-SHA-256$" in log, "log_statement=all did not log the rotation"
    assert new_password not in log
    statements = [row[0] for row in fresh_pg.execute("SELECT query FROM pg_stat_statements")]
    assert any("ALTER ROLE" in q for q in statements), "pg_stat_statements did not record the rotation"
    assert not [q for q in statements if new_password in q]
    assert new_password not in result["_stdout"]
    assert "ESTABLISH LOCAL CONNECTION" in result["_stdout"], "not run at -vvv"
    assert len(cmdlines) > 10, "the /proc scanner saw nothing"
    encoded = new_password.encode()
    assert not [c for c in cmdlines if encoded in c]
