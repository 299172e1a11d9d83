"""Backup -> disaster -> restore brings back every row, every byte, mode and link; rollback is one rename."""
from __future__ import annotations

import os
import shutil

from tests.integration.dr.conftest import table_rows, tree_state


def _restore_args(site, **extra):
    args = dict(site["pg"].conn_params(), repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]],
                private_key=site["keys"]["recipient_key"], db=site["db"])
    args.update(extra)
    return args


def test_round_trip_all_components_in_place_after_total_loss(dr_site, run_module_direct):
    site = dr_site
    rows_before = table_rows(site["pg"], site["db"])
    config_before = tree_state(site["config"])
    artifacts_before = tree_state(site["artifacts"])

    backup = run_module_direct("ransomeye_backup", site["args"])
    assert backup["_rc"] == 0, backup.get("msg")
    assert backup["changed"] is True and backup["seq"] == 1
    assert backup["tables"] == site["counts"]
    assert os.path.isfile(backup["manifest"])

    # the disaster
    site["pg"].execute('DROP DATABASE "%s" WITH (FORCE)' % site["db"])
    shutil.rmtree(site["config"])
    shutil.rmtree(site["artifacts"])

    restore = run_module_direct("ransomeye_restore", _restore_args(site))
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["changed"] is True
    assert restore["backup_id"] == backup["backup_id"]
    assert restore["previous_db"] is None  # nothing was left to keep
    assert restore["tables"] == site["counts"] == restore["manifest_tables"]
    assert table_rows(site["pg"], site["db"]) == rows_before
    assert tree_state(site["config"]) == config_before
    assert tree_state(site["artifacts"]) == artifacts_before
    # the returned hashes are the manifest's and match the restored files
    regular = {k: v for k, v in artifacts_before.items() if v[0] == "file"}
    for rel, (_kind, _mode, digest) in regular.items():
        assert restore["files"][os.path.join(site["artifacts"], rel)] == digest
    assert restore["links"][os.path.join(site["config"], "current.crt")] == "tls/server.crt"

    again = run_module_direct("ransomeye_restore", _restore_args(site))
    assert again["_rc"] == 0 and again["changed"] is False, again.get("msg")
    assert again["stats"]["artifacts"]["files_unchanged"] == len(regular)


def test_restore_keeps_previous_database_and_rollback_swaps_back(dr_site, run_module_direct):
    site = dr_site
    pg = site["pg"]
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["database"]))
    assert backup["_rc"] == 0, backup.get("msg")
    pg.execute("DELETE FROM forensics.artifact_index WHERE alert_id % 2 = 0; "
               "UPDATE public.alerts SET summary = 'encrypted by ransomware'", dbname=site["db"])
    damaged = table_rows(pg, site["db"])

    restore = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"]))
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["previous_db"].endswith("_pre_restore_1")  # long names are cut and hashed to fit 63 bytes
    assert table_rows(pg, restore["previous_db"]) == damaged
    assert restore["tables"] == site["counts"]

    rollback = run_module_direct("ransomeye_restore", dict(pg.conn_params(), repo=site["repo"], db=site["db"],
                                                           state="rolled_back"))
    assert rollback["_rc"] == 0 and rollback["changed"] is True, rollback.get("msg")
    assert table_rows(pg, site["db"]) == damaged
    names = {r[0] for r in pg.execute("SELECT datname FROM pg_database")}
    assert restore["previous_db"] not in names

    again = run_module_direct("ransomeye_restore", dict(pg.conn_params(), repo=site["repo"], db=site["db"],
                                                        state="rolled_back"))
    assert again["_rc"] == 0 and again["changed"] is False, again.get("msg")


def test_aes_mode_round_trip_under_dest(dr_site, run_module_direct, tmp_path):
    site = dr_site
    args = dict(site["args"], mode="aes", key_file=site["keys"]["aes_key"], recipients=None,
                components=["config", "artifacts"], repo=str(tmp_path / "aes-repo"))
    backup = run_module_direct("ransomeye_backup", args)
    assert backup["_rc"] == 0, backup.get("msg")
    verify = run_module_direct("ransomeye_backup_verify", dict(repo=args["repo"], level="full",
                                                               trusted_keys=[site["keys"]["signing_pub"]],
                                                               key_file=site["keys"]["aes_key"]))
    assert verify["_rc"] == 0 and verify["verified"] == [backup["backup_id"]], verify.get("msg")
    dest = str(tmp_path / "scratch")
    restore = run_module_direct("ransomeye_restore", dict(repo=args["repo"], key_file=site["keys"]["aes_key"],
                                                          trusted_keys=[site["keys"]["signing_pub"]], dest=dest))
    assert restore["_rc"] == 0, restore.get("msg")
    assert tree_state(dest + site["artifacts"]) == tree_state(site["artifacts"])
    assert tree_state(dest + site["config"]) == tree_state(site["config"])


