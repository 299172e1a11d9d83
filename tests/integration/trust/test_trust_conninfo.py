"""Attacker B (or a templating slip of O): a database name that is a libpq connection string.

Before the fix, ``pg_restore --dbname=<name>`` parsed the name as a conninfo,
connected to the host it named and answered that host's password request
from a passfile line that matched any host. The "attacker's server" here is a
socket that speaks just enough of the PostgreSQL protocol to ask for a
cleartext password: it stands for a host B controls, which cannot be a real
PostgreSQL server we run (the point is that nothing should connect to it).
"""
from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import restore_database
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


class PasswordTrap:
    """Listens on a loopback port; records every connection and any password sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.passwords: list = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _addr = self.sock.accept()
            except socket.timeout:
                continue
            self.connections += 1
            conn.settimeout(2)
            try:
                length = struct.unpack("!I", conn.recv(4))[0]
                payload = conn.recv(length - 4)
                if payload[:4] == struct.pack("!I", 80877103):  # SSLRequest: say no, then read the startup
                    conn.sendall(b"N")
                    length = struct.unpack("!I", conn.recv(4))[0]
                    conn.recv(length - 4)
                conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
                kind = conn.recv(1)
                if kind == b"p":
                    length = struct.unpack("!I", conn.recv(4))[0]
                    self.passwords.append(conn.recv(length - 4).rstrip(b"\0").decode())
            except (OSError, struct.error):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def trap():
    server = PasswordTrap()
    yield server
    server.close()


def _names(port):
    return [
        "host=127.0.0.1 port=%d dbname=postgres" % port,
        "postgresql://127.0.0.1:%d/postgres" % port,
        "postgres://user@127.0.0.1:%d/postgres" % port,
        " host=127.0.0.1 port=%d" % port,
    ]


@pytest.fixture(scope="module")
def small_dump(pg):
    """A real custom-format dump (pg_restore reads its header before it connects)."""
    import subprocess
    info = pgu.ConnInfo.from_params(pg.conn_params())
    with pgu.client_env(info) as env:
        out = subprocess.run([pgu.find_pg_binary("pg_dump"), "--format=custom", "--no-password", "postgres"],
                             env=env, capture_output=True, check=True)
    return out.stdout


def test_pg_restore_never_connects_to_a_host_named_in_the_database_name(pg, trap, small_dump):
    info = pgu.ConnInfo.from_params(dict(pg.conn_params(), login_password="s3cret-admin-password"))
    for name in _names(trap.port):
        with pytest.raises(RansomeyeError) as err:
            restore_database(info, name, iter([small_dump]))
        assert "connection string" in err.value.msg
    assert trap.connections == 0 and trap.passwords == []


@pytest.mark.parametrize("name", ["host=x dbname=y", "postgresql://h/db", "POSTGRES://h/db", "a=b", "x\x00y"])
def test_connection_string_like_names_are_refused_everywhere(name):
    with pytest.raises(RansomeyeError) as err:
        pgu.ConnInfo.from_params(dict(login_db=name))
    assert "database name" in err.value.msg
    with pytest.raises(RansomeyeError):
        pgu.ConnInfo.from_params({}).with_db(name)


def test_an_empty_database_name_is_refused():
    with pytest.raises(RansomeyeError):
        pgu.ConnInfo.from_params({}).with_db("")


@pytest.mark.parametrize("name", ["ransomeye", "my db", "db-1", "Ünïcode", "it's", 'a"b', "back\\slash"])
def test_ordinary_names_are_passed_as_a_quoted_dbname_keyword(name):
    arg = pgu.dbname_conninfo(name)
    assert arg.startswith("dbname='") and arg.endswith("'")
    # libpq's own parser must read back exactly the name (psycopg2 exposes it).
    import psycopg2.extensions
    assert psycopg2.extensions.parse_dsn(arg) == {"dbname": name}


def test_passfile_is_scoped_to_the_exact_host_port_and_user(pg):
    info = pgu.ConnInfo.from_params(dict(pg.conn_params(), login_password="pw:with\\specials"))
    with pgu.client_env(info) as env:
        with open(env["PGPASSFILE"]) as handle:
            lines = handle.read().splitlines()
    assert lines == ["%s:%d:*:%s:pw\\:with\\\\specials" % (pg.host, pg.port, pg.superuser)]


def test_module_refuses_a_connection_string_db_before_connecting(pg, trap, run_module_direct, tmp_path):
    for module, extra in (("ransomeye_pg_vacuum", {}),
                          ("ransomeye_restore", dict(repo=str(tmp_path), private_key=os.devnull,
                                                     trusted_keys=[os.devnull]))):
        result = run_module_direct(module, dict(pg.conn_params(), db=_names(trap.port)[0], **extra))
        assert result.get("failed") and "Traceback" not in str(result), result
    assert trap.connections == 0
