# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helper of the ransomeye.ops.dr_drill role, copied to the managed host and run there.

Subcommands (JSON in on stdin, JSON out on stdout; secrets only ever on stdin):
  snapshot  {"roots": [...]}                       -> {"files": {path: {sha256, mode, size}}, "links": {path: target}}
  dropdb    {"host", "port", "user", "password", "sslmode", "dbname"} -> {"dropped": bool}
  damage    (same request, "keep_copy": bool)      -> {"emptied": [tables], "pristine": copy or null}  (TRUNCATE ... CASCADE)
  counts    (same request)                         -> {"tables": {"public.<table>": rows}}
  return_pristine (same request)                   -> the pre-drill copy renamed back to dbname (damaged one dropped)
  tamper    {"path": ...}                          -> {"tampered": path}   (test hook only)
  prove     {"pre", "post", "restore_files", "restore_links", "restore_truncated", "backup_tables", "restore_tables",
             "manifest_tables", "health", "health_before"}          -> {"ok": bool, "checks": [...], "problems": [...]}
It never follows a symlink and reads files in 1 MiB blocks.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import typing as t

BLOCK = 1 << 20


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(req: dict) -> dict:
    files: t.Dict[str, dict] = {}
    links: t.Dict[str, str] = {}
    for root in req["roots"]:
        if not os.path.lexists(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in list(dirnames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    links[path] = os.readlink(path)
                    dirnames.remove(name)
            for name in filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    links[path] = os.readlink(path)
                elif stat.S_ISREG(st.st_mode):
                    files[path] = {"sha256": sha256_file(path), "mode": "%04o" % stat.S_IMODE(st.st_mode),
                                   "size": st.st_size}
    return {"files": files, "links": links}


def dropdb(req: dict) -> dict:
    import psycopg2  # pylint: disable=import-outside-toplevel
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel
    conn = psycopg2.connect(host=req["host"], port=req["port"], user=req["user"], password=req["password"],
                            dbname="postgres", sslmode=req.get("sslmode") or "prefer", connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (req["dbname"],))
            exists = cur.fetchone() is not None
            if exists:
                cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(req["dbname"])))
    finally:
        conn.close()
    return {"dropped": exists}


def _admin(req: dict, dbname: str = "postgres") -> t.Any:
    import psycopg2  # pylint: disable=import-outside-toplevel
    conn = psycopg2.connect(host=req["host"], port=req["port"], user=req["user"], password=req["password"],
                            dbname=dbname, sslmode=req.get("sslmode") or "prefer", connect_timeout=10)
    conn.autocommit = True
    return conn


def pristine_name(dbname: str) -> str:
    return dbname[:40] + "_drill_pristine"


def damage(req: dict) -> dict:
    """Ransomware-like damage: every table of schema public emptied (the database itself stays).

    With ``keep_copy`` the pre-drill database is first copied (CREATE DATABASE ... TEMPLATE, the services are
    stopped), so the drill's rollback can return to exactly the state before the drill.
    """
    import psycopg2  # pylint: disable=import-outside-toplevel
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel
    pristine = None
    if req.get("keep_copy"):
        pristine = pristine_name(req["dbname"])
        admin = _admin(req)
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pristine,))
                if cur.fetchone() is not None:
                    # Left by an earlier drill that failed: it may be the only good copy; never drop it here.
                    raise RuntimeError("%s exists (left by an earlier drill that failed); check it and drop it by "
                                       "hand before the next drill" % pristine)
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                            (req["dbname"],))
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(pristine),
                                                                             sql.Identifier(req["dbname"])))
        finally:
            admin.close()
    conn = psycopg2.connect(host=req["host"], port=req["port"], user=req["user"], password=req["password"],
                            dbname=req["dbname"], sslmode=req.get("sslmode") or "prefer", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            tables = [row[0] for row in cur.fetchall()]
            if tables:
                cur.execute(sql.SQL("TRUNCATE {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier("public", name) for name in tables)))
        conn.commit()
    finally:
        conn.close()
    return {"emptied": tables, "pristine": pristine}


def counts(req: dict) -> dict:
    """Row count of every table of schema public of ``dbname`` (``public.<table>`` keys, as manifests have)."""
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel
    conn = _admin(req, req["dbname"])
    out: t.Dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            for (name,) in cur.fetchall():
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name)))
                out["public." + name] = int(cur.fetchone()[0])
    finally:
        conn.close()
    return {"tables": out}


def return_pristine(req: dict) -> dict:
    """Put the pre-drill copy back as ``dbname`` (the drill's own damaged database is dropped)."""
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel
    pristine = pristine_name(req["dbname"])
    conn = _admin(req)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pristine,))
            if cur.fetchone() is None:
                raise RuntimeError("the pre-drill copy %s does not exist" % pristine)
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(req["dbname"])))
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(pristine),
                                                                         sql.Identifier(req["dbname"])))
    finally:
        conn.close()
    return {"returned": pristine}


def tamper(req: dict) -> dict:
    with open(req["path"], "ab") as handle:
        handle.write(b"\x00tampered")
    return {"tampered": req["path"]}


def _table_counts(tables: t.Optional[dict]) -> t.Dict[str, int]:
    out = {}
    for name, rows in (tables or {}).items():
        out[name.split(".", 1)[1] if name.startswith("public.") else name] = int(rows)
    return out


