"""Tampering: seeded random byte flips across manifests, objects and key files, plus targeted attacks.

Every case must be caught by verify at the level that is supposed to catch it,
restore must refuse it (nothing written), and each problem names its object.
The flip loop calls the modules' helpers in-process (hundreds of cases); the
targeted cases and a database refusal go through the real module.
"""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_decryption, load_trusted
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_restore import run_restore_module
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import verify_repo
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    canonical_json, load_signing_private_key, sign)
from tests.integration.dr.conftest import make_config, module_namespace

SEED = 20261127


def _small_artifacts(root):
    art = os.path.join(root, "artifacts")
    rng = random.Random(5)
    for i in range(24):
        os.makedirs(os.path.join(art, "c%d" % (i % 3)), exist_ok=True)
        with open(os.path.join(art, "c%d" % (i % 3), "f%02d.bin" % i), "wb") as handle:
            handle.write(rng.randbytes(rng.randint(1, 3000)))
    with open(os.path.join(art, "big.raw"), "wb") as handle:
        handle.write(rng.randbytes(1 << 20))
    return art


@pytest.fixture
def tamper_site(tmp_path, pg, pg_db, dr_keys, run_module_direct):
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) "
               "FROM generate_series(1, 500) g", dbname=pg_db)
    root = str(tmp_path / "site")
    config = make_config(root)
    artifacts = _small_artifacts(root)
    repo = str(tmp_path / "repo")
    args = dict(pg.conn_params(), repo=repo, db=pg_db, config_paths=[config], artifact_paths=[artifacts],
                mode="rsa", recipients=[dr_keys["recipient_pub"]], signing_key=dr_keys["signing_key"])
    ids = []
    for _round in range(2):
        result = run_module_direct("ransomeye_backup", args)
        assert result["_rc"] == 0, result.get("msg")
        ids.append(result["backup_id"])
    with open(os.path.join(artifacts, "c0", "f00.bin"), "ab") as handle:
        handle.write(b"changed")
    yield dict(pg=pg, db=pg_db, repo=repo, ids=ids, keys=dr_keys, tmp=str(tmp_path), args=args)
    from tests.integration.dr.conftest import drop_side_databases
    drop_side_databases(pg, pg_db)


def _verify(repo_path, level, trusted_paths, private_key):
    """Problems found at ``level`` (a load failure of a key counts as one problem naming the key)."""
    try:
        trusted = load_trusted(trusted_paths)
        decrypt = load_decryption(private_key, None, None) if level == "full" else None
        repo = brepo.Repo.open(repo_path)
        return verify_repo(repo, trusted, "all", level, decrypt).problems
    except RansomeyeError as exc:
        return [{"backup": None, "object": "key", "reason": exc.msg}]


def _restore_refused(site, repo_path, trusted_paths, private_key, dest, backup="latest"):
    """Restore every component (the database too): a refused restore must not touch anything."""
    params = dict(site["pg"].conn_params(), connect_timeout=10, repo=repo_path, backup=backup, components=None,
                  private_key=private_key,
                  private_key_passphrase=None, key_file=None, trusted_keys=trusted_paths, db=site["db"], dest=dest,
                  state="restored", verify_level="ciphertext", jobs=1, staging_dir=None, lock_timeout=5)
    try:
        run_restore_module(module_namespace(**params))
    except RansomeyeError as exc:
        return exc.msg
    return None


def _flip(path, rng, limit=None):
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    offset = rng.randrange(limit if limit else len(data))
    old = data[offset]
    data[offset] = old ^ (1 << rng.randrange(8))
    with open(path, "wb") as handle:
        handle.write(data)
    return offset, old


def _unflip(path, offset, old):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([old]))


