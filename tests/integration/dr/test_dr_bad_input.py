"""Bad input gives a clear failure (failed: true, a msg naming the problem), never a traceback."""
from __future__ import annotations

import os

import pytest


def _failed(result, *words):
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert "Traceback" not in result.get("msg", "") and "Traceback" not in result.get("_stderr", "")
    for word in words:
        assert word in result["msg"], result["msg"]


def test_wrong_private_key_fails_restore_and_full_verify_clearly(dr_site, run_module_direct, tmp_path):
    site = dr_site
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["config"]))["_rc"] == 0
    restore = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["other_recipient_key"],
        dest=str(tmp_path / "dest")))
    _failed(restore, "cannot decrypt")
    assert not os.path.exists(tmp_path / "dest")
    verify = run_module_direct("ransomeye_backup_verify", dict(
        repo=site["repo"], level="full", trusted_keys=[site["keys"]["signing_pub"]],
        private_key=site["keys"]["other_recipient_key"]))
    _failed(verify, "decryption failed")
    assert verify["problems"] and all(p["object"] != "-" for p in verify["problems"])
    # an aes key for an rsa backup is named as such
    aes = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], key_file=site["keys"]["aes_key"],
        dest=str(tmp_path / "dest")))
    _failed(aes, "give private_key")


def test_wrong_aes_key_file_fails_clearly(dr_site, run_module_direct, tmp_path):
    site = dr_site
    args = dict(site["args"], mode="aes", key_file=site["keys"]["aes_key"], recipients=None, components=["config"])
    assert run_module_direct("ransomeye_backup", args)["_rc"] == 0
    restore = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], key_file=site["keys"]["other_aes_key"],
        dest=str(tmp_path / "dest")))
    _failed(restore, "cannot decrypt")


def test_a_relative_dest_is_refused_before_anything_is_read_or_written(dr_site, run_module_direct, tmp_path):
    """A typo like dest: restore/ would otherwise restore under whatever directory the module runs in."""
    site = dr_site
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["config"]))["_rc"] == 0
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    restore = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        components=["config"], dest="restore-here"), cwd=str(cwd))
    _failed(restore, "dest must be an absolute path", "restore-here")
    assert os.listdir(cwd) == []


@pytest.mark.parametrize("where", ["repo inside a root", "root inside repo", "cache inside a root"])
def test_a_repository_or_cache_inside_a_backed_up_path_is_refused_before_anything_is_written(
        dr_site, run_module_direct, tmp_path, where):
    """artifact_paths: [/srv/ransomeye] with repo: /srv/ransomeye/backup would store the repository inside
    itself, a little more each night (and a cache there would put the host key into the repository)."""
    site = dr_site
    parent = tmp_path / "srv"
    (parent / "evidence").mkdir(parents=True)
    (parent / "evidence" / "e1.json").write_text("{}")
    args = dict(site["args"], components=["artifacts"], artifact_paths=[str(parent)], repo=str(tmp_path / "repo"),
                cache_dir=str(tmp_path / "cache"))
    if where == "repo inside a root":
        args["repo"] = str(parent / "backup")
    elif where == "root inside repo":
        (tmp_path / "repo" / "objects").mkdir(parents=True)
        args["artifact_paths"] = [str(tmp_path / "repo" / "objects")]
    else:
        args["cache_dir"] = str(parent / "cache")
    result = run_module_direct("ransomeye_backup", args)
    _failed(result, "inside")
    assert not os.path.exists(parent / "backup") and not os.path.exists(parent / "cache")
    assert not os.path.exists(tmp_path / "repo" / "manifests")


@pytest.mark.parametrize("module", ["ransomeye_backup_verify", "ransomeye_restore"])
def test_missing_repository(dr_site, run_module_direct, module, tmp_path):
    site = dr_site
    result = run_module_direct(module, dict(repo=str(tmp_path / "nope"), trusted_keys=[site["keys"]["signing_pub"]],
                                            private_key=site["keys"]["recipient_key"]))
    _failed(result, "does not exist", str(tmp_path / "nope"))


