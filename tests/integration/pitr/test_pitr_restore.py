"""Point-in-time restore against a real cluster: several targets proven by table hashes, refusals, rollback."""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

import pytest

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pitrsite import Site, hashes_of_stopped, table_hashes

SCHEMA = """
CREATE TABLE alerts (id bigserial PRIMARY KEY, severity int NOT NULL, summary text NOT NULL);
CREATE TABLE hosts (id serial PRIMARY KEY, hostname text UNIQUE NOT NULL);
"""


def _now(site) -> str:
    return site.pg.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]


def _insert(site, start: int, count: int) -> None:
    site.pg.execute("INSERT INTO alerts (severity, summary) SELECT 1 + g %% 10, 'alert ' || g FROM "
                    "generate_series(%s, %s) g", [start, start + count - 1], dbname="app")


@pytest.fixture(scope="module")
def history(pitr_keys):
    """A cluster with a base backup and a recorded history: A, restore point, B, then the attack."""
    site = Site(pitr_keys)
    try:
        site.enable()
        site.pg.execute("CREATE DATABASE app")
        conn = site.pg.connect("app")
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
            cur.execute("INSERT INTO hosts (hostname) SELECT 'host-' || g FROM generate_series(1, 40) g")
        conn.close()
        _insert(site, 1, 2000)
        base = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
        assert base["_rc"] == 0, base.get("msg")
        _insert(site, 2001, 1000)
        marks = {"A": {"hashes": table_hashes(site.pg, "app"), "time": _now(site),
                       "lsn": site.pg.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0]}}
        time.sleep(1.1)
        point = run_module_direct("ransomeye_restore_point", dict(site.pg.conn_params(), name="before_change"))
        assert point["_rc"] == 0 and point["lsn"], point
        _insert(site, 3001, 500)
        conn = site.pg.connect("app")
        with conn.cursor() as cur:
            cur.execute("UPDATE hosts SET hostname = hostname || '-renamed' WHERE id <= 5 "
                        "RETURNING txid_current()")
            xid = cur.fetchone()[0]
        conn.close()
        marks["B"] = {"hashes": table_hashes(site.pg, "app"), "xid": str(xid),
                      "lsn": site.pg.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0]}
        time.sleep(1.1)
        # the attack: garbled rows, a dropped table
        site.pg.execute("UPDATE alerts SET summary = md5(summary) || '.locked'", dbname="app")
        site.pg.execute("DROP TABLE hosts", dbname="app")
        marks["attacked"] = {"hashes": table_hashes(site.pg, "app")}
        site.switch_and_wait()
        site.marks = marks
        site.point = point
        yield site
    finally:
        site.destroy()


def _restore_args(site, data_dir, **extra):
    args = dict(site.pg.conn_params(), repo=site.repo, trusted_keys=site.trusted, data_dir=data_dir,
                python=site.keys["python"], db="app", **site.decrypt)
    args.update(extra)
    return args


def test_restore_to_lsn_time_name_and_latest(history):
    site = history
    cases = [("target_lsn", site.marks["A"]["lsn"], "A"),
             ("target_time", site.marks["A"]["time"], "A"),
             ("target_name", "before_change", "A"),
             ("target_xid", site.marks["B"]["xid"], "B"),
             ("target", "latest", "attacked")]
    for kind, value, expected in cases:
        data_dir = os.path.join(site.base, "restored-%s-%s" % (kind, expected))
        result = run_module_direct("ransomeye_restore", _restore_args(site, data_dir, **{kind: value}))
        assert result["_rc"] == 0, (kind, result.get("msg", "")[-1200:])
        assert result["timeline"] >= 2 and result["previous_data_dir"] is None
        assert not os.path.exists(data_dir + ".ransomeye-pitr")  # work dir and secret copy removed
        assert hashes_of_stopped(site, data_dir) == site.marks[expected]["hashes"], (kind, value, result.get("recovery"), result.get("tables"))
        shutil.rmtree(data_dir)


