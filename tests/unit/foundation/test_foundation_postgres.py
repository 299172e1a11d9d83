"""Connection helpers against a real cluster: clear errors, no password in messages, tool discovery."""
from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def test_connect_and_server_version(pg):
    info = _postgres.ConnInfo.from_params(pg.conn_params())
    with _postgres.connection(info) as conn:
        assert _postgres.server_major(conn) == int(pg.execute("SHOW server_version_num")[0][0]) // 10000
        assert _postgres.database_exists(conn, "postgres")
        assert not _postgres.role_exists(conn, "no_such_role")


def test_failed_login_names_host_and_port_but_never_the_password(pg):
    params = dict(pg.conn_params(), login_password="Wr0ng-pa55-XYZ")
    info = _postgres.ConnInfo.from_params(params)
    with pytest.raises(RansomeyeError) as err:
        _postgres.connect(info)
    assert "127.0.0.1:%d" % pg.port in err.value.msg
    assert "Wr0ng-pa55-XYZ" not in err.value.msg
    assert "password authentication failed" in err.value.msg


def test_identifiers_are_quoted(pg, pg_db):
    info = _postgres.ConnInfo.from_params(pg.conn_params(), dbname=pg_db)
    evil = 'x"; DROP TABLE victim; --'
    with _postgres.connection(info) as conn:
        _postgres.query(conn, "CREATE TABLE victim (id int)")
        stmt = _postgres.sql.SQL("CREATE TABLE {} (id int)").format(_postgres.ident(evil))
        _postgres.query(conn, stmt)
        names = {r[0] for r in _postgres.query(conn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert names == {"victim", evil}


def test_find_pg_binary_matches_server_major(pg):
    major = int(pg.execute("SHOW server_version_num")[0][0]) // 10000
    path = _postgres.find_pg_binary("pg_dump", major)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    assert " %d." % major in out
    with pytest.raises(RansomeyeError, match="postgresql-client-99"):
        _postgres.find_pg_binary("pg_dump", 99)


def test_client_env_uses_a_private_passfile_and_removes_it(pg):
    info = _postgres.ConnInfo.from_params(pg.conn_params())
    with _postgres.client_env(info) as env:
        passfile = env["PGPASSFILE"]
        assert oct(os.stat(passfile).st_mode & 0o777) == oct(0o600)
        assert "PGPASSWORD" not in env
        assert pg.password not in " ".join("%s=%s" % kv for kv in env.items() if kv[0] != "PGPASSFILE")
        out = subprocess.run(["psql", "-XAtc", "select 42"], env=env, capture_output=True, text=True, check=False)
        assert out.stdout.strip() == "42", out.stderr
    assert not os.path.exists(passfile)