def test_seeded_random_flips_are_caught_at_the_right_level_and_restore_refuses(tamper_site):
    site = tamper_site
    rng = random.Random(SEED)
    repo = site["repo"]
    trusted_src = site["keys"]["signing_pub"]
    private_src = site["keys"]["recipient_key"]
    key_copy_dir = os.path.join(site["tmp"], "keycopies")
    os.makedirs(key_copy_dir)
    trusted = os.path.join(key_copy_dir, "signing.pub")
    private = os.path.join(key_copy_dir, "recipient.key")
    shutil.copy(trusted_src, trusted)
    shutil.copy(private_src, private)
    manifests = [p for _s, p in brepo.Repo.open(repo).manifest_files()]
    objects = [p for oid, p in brepo.Repo.open(repo).iter_object_files() if oid]
    dest = os.path.join(site["tmp"], "dest")

    # clean baseline at every level
    for level in ("quick", "ciphertext", "full"):
        assert _verify(repo, level, [trusted], private) == []

    counts = {"manifest": 0, "object": 0, "trusted_key": 0, "private_key": 0, "no-op key flip": 0}
    for case in range(220):
        kind = ("manifest", "object", "object", "manifest", "trusted_key", "private_key")[case % 6]
        if kind == "manifest":
            target = rng.choice(manifests)
        elif kind == "object":
            target = rng.choice(objects)
        elif kind == "trusted_key":
            target = trusted
        else:
            target = private
        offset, old = _flip(target, rng)
        try:
            quick = _verify(repo, "quick", [trusted], private)
            cipher = _verify(repo, "ciphertext", [trusted], private)
            full = _verify(repo, "full", [trusted], private)
            backup = "latest"
            if kind == "manifest":
                backup = site["ids"][manifests.index(target)]
            elif kind == "object":
                first_refs = json.load(open(manifests[0]))["manifest"]["objects"]
                backup = site["ids"][0] if os.path.basename(target) in first_refs else site["ids"][1]
            refused = _restore_refused(site, repo, [trusted], private, dest, backup)
            assert not refused or not os.path.exists(dest), "refused restore wrote files"
            shutil.rmtree(dest, ignore_errors=True)
            where = "case %d: %s %s byte %d" % (case, kind, os.path.basename(target), offset)
            if kind == "manifest":
                name = "manifest:" + os.path.basename(target)
                assert quick and [p["object"] for p in quick] == [name], where
                assert cipher and full, where
            elif kind == "object":
                object_id = os.path.basename(target)
                assert quick == [] or all(p["object"] == object_id for p in quick), where
                assert cipher and {p["object"] for p in cipher} == {object_id}, where
                assert full and {p["object"] for p in full} == {object_id}, where
            elif kind == "trusted_key":
                if not quick:
                    # the flip landed where PEM decoding ignores it (line break, base64 padding bits): same key
                    assert load_trusted([trusted]).keys() == load_trusted([trusted_src]).keys(), where
                    counts["no-op key flip"] += 1
                    continue
                assert refused, where
            else:
                assert quick == [] and cipher == [], where  # quick and ciphertext need no private key
                if not full:
                    a = load_decryption(private, None, None)["private_key"].private_numbers()
                    b = load_decryption(private_src, None, None)["private_key"].private_numbers()
                    assert a == b, where
                    counts["no-op key flip"] += 1
                    continue
                assert refused, where
            assert refused, where
            counts[kind] += 1
        finally:
            _unflip(target, offset, old)
    assert sum(v for k, v in counts.items() if k != "no-op key flip") >= 200, counts
    assert all(counts[k] >= 30 for k in ("manifest", "object", "trusted_key", "private_key")), counts
    for level in ("quick", "ciphertext", "full"):
        assert _verify(repo, level, [trusted], private) == []


def _problems(run_module_direct, site, level="quick", backup="all"):
    result = run_module_direct("ransomeye_backup_verify", dict(
        repo=site["repo"], backup=backup, level=level, trusted_keys=[site["keys"]["signing_pub"]],
        private_key=site["keys"]["recipient_key"], fail_on_problems=False))
    assert result["_rc"] == 0, result.get("msg")
    assert "Traceback" not in result["_stderr"]
    return result["problems"]


def _latest_objects(site):
    with open(os.path.join(site["repo"], "manifests", "00000002.json")) as handle:
        body = json.load(handle)["manifest"]
    return body


