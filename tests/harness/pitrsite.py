"""The point-in-time recovery test site: a cluster archiving WAL through ransomeye_wal_archive.

Paths live under a 0755 directory in /tmp because the server's OS user runs
the WAL program and must reach the repository, the program and its keys.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pgcluster import PgCluster, table_texts


class Site:
    """A cluster with WAL archiving into ``repo`` enabled through the module, and the args to reach it."""

    def __init__(self, keys: dict, mode: str = "rsa") -> None:
        self.keys = keys
        self.base = tempfile.mkdtemp(prefix="re-pitr-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.repo = os.path.join(self.base, "repo")
        self.program_dir = os.path.join(self.base, "prog")
        self.pg = PgCluster()
        self.pg.start()
        enc = dict(mode="rsa", recipients=[keys["recipient_pub"]]) if mode == "rsa" else dict(
            mode="aes", key_file=keys["aes_key"])
        self.enc = enc
        self.wal_args = dict(self.pg.conn_params(), repo=self.repo, signing_key=keys["signing_key"],
                             program_dir=self.program_dir, python=keys["python"], archive_timeout=60, **enc)
        self.backup_args = dict(self.pg.conn_params(), repo=self.repo, signing_key=keys["signing_key"], **enc)
        self.trusted = [keys["signing_pub"]]
        self.decrypt = dict(private_key=keys["recipient_key"]) if mode == "rsa" else dict(key_file=keys["aes_key"])

    def decrypt_kwargs(self) -> dict:
        from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_decryption
        return load_decryption(self.decrypt.get("private_key"), None, self.decrypt.get("key_file"))

    def enable(self, **overrides) -> dict:
        self.wal_args.update(overrides)
        result = run_module_direct("ransomeye_wal_archive", self.wal_args)
        assert result["_rc"] == 0, result
        self.pg.restart()
        return result

    def switch_and_wait(self, timeout: float = 30) -> str:
        """Force a segment switch and wait until the server reports it archived; return its name."""
        name = self.pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        self.wait_archived(name, timeout)
        return name

    def wait_archived(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.pg.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
            if last and last[:24] >= name:
                return
            time.sleep(0.1)
        raise AssertionError("%s not archived within %ss; log:\n%s" % (name, timeout, self.pg.log_text()[-3000:]))

    def chain_names(self) -> list:
        from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
        return wf.chain_names(wf.WalLayout(self.repo))

    def program(self, args: list, env: dict = None, timeout: int = 120) -> subprocess.CompletedProcess:
        argv = ["runuser", "-u", "postgres", "--", os.path.join(self.program_dir, "ransomeye-wal")] + args
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, cwd="/",
                              check=False)

    def destroy(self) -> None:
        self.pg.destroy()
        shutil.rmtree(self.base, ignore_errors=True)


def table_hashes(pg, dbname: str) -> dict:
    """SHA-256 of every table's rows in a stable order (what the drill compares)."""
    conn = pg.connect(dbname) if hasattr(pg, "connect") else pg
    out = {}
    try:
        with conn.cursor() as cur:
            for name, rows in table_texts(cur):
                digest = hashlib.sha256()
                for row in rows:
                    digest.update(row.encode() + b"\n")
                out[name] = digest.hexdigest()
    finally:
        if hasattr(pg, "connect"):
            conn.close()
    return out


def hashes_of_stopped(site, data_dir: str, dbname: str = "app") -> dict:
    """Start a restored (stopped) cluster on a spare port without archiving, hash its tables, stop it."""
    import psycopg2
    from tests.harness.pgcluster import free_port
    port = free_port()
    bindir = site.pg.bindir
    log = data_dir + ".log"
    open(log, "a").close()
    shutil.chown(log, "postgres", "postgres")
    argv = ["runuser", "-u", "postgres", "--", os.path.join(bindir, "pg_ctl"), "-D", data_dir, "-l",
            log, "-w", "-t", "60", "-o", "-p %d -c archive_mode=off" % port, "start"]
    subprocess.run(argv, check=True, capture_output=True, cwd="/")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=site.pg.password,
                                dbname=dbname, sslmode="disable")
        try:
            return table_hashes(conn, dbname)
        finally:
            conn.close()
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(bindir, "pg_ctl"), "-D", data_dir,
                        "-m", "fast", "-w", "stop"], capture_output=True, cwd="/", check=False)