def prove(req: dict) -> dict:
    checks: t.List[dict] = []
    problems: t.List[str] = []

    def check(name: str, ok: bool, how: str, detail: t.Any = None) -> None:
        checks.append({"check": name, "ok": bool(ok), "how": how, "detail": detail})
        if not ok:
            problems.append("%s: %s" % (name, detail if detail is not None else "failed"))

    pre, post = req["pre"], req["post"]
    manifest_files = req.get("restore_files") or {}
    manifest_links = req.get("restore_links") or {}
    # 1. Every file the host had before the disaster came back, byte for byte (our own SHA-256 on disk).
    missing = sorted(set(pre["files"]) - set(post["files"]))
    extra = sorted(set(post["files"]) - set(pre["files"]))
    check("files_present", not missing, "every regular file under the config and artifact dirs before the disaster "
          "exists after the restore", {"missing": missing[:20], "count": len(missing)} if missing else len(pre["files"]))
    check("no_extra_files", not extra, "no file appeared that was not there before",
          {"extra": extra[:20], "count": len(extra)} if extra else 0)
    changed = sorted(p for p in pre["files"] if p in post["files"] and post["files"][p]["sha256"] != pre["files"][p]["sha256"])
    check("content_hashes_vs_pre_disaster", not changed, "SHA-256 of every restored file equals its SHA-256 taken "
          "just before the backup", {"mismatch": changed[:20], "count": len(changed)} if changed else len(post["files"]))
    modes = sorted(p for p in pre["files"] if p in post["files"] and post["files"][p]["mode"] != pre["files"][p]["mode"])
    check("modes", not modes, "permission bits of every restored file equal the originals",
          {"mismatch": modes[:20]} if modes else "all equal")
    # 2. The same hashes as the signed manifest (the restore module's return value).
    # A restore of a large tree returns a bounded sample of its files (files_truncated): then the sample is
    # compared, and coverage of every original file rests on files_present and the pre-disaster hashes above.
    truncated = bool(req.get("restore_truncated"))
    not_in_manifest = [] if truncated else sorted(set(pre["files"]) - set(manifest_files))
    bad = sorted(p for p, h in manifest_files.items() if post["files"].get(p, {}).get("sha256") != h)
    check("content_hashes_vs_manifest", not bad and not not_in_manifest,
          ("SHA-256 of every restored file in the restore's sample (%d files; the result was truncated) equals the "
           "plaintext SHA-256 recorded in the signed manifest" % len(manifest_files)) if truncated else
          "SHA-256 of every restored file on disk equals the plaintext SHA-256 recorded in the signed manifest, and the "
          "manifest covers every original file",
          {"mismatch": bad[:20], "not_in_manifest": not_in_manifest[:20]} if bad or not_in_manifest else len(manifest_files))
    link_bad = sorted(p for p, target in pre["links"].items() if post["links"].get(p) != target)
    link_bad += sorted(p for p, target in manifest_links.items() if post["links"].get(p) != target)
    check("symlinks", not link_bad, "every symlink came back as a link with the same target",
          {"mismatch": sorted(set(link_bad))[:20]} if link_bad else len(pre["links"]))
    components = req.get("components") or ["database", "config", "artifacts"]
    if "database" not in components:
        health = req.get("health") or {}
        check("app_health", health.get("status") == "ok", "after the service restart the app's health URL answers "
              "200 (the database was not part of this drill)", health.get("error") or health.get("status"))
        return {"ok": not problems, "checks": checks, "problems": problems}
    # 3. Row counts: backup (dump snapshot) == manifest == restored database == what the app sees.
    backup_tables = _table_counts(req.get("backup_tables"))
    restore_tables = _table_counts(req.get("restore_tables"))
    manifest_tables = _table_counts(req.get("manifest_tables")) or backup_tables
    check("row_counts_restored", bool(backup_tables) and restore_tables == backup_tables and manifest_tables == backup_tables,
          "row count of every table in the restored database equals the count recorded at backup time (manifest)",
          {"backup": backup_tables, "restored": restore_tables} if restore_tables != backup_tables or not backup_tables
          else len(backup_tables))
    health = req.get("health") or {}
    app_counts = {k: int(v) for k, v in (health.get("counts") or {}).items()}
    app_bad = {k: {"app": v, "backup": backup_tables.get(k)} for k, v in app_counts.items() if backup_tables.get(k) != v}
    check("app_health_from_restored_db", health.get("status") == "ok" and bool(app_counts) and not app_bad,
          "after the service restart the app's health URL answers 200 with row counts queried from the restored "
          "database, equal to the backup's", app_bad or health.get("error") or app_counts)
    before = req.get("health_before") or {}
    if before.get("pid") and health.get("pid"):
        fresh = health["pid"] != before["pid"] and float(health.get("started", 0)) > float(before.get("started", 0))
        check("app_restarted", fresh, "the app process that answered after the restore is a new one (other pid, "
              "later start on the host's clock) that read its credentials from the restored config",
              {"before": {"pid": before["pid"], "started": before.get("started")},
               "after": {"pid": health["pid"], "started": health.get("started")}})
    return {"ok": not problems, "checks": checks, "problems": problems}


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    handlers = {"snapshot": snapshot, "dropdb": dropdb, "damage": damage, "tamper": tamper, "prove": prove,
                "counts": counts, "return_pristine": return_pristine}
    if command not in handlers:
        print(json.dumps({"failed": True, "msg": "usage: drill_helper.py snapshot|dropdb|damage|tamper|prove|counts|"
                                                 "return_pristine < request.json"}))
        return 2
    try:
        result = handlers[command](json.load(sys.stdin))
    except Exception as exc:  # pylint: disable=broad-except
        print(json.dumps({"failed": True, "msg": "%s failed: %s: %s" % (command, type(exc).__name__, exc)}))
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
