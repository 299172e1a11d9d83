"""The key-update chain: two rotations, trust in both directions, and every kind of forged bundle rejected."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain, _signing


def _write(path, data: bytes, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def build_key_dir(root, keys):
    """A key directory as ransomeye_rotate_signing_keys leaves it after len(keys)-1 rotations."""
    root = str(root)
    for seq, key in enumerate(keys, start=1):
        kid = _signing.key_id(key)
        bundle = _keychain.make_bundle(key, seq, keys[seq - 2] if seq > 1 else None)
        _keychain.write_bundle(root, bundle)
        _write(os.path.join(root, "keys", kid + ".pub"), _signing.public_key_pem(key))
        if seq < len(keys):
            _write(os.path.join(root, "archive", kid + ".key"), _signing.private_key_pem(key), 0o600)
    active = keys[-1]
    _write(os.path.join(root, "active.key"), _signing.private_key_pem(active), 0o600)
    _write(os.path.join(root, "active.pub"), _signing.public_key_pem(active))
    _keychain.write_state(root, {"active_key_id": _signing.key_id(active), "active_since": "2026-01-01T00:00:00Z", "seq": len(keys)})
    return root


@pytest.fixture(scope="module")
def chain_keys(rsa4096_key):
    # key 1 Ed25519, key 2 RSA-4096 (the module's default type), key 3 Ed25519
    return [_signing.generate_signing_key("ed25519"), rsa4096_key, _signing.generate_signing_key("ed25519")]


@pytest.fixture
def key_dir(tmp_path, chain_keys):
    return build_key_dir(tmp_path / "keys", chain_keys)


def _pub_file(tmp_path, key, name):
    path = tmp_path / name
    path.write_bytes(_signing.public_key_pem(key))
    return str(path)


def _ids(keys):
    return [_signing.key_id(k) for k in keys]


def test_load_key_dir_reads_layout(key_dir, chain_keys):
    kd = _keychain.load_key_dir(key_dir)
    assert kd.problems == []
    assert kd.active_key_id == _signing.key_id(chain_keys[2])
    assert [b["seq"] for b in kd.bundles] == [1, 2, 3]
    assert sorted(kd.keys) == sorted(_ids(chain_keys))
    assert kd.bundles[1]["prev_key_id"] == _signing.key_id(chain_keys[0])
    assert [s["key_id"] for s in kd.bundles[2]["signatures"]] == _ids(chain_keys[1:3])
    assert kd.bundles[0]["signatures"][0]["key_id"] == _signing.key_id(chain_keys[0]) and len(kd.bundles[0]["signatures"]) == 1
    assert kd.bundles[1]["key_type"] == "rsa4096"


def test_manifest_signed_by_key1_verifies_from_anchor_key1_or_key3(tmp_path, key_dir, chain_keys):
    manifest = _signing.canonical_json({"seq": 1, "objects": []})
    signature = _signing.sign(chain_keys[0], manifest)
    for anchor in (0, 2):
        trusted = _keychain.trusted_keys_from([_pub_file(tmp_path, chain_keys[anchor], "anchor%d.pub" % anchor), key_dir])
        assert sorted(trusted) == sorted(_ids(chain_keys)), anchor
        assert _signing.verify_trusted(trusted, manifest, signature) == _signing.key_id(chain_keys[0])
    # Pinned to key 3 alone (no chain), key 1's signature is not accepted.
    alone = _keychain.trusted_keys_from([_pub_file(tmp_path, chain_keys[2], "k3.pub")])
    with pytest.raises(_signing.SignatureError, match="untrusted"):
        _signing.verify_trusted(alone, manifest, signature)


def test_forward_only_walk_does_not_reach_older_keys(key_dir, chain_keys):
    kd = _keychain.load_key_dir(key_dir)
    ids = _ids(chain_keys)
    forward = _keychain.walk_chain({ids[2]: chain_keys[2].public_key()}, kd.bundles, backward=False)
    assert sorted(forward) == [ids[2]]
    forward = _keychain.walk_chain({ids[1]: chain_keys[1].public_key()}, kd.bundles, backward=False)
    assert sorted(forward) == sorted(ids[1:])
    report = _keychain.walk_chain_report({ids[0]: chain_keys[0].public_key()}, kd.bundles)
    assert report.head_key_id == ids[2] and report.rejected == []
    assert report.positions == {ids[0]: [1], ids[1]: [2], ids[2]: [3]}


def test_key_dir_alone_is_trusted_from_its_genesis_key(key_dir, chain_keys):
    report = _keychain.trusted_keys_report([key_dir])
    assert sorted(report.trusted) == sorted(_ids(chain_keys))
    assert report.rejected == [] and report.problems == []


def test_anchor_outside_the_chain_trusts_nothing_from_it(tmp_path, key_dir, chain_keys):
    stranger = _signing.generate_signing_key("ed25519")
    trusted = _keychain.trusted_keys_from([_pub_file(tmp_path, stranger, "s.pub"), key_dir])
    assert sorted(trusted) == [_signing.key_id(stranger)]


def _report(chain_keys, bundles, anchor=0):
    key = chain_keys[anchor]
    return _keychain.walk_chain_report({_signing.key_id(key): key.public_key()}, bundles)


def _legit(key_dir):
    return _keychain.load_key_dir(key_dir).bundles


def test_bundle_signed_by_new_key_only_is_rejected(key_dir, chain_keys):
    new = _signing.generate_signing_key("ed25519")
    forged = _keychain.make_bundle(new, 4, chain_keys[2])
    forged["signatures"] = [s for s in forged["signatures"] if s["key_id"] == _signing.key_id(new)]
    report = _report(chain_keys, _legit(key_dir) + [forged])
    assert _signing.key_id(new) not in report.trusted
    assert report.head_key_id == _signing.key_id(chain_keys[2])
    [rej] = report.rejected
    assert rej["seq"] == 4 and "not signed by the previous key" in rej["reason"]


def test_bundle_signed_by_an_outside_key_is_rejected(key_dir, chain_keys):
    outsider = _signing.generate_signing_key("ed25519")
    new = _signing.generate_signing_key("ed25519")
    via_outsider = _keychain.make_bundle(new, 4, outsider)  # prev_key_id names the outsider
    relabelled = _keychain.make_bundle(new, 4, outsider)
    relabelled["prev_key_id"] = _signing.key_id(chain_keys[2])  # claims key 3 as predecessor ...
    body = _signing.canonical_json(_keychain.bundle_body(relabelled))
    sig_out = _signing.sign(outsider, body)
    sig_out["key_id"] = _signing.key_id(chain_keys[2])  # ... with the outsider's signature labelled as key 3's
    relabelled["signatures"] = [sig_out, _signing.sign(new, body)]
    for forged, reason in ((via_outsider, "outside the chain"), (relabelled, "not signed by the previous key")):
        report = _report(chain_keys, _legit(key_dir) + [forged], anchor=2)
        assert _signing.key_id(new) not in report.trusted
        assert _signing.key_id(outsider) not in report.trusted
        assert [r["seq"] for r in report.rejected] == [4] and reason in report.rejected[0]["reason"]


def test_seq_gap_is_rejected_even_when_properly_signed(key_dir, chain_keys):
    new = _signing.generate_signing_key("ed25519")
    gap = _keychain.make_bundle(new, 5, chain_keys[2])
    report = _report(chain_keys, _legit(key_dir) + [gap])
    assert _signing.key_id(new) not in report.trusted
    assert "gap" in report.rejected[0]["reason"]


def test_replayed_and_renumbered_bundles_are_rejected(key_dir, chain_keys):
    chain = os.path.join(key_dir, "chain")
    shutil.copy(os.path.join(chain, "000002.json"), os.path.join(chain, "000004.json"))
    kd = _keychain.load_key_dir(key_dir)
    assert any("000004.json" in p and "replayed" in p for p in kd.problems)
    assert [b["seq"] for b in kd.bundles] == [1, 2, 3]
    report = _report(chain_keys, kd.bundles)
    assert report.head_key_id == _signing.key_id(chain_keys[2])

    renumbered = json.loads(json.dumps(kd.bundles[1]))
    renumbered["seq"] = 4  # an old bundle replayed as the newest: its signatures no longer match
    report = _report(chain_keys, kd.bundles + [renumbered])
    assert report.head_key_id == _signing.key_id(chain_keys[2])
    assert report.rejected[0]["seq"] == 4 and "not validly signed" in report.rejected[0]["reason"]

    duplicate = json.loads(json.dumps(kd.bundles[1]))  # the same bundle twice: harmless
    report = _report(chain_keys, kd.bundles + [duplicate])
    assert report.rejected == [] and len(report.accepted) == 3


def test_copy_with_fewer_signatures_cannot_hide_the_real_bundle(key_dir, chain_keys):
    bundles = _legit(key_dir)
    stripped = json.loads(json.dumps(bundles[2]))
    stripped["signatures"] = stripped["signatures"][-1:]
    report = _report(chain_keys, [bundles[0], bundles[1], stripped, bundles[2]])
    assert report.head_key_id == _signing.key_id(chain_keys[2]) and report.rejected == []


def test_public_key_swapped_in_a_bundle_is_rejected(key_dir, chain_keys):
    bundles = _legit(key_dir)
    attacker = _signing.generate_signing_key("ed25519")
    tampered = json.loads(json.dumps(bundles[2]))
    tampered["public_key"] = _signing.public_key_pem(attacker).decode()
    report = _report(chain_keys, [bundles[0], bundles[1], tampered])
    assert _signing.key_id(attacker) not in report.trusted
    assert _signing.key_id(chain_keys[2]) not in report.trusted
    assert "is not the id of its public key" in report.rejected[0]["reason"]


def test_fork_cuts_the_chain(key_dir, chain_keys):
    a, b = _signing.generate_signing_key("ed25519"), _signing.generate_signing_key("ed25519")
    fork = [_keychain.make_bundle(a, 4, chain_keys[2]), _keychain.make_bundle(b, 4, chain_keys[2])]
    report = _report(chain_keys, _legit(key_dir) + fork)
    assert _signing.key_id(a) not in report.trusted and _signing.key_id(b) not in report.trusted
    assert report.head_key_id == _signing.key_id(chain_keys[2])
    assert len(report.rejected) == 2 and all("forks" in r["reason"] for r in report.rejected)


def test_rollback_bundle_reintroducing_an_old_key_keeps_every_key_trusted(key_dir, chain_keys):
    back = _keychain.make_bundle(chain_keys[1], 4, chain_keys[2])
    _keychain.write_bundle(key_dir, back)
    report = _keychain.trusted_keys_report([key_dir])
    assert sorted(report.trusted) == sorted(_ids(chain_keys)) and report.rejected == []
    walk = _report(chain_keys, _legit(key_dir), anchor=2)
    assert walk.head_key_id == _signing.key_id(chain_keys[1])
    assert walk.positions[_signing.key_id(chain_keys[1])] == [2, 4]
    signed_by_3 = _signing.sign(chain_keys[2], b"manifest")
    assert _signing.verify_trusted(report.trusted, b"manifest", signed_by_3) == _signing.key_id(chain_keys[2])


def test_write_bundle_never_replaces_a_different_bundle(key_dir, chain_keys):
    bundles = _legit(key_dir)
    assert _keychain.write_bundle(key_dir, bundles[1]).endswith("000002.json")  # identical: no-op
    other = _keychain.make_bundle(_signing.generate_signing_key("ed25519"), 2, chain_keys[0])
    with pytest.raises(_keychain.KeychainError, match="different bundle"):
        _keychain.write_bundle(key_dir, other)
    forged = dict(other, signatures=[])
    with pytest.raises(_signing.SignatureError, match="not validly signed"):
        _keychain.write_bundle(key_dir, forged)


def test_make_bundle_argument_checks(chain_keys):
    with pytest.raises(_keychain.KeychainError, match="self-signed only"):
        _keychain.make_bundle(chain_keys[1], 1, chain_keys[0])
    with pytest.raises(_keychain.KeychainError, match="old_private_key is required"):
        _keychain.make_bundle(chain_keys[1], 2)
    with pytest.raises(_keychain.KeychainError, match="integer"):
        _keychain.make_bundle(chain_keys[1], 0)


def test_bad_trust_paths_fail_clearly(tmp_path, key_dir):
    with pytest.raises(_keychain.KeychainError, match="does not exist"):
        _keychain.trusted_keys_from([str(tmp_path / "nope.pub")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(_keychain.KeychainError, match="holds no"):
        _keychain.trusted_keys_from([str(empty)])
    junk = tmp_path / "junk.pub"
    junk.write_text("junk")
    with pytest.raises(_signing.SignatureError, match="not a PEM public key"):
        _keychain.trusted_keys_from([str(junk)])
    with pytest.raises(_keychain.KeychainError, match="does not exist"):
        _keychain.load_key_dir(str(tmp_path / "missing"))


def test_corrupt_files_in_a_key_dir_are_reported_not_fatal(key_dir, chain_keys):
    with open(os.path.join(key_dir, "chain", "000003.json"), "wb") as handle:
        handle.write(b"{not json")
    with open(os.path.join(key_dir, "keys", "0" * 32 + ".pub"), "wb") as handle:
        handle.write(_signing.public_key_pem(chain_keys[0]))
    kd = _keychain.load_key_dir(key_dir)
    assert any("000003.json is unreadable" in p for p in kd.problems)
    assert any("does not match its key id" in p for p in kd.problems)
    report = _keychain.trusted_keys_report([key_dir])
    assert sorted(report.trusted) == sorted(_ids(chain_keys[:2]))


def test_directory_of_pub_files_is_a_set_of_anchors(tmp_path, chain_keys):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    for index, key in enumerate(chain_keys[:2]):
        (anchors / ("k%d.pub" % index)).write_bytes(_signing.public_key_pem(key))
    assert sorted(_keychain.trusted_keys_from([str(anchors)])) == sorted(_ids(chain_keys[:2]))


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        [],
        "bundle",
        {"type": "ransomeye-key-update"},
        {"type": "ransomeye-key-update", "seq": True, "key_id": "0" * 32},
        {"type": "ransomeye-key-update", "seq": 2, "key_id": "0" * 32, "prev_key_id": "1" * 32, "public_key": 5},
        {"type": "ransomeye-key-update", "seq": 1, "key_id": "x", "public_key": "-----BEGIN PUBLIC KEY-----\n"},
    ],
)
def test_hostile_bundles_are_rejected_with_a_reason(key_dir, chain_keys, hostile):
    report = _report(chain_keys, _legit(key_dir) + [hostile])
    assert report.head_key_id == _signing.key_id(chain_keys[2])
    assert len(report.rejected) == 1 and report.rejected[0]["reason"]


def test_hostile_bundle_files_are_reported(key_dir, chain_keys):
    chain = os.path.join(key_dir, "chain")
    with open(os.path.join(chain, "000004.json"), "w", encoding="utf-8") as handle:
        handle.write("[" * 100000 + "]" * 100000)
    bundle = json.loads(json.dumps(_legit(key_dir)[2]))
    bundle["seq"] = 5
    bundle["created"] = 1.5
    with open(os.path.join(chain, "000005.json"), "w", encoding="utf-8") as handle:
        json.dump(bundle, handle)
    kd = _keychain.load_key_dir(key_dir)
    assert any("000004.json is unreadable" in p for p in kd.problems)
    report = _keychain.trusted_keys_report([key_dir])
    assert sorted(report.trusted) == sorted(_ids(chain_keys))
    assert [r["seq"] for r in report.rejected] == [5] and "float" in report.rejected[0]["reason"]
