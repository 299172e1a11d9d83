"""ransomeye_rotate_signing_keys: real keys on disk, the key-update chain walked by _keychain."""
from __future__ import annotations

import json
import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain as kc
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    SignatureError, canonical_json, generate_signing_key, key_id, load_signing_private_key,
    load_signing_public_key, sign, verify_trusted)
from tests.integration.keys.conftest import failed


def _rotate(run_module_direct, key_dir, **extra):
    args = dict(key_dir=key_dir, key_type="ed25519")
    if not os.path.isdir(os.path.join(key_dir, "chain")) and not os.path.exists(os.path.join(key_dir, "active.key")):
        args["state"] = "initialized"  # the genesis key is created only on purpose
    args.update(extra)
    result = run_module_direct("ransomeye_rotate_signing_keys", args)
    assert not failed(result), result
    return result


def _files(key_dir):
    out = {}
    for root, dummy, files in os.walk(key_dir):
        for name in files:
            path = os.path.join(root, name)
            out[path] = open(path, "rb").read()
    return out


def _sign_manifest(key_dir, text):
    key = load_signing_private_key(os.path.join(key_dir, "active.key"))
    data = canonical_json({"manifest": text})
    return data, sign(key, data)


def test_signing_keys_four_step_idempotence_with_default_rsa4096(tmp_path, run_module):
    key_dir = str(tmp_path / "signing")
    check = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, state="initialized"), check=True)
    assert check["changed"] is True and not os.path.exists(key_dir), check
    applied = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, state="initialized"))
    assert applied["changed"] is True and applied["key_type"] == "rsa4096", applied
    assert applied["old_key_id"] is None and applied["new_key_id"]
    pub = load_signing_public_key(os.path.join(key_dir, "active.pub"))
    assert pub.key_size == 4096 and key_id(pub) == applied["new_key_id"]
    assert oct(os.stat(os.path.join(key_dir, "active.key")).st_mode & 0o777) == "0o600"
    again_check = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir), check=True)
    assert again_check["changed"] is False, again_check
    again = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir))
    assert again["changed"] is False and again["new_key_id"] == applied["new_key_id"]
    for result in (check, applied, again_check, again):
        assert "PRIVATE KEY" not in result["_stdout"]