def test_unreachable_target_fails_before_touching_anything(history):
    site = history
    data_dir = os.path.join(site.base, "never")
    live_before = table_hashes(site.pg, "app")
    far = run_module_direct("ransomeye_restore", _restore_args(site, data_dir, target_lsn="FF/0",
                                                               live_data_dir=site.pg.data))
    assert far["_rc"] != 0 and "not reachable" in far["msg"] and "can go up to LSN" in far["msg"], far["msg"]
    assert far["reachable"]["last_segment"]
    future = run_module_direct("ransomeye_restore", _restore_args(site, data_dir, target_time="2999-01-01T00:00:00Z"))
    assert future["_rc"] != 0 and "not reachable" in future["msg"]
    assert not os.path.exists(data_dir)
    assert table_hashes(site.pg, "app") == live_before
    naive = run_module_direct("ransomeye_restore", _restore_args(site, data_dir, target_time="2026-01-01 10:00"))
    assert naive["_rc"] != 0 and "no time zone" in naive["msg"]
    unknown = run_module_direct("ransomeye_restore", _restore_args(site, data_dir, target_name="no_such_point"))
    assert unknown["_rc"] != 0 and "live cluster was not touched" in unknown["msg"], unknown["msg"]
    assert not os.path.exists(data_dir) and not glob.glob(data_dir + ".ransomeye-pitr")
    assert table_hashes(site.pg, "app") == live_before


def test_swap_and_one_step_rollback(history):
    site = history
    data_dir = site.pg.data + "-pitr"
    attacked = table_hashes(site.pg, "app")
    result = run_module_direct("ransomeye_restore", _restore_args(
        site, data_dir, target_name="before_change", live_data_dir=site.pg.data,
        server_log=site.pg.logfile))
    assert result["_rc"] == 0, result.get("msg")
    assert result["previous_data_dir"].startswith(site.pg.data + ".pre_pitr_")
    assert table_hashes(site.pg, "app") == site.marks["A"]["hashes"]  # the live port answers from the restore
    assert result["tables"]["public.hosts"] == 40
    # the swapped-in cluster archives its new timeline into the same repository
    history = "%08X.history" % result["timeline"]
    deadline = time.monotonic() + 60
    while history not in site.chain_names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history in site.chain_names()
    site.switch_and_wait()
    assert any(n.startswith("%08X" % result["timeline"]) and len(n) == 24 for n in site.chain_names())
    back = run_module_direct("ransomeye_restore", dict(repo=site.repo, state="rolled_back",
                                                       live_data_dir=site.pg.data, server_log=site.pg.logfile))
    assert back["_rc"] == 0 and back["changed"], back.get("msg")
    assert table_hashes(site.pg, "app") == attacked


def test_the_server_user_never_gets_a_key_and_a_passphrase_protected_key_works(history, tmp_path):
    """The restore_command runs as the server's OS user: it is handed checked plaintext by the module and never a
    key. Proven two ways: the key given is passphrase-protected (the program has neither the passphrase nor a path
    to the key), and nothing in the work directory, watched for the whole run, holds a key or names one."""
    import threading
    from cryptography.hazmat.primitives import serialization
    site = history
    if "private_key" not in site.decrypt:
        pytest.skip("rsa mode only")
    with open(site.decrypt["private_key"], "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    protected = tmp_path / "recipient-protected.pem"
    protected.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"correct horse")))
    data_dir = os.path.join(site.base, "restored-protected-key")
    work = data_dir + ".ransomeye-pitr"
    seen, leaks, done = set(), [], threading.Event()

    def watch():
        # a PEM private-key boundary (plain or encrypted) in any file, or a config that names a key
        while not done.is_set():
            for top, _dirs, files in os.walk(work):
                for name in files:
                    path = os.path.join(top, name)
                    seen.add(os.path.relpath(path, work))
                    try:
                        with open(path, "rb") as handle:
                            text = handle.read(1 << 22)
                    except OSError:
                        continue
                    if b"PRIVATE KEY-----" in text:
                        leaks.append(path)
                    if name == "restore.json" and text:
                        try:
                            config = json.loads(text)
                        except ValueError:
                            continue
                        if config.get("private_key") or config.get("key_file") or not config.get("spool"):
                            leaks.append(path)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_module_direct("ransomeye_restore", dict(
            _restore_args(site, data_dir, target_name="before_change"), private_key=str(protected),
            private_key_passphrase="correct horse"))
    finally:
        done.set()
        watcher.join()
    assert result["_rc"] == 0, result.get("msg", "")[-1500:]
    assert "restore.json" in seen and any(name.startswith("spool/") for name in seen), seen
    assert not leaks, leaks
    assert hashes_of_stopped(site, data_dir) == site.marks["A"]["hashes"]
    shutil.rmtree(data_dir)
