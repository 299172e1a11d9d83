"""Roles and playbooks on real inventories: only what the docs say to set, none of the harness's extras.

The test harness always sets ``ansible_python_interpreter`` and a complete demo inventory, which once hid that
``playbooks/dr_drill.yml`` failed on every host of ``docs/examples/inventory.fleet.yml`` before its first task
(the argument specs' defaults referenced ``ansible_python_interpreter`` and ``ransomeye_health_url``). Here:

- every role's argument-spec validation runs against a minimal inventory (the host layout only: no database
  settings, no health URL, no interpreter), as the role's implicit first task: with ``--tags`` naming no task,
  Ansible runs only that validation (it is tagged ``always``);
- every shipped playbook passes ``--syntax-check`` on the example fleet inventory, and then runs there (hosts
  mapped to the local connection) up to the same point: its plays' ``hosts``/``serial`` and every role's
  validation resolve with only the secrets the docs say to supply.
No module runs on the real hosts' paths; what the modules then do is covered by the demo-host tests.
"""
from __future__ import annotations

import glob
import os

import yaml

from tests.harness.paths import REPO

FLEET = os.path.join(REPO, "docs", "examples", "inventory.fleet.yml")
ROLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "roles", "*"))
               if os.path.isfile(os.path.join(p, "meta", "argument_specs.yml")))
PLAYBOOKS = sorted(glob.glob(os.path.join(REPO, "playbooks", "*.yml")))
NO_TASK = "ransomeye_argument_validation_only"  # a tag no task has: only the always-tagged validation runs

# The layout of a host: the variables of docs/INVENTORY_VARIABLES.md that no role can guess (paths). Everything
# else (database host, port, name, admin user and password, sslmode, services, health URL, interpreter) is left
# out, so each role must fall back on its defaults/main.yml.
LAYOUT = {
    "ransomeye_config_dir": "/etc/ransomeye",
    "ransomeye_env_files": ["/etc/ransomeye/app.env"],
    "ransomeye_gunicorn_config": "/etc/ransomeye/gunicorn.conf.py",
    "ransomeye_celery_config": "/etc/ransomeye/celery_config.py",
    "ransomeye_tls_dir": "/etc/ransomeye/tls",
    "ransomeye_artifact_dir": "/var/lib/ransomeye/artifacts",
    "ransomeye_log_dir": "/var/log/ransomeye",
    "ransomeye_tmp_dir": "/var/tmp/ransomeye",
    "ransomeye_buffer_dir": "/var/spool/ransomeye/buffer",
    "ransomeye_signing_key_dir": "/etc/ransomeye/keys/signing",
    "ransomeye_backup_repo": "/srv/ransomeye-backup/repo",
    "ransomeye_backup_key_dir": "/etc/ransomeye/keys/backup",
    "ransomeye_report_dir": "/var/lib/ransomeye/reports",
}


def _validations(run) -> dict:
    """host -> list of (task, status) of the argument-spec validation tasks that ran."""
    seen: dict = {}
    for record in run.results:
        if "alidat" in record["task"] and "argument" in record["task"].lower():
            seen.setdefault(record["host"], []).append((record["task"], record["status"]))
    return seen


def test_every_role_validates_against_a_minimal_inventory(tmp_path, run_playbook):
    hosts = {"role_" + role: {"ansible_connection": "local"} for role in ROLES}
    # Attack: a wrong type must still be caught, or a green sweep would prove nothing.
    hosts["bad_backup"] = {"ansible_connection": "local", "backup_keep_last": "many"}
    # The user sets the role's own login variable and not the inventory one it defaults from.
    hosts["direct_backup"] = {"ansible_connection": "local", "backup_login_password": "set-directly"}
    inventory = tmp_path / "minimal.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": LAYOUT, "hosts": hosts}}))
    plays = [{"name": "validate " + role, "hosts": "role_" + role, "gather_facts": False,
              "roles": [{"role": "ransomeye.ops." + role}]} for role in ROLES]
    plays += [{"name": "validate backup (%s)" % h, "hosts": h, "gather_facts": False,
               "roles": [{"role": "ransomeye.ops.backup"}]} for h in ("direct_backup", "bad_backup")]  # bad last: a failed play ends the run
    playbook = tmp_path / "sweep.yml"
    playbook.write_text(yaml.safe_dump(plays))
    run = run_playbook(str(playbook), inventory=str(inventory), args=["--tags", NO_TASK])
    seen = _validations(run)
    for role in ROLES:
        host = "role_" + role
        assert host in seen, "no argument validation ran for role %s:\n%s" % (role, run.stdout[-3000:])
        assert all(status == "ok" for _task, status in seen[host]), (role, seen[host], run.stdout[-4000:])
        assert run.stats[host]["failures"] == 0
    assert [status for _task, status in seen["direct_backup"]] == ["ok"]
    assert run.stats["bad_backup"]["failures"] == 1, run.stdout[-3000:]
    assert "backup_keep_last" in str(run.task(seen["bad_backup"][0][0], host="bad_backup")["result"])


def test_every_playbook_passes_syntax_check_on_the_fleet_inventory(run_playbook):
    # One ansible-playbook process for all of them (it accepts several playbooks): a few seconds, not one per file.
    run = run_playbook(PLAYBOOKS[0], inventory=FLEET, args=PLAYBOOKS[1:] + ["--syntax-check"])
    assert run.rc == 0, (run.stdout[-2000:], run.stderr[-2000:])
    for playbook in PLAYBOOKS:
        assert "playbook: %s" % playbook in run.stdout, playbook


def test_every_playbook_resolves_its_variables_on_the_fleet_inventory(tmp_path, run_playbook):
    # Only the connection changes: every host of the example fleet is reached locally. No interpreter, no
    # health URL, nothing the harness would add; the one secret comes in as AWX or a vault would pass it.
    local = tmp_path / "local.yml"
    local.write_text(yaml.safe_dump({"all": {"vars": {"ansible_connection": "local"}}}))
    with open(FLEET) as handle:
        fleet_hosts = _hosts(yaml.safe_load(handle)["all"])
    with_roles = [p for p in PLAYBOOKS if any(play.get("roles") for play in _load(p))]
    assert with_roles
    secrets = tmp_path / "vault.yml"
    secrets.write_text(yaml.safe_dump({"ransomeye_db_admin_password": "from-a-vault"}))
    # The playbooks follow each other on the command line (argparse takes no positional after an option).
    run = run_playbook(PLAYBOOKS[0], inventory=str(local),
                       args=PLAYBOOKS[1:] + ["-i", FLEET, "--tags", NO_TASK, "-e", "@%s" % secrets])
    assert run.rc == 0, (run.stdout[-4000:], run.stderr[-2000:])
    assert not run.failed(), run.failed()
    seen = _validations(run)
    # Every play's hosts pattern resolved to the fleet, and on each host every role of every playbook validated.
    assert set(seen) == fleet_hosts, (sorted(seen), sorted(fleet_hosts))
    for host, validations in seen.items():
        assert all(status == "ok" for _task, status in validations), (host, validations)
        assert len(validations) >= len(with_roles), (host, validations)


def _load(path: str) -> list:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _hosts(group: dict) -> set:
    found = set((group.get("hosts") or {}).keys())
    for child in (group.get("children") or {}).values():
        found |= _hosts(child or {})
    return found