def test_rotation_writes_double_signed_bundle_and_archives_old_key(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    second = _rotate(run_module_direct, key_dir, force=True)
    assert second["changed"] is True and second["old_key_id"] == first["new_key_id"]
    assert second["seq"] == 2 and second["bundle"] == os.path.join(key_dir, "chain", "000002.json")
    bundle = json.load(open(second["bundle"]))
    assert bundle["prev_key_id"] == first["new_key_id"] and bundle["key_id"] == second["new_key_id"]
    assert [s["key_id"] for s in bundle["signatures"]] == [first["new_key_id"], second["new_key_id"]]
    archived = os.path.join(key_dir, "archive", first["new_key_id"] + ".key")
    assert oct(os.stat(archived).st_mode & 0o777) == "0o600"
    assert key_id(load_signing_private_key(archived)) == first["new_key_id"]
    state = json.load(open(os.path.join(key_dir, "state.json")))
    assert state["active_key_id"] == second["new_key_id"] and state["seq"] == 2
    assert not os.path.exists(os.path.join(key_dir, "pending.key"))


def test_max_age_controls_rotation(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    _rotate(run_module_direct, key_dir)
    young = _rotate(run_module_direct, key_dir, max_age="30d")
    assert young["changed"] is False and "max_age not reached" in young["reason"]
    old = _rotate(run_module_direct, key_dir, max_age="0s")
    assert old["changed"] is True and old["seq"] == 2


def test_manifest_signed_with_first_key_verifies_through_chain_after_two_rotations(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    data, signature = _sign_manifest(key_dir, "backup 1")
    anchor = str(tmp_path / "anchor.pub")
    with open(anchor, "wb") as handle:
        handle.write(open(os.path.join(key_dir, "active.pub"), "rb").read())
    _rotate(run_module_direct, key_dir, force=True)
    third = _rotate(run_module_direct, key_dir, force=True)
    data3, signature3 = _sign_manifest(key_dir, "backup 3")
    # A verifier pinned to today's key walks back to the first key...
    today = str(tmp_path / "today.pub")
    with open(today, "wb") as handle:
        handle.write(open(os.path.join(key_dir, "active.pub"), "rb").read())
    trusted = kc.trusted_keys_from([today, key_dir])
    assert verify_trusted(trusted, data, signature) == first["new_key_id"]
    # ... and one pinned to the first key walks forward to today's.
    trusted_old = kc.trusted_keys_from([anchor, key_dir])
    assert verify_trusted(trusted_old, data3, signature3) == third["new_key_id"]
    assert len(trusted_old) == 3


def test_forged_bundles_are_rejected(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    second = _rotate(run_module_direct, key_dir, force=True)
    anchors = {first["new_key_id"]: load_signing_public_key(os.path.join(key_dir, "keys", first["new_key_id"] + ".pub"))}
    bundles = kc.load_key_dir(key_dir).bundles
    current = load_signing_private_key(os.path.join(key_dir, "active.key"))
    attacker = generate_signing_key("ed25519")
    outsider = generate_signing_key("ed25519")
    # Signed by the new key only: a forged bundle claiming to follow the current key.
    only_new = kc.make_bundle(attacker, 3, old_private_key=current)
    only_new["signatures"] = [s for s in only_new["signatures"] if s["key_id"] == key_id(attacker)]
    report = kc.walk_chain_report(anchors, bundles + [only_new])
    assert key_id(attacker) not in report.trusted
    assert any(r["seq"] == 3 and "not signed by the previous key" in r["reason"] for r in report.rejected)
    # Signed by a key outside the chain.
    outside = kc.make_bundle(attacker, 3, old_private_key=outsider)
    report = kc.walk_chain_report(anchors, bundles + [outside])
    assert key_id(attacker) not in report.trusted and report.rejected
    assert set(report.trusted) == {first["new_key_id"], second["new_key_id"]}
    # Dropped into the key directory, the forgery is still not trusted.
    with open(os.path.join(key_dir, "chain", "000003.json"), "wb") as handle:
        handle.write(canonical_json(only_new))
    trusted = kc.trusted_keys_from([os.path.join(key_dir, "keys", first["new_key_id"] + ".pub"), key_dir])
    assert key_id(attacker) not in trusted
    data = canonical_json({"manifest": "evil"})
    with pytest.raises(SignatureError):
        verify_trusted(trusted, data, sign(attacker, data))


def test_rollback_reactivates_previous_key_and_keeps_rolled_back_signatures_valid(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    anchor = os.path.join(key_dir, "keys", first["new_key_id"] + ".pub")
    second = _rotate(run_module_direct, key_dir, force=True)
    data_b, sig_b = _sign_manifest(key_dir, "signed by the key that will be rolled back")

    check = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, state="rolled_back"), check=True)
    assert check["changed"] is True and check["new_key_id"] == first["new_key_id"]
    rolled = _rotate(run_module_direct, key_dir, state="rolled_back")
    assert rolled["changed"] is True, rolled
    assert (rolled["old_key_id"], rolled["new_key_id"]) == (second["new_key_id"], first["new_key_id"])
    assert key_id(load_signing_private_key(os.path.join(key_dir, "active.key"))) == first["new_key_id"]
    bundle = json.load(open(rolled["bundle"]))
    assert bundle["seq"] == 3 and [s["key_id"] for s in bundle["signatures"]] == [second["new_key_id"], first["new_key_id"]]
    # Idempotent.
    again = _rotate(run_module_direct, key_dir, state="rolled_back")
    assert again["changed"] is False
    again_check = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, state="rolled_back"),
                                    check=True)
    assert again_check["changed"] is False
    # What the rolled-back key signed still verifies, from the first key and from today's key.
    data_a, sig_a = _sign_manifest(key_dir, "signed after the rollback")
    for pin in (anchor, os.path.join(key_dir, "active.pub")):
        trusted = kc.trusted_keys_from([pin, key_dir])
        assert verify_trusted(trusted, data_b, sig_b) == second["new_key_id"]
        assert verify_trusted(trusted, data_a, sig_a) == first["new_key_id"]
    assert kc.walk_chain_report({first["new_key_id"]: load_signing_public_key(anchor)},
                                kc.load_key_dir(key_dir).bundles).rejected == []
    # A later rotation continues the chain from the reactivated key.
    fourth = _rotate(run_module_direct, key_dir, force=True)
    assert fourth["seq"] == 4 and fourth["old_key_id"] == first["new_key_id"]


def test_interrupted_rotation_is_completed_by_next_run(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    # Simulate a crash right after the commit point (bundle written, active.key not yet replaced).
    from ansible_collections.ransomeye.ops.plugins.module_utils import _signing_rotation as sr
    old = load_signing_private_key(os.path.join(key_dir, "active.key"))
    new = generate_signing_key("ed25519")
    sr._write_private(os.path.join(key_dir, sr.PENDING_KEY), new)
    sr._archive(key_dir, old)
    sr._write_public(key_dir, new)
    kc.write_bundle(key_dir, kc.make_bundle(new, 2, old_private_key=old))
    check = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519"), check=True)
    assert check["changed"] is True and "interrupted" in check["recovered"]
    result = _rotate(run_module_direct, key_dir)
    assert result["changed"] is True and "completed the interrupted rotation" in result["recovered"], result
    assert key_id(load_signing_private_key(os.path.join(key_dir, "active.key"))) == key_id(new)
    assert json.load(open(os.path.join(key_dir, "state.json")))["active_key_id"] == key_id(new)
    assert not os.path.exists(os.path.join(key_dir, "pending.key"))
    assert first["new_key_id"] != key_id(new)
    assert _rotate(run_module_direct, key_dir)["changed"] is False


def test_bad_input_rollback_without_previous_key_and_foreign_dir(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    _rotate(run_module_direct, key_dir)
    before = _files(key_dir)
    result = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, state="rolled_back"))
    assert failed(result) and "no previous key to roll back to" in result["msg"], result
    assert _files(key_dir) == before
    not_dir = str(tmp_path / "file")
    open(not_dir, "w").close()
    bad = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=not_dir))
    assert failed(bad) and "is not a directory" in bad["msg"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "active.key").write_text("junk")
    bad2 = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=str(foreign)))
    assert failed(bad2) and "is not a PEM private key" in bad2["msg"], bad2
    assert sorted(os.listdir(foreign)) == [".rotation.lock", "active.key"]
    for r in (result, bad, bad2):
        assert "Traceback" not in r["_stderr"]


