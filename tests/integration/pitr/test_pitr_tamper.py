"""A damaged WAL archive: verify names the first bad segment, restore refuses, retention keeps needed WAL."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from cryptography.hazmat.primitives import serialization

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pitrsite import Site


@pytest.fixture(scope="module")
def archive(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.enable()
        site.pg.execute("CREATE TABLE t (g int)")
        base = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
        assert base["_rc"] == 0, base.get("msg")
        site.base_id = base["backup_id"]
        site.segments = []
        site.marks = []
        for i in range(4):
            site.pg.execute("INSERT INTO t SELECT g FROM generate_series(%d, %d) g" % (i * 1000, i * 1000 + 999))
            site.marks.append(site.pg.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
            site.segments.append(site.switch_and_wait())
        yield site
    finally:
        site.destroy()


def _stored(site, name):
    return os.path.join(site.repo, "wal", "segments", name[:16], name)


def _verify(site, level="ciphertext"):
    return run_module_direct("ransomeye_backup_verify", dict(repo=site.repo, trusted_keys=site.trusted, level=level,
                                                             backup="all", fail_on_problems=False, **site.decrypt))


def _restore(site, data_dir, **target):
    return run_module_direct("ransomeye_restore", dict(site.pg.conn_params(), repo=site.repo,
                                                       trusted_keys=site.trusted, data_dir=data_dir,
                                                       python=site.keys["python"], db="postgres",
                                                       **dict(site.decrypt, **target)))


@pytest.fixture
def damage(archive):
    """Undo whatever a test did to the archive (files are restored from a pristine copy)."""
    pristine = os.path.join(archive.base, "pristine-wal")
    shutil.rmtree(pristine, ignore_errors=True)
    shutil.copytree(os.path.join(archive.repo, "wal"), pristine, symlinks=True)
    yield archive
    shutil.rmtree(os.path.join(archive.repo, "wal"))
    shutil.copytree(pristine, os.path.join(archive.repo, "wal"), symlinks=True)
    for root, dirs, files in os.walk(os.path.join(archive.repo, "wal")):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            shutil.chown(name, "postgres", "postgres")


def test_clean_archive_verifies_with_its_reach(archive):
    result = _verify(archive, "full")
    assert result["problems"] == [], result["problems"]
    reach = result["wal"]["base_backups"][archive.base_id]
    assert reach["consistent"] and reach["last_segment"] == archive.segments[-1]
    assert result["wal"]["unsigned_tail"] == []


@pytest.mark.parametrize("how", ["tampered", "missing", "reordered"])
def test_bad_segment_named_and_restore_refused(damage, how):
    site = damage
    bad = site.segments[1]
    if how == "tampered":
        with open(_stored(site, bad), "r+b") as handle:
            handle.seek(5000)
            byte = handle.read(1)
            handle.seek(5000)
            handle.write(bytes([byte[0] ^ 1]))
    elif how == "missing":
        os.unlink(_stored(site, bad))
    else:  # two segments swapped in place
        other = site.segments[2]
        tmp = _stored(site, bad) + ".swap"
        os.rename(_stored(site, bad), tmp)
        os.rename(_stored(site, other), _stored(site, bad))
        os.rename(tmp, _stored(site, other))
    result = _verify(site)
    assert result["problems"], result
    assert result["problems"][0]["object"] == "wal:%s" % bad, result["problems"]
    assert any(p["backup"] == site.base_id and p["object"] == "wal:%s" % bad for p in result["problems"])
    assert site.base_id not in result["verified"]
    data_dir = os.path.join(site.base, "restored-" + how)
    refused = _restore(site, data_dir, target="latest")
    assert refused["_rc"] != 0 and "WAL segment %s is missing or failed verification" % bad in refused["msg"]
    assert not os.path.exists(data_dir)
    if how == "tampered":  # stopping at the gap happens only when the operator asks for it
        short = _restore(site, data_dir, target="latest", stop_at_gap=True)
        assert short["_rc"] == 0 and short["reachable"]["first_missing"] == bad, short.get("msg")
        assert short["tables"] == {"public.t": 1000}
        shutil.rmtree(data_dir)
    beyond = _restore(site, data_dir, target_lsn=site.marks[2])
    assert beyond["_rc"] != 0 and "not reachable" in beyond["msg"] and bad in beyond["msg"], beyond["msg"]
    assert not os.path.exists(data_dir)
    before = _restore(site, data_dir, target_lsn=site.marks[0])
    assert before["_rc"] == 0, before.get("msg")
    assert before["tables"] == {"public.t": 1000}
    shutil.rmtree(data_dir)


def _log(site):
    logs = os.path.join(site.repo, "wal", "log")
    return os.path.join(logs, sorted(os.listdir(logs))[-1])


def test_forged_and_moved_chain_entries(damage, pitr_keys):
    site = damage
    path = _log(site)
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    last = json.loads(lines[-1])
    from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
    rogue = serialization.load_pem_private_key(open(pitr_keys["rogue_key"], "rb").read(), None)
    forged = dict(last["entry"], n=last["entry"]["n"] + 1, name="0000000100000000000000AA",
                  prev=hashlib.sha256(signing.canonical_json(last["entry"])).hexdigest())
    doc = {"entry": forged, "signatures": [signing.sign(rogue, signing.canonical_json(forged))]}
    with open(path, "ab") as handle:
        handle.write(signing.canonical_json(doc) + b"\n")
    result = _verify(site, "quick")
    assert any(p["object"] == "wal:0000000100000000000000AA" and "trusted" in p["reason"]
               for p in result["problems"]), result["problems"]
    assert "0000000100000000000000AA" in result["wal"]["unsigned_tail"]
    # two entries swapped in the log: the links break and the later segment is named
    names = [json.loads(line)["entry"]["name"] for line in lines]
    i = names.index(site.segments[1])
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    with open(path, "wb") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
    moved = _verify(site, "quick")
    assert any(p["object"] == "wal:%s" % names[i + 1] and "missing" in p["reason"]
               for p in moved["problems"]), moved["problems"]
    assert any(p["object"] == "wal:%s" % names[i] and "reordered" in p["reason"]
               for p in moved["problems"]), moved["problems"]
    assert moved["verified"] == []


@pytest.mark.parametrize("how", ["edited", "deleted", "cut"])
def test_damaged_chain_log_names_the_segment(damage, how):
    """An entry edited, deleted or cut short in the chain log: verify names the first segment it no longer covers."""
    site = damage
    path = _log(site)
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    names = [json.loads(line)["entry"]["name"] for line in lines]
    i = names.index(site.segments[1])
    if how == "edited":  # still canonical JSON, still a valid shape: only the signature and the links catch it
        doc = json.loads(lines[i])
        doc["entry"]["plaintext_size"] += 1
        from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
        lines[i] = signing.canonical_json(doc)
    elif how == "deleted":
        del lines[i]
    else:
        lines[i] = lines[i][:40]
    with open(path, "wb") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
    result = _verify(site)
    assert any(p["backup"] == site.base_id and p["object"] == "wal:%s" % site.segments[1]
               for p in result["problems"]), result["problems"]
    assert site.base_id not in result["verified"]


def test_retention_keeps_wal_of_retained_base_backup(archive):
    site = archive
    second = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"], keep_last=1))
    assert second["_rc"] == 0, second.get("msg")
    body = json.load(open(second["manifest"]))["manifest"]
    start = body["components"]["physical"]["start_wal"]
    names = site.chain_names()
    assert second["pruned"]["wal"]["segments"] >= len(site.segments)
    assert all(n >= start[:24] for n in names if len(n) == 24), (start, names)
    assert start in names and body["components"]["physical"]["end_wal"] in names
    result = _verify(site)
    assert result["problems"] == [] and result["verified"] == [second["backup_id"]]
