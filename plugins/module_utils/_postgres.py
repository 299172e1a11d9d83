# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: PostgreSQL connections, quoting, versions and client tools.

The connection options are the same in every module (doc fragment
``ransomeye.ops.postgres``). Passwords go to libpq as keyword arguments and to
client tools through a 0600 passfile, never on a command line.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
# the option specs live apart so that a module can build its argument spec without importing psycopg2
from ansible_collections.ransomeye.ops.plugins.module_utils._pg_spec import (  # noqa: F401 pylint: disable=unused-import
    SSL_MODES, ignored_connection_spec, postgres_argument_spec)

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the managed host
    psycopg2 = None
    sql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = _exc


def require_psycopg2(module: t.Any) -> None:
    """Fail the module with Ansible's standard message when psycopg2 is missing."""
    if not HAS_PSYCOPG2:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("psycopg2 (or psycopg2-binary)"), exception=str(PSYCOPG2_IMPORT_ERROR))


_CONNINFO_LIKE = re.compile(r"^\s*postgres(?:ql)?://", re.I)


def check_dbname(name: t.Any, what: str = "database name") -> str:
    """``name`` when it is a plain database name; refuse anything libpq could read as a connection string.

    pg_restore, pg_dump and psql expand a ``--dbname`` containing ``=`` or
    starting with ``postgresql://`` into connection parameters: a name taken
    from a manifest or a template could then send the client (and its
    password) to another host.
    """
    if not isinstance(name, str) or not name:
        raise RansomeyeError("%s must be a non-empty string" % what)
    if "=" in name or _CONNINFO_LIKE.match(name) or "\x00" in name:
        raise RansomeyeError("refusing %s %r: it looks like a connection string (a database name may not contain "
                             "'=', a NUL byte or start with postgresql://); give host and port as login_host and "
                             "login_port" % (what, name))
    return name


def dbname_conninfo(name: str) -> str:
    """``dbname='<name>'``, quoted as libpq's conninfo parser reads it, for a client tool's ``--dbname``."""
    check_dbname(name)
    return "dbname='%s'" % name.replace("\\", "\\\\").replace("'", "\\'")


class ConnInfo(t.NamedTuple):
    """Connection parameters, parsed once from the module options."""

    host: str
    port: int
    user: str
    password: t.Optional[str]
    dbname: str
    sslmode: str
    sslrootcert: t.Optional[str]
    connect_timeout: int

    @classmethod
    def from_params(cls, params: dict, dbname: t.Optional[str] = None) -> "ConnInfo":
        port = params.get("login_port") or 5432
        if not 1 <= int(port) <= 65535:
            raise RansomeyeError("login_port must be between 1 and 65535, not %s" % port)
        timeout = params.get("connect_timeout")
        return cls(
            host=params.get("login_host") or "localhost",
            port=int(port),
            user=params.get("login_user") or "postgres",
            password=params.get("login_password"),
            dbname=check_dbname(dbname or params.get("login_db") or "postgres"),
            sslmode=params.get("ssl_mode") or "prefer",
            sslrootcert=params.get("ca_cert"),
            connect_timeout=int(timeout if timeout is not None else 10),
        )

    def with_db(self, dbname: str) -> "ConnInfo":
        return self._replace(dbname=check_dbname(dbname))

    def with_login(self, user: str, password: t.Optional[str]) -> "ConnInfo":
        return self._replace(user=user, password=password)

    def describe(self) -> str:
        """Where we connect, for messages: never the password."""
        return "%s@%s:%s/%s" % (self.user, self.host, self.port, self.dbname)

    def libpq_kwargs(self) -> dict:
        kwargs = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            sslmode=self.sslmode,
            connect_timeout=max(1, self.connect_timeout),
            application_name="ransomeye.ops",
        )
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs


def _clean_error(exc: Exception, info: ConnInfo) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else exc.__class__.__name__
    if info.password:
        message = message.replace(info.password, "********")
    return message


