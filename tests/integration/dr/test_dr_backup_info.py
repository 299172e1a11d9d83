"""ransomeye_backup_info: lists backups from the manifests alone (no secret), with verification state."""
from __future__ import annotations

import json
import os

from tests.integration.dr.trust_helpers import backup, make_site


def test_backup_info_lists_backups_and_flags_planted_ones(tmp_path, run_module_direct, run_playbook):
    site = make_site(str(tmp_path))
    anchor = str(tmp_path / "anchor.json")
    first = backup(site, anchor=anchor)
    second = backup(site, anchor=anchor)
    with open(os.path.join(site["repo"], "manifests", "00000009.json"), "w") as handle:
        handle.write("planted")
    # no key_file, no private key: it never decrypts; check mode is the same
    info = run_module_direct("ransomeye_backup_info", dict(repo=site["repo"], trusted_keys=[site["signing_pub"]],
                                                           anchor=anchor), check=True)
    assert info["_rc"] == 0, info.get("msg")
    assert [b["backup_id"] for b in info["backups"]] == [first["backup_id"], second["backup_id"]]
    row = info["backups"][1]
    assert row["verified"] is True and row["seq"] == 2 and row["components"] == ["artifacts", "config"]
    assert row["signer"] == json.load(open(second["manifest"]))["manifest"]["signer"]
    assert row["stored_size"] > row["size"] > 0 and row["rows"] is None
    assert info["latest"] == second["backup_id"] and info["count"] == 2
    assert [p["object"] for p in info["problems"]] == ["manifest:00000009.json"]
    latest = run_module_direct("ransomeye_backup_info", dict(repo=site["repo"], trusted_keys=[site["signing_pub"]],
                                                             backup="latest"))
    assert [b["seq"] for b in latest["backups"]] == [2]
    # rolled back: the newest deleted -> nothing counts as verified, the anchor is named
    os.unlink(second["manifest"])
    info = run_module_direct("ransomeye_backup_info", dict(repo=site["repo"], trusted_keys=[site["signing_pub"]],
                                                           anchor=anchor))
    assert info["latest"] is None and info["backups"][0]["verified"] is False
    assert info["problems"][0]["reason"] == "rolled back"
    missing = run_module_direct("ransomeye_backup_info", dict(repo=site["repo"], trusted_keys=[site["signing_pub"]],
                                                              backup="00000042"))
    assert missing["_rc"] != 0 and "not found" in missing["msg"]


def test_list_backups_playbook_prints_each_backup(tmp_path, run_playbook):
    from tests.harness.paths import REPO
    site = make_site(str(tmp_path))
    made = backup(site)
    run = run_playbook(os.path.join(REPO, "playbooks", "list_backups.yml"), check=True, extra_vars=dict(
        ransomeye_hosts="localhost", ransomeye_backup_repo=site["repo"], list_backups_trusted_keys=[site["signing_pub"]]))
    assert run.rc == 0, run.stdout[-3000:]
    lines = run.task("Show the backups")["result"]["msg"]
    assert lines[0].startswith(made["backup_id"] + " seq=1 ") and "verified=True" in lines[0], lines
