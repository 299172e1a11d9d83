# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: choose tables to VACUUM, run it safely, report before/after statistics.

VACUUM cannot run in a transaction block, so the connection is in autocommit.
Statistics are read from the catalogs without taking any table lock (sizes
come from ``relpages``, as of the last VACUUM/ANALYZE), so a locked table
never blocks the report.
Every name goes through ``psycopg2.sql.Identifier``. ``lock_timeout`` keeps a
VACUUM that cannot get its lock from queueing (a waiting ACCESS EXCLUSIVE
request of VACUUM FULL would block every later reader); ``statement_timeout``
keeps each table within what is left of ``time_budget``.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import os
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ConnInfo, connection, ident, query, sql
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration
from ansible_collections.ransomeye.ops.plugins.module_utils._window import Window, parse_window

try:
    import psycopg2
    import psycopg2.errors
except ImportError:  # pragma: no cover - depends on the managed host; the module fails earlier
    psycopg2 = None

MODES = ("analyze", "vacuum", "full", "freeze")

_STATS_SQL = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       (c.relpages + COALESCE(tc.relpages, 0)
        + COALESCE((SELECT sum(ic.relpages) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                    WHERE i.indrelid = c.oid), 0))::bigint
         * current_setting('block_size')::bigint AS total_bytes,
       age(c.relfrozenxid) AS xid_age,
       CASE WHEN c.reltoastrelid <> 0 THEN age(tc.relfrozenxid) END AS toast_xid_age,
       COALESCE(ts.spcname, 'pg_default') AS tablespace
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
"""

_STAT_KEYS = ("schema", "table", "n_live_tup", "n_dead_tup", "n_mod_since_analyze", "last_vacuum",
              "last_autovacuum", "last_analyze", "last_autoanalyze", "total_bytes", "xid_age", "toast_xid_age",
              "tablespace")


class Options(t.NamedTuple):
    tables: t.List[t.Tuple[t.Optional[str], str]]
    mode: str
    min_dead_ratio: float
    min_dead_tuples: int
    min_xid_age: int
    window: t.Optional[Window]
    allow_full: bool
    lock_timeout_ms: int
    time_budget: t.Optional[float]
    full_space_factor: float


def split_table(name: str) -> t.Tuple[t.Optional[str], str]:
    """``schema.table`` or ``table`` (quote-free names; a dot inside a name is not supported)."""
    text = str(name).strip()
    if not text:
        raise RansomeyeError("tables must not contain empty names")
    parts = text.split(".")
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise RansomeyeError("table name %r is not valid: use table or schema.table" % name)


def _seconds(value: t.Any, name: str) -> t.Optional[float]:
    """parse_duration, plus milliseconds (``300ms``) as PostgreSQL writes its timeouts."""
    text = str(value).strip().lower()
    if text.endswith("ms") and text[:-2].strip().isdigit():
        return int(text[:-2]) / 1000.0
    return parse_duration(value, name)


def build_options(params: dict) -> Options:
    mode = params.get("mode") or "vacuum"
    if mode not in MODES:
        raise RansomeyeError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    ratio = float(params.get("min_dead_ratio") if params.get("min_dead_ratio") is not None else 0.1)
    if not 0 <= ratio <= 1:
        raise RansomeyeError("min_dead_ratio must be between 0 and 1, not %s" % ratio)
    dead = int(params.get("min_dead_tuples") if params.get("min_dead_tuples") is not None else 1000)
    xid = int(params.get("min_xid_age") if params.get("min_xid_age") is not None else 150000000)
    if dead < 0 or xid < 0:
        raise RansomeyeError("min_dead_tuples and min_xid_age must not be negative")
    window = parse_window(params.get("maintenance_window"))
    lock_timeout = _seconds(params.get("lock_timeout") or "5s", "lock_timeout")
    budget = _seconds(params.get("time_budget"), "time_budget") if params.get("time_budget") not in (None, "") else None
    factor = float(params.get("full_space_factor") or 1.2)
    if factor < 1:
        raise RansomeyeError("full_space_factor must be at least 1 (VACUUM FULL writes a new copy of the table)")
    tables = [split_table(n) for n in (params.get("tables") or [])]
    return Options(tables, mode, ratio, dead, xid, window, bool(params.get("allow_full")),
                   max(1, int(round((lock_timeout or 0) * 1000))), budget, factor)


def _jsonable(value: t.Any) -> t.Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def table_stats(conn: t.Any, names: t.Optional[t.Sequence[t.Tuple[str, str]]] = None) -> t.Dict[str, dict]:
    """Statistics of user tables (all, or the given (schema, table) pairs) keyed by ``schema.table``."""
    query(conn, "SELECT pg_stat_clear_snapshot()")
    rows = query(conn, _STATS_SQL + " ORDER BY 1, 2")
    wanted = set(names) if names is not None else None
    stats: t.Dict[str, dict] = {}
    for row in rows:
        item = {k: _jsonable(v) for k, v in zip(_STAT_KEYS, row)}
        if wanted is not None and (item["schema"], item["table"]) not in wanted:
            continue
        live, deadtup = item["n_live_tup"] or 0, item["n_dead_tup"] or 0
        item["dead_ratio"] = round(deadtup / float(live + deadtup), 6) if live + deadtup else 0.0
        item["max_xid_age"] = max(item["xid_age"] or 0, item["toast_xid_age"] or 0)
        stats["%s.%s" % (item["schema"], item["table"])] = item
    return stats


def resolve_tables(conn: t.Any, tables: t.Sequence[t.Tuple[t.Optional[str], str]]) -> t.List[t.Tuple[str, str]]:
    """(schema, table) of each given name; a name without schema is looked up on the search_path."""
    resolved = []
    for schema, table in tables:
        if schema is None:
            rows = query(conn, "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE c.relname = %s AND c.relkind IN ('r', 'm', 'p') "
                               "AND n.nspname = ANY (current_schemas(false)) "
                               "ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1", [table])
        else:
            rows = query(conn, "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE c.relname = %s AND n.nspname = %s AND c.relkind IN ('r', 'm', 'p')",
                         [table, schema])
        if not rows:
            raise RansomeyeError("table %s does not exist in database %s"
                                 % (table if schema is None else "%s.%s" % (schema, table), conn.info.dbname))
        resolved.append((rows[0][0], table))
    return resolved


def urgency(item: dict, opts: Options) -> t.Optional[t.Tuple[float, str]]:
    """How urgent a table is (higher first) and why, or None when under every threshold."""
    reasons = []
    score = 0.0
    if opts.min_xid_age and item["max_xid_age"] >= opts.min_xid_age:
        reasons.append("xid age %d >= %d" % (item["max_xid_age"], opts.min_xid_age))
        score = max(score, 1.0 + item["max_xid_age"] / float(opts.min_xid_age))
    if opts.mode == "analyze":
        live = item["n_live_tup"] or 0
        mods = item["n_mod_since_analyze"] or 0
        ratio = mods / float(live) if live else (1.0 if mods else 0.0)
        if mods >= opts.min_dead_tuples and ratio >= opts.min_dead_ratio:
            reasons.append("%d rows modified since analyze (%.1f%%)" % (mods, ratio * 100))
            score = max(score, ratio / max(opts.min_dead_ratio, 1e-9))
    elif item["n_dead_tup"] >= opts.min_dead_tuples and item["dead_ratio"] >= opts.min_dead_ratio:
        reasons.append("%d dead tuples (%.1f%%)" % (item["n_dead_tup"], item["dead_ratio"] * 100))
        score = max(score, item["dead_ratio"] / max(opts.min_dead_ratio, 1e-9))
    if not reasons:
        return None
    return score, "; ".join(reasons)


def _statement(mode: str, schema: str, table: str) -> t.Any:
    options = {"analyze": None, "vacuum": "ANALYZE", "freeze": "FREEZE, ANALYZE", "full": "FULL, ANALYZE"}[mode]
    target = ident(schema, table)
    if options is None:
        return sql.SQL("ANALYZE {}").format(target)
    return sql.SQL("VACUUM (" + options + ") {}").format(target)


def free_space_for(conn: t.Any, tablespace: str) -> t.Optional[int]:
    """Free bytes on the filesystem of a tablespace, when this host can see it (the module runs on the DB host)."""
    try:
        if tablespace in ("pg_default", "pg_global"):
            rows = query(conn, "SELECT current_setting('data_directory')")
        else:
            rows = query(conn, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = %s", [tablespace])
    except psycopg2.Error:
        return None
    if not rows or not rows[0][0] or not os.path.isdir(rows[0][0]):
        return None
    st = os.statvfs(rows[0][0])
    return st.f_bavail * st.f_frsize


def database_age(conn: t.Any) -> dict:
    rows = query(conn, "SELECT age(datfrozenxid), mxid_age(datminmxid) FROM pg_database WHERE datname = current_database()")
    return dict(datfrozenxid_age=rows[0][0], datminmxid_age=rows[0][1]) if rows else {}


def run(params: dict, check_mode: bool, now: t.Optional[datetime.datetime] = None) -> dict:
    opts = build_options(params)
    dbname = params.get("db") or params.get("login_db") or "postgres"
    info = ConnInfo.from_params(params, dbname=dbname)
    started = time.monotonic()
    in_window = opts.window.contains(now) if opts.window else False
    result: t.Dict[str, t.Any] = dict(changed=False, db=dbname, mode=opts.mode, vacuumed=[], skipped_tables=[],
                                      planned=[], table_stats={}, in_window=in_window,
                                      maintenance_window=opts.window.text if opts.window else None)
    with connection(info, autocommit=True) as conn:
        query(conn, sql.SQL("SET lock_timeout = {}").format(sql.Literal("%dms" % opts.lock_timeout_ms)))
        result["database_age"] = database_age(conn)
        if opts.tables:
            names = resolve_tables(conn, opts.tables)
            before = table_stats(conn, names)
            chosen = []
            for schema, table in names:
                key = "%s.%s" % (schema, table)
                if key in before:
                    chosen.append((key, "listed in tables"))
        else:
            before = table_stats(conn)
            ranked = []
            for key, item in before.items():
                urgent = urgency(item, opts)
                if urgent is not None:
                    ranked.append((-urgent[0], key, urgent[1]))
            chosen = [(entry[1], entry[2]) for entry in sorted(ranked)]
        # pg_stat_user_tables can lag behind a just-listed table; keep what we have and go on
        for key, why in chosen:
            result["planned"].append(dict(table=key, reason=why))
        result["table_stats"] = {pick[0]: dict(before=before[pick[0]], after=None) for pick in chosen}
        if check_mode or not chosen:
            for key, why in chosen:
                refusal = _full_refusal(conn, opts, in_window, before[key])
                if refusal:
                    result["skipped_tables"].append(dict(table=key, reason=refusal))
            result["changed"] = len(result["skipped_tables"]) < len(chosen)  # check mode: it would vacuum
            return result
        for key, why in chosen:
            item = before[key]
            refusal = _full_refusal(conn, opts, in_window, item)
            if refusal:
                result["skipped_tables"].append(dict(table=key, reason=refusal))
                continue
            if opts.time_budget is not None:
                left = opts.time_budget - (time.monotonic() - started)
                if left <= 0:
                    result["skipped_tables"].append(dict(table=key, reason="time_budget exhausted"))
                    continue
                query(conn, sql.SQL("SET statement_timeout = {}").format(sql.Literal("%dms" % max(1, left * 1000))))
            t0 = time.monotonic()
            try:
                query(conn, _statement(opts.mode, item["schema"], item["table"]))
            except psycopg2.errors.LockNotAvailable:
                result["skipped_tables"].append(dict(table=key, reason="could not lock within lock_timeout"))
                continue
            except psycopg2.errors.QueryCanceled:
                result["skipped_tables"].append(dict(table=key, reason="cancelled: time_budget exhausted"))
                continue
            except psycopg2.Error as exc:
                result["skipped_tables"].append(dict(table=key, reason="failed: %s" % str(exc).strip().splitlines()[0]))
                continue
            result["vacuumed"].append(dict(table=key, reason=why, mode=opts.mode,
                                           seconds=round(time.monotonic() - t0, 3)))
        query(conn, "RESET statement_timeout")
        done = [v["table"] for v in result["vacuumed"]]
        after = table_stats(conn, [(before[k]["schema"], before[k]["table"]) for k in (pick[0] for pick in chosen)])
        for pick in chosen:
            result["table_stats"][pick[0]]["after"] = after.get(pick[0])
        result["database_age"] = database_age(conn)
        result["changed"] = bool(done)
    return result


def _full_refusal(conn: t.Any, opts: Options, in_window: bool, item: dict) -> t.Optional[str]:
    """Why VACUUM FULL may not run on this table now, or None."""
    if opts.mode != "full":
        return None
    if not opts.allow_full:
        return "VACUUM FULL needs allow_full: true (it locks the table exclusively and rewrites it)"
    if opts.window is None:
        return "VACUUM FULL needs a maintenance_window"
    if not in_window:
        return "outside maintenance_window %s" % opts.window.describe()
    free = free_space_for(conn, item["tablespace"])
    needed = int(item["total_bytes"] * opts.full_space_factor)
    if free is None:
        return "cannot determine free disk space of tablespace %s from this host" % item["tablespace"]
    if free < needed:
        return "not enough free disk: %d bytes free, %d needed (%.1f x table and indexes)" % (
            free, needed, opts.full_space_factor)
    return None
