# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: pg_dump streamed into an encrypted object, pg_restore from one.

The dump runs in a snapshot exported by our own REPEATABLE READ transaction
(``pg_dump --snapshot``), so the per-table row counts recorded in the manifest
are counted in exactly the data the dump holds. The password reaches the
client tools only through _postgres.client_env's 0600 passfile.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import NewObject
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook

READ_CHUNK = 1 << 20
_STDERR_FAILURE = re.compile(r"(?im)^(?:pg_dump|pg_restore)?:?\s*(?:error|fatal|panic)\b|^\s*(?:ERROR|FATAL|PANIC):")

TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 1, 2
"""


def count_rows(conn: t.Any) -> t.Dict[str, int]:
    """Exact row count of every ordinary table, ``schema.table`` -> rows."""
    counts: t.Dict[str, int] = {}
    for schema, table in pgu.query(conn, TABLES_SQL):
        rows = pgu.query_one(conn, pgu.sql.SQL("SELECT count(*) FROM {}").format(pgu.ident(schema, table)))
        counts["%s.%s" % (schema, table)] = int(rows)
    return counts


def tables_written_since(conn: t.Any, xid: int) -> t.List[str]:
    """Tables holding a row version written after transaction ``xid`` (32-bit, as in xmin).

    An UPDATE, INSERT or COPY leaves a row whose xmin is younger than ``xid``;
    a DELETE alone changes the row count, which the caller compares too.
    ``age()`` is wraparound-safe; frozen rows count as old.
    """
    written = []
    for schema, table in pgu.query(conn, TABLES_SQL):
        newer = pgu.query_one(conn, pgu.sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE age(xmin) < age(%s::text::xid))").format(pgu.ident(schema, table)),
            [str(xid)])
        if newer:
            written.append("%s.%s" % (schema, table))
    return written


class _StderrCollector(threading.Thread):
    """Reads a child's stderr concurrently (a full pipe would otherwise stall it)."""

    def __init__(self, stream: t.Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.data = b""

    def run(self) -> None:
        chunks = []
        total = 0
        for block in iter(lambda: self.stream.read(65536), b""):
            if total < 1 << 20:
                chunks.append(block)
                total += len(block)
        self.data = b"".join(chunks)

    def text(self, password: t.Optional[str]) -> str:
        text = self.data.decode("utf-8", "replace").strip()
        if password:
            text = text.replace(password, "********")
        return text


def stderr_failed(text: str) -> bool:
    return bool(_STDERR_FAILURE.search(text or ""))


class DumpResult(t.NamedTuple):
    record: dict
    tables: t.Dict[str, int]
    server_version: int
    pg_dump_version: str
    duration: float


def dump_database(repo: t.Any, enc: t.Any, info: pgu.ConnInfo, db: str, object_id: str) -> DumpResult:
    """Stream ``pg_dump -Fc`` of ``db`` into a new v1 object; fail (and commit nothing) on any dump error."""
    def consume(proc: t.Any, check: t.Callable[[], None]) -> dict:
        first = True
        with NewObject(repo, enc, object_id, "database") as obj:
            while True:
                block = proc.stdout.read(READ_CHUNK)
                if not block:
                    break
                obj.write(block)
                if first:
                    first = False
                    hook("during_dump", child=proc)
            check()   # inside the object's context: a failed dump is never committed
        return t.cast(dict, obj.record)
    return _dump(info, db, [], consume)


def dump_database_v2(engine: t.Any, info: pgu.ConnInfo, db: str) -> DumpResult:
    """Stream ``pg_dump -Fc -Z0`` of ``db`` into v2 packs, cut by the keyed content-defined chunker.

    pg_dump's own compression is off: its compressed output differs throughout
    when a few rows change, so nothing would deduplicate; each chunk is
    compressed in its pack instead. The result's ``record`` holds the
    component's stream fields (tree id, size, SHA-256, chunker parameters) and
    ``stats``. A failed dump raises; the packs it wrote are referenced by no
    manifest and the next run's sweep removes them.
    """
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import chunker as bchunker
    run = engine.stream("database", bchunker.DB_PARAMS)

    def consume(proc: t.Any, check: t.Callable[[], None]) -> dict:
        record = run.store(proc.stdout.read, b"%s.pgdump" % db.encode("utf-8"),
                           on_first=lambda: hook("during_dump", child=proc))
        check()
        record["stats"] = dict(run.stats)
        return record
    return _dump(info, db, ["--compress=0"], consume)


def _dump(info: pgu.ConnInfo, db: str, options: t.List[str],
          consume: t.Callable[[t.Any, t.Callable[[], None]], dict]) -> DumpResult:
    started = time.monotonic()
    dbinfo = info.with_db(db)
    conn = pgu.connect(dbinfo, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
        tables = count_rows(conn)
        major = pgu.server_major(conn)
        version = pgu.server_version(conn)
        pg_dump = pgu.find_pg_binary("pg_dump", major)
        pg_dump_version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True,
                                         check=False).stdout.strip()
        argv = [pg_dump, "--format=custom"] + options + ["--no-password", "--snapshot=" + snapshot,
                                                         "--dbname=" + pgu.dbname_conninfo(db)]
        with pgu.client_env(dbinfo) as env:
            record = _run_pg_dump(argv, env, info.password, consume)
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()
    return DumpResult(record, tables, version, pg_dump_version, time.monotonic() - started)


def _run_pg_dump(argv: t.List[str], env: dict, password: t.Optional[str],
                 consume: t.Callable[[t.Any, t.Callable[[], None]], dict]) -> dict:
    """Run pg_dump; ``consume(proc, check)`` reads its stdout and calls ``check`` (raises on a failed dump)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    collector = _StderrCollector(proc.stderr)
    collector.start()
    hook("dump_started", child=proc)

    def check() -> None:
        rc = proc.wait()
        collector.join(timeout=30)
        err = collector.text(password)
        if rc != 0:
            reason = "killed by signal %d" % -rc if rc < 0 else "exit status %d" % rc
            raise RansomeyeError("pg_dump failed (%s); no backup was recorded: %s" % (reason, err or "no message"))
        if stderr_failed(err):
            raise RansomeyeError("pg_dump reported an error; no backup was recorded: %s" % err)
    try:
        return consume(proc, check)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def restore_database(info: pgu.ConnInfo, target_db: str, chunks: t.Iterator[bytes], jobs: int = 1,
                     staging_parent: t.Optional[str] = None, server_major: t.Optional[int] = None) -> int:
    """pg_restore the custom-format dump given as plaintext chunks into the existing empty ``target_db``.

    With jobs == 1 the chunks go to pg_restore's stdin (nothing staged). With
    more, pg_restore -j needs a seekable file: it is staged in a fresh 0700
    directory that is removed afterwards, also on failure. Returns the dump size.
    """
    pg_restore = pgu.find_pg_binary("pg_restore", server_major)
    dbinfo = info.with_db(target_db)
    argv = [pg_restore, "--no-password", "--exit-on-error", "--dbname=" + pgu.dbname_conninfo(target_db)]
    size = 0
    with pgu.client_env(dbinfo) as env:
        if jobs <= 1:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env)
            collector = _StderrCollector(proc.stderr)
            collector.start()
            try:
                try:
                    for chunk in chunks:
                        size += len(chunk)
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # pg_restore exited early: its status and stderr say why
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
            collector.join(timeout=30)
            err = collector.text(info.password)
        else:
            staging = tempfile.mkdtemp(prefix="ransomeye-restore-", dir=staging_parent)
            try:
                os.chmod(staging, 0o700)
                dump_path = os.path.join(staging, "dump.pgc")
                fd = os.open(dump_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    for chunk in chunks:
                        size += len(chunk)
                        handle.write(chunk)
                proc = subprocess.run(argv + ["--jobs=%d" % jobs, dump_path], stdin=subprocess.DEVNULL,
                                      capture_output=True, env=env, check=False)
                rc = proc.returncode
                err = proc.stderr.decode("utf-8", "replace").strip()
                if info.password:
                    err = err.replace(info.password, "********")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    if rc != 0 or stderr_failed(err):
        raise RansomeyeError("pg_restore into %s failed (exit status %d): %s" % (target_db, rc, err or "no message"))
    return size
