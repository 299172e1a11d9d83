"""Manifest trust against attacker R (the repository writer): each test attacks one guarantee.

Planted, foreign, unparseable and far-seq manifests never block a real backup, the verify of other backups or a
restore, and never count for retention; signatures are canonical; a retired key cannot sign valid backups after its
successor did; rollback is caught against an anchor kept outside the repository; repo.json is bound into the
signed manifests. No PostgreSQL: config and artifacts are enough, and the helpers run in-process.
"""
from __future__ import annotations

import base64
import json
import os
import shutil

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain as keychain
from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
from tests.harness.trees import tree_digest
from tests.integration.dr.trust_helpers import backup, make_site, resign, restore, verify, write_key, write_pub


@pytest.fixture
def site(tmp_path):
    return make_site(str(tmp_path))


def _manifests(site):
    return sorted(os.listdir(os.path.join(site["repo"], "manifests")))


def _plant(site, name, data):
    with open(os.path.join(site["repo"], "manifests", name), "wb") as handle:
        handle.write(data)


def _restored_ok(site, dest):
    return tree_digest(os.path.join(dest, site["artifacts"].lstrip("/"))) == tree_digest(site["artifacts"])


# ---------------------------------------------------------------- planted / foreign / far-seq manifests

def test_far_seq_and_unparseable_planted_manifests_block_nothing(site, tmp_path):
    first = backup(site)
    assert first["seq"] == 1, first
    _plant(site, "99999999.json", b'{"manifest": {"seq": 99999999}}')
    _plant(site, "00000002.json", b"not json at all")
    second = backup(site)
    assert not second.get("failed"), second
    # the planted files neither push the seq out of range nor occupy the next backup's file
    assert second["seq"] == 3 and os.path.exists(second["manifest"])
    assert any("00000002.json" in w and "99999999.json" in w for w in second["warnings"]), second["warnings"]
    checked = verify(site, level="ciphertext")
    assert checked["verified"] == [first["backup_id"], second["backup_id"]], checked
    bad = {p["object"] for p in checked["problems"]}
    assert bad == {"manifest:00000002.json", "manifest:99999999.json"}, checked["problems"]
    latest = verify(site, backup="latest", fail_on_problems=True)
    assert not latest.get("failed") and latest["verified"] == [second["backup_id"]], latest
    dest = str(tmp_path / "dest")
    restored = restore(site, dest)
    assert not restored.get("failed"), restored
    assert restored["backup_id"] == second["backup_id"] and _restored_ok(site, dest)
    # the chain across the occupied seq is intact: the third backup links to the second through prev_seq
    with open(second["manifest"], "rb") as handle:
        body = json.loads(handle.read())["manifest"]
    assert body["prev_seq"] == 1 and body["prev_manifest_sha256"] == first["manifest_sha256"]


def test_foreign_signed_manifests_do_not_count_for_retention(site):
    real = [backup(site) for _round in range(2)]
    for seq in range(3, 8):  # R copies a real manifest under newer seqs, signed by a key nobody trusts
        resign(real[-1]["manifest"], site["rogue"], edit=lambda b, s=seq: b.update(
            seq=s, backup_id="%08d-20991231T000000Z" % s), seq_name=seq)
    third = backup(site, keep_last=2)
    assert not third.get("failed"), third
    assert third["seq"] == 3 or third["seq"] == 8
    # the two newest GENUINE backups are kept; the planted ones were not counted and are left for inspection
    kept = _manifests(site)
    assert os.path.basename(real[1]["manifest"]) in kept and os.path.basename(third["manifest"]) in kept
    assert os.path.basename(real[0]["manifest"]) not in kept
    assert third["pruned"]["manifests"] == [real[0]["backup_id"]]
    assert any("not verify" in w or "planted" in w for w in third["warnings"]), third["warnings"]
    checked = verify(site)
    assert checked["verified"] == [real[1]["backup_id"], third["backup_id"]], checked


