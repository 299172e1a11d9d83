"""ransomeye_pg_vacuum on a real PostgreSQL 15 cluster."""
from __future__ import annotations

import datetime
import time

import pytest


def make_dead_tuples(pg, db, table="events", rows=20000):
    conn = pg.connect(db)
    try:
        cur = conn.cursor()
        cur.execute('CREATE TABLE "%s" (id int PRIMARY KEY, payload text)' % table)
        cur.execute('INSERT INTO "%s" SELECT g, md5(g::text) FROM generate_series(1, %d) g' % (table, rows))
        cur.execute('UPDATE "%s" SET payload = payload || \'!\' WHERE id %% 2 = 0' % table)  # updates
        cur.execute('DELETE FROM "%s" WHERE id > %d' % (table, rows * 3 // 4))  # deletes
        cur.execute("SELECT pg_stat_force_next_flush()")
    finally:
        conn.close()
    # the statistics reach pg_stat_user_tables asynchronously: wait until they show
    for _attempt in range(100):
        rows_dead = pg.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", [table], dbname=db)
        if rows_dead and rows_dead[0][0] > 0:
            return rows_dead[0][0]
        time.sleep(0.1)
    raise AssertionError("dead tuples never appeared in pg_stat_user_tables")


def args(pg, db, **extra):
    base = dict(pg.conn_params(), db=db, min_dead_tuples=100, min_dead_ratio=0.05)
    base.update(extra)
    return base


def window_around_now(inside):
    now = datetime.datetime.now()
    if inside:
        start, end = now - datetime.timedelta(minutes=30), now + datetime.timedelta(minutes=30)
    else:
        start, end = now + datetime.timedelta(hours=2), now + datetime.timedelta(hours=3)
    return "%s-%s" % (start.strftime("%H:%M"), end.strftime("%H:%M"))


def test_vacuum_reduces_dead_tuples_idempotently(pg, pg_db, run_module_direct):
    dead = make_dead_tuples(pg, pg_db)
    pg.execute("CREATE TABLE quiet (id int)", dbname=pg_db)
    step1 = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db), check=True)
    assert step1["changed"] is True, step1
    assert [p["table"] for p in step1["planned"]] == ["public.events"]
    assert step1["table_stats"]["public.events"]["after"] is None
    assert step1["table_stats"]["public.events"]["before"]["n_dead_tup"] == dead
    step2 = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db))
    assert step2["changed"] is True
    assert [v["table"] for v in step2["vacuumed"]] == ["public.events"]
    stats = step2["table_stats"]["public.events"]
    assert stats["before"]["n_dead_tup"] >= dead > 0
    assert stats["after"]["n_dead_tup"] < stats["before"]["n_dead_tup"]
    assert stats["after"]["n_dead_tup"] == 0
    assert stats["after"]["last_vacuum"] is not None and stats["after"]["last_analyze"] is not None
    assert isinstance(stats["after"]["xid_age"], int)
    assert step2["database_age"]["datfrozenxid_age"] > 0
    step3 = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db), check=True)
    step4 = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db))
    assert step3["changed"] is False and step4["changed"] is False
    assert step4["vacuumed"] == [] and step4["planned"] == []


def test_most_urgent_first(pg, pg_db, run_module_direct):
    make_dead_tuples(pg, pg_db, "mild", rows=20000)
    pg.execute("DELETE FROM mild WHERE id > 14000", dbname=pg_db)  # mild has more dead rows
    make_dead_tuples(pg, pg_db, "alerts", rows=4000)
    pg.execute("DELETE FROM alerts WHERE id > 100", dbname=pg_db)
    for _attempt in range(50):
        plan = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db), check=True)
        ratios = {k: v["before"]["dead_ratio"] for k, v in plan["table_stats"].items()}
        if len(ratios) == 2 and ratios["public.alerts"] > 0.9:
            break
        time.sleep(0.2)
    assert [p["table"] for p in plan["planned"]] == sorted(ratios, key=lambda k: -ratios[k])
    assert plan["planned"][0]["table"] == "public.alerts"


