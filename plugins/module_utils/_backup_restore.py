# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: one run of ransomeye_restore (verify, restore, swap, roll back).

The database is restored into ``<db>_restoring_<seq>``, its row counts are
compared with the manifest, and only then is it swapped in by rename; the
database it replaces is kept as ``<db>_pre_restore_<seq>``. A comment on the
restored database (the restore marker) records the backup and the previous
name, which makes the restore idempotent and the rollback one rename back.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import re
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_incident import from_params as incident_from_params
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_trust as btrust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import (
    container, decryption_from_params, load_trust)
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import (
    ChunkReader, object_chunks, open_object)
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_info import sizes as backup_sizes
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import anchor_param, verify_repo
from ansible_collections.ransomeye.ops.plugins.module_utils._units import throughput
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_files as bfiles
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import reader as v2reader
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import stream as v2stream

MARKER_RE = re.compile(r"^ransomeye\.ops (restored|rolled-back) backup=(\S+) seq=(\d+) previous=(\S+)(?: xid=(\d+))?$")
MAX_IDENT = 63


def marker_text(state: str, backup_id: str, seq: int, previous: t.Optional[str], xid: t.Optional[int] = None) -> str:
    text = "ransomeye.ops %s backup=%s seq=%d previous=%s" % (state, backup_id, seq, previous or "-")
    return text + (" xid=%d" % xid if xid is not None else "")


def parse_marker(comment: t.Optional[str]) -> t.Optional[dict]:
    match = MARKER_RE.match(comment or "")
    if not match:
        return None
    state, backup_id, seq, previous, xid = match.groups()
    return {"state": state, "backup_id": backup_id, "seq": int(seq), "previous": None if previous == "-" else previous,
            "xid": int(xid) if xid else None}


# ----------------------------------------------------------------------------- database helpers


def _pg() -> t.Any:
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    return pgu


def _db_comment(conn: t.Any, db: str) -> t.Optional[str]:
    pgu = _pg()
    return pgu.query_one(conn, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                         [db])


def _set_comment(conn: t.Any, db: str, text: str) -> None:
    pgu = _pg()
    pgu.query(conn, pgu.sql.SQL("COMMENT ON DATABASE {} IS {}").format(pgu.ident(db), pgu.literal(text)))


def _terminate(conn: t.Any, db: str, timeout: float = 30.0) -> None:
    """Refuse new connections to ``db`` and terminate the existing ones (waits until they are gone)."""
    pgu = _pg()
    pgu.query(conn, pgu.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(pgu.ident(db)))
    deadline = time.monotonic() + timeout
    while True:
        pgu.query(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", [db])
        left = pgu.query_one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                   "AND pid <> pg_backend_pid()", [db])
        if not left:
            return
        if time.monotonic() > deadline:
            raise RansomeyeError("connections to %s did not end within %ds" % (db, timeout))
        time.sleep(0.1)


def _allow(conn: t.Any, db: str) -> None:
    pgu = _pg()
    pgu.query(conn, pgu.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(pgu.ident(db)))


def _rename(conn: t.Any, old: str, new: str) -> None:
    pgu = _pg()
    pgu.query(conn, pgu.sql.SQL("ALTER DATABASE {} RENAME TO {}").format(pgu.ident(old), pgu.ident(new)))


def _drop(conn: t.Any, db: str) -> None:
    pgu = _pg()
    pgu.query(conn, pgu.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgu.ident(db)))


def _untouched_since_restore(info: t.Any, db: str, xid: t.Optional[int], expected: t.Dict[str, int]) -> bool:
    """True when ``db`` still holds exactly what the restore wrote: same row counts, no row written since.

    Row counts alone would call a database "unchanged" after ransomware
    rewrote its rows in place; the xmin check catches every write.
    """
    if xid is None:
        return False
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import count_rows, tables_written_since
    pgu = _pg()
    with pgu.connection(info.with_db(db)) as conn:
        return count_rows(conn) == expected and not tables_written_since(conn, xid)