def test_absurd_seq_signed_by_own_key_is_refused(site):
    first = backup(site)
    resign(first["manifest"], site["signer"], edit=lambda b: b.update(seq=5000, backup_id="00005000-20261201T000000Z"),
           seq_name=5000)
    checked = verify(site)
    assert "manifest:00005000.json" in {p["object"] for p in checked["problems"]}
    nxt = backup(site)
    assert nxt["seq"] == 2, nxt


# ---------------------------------------------------------------- signature encoding

def test_signature_must_be_canonical_base64(site):
    first = backup(site)
    with open(first["manifest"], "rb") as handle:
        document = json.loads(handle.read())
    sig = document["signatures"][0]["sig"]
    raw = base64.b64decode(sig)
    assert base64.b64encode(raw).decode() == sig
    # Ed25519: 64 bytes -> 88 characters ending "==": the last data character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-3]
    twisted = sig[:-3] + alphabet[alphabet.index(last) ^ 1] + sig[-2:]
    assert base64.b64decode(twisted) == raw  # same signature bytes, other text
    data = signing.canonical_json(document["manifest"])
    with pytest.raises(signing.SignatureError, match="canonical"):
        signing.verify(site["signer"].public_key(), data, dict(document["signatures"][0], sig=twisted))
    with pytest.raises(signing.SignatureError):
        signing.verify(site["signer"].public_key(), data, dict(document["signatures"][0], extra="x"))
    document["signatures"][0]["sig"] = twisted
    with open(first["manifest"], "wb") as handle:
        handle.write(signing.canonical_json(document))
    checked = verify(site)
    assert checked["verified"] == [] and "canonical" in checked["problems"][0]["reason"], checked


# ---------------------------------------------------------------- key-chain positions

def test_retired_key_cannot_sign_after_its_successor(site, tmp_path):
    key_dir = str(tmp_path / "signing")
    k1 = site["signer"]
    k2 = signing.generate_signing_key("ed25519")
    keychain.write_bundle(key_dir, keychain.make_bundle(k1, 1))
    keychain.write_bundle(key_dir, keychain.make_bundle(k2, 2, old_private_key=k1))
    write_pub(os.path.join(key_dir, "active.pub"), k2)
    k2_path = write_key(str(tmp_path / "k2.key"), k2)
    old = backup(site)                                  # signed by key 1
    new = backup(site, signing_key=k2_path)             # key 2 after the rotation
    stolen = backup(site)                               # the retired key 1 again
    checked = verify(site, trusted_keys=[key_dir, site["signing_pub"]])
    assert checked["verified"] == [old["backup_id"], new["backup_id"]], checked
    assert checked["problems"][0]["object"] == "manifest:%08d.json" % stolen["seq"]
    assert "retired" in checked["problems"][0]["reason"]
    # with only bare keys (no chain) there are no positions to enforce: documented limitation
    bare = verify(site, trusted_keys=[site["signing_pub"], write_pub(str(tmp_path / "k2.pub"), k2)])
    assert stolen["backup_id"] in bare["verified"]


# ---------------------------------------------------------------- rollback anchor

def test_anchor_catches_deleted_newest_manifests(site, tmp_path):
    anchor = str(tmp_path / "anchor.json")
    results = [backup(site, anchor=anchor) for _round in range(3)]
    assert all(not r.get("failed") for r in results)
    with open(anchor) as handle:
        state = json.load(handle)
    assert state["seq"] == 3 and state["manifest_sha256"] == results[-1]["manifest_sha256"]
    assert verify(site, anchor=anchor, fail_on_problems=True)["verified"]
    os.unlink(results[-1]["manifest"])                   # R deletes the newest backup
    checked = verify(site, anchor=anchor)
    assert [p["reason"] for p in checked["problems"]] == ["rolled back"], checked
    assert "anchor" in checked["problems"][0]["object"]
    assert verify(site)["problems"] == []                # without the anchor it is invisible
    refused = restore(site, str(tmp_path / "dest"), anchor=anchor)
    assert refused.get("failed") and "rolled back" in refused["msg"], refused
    assert not os.path.exists(str(tmp_path / "dest"))
    again = backup(site, anchor=anchor)                  # and a backup does not paper over it
    assert again.get("failed") and "rolled back" in again["msg"], again
    with open(anchor) as handle:
        assert json.load(handle)["seq"] == 3


