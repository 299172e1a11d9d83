# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helper of the point-in-time drill (dr_drill_mode: pitr), copied to the managed host and run there.

Subcommands (JSON in on stdin, JSON out on stdout; the password only ever on stdin):
  walkey    {"path", "owner"}                      -> {"created": bool, "public": path}  (Ed25519 WAL signing key)
  workload  {db..., "rows"}                        -> {"inserted": n}
  mark      {db...}                                -> {"time", "lsn", "hashes": {table: sha256}, "data_directory", "config_file"}
  attack    {db..., "artifact_dir"}                -> {"garbled": table, "dropped": table, "locked_files": [...]}
  hashes    {db..., "expected": {...}}             -> {"hashes": {...}, "differing": [tables]}
  rpo       {"repo", "time"}                       -> {"rpo_seconds", "last_segment_before", "archived_at"}
  archived  {"repo", "name"}                       -> {"archived": bool}   (the WAL file has a chain entry)
  cleanup   {"locked_files": [...]}                -> {"removed": n}
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pwd
import sys
import typing as t


def _connect(req: dict) -> t.Any:
    import psycopg2
    conn = psycopg2.connect(host=req["host"], port=int(req["port"]), user=req["user"], password=req["password"] or None,
                            dbname=req["dbname"], sslmode=req.get("sslmode") or "prefer", connect_timeout=10,
                            application_name="ransomeye.ops-drill")
    conn.autocommit = True
    return conn


def _tables(cur: t.Any) -> t.List[t.Tuple[str, str]]:
    cur.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1, 2""")
    return list(cur.fetchall())


def hashes(req: dict) -> dict:
    """SHA-256 of every table's rows (as text, sorted): the content proof of the drill."""
    conn = _connect(req)
    conn.autocommit = False  # one snapshot for every table, and server-side cursors (flat memory)
    out = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for schema, table in _tables(cur):
                digest = hashlib.sha256()
                with conn.cursor(name="drill_rows") as rows:
                    rows.itersize = 5000
                    quoted = '"%s"."%s"' % (schema.replace('"', '""'), table.replace('"', '""'))
                    rows.execute("SELECT t::text FROM %s t ORDER BY 1" % quoted)
                    for (row,) in rows:
                        digest.update(row.encode("utf-8") + b"\n")
                out["%s.%s" % (schema, table)] = digest.hexdigest()
        conn.rollback()
    finally:
        conn.close()
    result: t.Dict[str, t.Any] = {"hashes": out}
    if isinstance(req.get("expected"), dict):
        expected = req["expected"]
        result["differing"] = sorted(k for k in set(out) | set(expected) if out.get(k) != expected.get(k))
    return result


def workload(req: dict) -> dict:
    conn = _connect(req)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS public.dr_drill_pitr_workload "
                        "(id bigserial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
            cur.execute("INSERT INTO public.dr_drill_pitr_workload (note) SELECT 'detection ' || g || ' ' || md5(g::text)"
                        " FROM generate_series(1, %s) g", [int(req.get("rows") or 1000)])
            return {"inserted": cur.rowcount}
    finally:
        conn.close()


def mark(req: dict) -> dict:
    conn = _connect(req)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
                        "pg_current_wal_insert_lsn()::text, current_setting('data_directory'), "
                        "current_setting('config_file')")
            when, lsn, data_dir, config_file = cur.fetchone()
    finally:
        conn.close()
    # A configuration outside the data directory (Debian) is not in the base backup: the restore needs its path.
    outside = os.path.dirname(os.path.abspath(config_file)) != os.path.abspath(data_dir)
    out = {"time": when, "lsn": lsn, "data_directory": data_dir, "config_file": config_file if outside else None}
    out.update(hashes(req))
    return out