def test_full_refused_outside_window_and_runs_inside(pg, pg_db, run_module_direct):
    make_dead_tuples(pg, pg_db)
    node = "SELECT relfilenode FROM pg_class WHERE relname = 'events'"
    before = pg.execute(node, dbname=pg_db)[0][0]
    outside = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], mode="full",
                                                            allow_full=True,
                                                            maintenance_window=window_around_now(False)))
    assert outside["changed"] is False and outside["vacuumed"] == []
    assert outside["in_window"] is False
    assert "outside maintenance_window" in outside["skipped_tables"][0]["reason"]
    assert pg.execute(node, dbname=pg_db)[0][0] == before
    no_allow = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], mode="full",
                                                             maintenance_window=window_around_now(True)))
    assert no_allow["changed"] is False and "allow_full" in no_allow["skipped_tables"][0]["reason"]
    inside = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], mode="full",
                                                           allow_full=True,
                                                           maintenance_window=window_around_now(True)))
    assert inside["changed"] is True and inside["in_window"] is True, inside
    assert inside["vacuumed"][0]["mode"] == "full"
    assert pg.execute(node, dbname=pg_db)[0][0] != before  # rewritten: VACUUM FULL really ran


def test_full_refused_without_enough_disk(pg, pg_db, run_module_direct):
    make_dead_tuples(pg, pg_db)
    result = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], mode="full",
                                                           allow_full=True, full_space_factor=1e12,
                                                           maintenance_window=window_around_now(True)))
    assert result["changed"] is False
    assert "not enough free disk" in result["skipped_tables"][0]["reason"]


def test_locked_table_is_skipped_after_lock_timeout(pg, pg_db, run_module_direct):
    make_dead_tuples(pg, pg_db)
    holder = pg.connect(pg_db, autocommit=False)
    try:
        holder.cursor().execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], lock_timeout="300ms"))
        assert time.monotonic() - started < 20
    finally:
        holder.rollback()
        holder.close()
    assert result.get("changed") is False, result
    assert result["skipped_tables"] == [dict(table="public.events", reason="could not lock within lock_timeout")]


def test_time_budget_zero_skips_everything(pg, pg_db, run_module_direct):
    make_dead_tuples(pg, pg_db)
    result = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["events"], time_budget="0s"))
    assert result["changed"] is False
    assert result["skipped_tables"] == [dict(table="public.events", reason="time_budget exhausted")]


def test_names_are_quoted_identifiers(pg, pg_db, run_module_direct):
    pg.execute('CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."x; DROP TABLE y" (id int); '
               'CREATE TABLE y (id int)', dbname=pg_db)
    result = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, tables=["Odd Schema.x; DROP TABLE y"],
                                                           mode="analyze"))
    assert result["changed"] is True, result
    assert result["vacuumed"][0]["table"] == "Odd Schema.x; DROP TABLE y"
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'y'", dbname=pg_db)[0][0] == 1


@pytest.mark.parametrize("extra,fragment", [
    (dict(maintenance_window="25:00-01:00", mode="full", allow_full=True), "25:00 is not a time of day"),
    (dict(tables=["no_such_table"]), "table no_such_table does not exist"),
    (dict(lock_timeout="forever"), "lock_timeout must be a duration"),
    (dict(min_dead_ratio=2.5), "min_dead_ratio must be between 0 and 1"),
    (dict(tables=["a.b.c"]), "use table or schema.table"),
])
def test_bad_input_fails_clearly(pg, pg_db, run_module_direct, extra, fragment):
    result = run_module_direct("ransomeye_pg_vacuum", args(pg, pg_db, **extra))
    assert result.get("failed") is True
    assert fragment in result["msg"]
    assert "Traceback" not in result["_stderr"]


def test_unreachable_server_fails_without_password(pg, run_module_direct):
    params = dict(pg.conn_params(), login_port=1, connect_timeout=2)
    result = run_module_direct("ransomeye_pg_vacuum", params)
    assert result.get("failed") is True and "could not connect" in result["msg"]
    assert pg.password not in result["msg"]
