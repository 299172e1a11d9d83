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