def attack(req: dict) -> dict:
    """What ransomware does to the database: rows garbled in place, a table dropped, ransom notes on disk."""
    conn = _connect(req)
    garbled = dropped = None
    try:
        with conn.cursor() as cur:
            candidates = []
            for schema, table in _tables(cur):
                cur.execute("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
                            "AND NOT a.attisdropped AND a.atttypid = 'text'::regtype ORDER BY a.attnum LIMIT 1",
                            ['"%s"."%s"' % (schema, table)])
                row = cur.fetchone()
                cur.execute('SELECT count(*) FROM "%s"."%s"' % (schema, table))
                candidates.append((cur.fetchone()[0], schema, table, row[0] if row else None))
            candidates.sort(reverse=True)
            for rows, schema, table, column in candidates:
                if column and rows:
                    statement = 'UPDATE "%s"."%s" SET "%s" = md5("%s") || \'.locked\''
                    cur.execute(statement % (schema, table, column, column))
                    garbled = "%s.%s" % (schema, table)
                    break
            for rows, schema, table, column in reversed(candidates):
                if "%s.%s" % (schema, table) != garbled:
                    cur.execute('DROP TABLE "%s"."%s" CASCADE' % (schema, table))
                    dropped = "%s.%s" % (schema, table)
                    break
    finally:
        conn.close()
    locked = []
    art = req.get("artifact_dir")
    if art and os.path.isdir(art):
        for i in range(3):
            path = os.path.join(art, "RANSOM-NOTE-%d.txt.locked" % i)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(4096))
            locked.append(path)
    return {"garbled": garbled, "dropped": dropped, "locked_files": locked}


def _entries(repo: str) -> t.Iterator[dict]:
    """Chain entries in order (docs/BACKUP_FORMAT.md 4.2): old one-file entries, then complete log lines."""
    chain = os.path.join(repo, "wal", "chain")
    for name in sorted(os.listdir(chain)) if os.path.isdir(chain) else []:
        if name.endswith(".json"):
            with open(os.path.join(chain, name), "rb") as handle:
                yield json.loads(handle.read().decode("utf-8"))["entry"]
    logs = os.path.join(repo, "wal", "log")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        if name.endswith(".log"):
            with open(os.path.join(logs, name), "rb") as handle:
                for line in handle:
                    if line.endswith(b"\n"):
                        yield json.loads(line.decode("utf-8"))["entry"]


def rpo(req: dict) -> dict:
    """T minus the archive time of the last WAL file archived before T (chain entries carry no secret)."""
    target = datetime.datetime.fromisoformat(req["time"].replace("Z", "+00:00")).timestamp()
    best = None
    for entry in _entries(req["repo"]):
        when = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if when <= target and entry["kind"] == "segment":
            best = (when, entry["name"], entry["time"])
    if best is None:
        return {"rpo_seconds": None, "last_segment_before": None, "archived_at": None}
    return {"rpo_seconds": round(target - best[0], 1), "last_segment_before": best[1], "archived_at": best[2]}


def archived(req: dict) -> dict:
    return {"archived": any(entry["name"] == req["name"] for entry in _entries(req["repo"]))}


def walkey(req: dict) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    path = req["path"]
    public = path.rsplit(".", 1)[0] + ".pub"
    if os.path.exists(path) and os.path.exists(public):
        return {"created": False, "public": public}
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with open(public, "wb") as handle:
        handle.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(public, 0o644)
    if os.geteuid() == 0 and req.get("owner"):
        entry = pwd.getpwnam(req["owner"])
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return {"created": True, "public": public}


def cleanup(req: dict) -> dict:
    removed = 0
    for path in req.get("locked_files") or []:
        if path.endswith(".locked") and os.path.isfile(path) and not os.path.islink(path):
            os.unlink(path)
            removed += 1
    return {"removed": removed}


COMMANDS = {"walkey": walkey, "workload": workload, "mark": mark, "attack": attack, "hashes": hashes, "rpo": rpo,
            "cleanup": cleanup, "archived": archived}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write("usage: pitr_helper.py %s < request.json\n" % "|".join(sorted(COMMANDS)))
        return 2
    req = json.loads(sys.stdin.read() or "{}")
    json.dump(COMMANDS[sys.argv[1]](req), sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