def _counts(info: t.Any, db: str) -> t.Dict[str, int]:
    pgu = _pg()
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import count_rows
    with pgu.connection(info.with_db(db)) as conn:
        return count_rows(conn)


def _name(base: str, suffix: str) -> str:
    """``base + suffix``; a long base is cut and made unique with a short hash (PostgreSQL keeps 63 bytes)."""
    name = base + suffix
    if len(name.encode("utf-8")) <= MAX_IDENT:
        return name
    tag = hashlib.sha256(base.encode("utf-8")).hexdigest()[:8]
    room = MAX_IDENT - len(suffix.encode("utf-8")) - len(tag) - 1
    cut = base.encode("utf-8")[:max(1, room)].decode("utf-8", "ignore")
    return "%s_%s%s" % (cut, tag, suffix)


def restore_database(params: dict, repo: brepo.Repo, item: brepo.LoadedManifest, decrypt: dict,
                     check_mode: bool) -> dict:
    pgu = _pg()
    body = item.body
    comp = body["components"]["database"]
    db = params.get("db") or comp.get("db")
    if not isinstance(db, str) or not db:
        raise RansomeyeError("the backup records no database name; give db")
    pgu.check_dbname(db, "database name" if params.get("db") else "database name recorded in the backup")
    seq = body["seq"]
    expected = comp.get("tables") or {}
    info = pgu.ConnInfo.from_params(params)
    if info.dbname == db:
        raise RansomeyeError("login_db must not be the database being restored (%s); use postgres" % db)
    started = time.monotonic()
    out: t.Dict[str, t.Any] = {"restored_db": db, "manifest_tables": expected, "previous_db": None}
    with pgu.connection(info) as conn:
        exists = pgu.database_exists(conn, db)
        if exists:
            marker = parse_marker(_db_comment(conn, db))
            if marker and marker["state"] == "restored" and marker["backup_id"] == item.backup_id and \
                    _untouched_since_restore(info, db, marker["xid"], expected):
                out.update(changed=False, tables=dict(expected), previous_db=marker["previous"],
                           stats={"duration": round(time.monotonic() - started, 3), "bytes": 0,
                                  "tables": len(expected), "unchanged": True})
                return out
        record = {"plaintext_size": comp.get("size")} if v2stream.is_v2_stream(comp) \
            else body["objects"].get(comp.get("object")) or {}
        out["space"] = _space_preflight(pgu, conn, db, exists, record)
        if check_mode:
            out.update(changed=True, stats={"duration": 0.0, "bytes": 0, "tables": len(expected), "unchanged": False})
            if exists:
                out["previous_db"] = _name(db, "_pre_restore_%d" % seq)
            return out
        staging_db = _name(db, "_restoring_%d" % seq)
        _drop(conn, staging_db)  # leftover of a restore that crashed; named by us, never user data
        owner = pgu.query_one(conn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [db]) \
            if exists else None
        create = pgu.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pgu.ident(staging_db))
        if owner:
            create = pgu.sql.SQL("{} OWNER {}").format(create, pgu.ident(owner))
        pgu.query(conn, create)
        try:
            size = _load_dump(info, staging_db, repo, body, comp, decrypt, params, pgu.server_major(conn))
            counts = _counts(info, staging_db)
            if counts != expected:
                diff = sorted(k for k in set(counts) | set(expected) if counts.get(k) != expected.get(k))
                raise RansomeyeError("row counts of the restored database differ from the manifest for %s; "
                                     "the current database was left untouched" % ", ".join(diff[:10]))
        except BaseException:
            _drop(conn, staging_db)
            raise
        previous = None
        if exists:
            previous = _name(db, "_pre_restore_%d" % seq)
            n = 2
            while pgu.database_exists(conn, previous):
                previous = _name(db, "_pre_restore_%d_%d" % (seq, n))
                n += 1
            _terminate(conn, db)
            try:
                _rename(conn, db, previous)
            finally:
                _allow(conn, db if not pgu.database_exists(conn, previous) else previous)
        try:
            _rename(conn, staging_db, db)
        except BaseException:
            if previous:
                _rename(conn, previous, db)
            raise
        # Every row version the restore wrote is older than this transaction id.
        restored_xid = int(pgu.query_one(conn, "SELECT txid_current() % 4294967296"))
        _set_comment(conn, db, marker_text("restored", item.backup_id, seq, previous, restored_xid))
        from ansible_collections.ransomeye.ops.plugins.module_utils._restore_retention import prune
        out["pre_restore_dropped"] = prune(pgu, conn, db, int(params.get("keep_pre_restore") or 0), previous, False)
    out.update(changed=True, tables=counts, previous_db=previous,
               stats={"duration": round(time.monotonic() - started, 3), "bytes": size, "tables": len(counts),
                      "unchanged": False})
    return out


