"""Daily dumps of a mostly unchanged database deduplicate in repository v2 (content-defined chunks in packs).

A real throwaway cluster: a v1 backup (a repository from before v2), a first
v2 backup, about 1 % of the rows changed the way a RansomEye database changes
between two nights (new events and alerts, recent alerts updated, the oldest
events expired), a second v2 backup. The second must add well under a quarter
of what the first stored; restores of it and of the v1 backup must bring back
every row (compared table by table, as content hashes).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from tests.harness.pgcluster import server_bindir
from tests.integration.dr.conftest import table_rows

from ansible_collections.ransomeye.ops.plugins.module_utils._backup import stream as v2stream

EVENTS = 80000
ALERTS = 16000


def grow(pg, db, events=EVENTS, alerts=ALERTS):
    """Make the database big enough that chunking matters (hundreds of chunks), in one statement per table."""
    pg.execute("""
        INSERT INTO public.events (host_id, kind, payload)
        SELECT 1 + (g %% 40), (ARRAY['exec','write','net','rename'])[1 + g %% 4],
               jsonb_build_object('n', g, 'path', '/srv/evidence/' || md5(g::text), 'entropy', (g %% 97) / 10.0,
                                  'cmdline', 'proc-' || (g * 7919 %% 100003) || ' --flag ' || md5((g * 3)::text))
        FROM generate_series(1, %d) g""" % events, dbname=db)
    pg.execute("""
        INSERT INTO public.alerts (event_id, severity, summary)
        SELECT 3000 + g * 3, 1 + g %% 10, 'suspicious rename burst on host ' || (g %% 40) || ': ' || md5(g::text)
        FROM generate_series(1, %d) g""" % alerts, dbname=db)


def nightly_change(pg, db, scale=1, night=1):
    """About 1 % of the rows (900 per 100,000): new events and alerts shaped like the old ones, recent alerts
    triaged, the oldest unreferenced events expired. PostgreSQL puts new row versions wherever its free-space map
    finds room, so the changes land all over the tables, not only at their ends."""
    seed = night * 10 ** 7
    sizes = {"seed": seed, "events": 400 * scale, "alerts": 80 * scale, "updates": 120 * scale, "deletes": 300 * scale}
    pg.execute("""
        INSERT INTO public.events (host_id, kind, payload)
        SELECT 1 + (g %% 40), (ARRAY['exec','write','net','rename'])[1 + g %% 4],
               jsonb_build_object('n', g, 'path', '/srv/evidence/' || md5((-g - %(seed)d)::text),
                                  'entropy', (g %% 97) / 10.0,
                                  'cmdline', 'proc-' || (g * 7919 %% 100003) || ' --flag ' || md5((g + %(seed)d)::text))
        FROM generate_series(1, %(events)d) g;
        INSERT INTO public.alerts (event_id, severity, summary)
        SELECT 3000 + g, 1 + g %% 10, 'suspicious rename burst on host ' || (g %% 40) || ': ' || md5((-g - %(seed)d)::text)
        FROM generate_series(1, %(alerts)d) g;
        UPDATE public.alerts SET severity = 10
        WHERE id IN (SELECT id FROM public.alerts WHERE severity <> 10 ORDER BY id DESC LIMIT %(updates)d);
        DELETE FROM public.events WHERE id IN (SELECT e.id FROM public.events e
            WHERE NOT EXISTS (SELECT 1 FROM public.alerts a WHERE a.event_id = e.id) ORDER BY e.id LIMIT %(deletes)d);
    """ % sizes, dbname=db)
    return 900 * scale


def _rows_digest(rows):
    return {table: hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest() for table, values in rows.items()}


def test_a_daily_dump_of_a_mostly_unchanged_database_adds_little_and_restores(dr_site, run_module_direct):
    site = dr_site
    pg, db = site["pg"], site["db"]
    grow(pg, db)
    args = dict(site["args"], components=["database"])
    # a v1 dump first (a repository from before v2): it must stay verifiable and restorable next to v2 ones
    rows_first = table_rows(pg, db)
    old = run_module_direct("ransomeye_backup", dict(args, format="v1"))
    assert old["_rc"] == 0, old.get("msg")
    first = run_module_direct("ransomeye_backup", args)
    assert first["_rc"] == 0, first.get("msg")
    total_rows = sum(first["tables"].values())
    changed = nightly_change(pg, db)
    rows_second = table_rows(pg, db)
    second = run_module_direct("ransomeye_backup", args)
    assert second["_rc"] == 0, second.get("msg")
    assert 0.005 * total_rows <= changed <= 0.02 * total_rows  # "about 1 %" of the rows, measured

    with open(second["manifest"]) as handle:
        body = json.load(handle)["manifest"]
    comp = body["components"]["database"]
    assert v2stream.is_v2_stream(comp) and "object" not in comp
    assert comp["chunker"]["algorithm"] == "ryecdc1" and comp["chunker"]["min"] < comp["chunker"]["max"]
    s1, s2 = first["stats"]["database"], second["stats"]["database"]
    assert s1["objects_new"] >= 20, s1      # enough chunks for the ratio to mean something
    # the second dump is as large as the first, yet adds well under a quarter of what the first stored
    assert s2["bytes_read"] >= 0.9 * s1["bytes_read"]
    assert s2["bytes_stored"] < 0.25 * s1["bytes_stored"], (s1, s2)
    # and in proportion to the change: at most ten times the fraction of rows that changed
    assert s2["bytes_stored"] < 10 * changed / total_rows * s1["bytes_stored"], (s1, s2, changed, total_rows)
    assert s2["bytes_deduplicated"] > 0.5 * s2["bytes_read"], s2
    # what the repository holds grew by about the same amount (packs listed by the second manifest only)
    with open(first["manifest"]) as handle:
        objects_first = json.load(handle)["manifest"]["objects"]
    added = sum(rec["ciphertext_size"] for oid, rec in body["objects"].items()
                if oid not in objects_first and rec["kind"] == "pack")
    first_size = sum(rec["ciphertext_size"] for rec in objects_first.values() if rec["kind"] == "pack")
    assert added < 0.25 * first_size, (added, first_size)

    # docs/BACKUP_FORMAT.md 5.11-5.12 suffice to read the dump: the independent reader (no collection code) writes
    # it out, checks its SHA-256 against the manifest, and pg_restore accepts the file
    reader = os.path.join(os.path.dirname(__file__), "..", "..", "unit", "dr", "independent_reader.py")
    out = os.path.join(site["tmp"], "reader-out")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, reader, site["repo"], second["manifest"], "database", out,
                           "--private-key", site["keys"]["recipient_key"]],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dump_file = os.path.join(out, "%s.pgdump" % db)
    with open(dump_file, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == comp["sha256"]
    listing = subprocess.run([os.path.join(server_bindir(), "pg_restore"), "--list", dump_file],
                             capture_output=True, text=True, check=False)
    assert listing.returncode == 0 and "TABLE DATA public events" in listing.stdout, listing.stderr
    assert "Compression: 0" in listing.stdout or "Compression: none" in listing.stdout, listing.stdout[:600]

    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="full"))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    assert verify["verified"] == [old["backup_id"], first["backup_id"], second["backup_id"]]

    restore_args = dict(pg.conn_params(), repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]],
                        private_key=site["keys"]["recipient_key"], db=db, components=["database"])
    pg.execute('DROP DATABASE "%s" WITH (FORCE)' % db)
    restore = run_module_direct("ransomeye_restore", restore_args)
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["backup_id"] == second["backup_id"] and restore["tables"] == second["tables"]
    assert _rows_digest(table_rows(pg, db)) == _rows_digest(rows_second)
    # the v1 object of the same repository still restores, row for row
    restore = run_module_direct("ransomeye_restore", dict(restore_args, backup=old["backup_id"]))
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["backup_id"] == old["backup_id"] and restore["changed"] is True
    assert _rows_digest(table_rows(pg, db)) == _rows_digest(rows_first)


def test_a_segmented_stream_round_trips_and_reuse_never_trusts_a_missing_pack(dr_site, run_module_direct,
                                                                              monkeypatch):
    """Segments of a few chunks (in-process, so that the test can make them small): a restore walks all of them;
    a dump pack deleted from the repository (attacker R) is stored again by the next backup, never referenced."""
    from tests.integration.dr.conftest import module_namespace
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import chunker as bchunker
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup

    site = dr_site
    pg, db = site["pg"], site["db"]
    monkeypatch.setattr(v2stream, "SEGMENT_MAX", 3)
    monkeypatch.setattr(bchunker, "DB_PARAMS", bchunker.Params(min_size=2048, bits=11, max_size=16384, region=4096))
    args = dict(site["args"], components=["database"])
    first = run_backup(module_namespace(**args))
    assert first["stats"]["database"]["objects_new"] >= 20
    with open(first["manifest"]) as handle:
        body = json.load(handle)["manifest"]
    packs = [oid for oid, rec in body["objects"].items() if rec["kind"] == "pack"]
    victim = max(packs, key=lambda oid: body["objects"][oid]["plaintext_size"])   # a data pack of the dump
    os.unlink(os.path.join(site["repo"], "objects", victim[:2], victim))
    pg.execute("UPDATE public.hosts SET os = 'linux' WHERE id = 3", dbname=db)
    rows = table_rows(pg, db)
    second = run_backup(module_namespace(**args))
    with open(second["manifest"]) as handle:
        body2 = json.load(handle)["manifest"]
    assert victim not in body2["objects"]
    assert second["stats"]["database"]["objects_new"] >= 1
    assert second["stats"]["database"]["segments"] >= 5, second["stats"]["database"]
    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="latest", level="full"))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    old = run_module_direct("ransomeye_backup_verify",
                            dict(site["verify_args"], backup="all", level="quick", fail_on_problems=False))
    assert any(p["object"] == victim for p in old["problems"])   # the damaged first backup is reported
    pg.execute('DROP DATABASE "%s" WITH (FORCE)' % db)
    restore = run_module_direct("ransomeye_restore", dict(
        pg.conn_params(), repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]],
        private_key=site["keys"]["recipient_key"], db=db, components=["database"], jobs=2))
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["backup_id"] == second["backup_id"]
    assert _rows_digest(table_rows(pg, db)) == _rows_digest(rows)
