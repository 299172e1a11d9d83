"""A clock that goes backwards breaks neither ordering, retention nor max_age.

The previous backup is made to look as if it ran a day in the future (its manifest re-signed with the same,
trusted signing key): that is what the next run sees after the host clock jumped back a day.
"""
from __future__ import annotations

import json
import os
import time

from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    canonical_json, load_signing_private_key, sign)


def _future_date_manifest(path, signing_key, seconds):
    with open(path) as handle:
        body = json.load(handle)["manifest"]
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
    body["time"]["start"] = body["time"]["end"] = future
    key = load_signing_private_key(signing_key)
    with open(path, "wb") as handle:
        handle.write(canonical_json({"manifest": body, "signatures": [sign(key, canonical_json(body))]}))


def test_clock_going_backwards_keeps_seq_order_retention_and_max_age(dr_site, run_module_direct):
    site = dr_site
    args = dict(site["args"], components=["config"], keep_last=2)
    first = run_module_direct("ransomeye_backup", args)
    assert first["_rc"] == 0, first.get("msg")
    _future_date_manifest(first["manifest"], site["keys"]["signing_key"], 86400)

    # max_age must not trust a backup dated in the future: it backs up again
    second = run_module_direct("ransomeye_backup", dict(args, max_age="7d"))
    assert second["_rc"] == 0 and second["changed"] is True, second.get("msg")
    assert "future" in second["reason"]
    assert second["seq"] == 2 and second["clock_went_backwards"] is True
    third = run_module_direct("ransomeye_backup", args)
    assert third["seq"] == 3 and third["_rc"] == 0
    # retention keeps the two highest seqs, whatever their dates say
    assert third["pruned"]["manifests"] == [first["backup_id"]]
    assert sorted(os.listdir(os.path.join(site["repo"], "manifests"))) == ["00000002.json", "00000003.json"]
    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="full"))
    assert verify["_rc"] == 0 and verify["verified"] == [second["backup_id"], third["backup_id"]], verify.get("msg")
    # and with a sane newest backup, max_age skips
    fresh = run_module_direct("ransomeye_backup", dict(args, max_age="7d"))
    assert fresh["changed"] is False and fresh["up_to_date"] is True and fresh["seq"] == 3


def test_manifests_signed_by_a_rotated_key_verify_through_the_key_chain(dr_site, run_module_direct, tmp_path):
    site = dr_site
    key_dir = str(tmp_path / "signing")
    made = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519",
                                                                   state="initialized"))
    assert made["_rc"] == 0, made.get("msg")
    anchor = str(tmp_path / "anchor.pub")
    with open(os.path.join(key_dir, "active.pub"), "rb") as src, open(anchor, "wb") as dst:
        dst.write(src.read())  # the verifier's trust anchor: the first key only
    args = dict(site["args"], components=["config"], signing_key=key_dir)
    old = run_module_direct("ransomeye_backup", args)
    assert old["_rc"] == 0, old.get("msg")
    rotated = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=key_dir, key_type="ed25519",
                                                                      force=True))
    assert rotated["_rc"] == 0 and rotated["changed"] is True, rotated.get("msg")
    new = run_module_direct("ransomeye_backup", args)
    assert new["_rc"] == 0, new.get("msg")
    verify = run_module_direct("ransomeye_backup_verify", dict(repo=site["repo"], backup="all",
                                                               trusted_keys=[key_dir, anchor]))
    assert verify["_rc"] == 0 and verify["verified"] == [old["backup_id"], new["backup_id"]], verify.get("msg")
    signers = [b["signer"] for b in verify["backups"]]
    assert signers[0] != signers[1]
    # the first key alone, without the chain, trusts only the old backup
    partial = run_module_direct("ransomeye_backup_verify", dict(repo=site["repo"], backup="all",
                                                                trusted_keys=[anchor], fail_on_problems=False))
    assert partial["verified"] == [old["backup_id"]]
    assert partial["problems"][0]["object"] == "manifest:00000002.json"
