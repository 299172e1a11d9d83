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
    # format v2 (the default): the tar stream is a stream in packs, deduplicated (docs/BACKUP_FORMAT.md 5.12)
    assert phys["layout"] == "stream-v2" and "object" not in phys and phys["size"] > 1 << 20
    packs = [oid for oid, rec in body["objects"].items() if rec["kind"] == "pack"]
    assert packs
    for oid in packs:
        with open(os.path.join(site.repo, "objects", oid[:2], oid), "rb") as handle:
            head = handle.read(1 << 16)
        assert head.startswith(b"RYECNTR\n") and b"PG_VERSION" not in head  # never plaintext on disk
    # WAL older than the only base backup is useless and was pruned; everything from its start stays
    assert old < phys["start_wal"] and old not in site.chain_names()
    assert phys["start_wal"] in site.chain_names()
    verify_args = dict(repo=site.repo, trusted_keys=site.trusted, level="full", **site.decrypt)
    verify = run_module_direct("ransomeye_backup_verify", verify_args)
    assert verify["_rc"] == 0, verify.get("msg")
    assert verify["verified"] == [result["backup_id"]]

    # a second base backup of the barely changed cluster stores a fraction of the first
    site.pg.execute("UPDATE t SET g = -g WHERE g <= 20")
    second = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"]))
    assert second["_rc"] == 0, second.get("msg")
    first_stats, second_stats = result["stats"]["physical"], second["stats"]["physical"]
    assert second_stats["bytes_read"] >= 0.9 * first_stats["bytes_read"]
    assert second_stats["bytes_stored"] < 0.25 * first_stats["bytes_stored"], (first_stats, second_stats)
    # the v1 layout (one object per base backup) is still written on request and verifies next to v2
    v1 = run_module_direct("ransomeye_backup", dict(site.backup_args, components=["physical"], format="v1"))
    assert v1["_rc"] == 0, v1.get("msg")
    v1_phys = json.load(open(v1["manifest"]))["manifest"]["components"]["physical"]
    assert json.load(open(v1["manifest"]))["manifest"]["objects"][v1_phys["object"]]["kind"] == "physical"
    verify = run_module_direct("ransomeye_backup_verify", dict(verify_args, backup="all"))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    assert verify["verified"] == [result["backup_id"], second["backup_id"], v1["backup_id"]]