def test_anchor_catches_an_older_copy_swapped_in(site, tmp_path):
    anchor = str(tmp_path / "anchor.json")
    backup(site, anchor=anchor)
    old_copy = str(tmp_path / "old-repo")
    shutil.copytree(site["repo"], old_copy)
    backup(site, anchor=anchor)
    shutil.rmtree(site["repo"])
    shutil.copytree(old_copy, site["repo"])
    checked = verify(site, anchor=anchor)
    assert checked["problems"] and checked["problems"][0]["reason"] == "rolled back", checked
    # a same-seq manifest with other content (a fork signed by the real key, as H could) is caught too
    with open(os.path.join(site["artifacts"], "fork.txt"), "w") as handle:
        handle.write("content only the fork has")   # v2 manifests are deterministic: make the fork differ
    backup(site)  # seq 2 again, without the anchor: another manifest 2
    checked = verify(site, anchor=anchor)
    assert checked["problems"] and checked["problems"][0]["reason"] == "rolled back", checked


def test_anchor_must_live_outside_the_repository(site):
    backup(site)
    refused = backup(site, anchor=os.path.join(site["repo"], "anchor.json"))
    assert refused.get("failed") and "outside" in refused["msg"], refused


def test_anchor_of_another_repository_is_refused(site, tmp_path):
    anchor = str(tmp_path / "anchor.json")
    backup(site, anchor=anchor)
    other = dict(site, repo=str(tmp_path / "other"))
    refused = backup(other, anchor=anchor)
    assert refused.get("failed") and "repository" in refused["msg"], refused


# ---------------------------------------------------------------- repo.json

def test_repo_json_is_bound_into_the_signed_manifests(site, tmp_path):
    first = backup(site)
    config = os.path.join(site["repo"], "repo.json")
    with open(config) as handle:
        data = json.load(handle)
    data["repo_id"] = "0" * 32
    with open(config, "w") as handle:
        json.dump(data, handle)
    checked = verify(site)
    assert [p["object"] for p in checked["problems"]] == ["repo.json"], checked
    # the genuine backup still verifies (the signed copy of the config is used) and restores
    assert checked["verified"] == [first["backup_id"]]
    dest = str(tmp_path / "dest")
    restored = restore(site, dest)
    assert not restored.get("failed") and _restored_ok(site, dest), restored


def test_damaged_or_deleted_repo_json_is_replaced_by_its_signed_copy(site, tmp_path):
    first = backup(site)
    config = os.path.join(site["repo"], "repo.json")
    with open(config, "ab") as handle:
        handle.write(b"\x00garbage")
    checked = verify(site)
    assert [p["object"] for p in checked["problems"]] == ["repo.json"] and checked["verified"] == [first["backup_id"]]
    os.unlink(config)
    second = backup(site)
    assert not second.get("failed") and any("repo.json" in w for w in second["warnings"]), second
    checked = verify(site)
    assert checked["verified"] == [first["backup_id"], second["backup_id"]], checked
    dest = str(tmp_path / "dest")
    restored = restore(site, dest)
    assert not restored.get("failed") and _restored_ok(site, dest), restored


def test_anchor_in_a_missing_directory_fails_before_anything_is_written(site, tmp_path):
    refused = backup(site, anchor=str(tmp_path / "no-such-dir" / "anchor.json"))
    assert refused.get("failed") and "does not exist" in refused["msg"], refused
    assert not os.path.exists(os.path.join(site["repo"], "manifests", "00000001.json"))