def _space_preflight(pgu: t.Any, conn: t.Any, db: str, exists: bool, record: dict) -> dict:
    from ansible_collections.ransomeye.ops.plugins.module_utils import _restore_space as space
    needed = int(record.get("plaintext_size") or 0)
    if exists:
        needed = max(needed, int(pgu.query_one(conn, "SELECT pg_database_size(%s)", [db]) or 0))
    path = space.data_directory(pgu, conn)
    return space.check_space(needed, space.free_bytes(path), path)


def _load_dump(info: t.Any, target: str, repo: brepo.Repo, body: dict, comp: dict, decrypt: dict, params: dict,
               major: int) -> int:
    """pg_restore from the dump's authenticated plaintext: a v2 stream from its packs, a v1 object as before."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import restore_database as pg_restore
    if v2stream.is_v2_stream(comp):
        chunks = v2reader.stream_chunks(repo, body, comp, decrypt)
    else:
        chunks = object_chunks(repo, str(comp.get("object")), decrypt)
    return pg_restore(info, target, chunks, jobs=max(1, params.get("jobs") or 1),
                      staging_parent=params.get("staging_dir"), server_major=major)


def rollback_database(params: dict, check_mode: bool) -> dict:
    pgu = _pg()
    db = params.get("db")
    if not db:
        raise RansomeyeError("state rolled_back needs db (the database whose last restore to undo)")
    info = pgu.ConnInfo.from_params(params)
    if info.dbname == db:
        raise RansomeyeError("login_db must not be the database being rolled back (%s); use postgres" % db)
    with pgu.connection(info) as conn:
        if not pgu.database_exists(conn, db):
            raise RansomeyeError("database %s does not exist; nothing to roll back" % db)
        marker = parse_marker(_db_comment(conn, db))
        if marker is None or marker["state"] == "rolled-back":
            return {"changed": False, "backup_id": marker["backup_id"] if marker else "", "previous_db": None,
                    "msg": "database %s carries no pending restore; nothing to roll back" % db, "stats": {}}
        only = params.get("backup")
        if only and only != "latest" and marker["backup_id"] != only:
            # A rescue undoing "its" restore must never undo an earlier, successful one.
            return {"changed": False, "backup_id": marker["backup_id"], "previous_db": None, "stats": {},
                    "msg": "database %s holds the restore of backup %s, not %s; nothing rolled back"
                           % (db, marker["backup_id"], only)}
        previous = marker["previous"]
        if not previous:
            raise RansomeyeError("the restore of backup %s into %s replaced no database (it did not exist); "
                                 "there is nothing to roll back to" % (marker["backup_id"], db))
        if not pgu.database_exists(conn, previous):
            raise RansomeyeError("the previous database %s no longer exists; cannot roll back" % previous)
        result = {"changed": True, "backup_id": marker["backup_id"], "seq": marker["seq"], "previous_db": previous,
                  "restored_db": db, "stats": {}}
        if check_mode:
            return result
        started = time.monotonic()
        discard = _name(db, "_rolled_back_%d" % marker["seq"])
        _drop(conn, discard)
        _terminate(conn, db)
        _rename(conn, db, discard)
        try:
            _rename(conn, previous, db)
        except BaseException:
            _rename(conn, discard, db)
            _allow(conn, db)
            raise
        _set_comment(conn, db, marker_text("rolled-back", marker["backup_id"], marker["seq"], None))
        _drop(conn, discard)
        result["stats"] = {"duration": round(time.monotonic() - started, 3)}
        return result


# ----------------------------------------------------------------------------- files


def restore_files(component: str, comp: dict, repo: brepo.Repo, decrypt: dict, dest: t.Optional[str],
                  check_mode: bool, body: t.Optional[dict] = None,
                  keep_live: t.AbstractSet[str] = frozenset()) -> t.Any:
    """Restore a config or artifacts component; the ``keep_live`` paths (without dest) are left as they are."""
    if v2reader.is_v2(comp):
        if body is None:
            raise RansomeyeError("internal error: a v2 component needs its manifest")
        return v2reader.restore_component(repo, body, comp, decrypt, dest, check_mode, keep_live)
    files = comp.get("files") or {}
    roots = comp.get("paths") or []
    bfiles.check_entries(component, roots, files)
    restorer = bfiles.Restorer(roots, dest, check_mode, keep_live)
    if component == "artifacts":
        def chunks(original: str, record: dict) -> t.Iterable[bytes]:
            return object_chunks(repo, str(record.get("object")), decrypt)
        bfiles.restore_tree_entries(restorer, files, chunks)
        return restorer
    state: t.Dict[str, t.Any] = {}

    def tar_chunks(original: str, record: dict) -> t.Iterable[bytes]:
        if "tar" not in state:
            state["tar"] = bfiles.TarContent(ChunkReader(object_chunks(repo, str(comp.get("object")), decrypt)), files)
        return state["tar"].chunks(original, record)
    bfiles.restore_tree_entries(restorer, files, tar_chunks)
    return restorer


# ----------------------------------------------------------------------------- module entry


def _probe_key(repo: brepo.Repo, object_id: str, decrypt: dict) -> None:
    """Fail early and clearly when the secret cannot open this backup (before anything is touched)."""
    with open_object(repo, object_id) as src:
        try:
            for _chunk in container.decrypt_chunks(src, expected_object_id=object_id, **decrypt):
                break
        except RansomeyeError as exc:
            raise RansomeyeError("cannot decrypt backup object %s with the given key: %s" % (object_id, exc.msg),
                                 object=object_id)


def _credentials_plan(params: dict, repo: brepo.Repo, body: dict, components: t.Sequence[str],
                      decrypt: dict) -> t.Optional[dict]:
    """Compare the backup's env files and certificates with the live ones, before anything changes."""
    if "config" not in components or params.get("dest"):
        return None
    from ansible_collections.ransomeye.ops.plugins.module_utils import _restore_creds as rc
    comp = body["components"]["config"]
    env_files = params.get("env_files") or []
    if v2reader.is_v2(comp):
        data, certs = rc.v2_file_bytes(repo, body, comp, decrypt, env_files)
    else:
        certs = rc.cert_candidates(comp)
        if not env_files and not certs:
            return None
        data = rc.backup_file_bytes(comp, object_chunks(repo, str(comp.get("object")), decrypt),
                                    list(env_files) + certs)
    texts = {path: data[path].decode("utf-8", "replace") for path in env_files if path in data}
    creds = rc.plan(params.get("credentials") or "keep_current", env_files,
                    params.get("env_vars") or ["DB_PASSWORD", "DATABASE_URL"], texts)
    cert_report, keep = rc.cert_plan(params.get("certificates") or "keep_newer",
                                     {path: data[path] for path in certs if path in data})
    return {"credentials": creds, "certificates": (cert_report, keep), "env_files": bool(env_files)}


