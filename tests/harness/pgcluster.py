"""A throwaway PostgreSQL cluster: initdb as the postgres OS user, scram-sha-256, loopback port.

Used by the pytest fixtures, the demo host and the benchmarks. PostgreSQL
refuses to run as root, so as root every server command runs through
``runuser -u postgres``; as an ordinary user it runs directly.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import typing as t


class PrerequisiteMissing(RuntimeError):
    pass


def server_bindir() -> str:
    """Directory of initdb/pg_ctl/postgres, newest major first; a clear error when none."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(out)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    for path in candidates:
        if os.access(os.path.join(path, "initdb"), os.X_OK) and os.access(os.path.join(path, "pg_ctl"), os.X_OK):
            return path
    raise PrerequisiteMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them: "
        "Debian/Ubuntu 'apt-get install postgresql', RHEL 'dnf install postgresql-server'."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One cluster under a short temp directory; ``start()``/``stop()``/``destroy()``."""

    def __init__(
        self,
        base: t.Optional[str] = None,
        superuser_password: t.Optional[str] = None,
        port: t.Optional[int] = None,
        settings: t.Optional[t.Dict[str, str]] = None,
    ) -> None:
        # Unix socket paths are limited to ~107 bytes, so the base is short.
        self.base = base or tempfile.mkdtemp(prefix="re-pg-", dir="/tmp")
        self.bindir = server_bindir()
        self.data = os.path.join(self.base, "data")
        self.sockdir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgresql.log")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.superuser = "postgres"
        self.password = superuser_password or secrets.token_urlsafe(18)
        self.settings = dict(settings or {})
        self._as_postgres = os.geteuid() == 0

    # -- running commands as the cluster owner ---------------------------------
    def _cmd(self, argv: t.List[str]) -> t.List[str]:
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv: t.List[str], timeout: int = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=timeout, cwd="/", check=False)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (argv[0], proc.returncode, proc.stdout, proc.stderr))
        return proc

    def _chown(self, path: str) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- lifecycle -------------------------------------------------------------
    def init(self) -> "PgCluster":
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._chown(self.base)
        os.makedirs(self.sockdir, exist_ok=True)
        self._chown(self.sockdir)
        pwfile = os.path.join(self.base, "pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password + "\n")
        self._chown(pwfile)
        try:
            self._run([
                os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", self.superuser,
                "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            ])
        finally:
            os.unlink(pwfile)
        conf = os.path.join(self.data, "postgresql.conf")
        with open(conf, "a") as handle:
            handle.write("\n# ransomeye.ops test harness\n")
            handle.write("listen_addresses = '127.0.0.1'\nport = %d\n" % self.port)
            handle.write("unix_socket_directories = '%s'\n" % self.sockdir)
            handle.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            handle.write("logging_collector = off\n")
            for key, value in self.settings.items():
                handle.write("%s = %s\n" % (key, value))
        return self

    def start(self) -> "PgCluster":
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self.init()
        self._ensure_log()
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "start"])
        return self

    def _ensure_log(self) -> None:
        if not os.path.exists(self.logfile):
            open(self.logfile, "a").close()
            self._chown(self.logfile)

    def restart(self) -> None:
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w", "-t", "60",
                   "-m", "fast", "restart"])

    def reload(self) -> None:
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "reload"])

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                                      "-w", "-t", "60", "stop"]), capture_output=True, cwd="/", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def postmaster_pid(self) -> int:
        with open(os.path.join(self.data, "postmaster.pid")) as handle:
            return int(handle.readline().strip())

    # -- clients ---------------------------------------------------------------
    def conn_params(self) -> dict:
        """The module options that reach this cluster as its superuser."""
        return dict(login_host=self.host, login_port=self.port, login_user=self.superuser,
                    login_password=self.password, login_db="postgres", ssl_mode="disable")

    def dsn(self, dbname: str = "postgres", user: t.Optional[str] = None, password: t.Optional[str] = None) -> dict:
        return dict(host=self.host, port=self.port, user=user or self.superuser,
                    password=self.password if password is None else password, dbname=dbname, sslmode="disable")

    def connect(self, dbname: str = "postgres", user: t.Optional[str] = None, password: t.Optional[str] = None,
                autocommit: bool = True):
        import psycopg2
        conn = psycopg2.connect(connect_timeout=10, **self.dsn(dbname, user, password))
        conn.autocommit = autocommit
        return conn

    def execute(self, statement: str, params: t.Optional[t.Sequence] = None, dbname: str = "postgres") -> list:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def log_text(self) -> str:
        with open(self.logfile, errors="replace") as handle:
            return handle.read()


def table_texts(cur: t.Any) -> t.Iterator[t.Tuple[str, t.List[str]]]:
    """("schema.table", its rows as text, sorted) for every user table, in name order (to compare databases)."""
    cur.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   ORDER BY 1, 2""")
    for schema, table in cur.fetchall():
        cur.execute('SELECT t::text FROM "%s"."%s" t ORDER BY 1' % (schema, table))
        yield "%s.%s" % (schema, table), [row[0] for row in cur.fetchall()]


@contextlib.contextmanager
def running_cluster(**kwargs: t.Any) -> t.Iterator[PgCluster]:
    cluster = PgCluster(**kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def main(argv: t.Optional[t.List[str]] = None) -> int:
    """``python -m tests.harness.pgcluster start|stop --base DIR``: for ansible-test setup targets.

    ``start`` prints the connection as JSON (port, password, base); the
    password is also kept in ``<base>/superuser.json`` (0600) for ``stop``.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="pgcluster")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--base", required=True)
    args = parser.parse_args(argv)
    state = os.path.join(args.base, "superuser.json")
    if args.action == "start":
        cluster = PgCluster(base=args.base)
        cluster.start()
        info = {"base": cluster.base, "host": cluster.host, "port": cluster.port, "password": cluster.password}
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        print(json.dumps(info))
    else:
        cluster = PgCluster(base=args.base)
        cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