def test_restore_is_idempotent_through_ansible_with_check_mode(dr_site, run_module_direct, run_module, tmp_path):
    site = dr_site
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["config", "artifacts"]))
    assert backup["_rc"] == 0, backup.get("msg")
    dest = str(tmp_path / "dest")
    args = dict(repo=site["repo"], private_key=site["keys"]["recipient_key"],
                trusted_keys=[site["keys"]["signing_pub"]], dest=dest)
    check1 = run_module("ransomeye_restore", args, check=True)
    assert check1["_rc"] == 0 and check1["changed"] is True, check1.get("msg")
    assert not os.path.exists(dest)
    apply1 = run_module("ransomeye_restore", args)
    assert apply1["_rc"] == 0 and apply1["changed"] is True, apply1.get("msg")
    check2 = run_module("ransomeye_restore", args, check=True)
    assert check2["_rc"] == 0 and check2["changed"] is False, check2.get("msg")
    apply2 = run_module("ransomeye_restore", args)
    assert apply2["_rc"] == 0 and apply2["changed"] is False, apply2.get("msg")
    # one changed byte makes exactly that file change again
    victim = dest + os.path.join(site["artifacts"], "case-05", "sample-0005.bin")
    with open(victim, "ab") as handle:
        handle.write(b"!")
    apply3 = run_module("ransomeye_restore", args)
    assert apply3["changed"] is True and apply3["stats"]["artifacts"]["files_restored"] == 1


def test_backup_max_age_is_idempotent_through_ansible(dr_site, run_module):
    site = dr_site
    args = dict(site["args"], components=["config", "artifacts"], max_age="1h")
    check1 = run_module("ransomeye_backup", args, check=True)
    assert check1["_rc"] == 0 and check1["changed"] is True, check1.get("msg")
    assert not os.path.exists(site["repo"])
    apply1 = run_module("ransomeye_backup", args)
    assert apply1["_rc"] == 0 and apply1["changed"] is True, apply1.get("msg")
    check2 = run_module("ransomeye_backup", args, check=True)
    assert check2["changed"] is False and check2["up_to_date"] is True
    apply2 = run_module("ransomeye_backup", args)
    assert apply2["changed"] is False and apply2["backup_id"] == apply1["backup_id"]
    assert len(os.listdir(os.path.join(site["repo"], "manifests"))) == 1
    # the password never reaches the controller output
    assert site["pg"].password not in apply1["_stdout"]


def test_parallel_pg_restore_stages_in_a_private_dir_and_removes_it(dr_site, run_module_direct, tmp_path):
    site = dr_site
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["database"]))
    assert backup["_rc"] == 0, backup.get("msg")
    staging = tmp_path / "staging"
    staging.mkdir()
    restore = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"], jobs=2,
                                                                   staging_dir=str(staging)))
    assert restore["_rc"] == 0, restore.get("msg")
    assert restore["tables"] == site["counts"]
    assert os.listdir(staging) == []  # the decrypted dump was staged and removed
    # a restore that fails (here: its staging parent does not exist) leaves the current database as it was
    # and no half-restored database behind
    site["pg"].execute("DELETE FROM forensics.artifact_index WHERE alert_id % 3 = 0", dbname=site["db"])
    rows = table_rows(site["pg"], site["db"])
    bad = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"], jobs=2,
                                                               staging_dir=str(staging / "missing")))
    assert bad["_rc"] != 0 and bad["failed"] is True and "missing" in bad["msg"]
    assert table_rows(site["pg"], site["db"]) == rows
    names = [r[0] for r in site["pg"].execute("SELECT datname FROM pg_database")]
    assert not [n for n in names if "_restoring_" in n]


def test_restore_again_after_rows_were_rewritten_in_place_is_not_skipped(dr_site, run_module_direct):
    """Same row counts are not "unchanged": ransomware that rewrites rows in place must not fool the check."""
    site = dr_site
    pg = site["pg"]
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["database"]))
    assert backup["_rc"] == 0, backup.get("msg")
    first = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"]))
    assert first["_rc"] == 0 and first["changed"] is True, first.get("msg")
    same = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"]))
    assert same["changed"] is False and same["stats"]["database"]["unchanged"] is True
    pg.execute("UPDATE public.alerts SET summary = 'encrypted by ransomware'", dbname=site["db"])
    # The counts alone cannot tell.
    assert pg.execute("SELECT count(*) FROM public.alerts", dbname=site["db"])[0][0] == site["counts"]["public.alerts"]
    again = run_module_direct("ransomeye_restore", _restore_args(site, components=["database"]))
    assert again["_rc"] == 0 and again["changed"] is True, again.get("msg")
    assert again["stats"]["database"]["unchanged"] is False
    summaries = pg.execute("SELECT count(*) FROM public.alerts WHERE summary = 'encrypted by ransomware'",
                           dbname=site["db"])
    assert summaries[0][0] == 0
