"""Several RansomEye hosts at once: quarterly_rotation.yml and dr_drill.yml with forks > 1.

Each host is a complete demo host under its own root (its own PostgreSQL
cluster, config tree, services under supervisord), reached over the local
connection, so the plays really run in parallel across hosts and a mistake
that leaks state between hosts (a shared temp path, a fact read from the wrong
host) shows up as a wrong per-host outcome.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import urllib.request

import pytest
import yaml

from tests.harness.paths import REPO
from tests.harness.trees import tree_digest

HOSTS = ("re-east", "re-west", "re-north")


def _env_file_text(host_vars: dict) -> str:
    return "".join(open(p).read() for p in host_vars["ransomeye_env_files"])


def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def fleet():
    from tests.harness.demo import host

    base = tempfile.mkdtemp(prefix="re-fleet-")
    os.chmod(base, 0o755)  # the postgres OS user must reach each host's cluster
    roots = {name: os.path.join(base, name) for name in HOSTS}
    try:
        hosts = {}
        for seed, (name, root) in enumerate(sorted(roots.items()), start=11):
            host.up(root, scale=2, seed=seed, quiet=True)
            with open(os.path.join(root, "inventory", "hosts.yml")) as handle:
                hosts[name] = yaml.safe_load(handle)["all"]["hosts"]["localhost"]
        vault = {"ansible_connection": "local", "ansible_python_interpreter": hosts[HOSTS[0]]["ansible_python_interpreter"],
                 "ransomeye_backup_repo": os.path.join(base, "vault")}
        inventory = os.path.join(base, "fleet.yml")
        with open(inventory, "w") as handle:
            yaml.safe_dump({"all": {"children": {"ransomeye": {"hosts": hosts},
                                                 "ransomeye_vault": {"hosts": {"re-vault": vault}}}}}, handle)
        os.chmod(inventory, 0o600)
        yield inventory, hosts
    finally:
        for root in roots.values():
            host.down(root, quiet=True)
        shutil.rmtree(base, ignore_errors=True)


def test_quarterly_rotation_then_dr_drill_across_three_hosts(fleet, run_playbook):
    inventory, hosts = fleet
    before = {name: _env_file_text(v) for name, v in hosts.items()}
    keys_before = {name: open(os.path.join(v["ransomeye_signing_key_dir"], "active.pub")).read()
                   for name, v in hosts.items()}

    rotation = run_playbook(os.path.join(REPO, "playbooks", "quarterly_rotation.yml"), inventory=inventory,
                            extra_vars={"key_rotation_signing_force": True, "key_rotation_db_force": True,
                                        "key_rotation_cert_force": True, "ransomeye_hosts": "ransomeye"},
                            args=["--forks", "3"])
    assert rotation.rc == 0, rotation.stdout[-4000:]
    assert set(rotation.stats) == set(HOSTS)  # the vault host is not a RansomEye host
    for name, host_vars in hosts.items():
        assert rotation.stats[name]["failures"] == 0 and rotation.stats[name]["changed"] > 0
        # Each host got its own new password and its own new signing key.
        assert _env_file_text(host_vars) != before[name]
        new_key = open(os.path.join(host_vars["ransomeye_signing_key_dir"], "active.pub")).read()
        assert new_key != keys_before[name]
        assert _health(host_vars["ransomeye_health_url"]) == 200, name
    passwords = {name: _env_file_text(v) for name, v in hosts.items()}
    assert len(set(passwords.values())) == len(HOSTS)

    drill = run_playbook(os.path.join(REPO, "playbooks", "dr_drill.yml"), inventory=inventory,
                         extra_vars={"ransomeye_hosts": "ransomeye"}, args=["--forks", "3"])
    assert drill.rc == 0, drill.stdout[-4000:]
    for name, host_vars in hosts.items():
        reports = sorted(glob.glob(os.path.join(host_vars["ransomeye_report_dir"], "dr-drill-*.json")))
        assert reports, "no drill report on %s" % name
        with open(reports[-1]) as handle:
            report = json.load(handle)
        assert report["host"] == name
        assert report["result"] == "passed", report
        assert report["rto_seconds"] and report["rto_seconds"] > 0
        assert _health(host_vars["ransomeye_health_url"]) == 200, name


def test_backups_of_every_host_are_shipped_to_the_vault_and_verify_there(fleet, run_playbook):
    inventory, hosts = fleet
    run = run_playbook(os.path.join(REPO, "playbooks", "backup.yml"), inventory=inventory,
                       extra_vars={"ransomeye_hosts": "ransomeye"}, args=["--forks", "3"])
    assert run.rc == 0, run.stdout[-4000:]
    vault_root = os.path.join(os.path.dirname(inventory), "vault")
    for name, host_vars in hosts.items():
        source = host_vars["ransomeye_backup_repo"]
        mirror = os.path.join(vault_root, name)

        def files(root, sub):
            top = os.path.join(root, sub)
            return {os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(top) for f in fs}

        assert files(mirror, "manifests") == files(source, "manifests") != set()
        assert files(source, "objects") <= files(mirror, "objects")
        verify = run.task("Verify the vault copy (ciphertext level, no secret needed)", host=name)["result"]
        assert verify["problems"] == [] and len(verify["verified"]) == len(files(source, "manifests"))
    # A second run ships only the new backup's new objects and still verifies.
    again = run_playbook(os.path.join(REPO, "playbooks", "backup.yml"), inventory=inventory,
                         extra_vars={"ransomeye_hosts": "ransomeye"}, args=["--forks", "3"])
    assert again.rc == 0, again.stdout[-4000:]


def _ship_only(tmp_dir, host, run_playbook, inventory, extra_vars=None):
    """Run just the backup role's shipping for ``host`` (what the nightly backup does after a backup)."""
    include = {"name": "ransomeye.ops.backup", "tasks_from": "ship"}
    play = [{"hosts": host, "gather_facts": False,
             "tasks": [{"name": "ship", "ansible.builtin.include_role": include}]}]
    path = os.path.join(tmp_dir, "ship-%s.yml" % host)
    with open(path, "w") as handle:
        json.dump(play, handle)
    return run_playbook(path, inventory=inventory, extra_vars=extra_vars or {})