def connect(info: ConnInfo, autocommit: bool = True) -> t.Any:
    """Open a psycopg2 connection; a failure names host, port, user and db, never the password."""
    if not HAS_PSYCOPG2:
        raise RansomeyeError("psycopg2 is required on the managed host (pip install psycopg2-binary)")
    try:
        conn = psycopg2.connect(**info.libpq_kwargs())
    except psycopg2.Error as exc:
        raise RansomeyeError(
            "could not connect to PostgreSQL at %s:%s as %s (database %s): %s"
            % (info.host, info.port, info.user, info.dbname, _clean_error(exc, info))
        )
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def connection(info: ConnInfo, autocommit: bool = True) -> t.Iterator[t.Any]:
    """``with connection(info) as conn:`` closes the connection afterwards."""
    conn = connect(info, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def ident(*names: str) -> t.Any:
    """A safely quoted identifier (``schema.table`` when given two names)."""
    return sql.Identifier(*names)


def literal(value: t.Any) -> t.Any:
    """A safely quoted literal."""
    return sql.Literal(value)


def query(conn: t.Any, statement: t.Any, params: t.Optional[t.Sequence[t.Any]] = None) -> t.List[tuple]:
    """Run a statement and return all rows (empty for statements without a result)."""
    with conn.cursor() as cur:
        cur.execute(statement, params)
        if cur.description is None:
            return []
        return list(cur.fetchall())


def query_one(conn: t.Any, statement: t.Any, params: t.Optional[t.Sequence[t.Any]] = None) -> t.Any:
    """The first column of the first row, or None."""
    rows = query(conn, statement, params)
    return rows[0][0] if rows else None


def server_version(conn: t.Any) -> int:
    """The server version as PostgreSQL's integer (150018 for 15.18)."""
    return int(conn.server_version)


def server_major(conn: t.Any) -> int:
    """The server's major version (15 for 15.18, 9 for 9.6 is not supported)."""
    return server_version(conn) // 10000


def database_exists(conn: t.Any, name: str) -> bool:
    return bool(query_one(conn, "SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def role_exists(conn: t.Any, name: str) -> bool:
    return bool(query_one(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [name]))


_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")


def _tool_major(path: str) -> t.Optional[int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return int(match.group(1)) if match else None


def find_pg_binary(name: str, server_major_version: t.Optional[int] = None) -> str:
    """Path of a client tool (``pg_dump``...) whose major version can serve the server.

    pg_dump refuses servers newer than itself, and pg_restore of an older
    major can misread a newer archive, so prefer the exact major, then the
    newest newer one. Search /usr/lib/postgresql/<v>/bin, /usr/pgsql-<v>/bin
    and PATH.
    """
    candidates: t.List[str] = []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name))
    candidates += sorted(glob.glob("/usr/pgsql-*/bin/%s" % name))
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    seen: t.Dict[str, int] = {}
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen or not os.access(real, os.X_OK):
            continue
        major = _tool_major(real)
        if major is not None:
            seen[real] = major
    if not seen:
        raise RansomeyeError(
            "%s was not found; install the PostgreSQL client tools (Debian: postgresql-client, "
            "RHEL: postgresql)" % name
        )
    if server_major_version is None:
        return max(seen.items(), key=lambda kv: kv[1])[0]
    exact = [p for p, v in seen.items() if v == server_major_version]
    if exact:
        return exact[0]
    newer = sorted((v, p) for p, v in seen.items() if v > server_major_version)
    if newer:
        return newer[0][1]
    raise RansomeyeError(
        "%s for PostgreSQL %d or newer is required (found %s); install postgresql-client-%d"
        % (name, server_major_version, ", ".join("%s=%d" % kv for kv in sorted(seen.items())), server_major_version)
    )


def _passfile_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def client_env(info: ConnInfo) -> t.Iterator[t.Dict[str, str]]:
    """Environment for pg_dump/pg_restore/psql: libpq variables plus a temporary 0600 passfile.

    The password never appears in argv (visible in ``ps``) nor in the
    environment of the child (readable in /proc by the same user): only the
    passfile holds it, and it is removed afterwards.
    """
    env = dict(os.environ)
    for key in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE"):
        env.pop(key, None)
    env.update(
        PGHOST=info.host,
        PGPORT=str(info.port),
        PGUSER=info.user,
        PGDATABASE=info.dbname,
        PGSSLMODE=info.sslmode,
        PGCONNECT_TIMEOUT=str(max(1, info.connect_timeout)),
        PGAPPNAME="ransomeye.ops",
    )
    if info.sslrootcert:
        env["PGSSLROOTCERT"] = info.sslrootcert
    tmpdir = tempfile.mkdtemp(prefix="ransomeye-pgpass-")
    try:
        passfile = os.path.join(tmpdir, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            if info.password is not None:
                # Only the exact host, port and user: a line matching any host would hand the password to
                # whatever server a client tool ends up connecting to.
                handle.write("%s:%d:*:%s:%s\n" % (_passfile_escape(info.host), info.port,
                                                  _passfile_escape(info.user), _passfile_escape(info.password)))
        env["PGPASSFILE"] = passfile
        yield env
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
