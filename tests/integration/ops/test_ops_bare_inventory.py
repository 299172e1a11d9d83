"""A bare inventory (``localhost ansible_connection=local``, no variables) is refused by every operator playbook with
every missing required variable named in one message, by the validation (the roles' argument specs, or
ansible.builtin.validate_argument_spec in the playbooks without a role) before any task could change anything.

Before, each playbook stopped at the first undefined variable (``'ransomeye_backup_repo' is undefined``), so an
operator fixed one variable per run; quarterly_rotation even went on to rotate against guessed /etc paths.
"""
from __future__ import annotations

import concurrent.futures
import os

import pytest

from tests.harness.paths import REPO

BACKUP = ["ransomeye_artifact_dir", "ransomeye_backup_key_dir", "ransomeye_backup_repo", "ransomeye_config_dir",
          "ransomeye_signing_key_dir"]
# playbook -> every variable its failure message must name
EXPECTED = {
    "backup": BACKUP,
    "restore": ["restore_backup", "ransomeye_backup_key_dir", "ransomeye_backup_repo", "ransomeye_signing_key_dir"],
    "dr_drill": BACKUP + ["ransomeye_report_dir"],
    "health_check": ["ransomeye_report_dir"],
    "quarterly_rotation": ["ransomeye_env_files", "ransomeye_signing_key_dir", "ransomeye_tls_dir"],
    "nightly_maintenance": ["ransomeye_buffer_dir", "ransomeye_log_dir", "ransomeye_tmp_dir"],
    # tune needs only a database: its own guard names the variables (tuning_db_host/port can stand in for them)
    "tune": ["ransomeye_db_host", "ransomeye_db_port"],
    "list_backups": ["ransomeye_backup_repo", "ransomeye_signing_key_dir"],
    "last_drill": ["ransomeye_report_dir"],
}


@pytest.fixture(scope="module")
def bare_runs(tmp_path_factory):
    from tests.harness.ansible_runner import run_playbook
    inventory = tmp_path_factory.mktemp("bare") / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local\n")

    def run(name):
        return name, run_playbook(os.path.join(REPO, "playbooks", name + ".yml"), inventory=str(inventory))
    # Two at a time: each run is mostly ansible-playbook's start-up.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, sorted(EXPECTED)))


def test_every_operator_playbook_is_covered():
    shipped = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(REPO, "playbooks")) if n.endswith(".yml")}
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize("playbook", sorted(EXPECTED))
def test_bare_inventory_names_every_missing_variable_at_once(bare_runs, playbook):
    run = bare_runs[playbook]
    assert run.rc != 0, run.stdout[-2000:]
    failed = run.failed()
    assert len(failed) >= 1, (run.stdout[-3000:], run.stderr[-2000:])
    msg = str(failed[-1]["result"].get("msg"))
    missing = [name for name in EXPECTED[playbook] if name not in msg]
    assert not missing, (playbook, missing, msg)
    assert "is undefined" not in msg
    # Nothing ran past the refusal, and nothing before it changed anything.
    assert all(not r["result"].get("changed") for r in run.results), [(r["task"], r["status"]) for r in run.results]
    tasks = [r["task"] for r in run.results]
    first_failed = tasks.index(failed[0]["task"])
    before = tasks[:first_failed]
    # tune's validation passes (nothing it needs is missing but the database, which its first task refuses)
    assert all(("Refuse a misspelt" in t or "alidat" in t) for t in before), before
