# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: PostgreSQL health checks that never hang.

libpq's ``connect_timeout`` bounds the connection (including the startup
exchange with a server that accepts TCP but never answers, e.g. a postmaster
stopped with SIGSTOP); ``statement_timeout`` bounds each query on a live
server; and the whole battery runs in a worker thread behind a watchdog, so a
server that stops answering half-way still gives ``critical`` in bounded time.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import statistics
import threading
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import (
    CRITICAL, Threshold, make_check,
)
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ConnInfo, connect, query

Thresholds = t.Mapping[str, Threshold]


def _timed_connect(info: ConnInfo) -> t.Tuple[t.Any, float]:
    start = time.perf_counter()
    conn = connect(info)
    return conn, (time.perf_counter() - start) * 1000.0


def _close(conn: t.Any) -> None:
    try:
        conn.close()
    except Exception:  # pylint: disable=broad-except
        pass


def _battery(info: ConnInfo, thresholds: Thresholds, samples: int, query_timeout: float, out: t.List[dict]) -> None:
    """Append checks to ``out`` as they complete (the watchdog keeps what finished in time)."""
    try:
        conn, first_ms = _timed_connect(info)
    except RansomeyeError as exc:
        out.append(make_check("pg_connect_ms", None, thresholds, target=info.describe(), status=CRITICAL,
                              message=exc.msg))
        return
    try:
        connect_ms = [first_ms]
        for dummy in range(samples - 1):
            extra, elapsed = _timed_connect(info)
            _close(extra)
            connect_ms.append(elapsed)
        out.append(make_check("pg_connect_ms", statistics.median(connect_ms), thresholds, target=info.describe(),
                              p50=round(statistics.median(connect_ms), 3), max=round(max(connect_ms), 3),
                              samples=len(connect_ms)))
        query(conn, "SET statement_timeout = %s", [int(query_timeout * 1000)])
        query(conn, "SET lock_timeout = %s", [int(query_timeout * 1000)])
        query_ms = []
        for dummy in range(samples):
            start = time.perf_counter()
            query(conn, "SELECT 1")
            query_ms.append((time.perf_counter() - start) * 1000.0)
        out.append(make_check("pg_query_ms", statistics.median(query_ms), thresholds, target=info.describe(),
                              p50=round(statistics.median(query_ms), 3), max=round(max(query_ms), 3),
                              samples=len(query_ms)))

        row = query(conn, """
            SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
                   current_setting('max_connections')::int,
                   current_setting('superuser_reserved_connections')::int,
                   coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
            FROM pg_stat_activity""")[0]
        backends, max_conn, su_reserved, reserved = (int(v) for v in row)
        usable = max(1, max_conn - su_reserved - reserved)
        out.append(make_check("pg_backends_percent", 100.0 * backends / usable, thresholds, target=info.describe(),
                              backends=backends, usable_connections=usable, max_connections=max_conn))

        idle_count, idle_longest = query(conn, """
            SELECT count(*), coalesce(max(extract(epoch FROM now() - state_change)), 0)::float8
            FROM pg_stat_activity WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')""")[0]
        out.append(make_check("pg_idle_in_transaction", float(idle_count), thresholds, target=info.describe(),
                              longest_seconds=round(float(idle_longest), 3)))

        longest, longest_pid = (query(conn, """
            SELECT extract(epoch FROM now() - query_start)::float8, pid FROM pg_stat_activity
            WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
            ORDER BY query_start LIMIT 1""") or [(0.0, None)])[0]
        out.append(make_check("pg_longest_query_seconds", float(longest or 0.0), thresholds, target=info.describe(),
                              pid=longest_pid))

        age, oldest_db = query(conn, """
            SELECT age(datfrozenxid), datname FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1""")[0]
        out.append(make_check("pg_wraparound_age", float(age), thresholds, target=info.describe(), database=oldest_db))

        out.extend(_replication_checks(conn, info, thresholds))
        from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_health import archive_checks
        out.extend(archive_checks(conn, info, thresholds))
    except RansomeyeError as exc:
        out.append(make_check("pg_query_ms", None, thresholds, target=info.describe(), status=CRITICAL, message=exc.msg))
    except Exception as exc:  # pylint: disable=broad-except
        # psycopg2 errors (statement timeout, connection lost): the server is not healthy.
        out.append(make_check("pg_query_ms", None, thresholds, target=info.describe(), status=CRITICAL,
                              message="%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")))
    finally:
        _close(conn)


def _replication_checks(conn: t.Any, info: ConnInfo, thresholds: Thresholds) -> t.List[dict]:
    in_recovery = query(conn, "SELECT pg_is_in_recovery()")[0][0]
    if in_recovery:
        lag = query(conn, """
            SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                        ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8""")[0][0]
        return [make_check("pg_replication_lag_seconds", float(lag) if lag is not None else None, thresholds,
                           target=info.describe(), role="standby")]
    rows = query(conn, """
        SELECT coalesce(application_name, client_addr::text, pid::text),
               pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8
        FROM pg_stat_replication""")
    return [make_check("pg_replication_lag_bytes", float(lag) if lag is not None else None, thresholds,
                       target="%s->%s" % (info.describe(), name), role="primary") for name, lag in rows]


def postgres_checks(info: ConnInfo, thresholds: Thresholds, samples: int = 5, query_timeout: float = 5.0) -> t.List[dict]:
    """All PostgreSQL checks; a server that does not answer gives ``critical`` in bounded time."""
    samples = max(1, int(samples))
    out: t.List[dict] = []
    worker = threading.Thread(target=_battery, args=(info, thresholds, samples, query_timeout, out),
                              name="ransomeye-pg-health", daemon=True)
    # Budget: the connects (libpq rounds connect_timeout up to 2 s) plus the queries, plus slack.
    connect_budget = max(2, info.connect_timeout)
    budget = connect_budget + query_timeout + 2.0
    started = time.monotonic()
    worker.start()
    worker.join(budget)
    if worker.is_alive():
        done = list(out)
        names = set(c["name"] for c in done)
        failed_name = "pg_query_ms" if "pg_connect_ms" in names else "pg_connect_ms"
        done.append(make_check(failed_name, None, thresholds, target=info.describe(), status=CRITICAL,
                               message="PostgreSQL did not answer within %.1fs" % (time.monotonic() - started)))
        return done
    return list(out)