def test_unreadable_or_missing_paths_fail_before_anything_is_written(dr_site, run_module_direct, tmp_path):
    site = dr_site
    # the tests run as root, for whom every mode is readable: a missing path stands for an unreadable one
    missing = str(tmp_path / "no-such-artifacts")
    result = run_module_direct("ransomeye_backup", dict(site["args"], artifact_paths=[missing]))
    _failed(result, "does not exist", missing)
    assert not os.path.exists(site["repo"])
    result = run_module_direct("ransomeye_backup", dict(site["args"], signing_key=str(tmp_path / "none.key")))
    _failed(result, "signing_key")
    result = run_module_direct("ransomeye_backup", dict(site["args"], recipients=[str(tmp_path / "none.pub")]))
    _failed(result, "recipient public key")
    result = run_module_direct("ransomeye_backup", dict(site["args"], recipients=[site["keys"]["recipient_key"]]))
    _failed(result, "private key")
    result = run_module_direct("ransomeye_backup_verify", dict(repo=str(tmp_path), trusted_keys=[missing]))
    _failed(result)


def test_nonexistent_database_fails_and_leaves_no_manifest(dr_site, run_module_direct):
    site = dr_site
    result = run_module_direct("ransomeye_backup", dict(site["args"], db="no_such_db", components=["database"]))
    _failed(result, "no_such_db", "does not exist")
    assert os.listdir(os.path.join(site["repo"], "manifests")) == []


def test_option_combinations_are_checked(dr_site, run_module_direct):
    site = dr_site
    _failed(run_module_direct("ransomeye_backup", dict(site["args"], db=None)), "db")
    _failed(run_module_direct("ransomeye_backup", dict(site["args"], mode="aes", recipients=None)), "key_file")
    _failed(run_module_direct("ransomeye_backup", dict(site["args"], keep_last=0)), "keep_last")
    _failed(run_module_direct("ransomeye_backup", dict(site["args"], max_age="soon")), "max_age")
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["config"]))["_rc"] == 0
    _failed(run_module_direct("ransomeye_backup_verify", dict(repo=site["repo"], level="full",
                                                              trusted_keys=[site["keys"]["signing_pub"]])),
            "private_key")
    _failed(run_module_direct("ransomeye_backup_verify", dict(repo=site["repo"], backup="00000042-x",
                                                              trusted_keys=[site["keys"]["signing_pub"]])),
            "not found")
    _failed(run_module_direct("ransomeye_restore", dict(repo=site["repo"], components=["database"],
                                                        trusted_keys=[site["keys"]["signing_pub"]],
                                                        private_key=site["keys"]["recipient_key"])),
            "no database component")


def test_symlink_pointing_outside_is_refused_on_restore(dr_site, run_module_direct, tmp_path):
    site = dr_site
    os.symlink("/etc/passwd", os.path.join(site["artifacts"], "case-04", "escape"))
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["artifacts"]))["_rc"] == 0
    dest = str(tmp_path / "dest")
    result = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        dest=dest))
    _failed(result, "pointing outside", "escape")
    assert not os.path.exists(dest)


def test_planted_symlink_in_the_target_is_refused(dr_site, run_module_direct, tmp_path):
    site = dr_site
    assert run_module_direct("ransomeye_backup", dict(site["args"], components=["artifacts"]))["_rc"] == 0
    dest = str(tmp_path / "dest")
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = dest + os.path.join(site["artifacts"], "case-07")
    os.makedirs(os.path.dirname(planted))
    os.symlink(str(outside), planted)
    result = run_module_direct("ransomeye_restore", dict(
        repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]], private_key=site["keys"]["recipient_key"],
        dest=dest))
    _failed(result, "symlink")
    assert os.listdir(outside) == []