@pytest.mark.parametrize("state,step", [("rotated", "pending"), ("rotated", "bundle"), ("rotated", "active_key"),
                                        ("rolled_back", "bundle"), ("rolled_back", "active_key")])
def test_killed_rotation_is_finished_or_dropped_by_next_run(tmp_path, run_module_direct, step, state):
    key_dir = str(tmp_path / "signing")
    first = _rotate(run_module_direct, key_dir)
    anchor = os.path.join(key_dir, "keys", first["new_key_id"] + ".pub")
    second = _rotate(run_module_direct, key_dir, force=True)
    data, signature = _sign_manifest(key_dir, "signed before the crash")
    with pytest.raises(AssertionError, match=r"rc -9"):
        run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519", force=True,
                                                                state=state), env={"RANSOMEYE_TEST_KILL_AT": step})
    after = _rotate(run_module_direct, key_dir, state=state)
    committed = step != "pending"
    assert after["changed"] is True
    if committed:
        assert "completed the interrupted rotation" in after.get("recovered", ""), after
    active = load_signing_private_key(os.path.join(key_dir, "active.key"))
    state_json = json.load(open(os.path.join(key_dir, "state.json")))
    head = max(kc.load_key_dir(key_dir).bundles, key=lambda b: b["seq"])
    assert key_id(active) == state_json["active_key_id"] == head["key_id"]
    assert key_id(load_signing_public_key(os.path.join(key_dir, "active.pub"))) == key_id(active)
    assert not os.path.exists(os.path.join(key_dir, "pending.key"))
    if state == "rolled_back":
        assert key_id(active) == first["new_key_id"] and head["seq"] == 3
        assert _rotate(run_module_direct, key_dir, state="rolled_back")["changed"] is False
    trusted = kc.trusted_keys_from([anchor, key_dir])
    assert verify_trusted(trusted, data, signature) == second["new_key_id"]
    assert kc.walk_chain_report({first["new_key_id"]: load_signing_public_key(anchor)},
                                kc.load_key_dir(key_dir).bundles).rejected == []


def test_existing_active_key_without_chain_is_adopted_as_genesis(tmp_path, run_module_direct):
    from ansible_collections.ransomeye.ops.plugins.module_utils._signing import private_key_pem
    key_dir = tmp_path / "legacy"
    key_dir.mkdir()
    legacy = generate_signing_key("ed25519")
    (key_dir / "active.key").write_bytes(private_key_pem(legacy))
    os.chmod(str(key_dir / "active.key"), 0o600)
    data = canonical_json({"manifest": "signed by the legacy key"})
    signature = sign(legacy, data)
    old = __import__("time").time() - 200 * 86400
    os.utime(str(key_dir / "active.key"), (old, old))
    check = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=str(key_dir), key_type="ed25519"),
                              check=True)
    assert check["changed"] is True and check["old_key_id"] == key_id(legacy), check
    assert sorted(os.listdir(key_dir)) == ["active.key"]
    result = _rotate(run_module_direct, str(key_dir))
    assert "adopted the existing active.key" in result["recovered"]
    assert result["old_key_id"] == key_id(legacy) and result["seq"] == 2, result  # 200 days > 90d: rotated
    trusted = kc.trusted_keys_from([str(key_dir / "active.pub"), str(key_dir)])
    assert verify_trusted(trusted, data, signature) == key_id(legacy)
    assert _rotate(run_module_direct, str(key_dir))["changed"] is False


def test_diff_names_the_active_key_before_and_after(tmp_path, run_module):
    key_dir = str(tmp_path / "signing")
    first = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519", state="initialized"),
                       diff=True)
    assert first["diff"]["before"]["active_key_id"] is None
    assert first["diff"]["after"]["active_key_id"] == first["new_key_id"]
    planned = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519", force=True),
                         check=True, diff=True)
    assert planned["diff"]["before"]["active_key_id"] == first["new_key_id"]
    second = run_module("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519", force=True),
                        diff=True)
    assert second["diff"] == {"before": {"active_key_id": first["new_key_id"]},
                              "after": {"active_key_id": second["new_key_id"]}}
    assert "PRIVATE KEY" not in second["_stdout"]