def test_h_cannot_rewrite_what_the_vault_holds_and_the_vault_refuses_what_h_signs_after_the_mark(
        fleet, run_playbook, run_module_direct, tmp_path):
    """Attacker H (root on re-east / re-west, signing key included) against backups already on the vault.

    The previous test shipped every host's backups. H then rewrites a shipped manifest and an object in the host's
    own repository, and deletes a backup: shipping refuses, and the vault copy stays byte for byte. H signs a new
    backup with the host's key: it reaches the vault (append-only allows new files), and the incident mark the
    operator sets on the restoring side (refuse_after_seq) makes verify and restore refuse it while the backups
    before the mark still restore.
    """
    inventory, hosts = fleet
    vault_root = os.path.join(os.path.dirname(inventory), "vault")

    # 1. Rewrites of what was shipped are refused, the vault copy is untouched, nothing on it is deleted.
    east = hosts["re-east"]["ransomeye_backup_repo"]
    mirror = os.path.join(vault_root, "re-east")
    before = tree_digest(mirror)
    assert any(p.startswith("manifests/") for p in before)
    manifests = sorted(glob.glob(os.path.join(east, "manifests", "*.json")))
    with open(manifests[-1], "r+b") as handle:  # H re-signs or garbles the newest shipped manifest
        handle.seek(0, os.SEEK_END)
        handle.write(b" ")
    victim = sorted(p for p in glob.glob(os.path.join(east, "objects", "**", "*"), recursive=True)
                    if os.path.isfile(p))[0]
    with open(victim, "ab") as handle:
        handle.write(b"ransomware")
    os.unlink(manifests[0])  # H destroys the oldest backup on the host
    run = _ship_only(str(tmp_path), "re-east", run_playbook, inventory)
    assert run.rc != 0
    refusal = run.task("Refuse to overwrite anything the vault already holds", host="re-east")
    assert refusal["status"] == "failed" and "append-only" in refusal["result"]["msg"]
    assert os.path.relpath(manifests[-1], east) in refusal["result"]["msg"]
    assert tree_digest(mirror) == before

    # 2. The incident mark: H signs a new backup with re-west's key after the compromise.
    west = hosts["re-west"]
    west_mirror = os.path.join(vault_root, "re-west")
    info = run_module_direct("ransomeye_backup_info", dict(repo=west_mirror,
                                                           trusted_keys=[west["ransomeye_signing_key_dir"]],
                                                           backup="all"))
    assert info["_rc"] == 0, info
    good = max(b["seq"] for b in info["backups"])  # the operator's "last known good", read from the vault
    good_id = [b["backup_id"] for b in info["backups"] if b["seq"] == good][0]
    after = run_playbook(os.path.join(REPO, "playbooks", "backup.yml"), inventory=inventory,
                         extra_vars={"ransomeye_hosts": "re-west"})
    assert after.rc == 0, after.stdout[-4000:]
    keys = dict(trusted_keys=[west["ransomeye_signing_key_dir"]])
    plain = run_module_direct("ransomeye_backup_verify", dict(repo=west_mirror, backup="latest", **keys))
    assert plain["_rc"] == 0 and plain["verified"], plain  # validly signed: without the mark it verifies
    marked = run_module_direct("ransomeye_backup_verify", dict(repo=west_mirror, backup="all", refuse_after_seq=good,
                                                               fail_on_problems=False, **keys))
    assert [p["reason"] for p in marked["problems"]] == \
        ["seq %d is after the incident mark (refuse_after_seq %d)" % (good + 1, good)]
    assert good_id in marked["verified"]
    restore_args = dict(repo=west_mirror, components=["config"], dest=str(tmp_path / "restored"),
                        private_key=os.path.join(west["ransomeye_backup_key_dir"], "recipient.key"),
                        refuse_after_seq=good, **keys)
    refused = run_module_direct("ransomeye_restore", dict(restore_args, backup="latest"))
    assert refused.get("failed") and "incident mark" in refused["msg"], refused
    assert not os.path.exists(str(tmp_path / "restored"))
    restored = run_module_direct("ransomeye_restore", dict(restore_args, backup=good_id))
    assert restored["_rc"] == 0 and restored["backup_id"] == good_id, restored
    # The same mark on the vault side of shipping flags what H ships next.
    flagged = _ship_only(str(tmp_path), "re-west", run_playbook, inventory,
                         extra_vars={"backup_vault_refuse_after_seq": good})
    verify = flagged.task("Verify the vault copy (ciphertext level, no secret needed)", host="re-west")
    assert verify["status"] == "failed" and "incident mark" in verify["result"]["msg"]
