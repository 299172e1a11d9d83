"""The physical component: a base backup streamed into the repository, verified, and WAL retention."""
from __future__ import annotations

import json
import os

from tests.harness.ansible_runner import run_module_direct


def test_base_backup_recorded_and_verified(pitr_site):
    site = pitr_site
    refused = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
    assert refused["_rc"] != 0 and "ransomeye_wal_archive first" in refused["msg"], refused.get("msg")
    assert not os.path.isdir(os.path.join(site.repo, "manifests")) or not os.listdir(
        os.path.join(site.repo, "manifests"))
    site.enable()
    site.pg.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g")
    old = site.switch_and_wait()
    result = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
    assert result["_rc"] == 0, result.get("msg")
    body = json.load(open(result["manifest"]))["manifest"]
    phys = body["components"]["physical"]
    assert phys["timeline"] == 1 and phys["system_identifier"] == site.pg.execute(
        "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert phys["start_lsn"] <= phys["end_lsn"] or len(phys["start_lsn"]) < len(phys["end_lsn"])
    assert phys["end_wal"] in site.chain_names()
    obj = body["objects"][phys["object"]]
    assert obj["kind"] == "physical" and obj["plaintext_size"] > 1 << 20
    stored = os.path.join(site.repo, "objects", phys["object"][:2], phys["object"])
    with open(stored, "rb") as handle:
        head = handle.read(1 << 16)
    assert head.startswith(b"RYECNTR\n") and b"PG_VERSION" not in head  # never plaintext on disk
    # WAL older than the only base backup is useless and was pruned; everything from its start stays
    assert old < phys["start_wal"] and old not in site.chain_names()
    assert phys["start_wal"] in site.chain_names()
    verify_args = dict(repo=site.repo, trusted_keys=site.trusted, level="full", **site.decrypt)
    verify = run_module_direct("ransomeye_backup_verify", verify_args)
    assert verify["_rc"] == 0, verify.get("msg")
    assert verify["verified"] == [result["backup_id"]]