def run_restore_module(module: t.Any) -> dict:
    params = module.params
    if params.get("dest") and not os.path.isabs(params["dest"]):
        raise RansomeyeError("dest must be an absolute path, not %r: a relative one would be taken from whatever "
                             "directory the module happens to run in" % params["dest"])
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_restore
    if _pitr_restore.wants_pitr(params):
        return _pitr_restore.run_pitr(module)
    if params.get("db") is not None:
        _pg().check_dbname(params["db"])
    if params["state"] == "rolled_back":
        from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import require_psycopg2
        require_psycopg2(module)
        return rollback_database(params, module.check_mode)
    started = time.monotonic()
    repo = btrust.open_repo(params["repo"])
    trusted = load_trust(params.get("trusted_keys") or [])
    anchor = anchor_param(params, repo)
    if not params.get("private_key") and not params.get("key_file"):
        raise RansomeyeError("restore decrypts the backup: give private_key (rsa mode) or key_file (aes mode)")
    decrypt = decryption_from_params(params)
    with repo.lock(exclusive=False, timeout=params.get("lock_timeout") or 0):
        level = params.get("verify_level") or "ciphertext"
        # A restore of config and artifacts only reads each v2 pack once: it authenticates every pack (AES-GCM,
        # the signed plaintext SHA-256) while staging files under temp names, and renames nothing before all
        # of them passed; so its verify step checks the packs' sizes, not their SHA-256 a first time. With the
        # database in the restore the packs are hashed first, as before: the database is swapped in first.
        files_only = bool(params.get("components")) and not set(params["components"]) - {"config", "artifacts"}
        checked = verify_repo(repo, trusted, params.get("backup") or "latest", level,
                              decrypt if level == "full" else None, only_components=params.get("components"),
                              anchor=anchor, mark=incident_from_params(params),
                              packs_quick=files_only and level == "ciphertext")
        # repo.json differing from its signed copy is reported, not blocking: the signed copy is what is used.
        stopping = [p for p in checked.problems if p not in checked.view.repo_problems]
        if stopping or not checked.selected:
            first = {"backup": params.get("backup"), "object": "-", "reason": "not verified"}
            if stopping:
                first = stopping[0]
            raise RansomeyeError(
                "backup %s failed verification; refusing to restore (%d problem(s); first: %s: %s%s)"
                % (first["backup"], len(stopping), first["object"], first["reason"],
                   (" - %s" % first["detail"]) if first.get("detail") else ""),
                problems=checked.problems)
        for problem in checked.view.repo_problems:
            module.warn("%s: %s" % (problem["object"], problem["reason"]))
        newer = [e.name for e in checked.view.rejected() if e.seq > checked.selected[0].seq_in_name]
        if newer:
            module.warn("newer manifest files that do not verify were ignored (planted or damaged; run "
                        "ransomeye_backup_verify): %s" % ", ".join(newer[:20]))
        item = checked.selected[0]
        body = item.body
        available = sorted(body["components"])
        components = params.get("components") or available
        missing = [c for c in components if c not in body["components"]]
        if missing:
            raise RansomeyeError("backup %s has no %s component (it has %s)"
                                 % (item.backup_id, ", ".join(missing), ", ".join(available)))
        mode = (body.get("encryption") or {}).get("mode")
        if mode == "rsa" and "private_key" not in decrypt:
            raise RansomeyeError("backup %s is encrypted to RSA recipients: give private_key" % item.backup_id)
        if mode == "aes" and "key" not in decrypt:
            raise RansomeyeError("backup %s is encrypted with a key file: give key_file" % item.backup_id)
        first_object = next(iter(sorted(oid for oid, rec in body["objects"].items()
                                        if not isinstance(rec, dict) or rec.get("kind") != "index")), None)
        if first_object:
            _probe_key(repo, first_object, decrypt)
        result: t.Dict[str, t.Any] = {"changed": False, "backup_id": item.backup_id, "seq": body["seq"],
                                      "backup_time": (body.get("time") or {}).get("end"),
                                      "backup_size": backup_sizes(body)[0],
                                      "manifest": item.path, "previous_db": None, "stats": {}}
        guard = _credentials_plan(params, repo, body, components, decrypt)
        creds = guard["credentials"] if guard and guard["env_files"] else None
        if creds is not None:
            result["credentials"] = creds[0]
        # The certificate guard decides before anything is written: the live pairs it keeps are left out of the
        # file restore altogether, so a restore that fails or is killed midway cannot leave the older pair behind.
        keep_live: t.FrozenSet[str] = frozenset()
        if guard is not None:
            result["certificates"] = guard["certificates"][0]
            keep_live = frozenset(path for pair in guard["certificates"][1].values() for path in pair)
            result["certificates"]["kept_paths"] = sorted(keep_live)
        if "database" in components:
            from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import require_psycopg2
            require_psycopg2(module)
            db_result = restore_database(params, repo, item, decrypt, module.check_mode)
            result["changed"] = result["changed"] or db_result.pop("changed")
            result["stats"]["database"] = db_result.pop("stats")
            result.update(db_result)
        files: t.Dict[str, str] = {}
        links: t.Dict[str, str] = {}
        wanted = [c for c in ("config", "artifacts") if c in components]
        staged: t.Dict[str, t.Any] = {}
        for component in wanted:
            try:
                if component not in staged and v2reader.is_v2(body["components"][component]):
                    # every v2 component in one go: all staged, all packs authenticated, then all committed
                    staged = v2reader.restore_components(
                        repo, body, [(c, body["components"][c]) for c in wanted if v2reader.is_v2(body["components"][c])],
                        decrypt, params.get("dest"), module.check_mode, {"config": keep_live})
                restorer = staged.get(component) or restore_files(
                    component, body["components"][component], repo, decrypt, params.get("dest"), module.check_mode, body,
                    keep_live if component == "config" else frozenset())
            except RansomeyeError as exc:
                # The database may already be swapped: say so, so the caller rolls back exactly this run's swap.
                exc.details.update({k: result.get(k) for k in ("backup_id", "seq", "previous_db", "restored_db")})
                swapped = result["changed"] and result.get("restored_db") and not module.check_mode
                exc.details["database_swapped"] = bool(swapped)
                raise
            files.update(restorer.files)
            links.update(restorer.links)
            result["stats"][component] = restorer.result_stats()
            if getattr(restorer, "truncated", False):
                result["files_truncated"] = True
            if getattr(restorer, "changed", False) or getattr(restorer, "changed_paths", None):
                result["changed"] = True
        if creds is not None and creds[0]["mismatch"] and not module.check_mode:
            from ansible_collections.ransomeye.ops.plugins.module_utils import _restore_creds
            if creds[0]["action"] == "keep_current":
                _restore_creds.keep_current(creds[0], creds[1])
            else:
                _restore_creds.resync_role(creds[0], creds[2], params)
            result["changed"] = True
        if "config" in components or "artifacts" in components:
            result["files"] = files
            result["links"] = links
        if "database" not in components and "database" in body["components"]:
            result["manifest_tables"] = body["components"]["database"].get("tables") or {}
    _add_throughput(result, started)
    return result


def _add_throughput(result: dict, started: float) -> None:
    """Bytes, seconds and rate of each component and of the whole run (the playbooks' summary line reads them)."""
    total = 0
    for stats in result["stats"].values():
        nbytes = int(stats.get("bytes", stats.get("bytes_written", 0)) or 0)
        total += nbytes
        stats["bytes_per_second"] = throughput(nbytes, stats.get("duration") or 0)["bytes_per_second"]
    result["bytes_restored"] = total
    result.update(throughput(total, time.monotonic() - started))