def test_truncated_and_deleted_objects_are_caught_quick_and_named(tamper_site, run_module_direct):
    site = tamper_site
    body = _latest_objects(site)
    repo = brepo.Repo.open(site["repo"])
    big = max(body["objects"], key=lambda k: body["objects"][k]["ciphertext_size"])
    gone = body["components"]["config"].get("object") or next(  # v1: the config tar; v2: an index
        oid for oid, rec in sorted(body["objects"].items()) if rec["kind"] == "index")
    with open(repo.object_path(big), "r+b") as handle:
        handle.truncate(body["objects"][big]["ciphertext_size"] - 1)
    os.unlink(repo.object_path(gone))
    problems = _problems(run_module_direct, site, "quick", backup=site["ids"][1])
    reasons = {p["object"]: p["reason"] for p in problems}
    assert set(reasons) == {big, gone}
    assert "missing" in reasons[gone] and "truncated" in reasons[big]
    assert all(p["backup"] == site["ids"][1] for p in problems)
    failing = run_module_direct("ransomeye_backup_verify", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]]))
    assert failing["_rc"] != 0 and failing["failed"] is True and "problem" in failing["msg"]
    refused = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        components=["artifacts"], dest=os.path.join(site["tmp"], "dest")))
    assert refused["_rc"] != 0 and "refusing to restore" in refused["msg"]
    assert not os.path.exists(os.path.join(site["tmp"], "dest"))


def test_replayed_old_manifest_is_caught(tamper_site, run_module_direct):
    site = tamper_site
    manifests = os.path.join(site["repo"], "manifests")
    shutil.copy(os.path.join(manifests, "00000001.json"), os.path.join(manifests, "00000002.json"))
    problems = _problems(run_module_direct, site, "quick")
    assert [p["object"] for p in problems] == ["manifest:00000002.json"]
    assert "replayed" in problems[0]["reason"]
    refused = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        components=["config"], dest=os.path.join(site["tmp"], "dest"), backup="00000002"))
    assert refused["_rc"] != 0 and "refusing to restore" in refused["msg"]
    # `latest` is the newest backup that verifies: the replayed copy is no backup, and it is named in a warning
    latest = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        components=["config"], dest=os.path.join(site["tmp"], "dest")))
    assert latest["_rc"] == 0 and latest["seq"] == 1, latest.get("msg")
    assert any("00000002.json" in str(w) for w in latest.get("warnings", [])), latest.get("warnings")


def test_manifest_resigned_with_untrusted_key_is_caught_and_refused_for_the_database(tamper_site, run_module_direct):
    site = tamper_site
    path = os.path.join(site["repo"], "manifests", "00000002.json")
    with open(path) as handle:
        document = json.load(handle)
    body = document["manifest"]
    body["components"]["database"]["tables"]["public.t"] = 1  # the attacker's story
    rogue = load_signing_private_key(site["keys"]["rogue_key"])
    signature = sign(rogue, canonical_json(body))
    body["signer"] = signature["key_id"]
    with open(path, "wb") as handle:
        handle.write(canonical_json({"manifest": body, "signatures": [signature]}))
    problems = _problems(run_module_direct, site, "quick")
    assert [p["object"] for p in problems] == ["manifest:00000002.json"]
    assert "trusted" in problems[0]["reason"]
    before = site["pg"].execute("SELECT count(*) FROM t", dbname=site["db"])
    site["pg"].execute("DELETE FROM t WHERE id > 10", dbname=site["db"])
    refused = run_module_direct("ransomeye_restore", dict(
        site["pg"].conn_params(), repo=site["repo"], db=site["db"], components=["database"], backup=site["ids"][1],
        trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"]))
    assert refused["_rc"] != 0 and "refusing to restore" in refused["msg"]
    assert refused["problems"][0]["object"] == "manifest:00000002.json"
    assert site["pg"].execute("SELECT count(*) FROM t", dbname=site["db"]) == [(10,)] != before
    # a backup signed by the trusted key is still restorable by id
    ok = run_module_direct("ransomeye_restore", dict(
        site["pg"].conn_params(), repo=site["repo"], db=site["db"], components=["database"], backup=site["ids"][0],
        trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"]))
    assert ok["_rc"] == 0 and ok["tables"] == {"public.t": 500}, ok.get("msg")
