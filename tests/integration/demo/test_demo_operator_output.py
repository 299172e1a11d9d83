"""What an operator sees (issue 12, sections 4 and 5): the backup summary without -v, tune.yml refusing an
inventory that names no database, and the last drill summarised. One demo host."""
from __future__ import annotations

import os
import re

from tests.harness.paths import REPO

PLAY = os.path.join(REPO, "playbooks")


def test_backup_prints_id_seq_sizes_and_rate_without_verbose(demo_host, run_playbook):
    run = run_playbook(os.path.join(PLAY, "backup.yml"), inventory=demo_host.inventory)
    assert run.rc == 0, run.stdout[-2000:]
    result = run.task("Back up the RansomEye components into %s" % demo_host.layout.backup_repo)["result"]
    line = run.task("Backup summary")["result"]["msg"]
    assert line in run.stdout
    assert line.startswith("Backup %s (seq %d):" % (result["backup_id"], result["seq"])), line
    for component in ("database", "config", "artifacts"):
        assert re.search(r"%s [\d.]+ MiB read, [\d.]+ MiB stored in [\d.]+ s \([\d.]+ MiB/s\)" % component, line), line
    # The verification that follows ran as an async job (heartbeat lines in AWX) and ends with its own line.
    verified = run.task("Verification summary")["result"]["msg"]
    assert verified in run.stdout
    assert re.match(r"Verified backup %s \(ciphertext\): \d+ objects, [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\)\.$"
                    % result["backup_id"], verified), verified
    assert "ASYNC OK on localhost" in run.stdout


def test_tune_refuses_an_inventory_that_names_no_database(run_playbook, tmp_path):
    inventory = tmp_path / "bare.ini"
    inventory.write_text("localhost ansible_connection=local\n")
    run = run_playbook(os.path.join(PLAY, "tune.yml"), inventory=str(inventory),
                       extra_vars={"tuning_workers_enabled": False})
    assert run.rc != 0
    failed = run.failed()
    assert "names no database" in failed[0]["result"]["msg"], failed
    assert not [r for r in run.results if r["task"].endswith("Tune PostgreSQL with PGTune's formulas")
                and r["status"] != "skipped"]


def test_the_last_drill_is_shown_summarised(demo_host, run_playbook):
    run = run_playbook(os.path.join(PLAY, "dr_drill.yml"), inventory=demo_host.inventory,
                       extra_vars={"dr_drill_recipients": [os.path.join(demo_host.root, "missing.pub")]})
    assert run.rc != 0
    run = run_playbook(os.path.join(PLAY, "last_drill.yml"), inventory=demo_host.inventory, check=True)
    assert run.rc == 0, run.stdout[-2000:]
    lines = run.task("The last drill")["result"]["msg"]
    assert lines[0].startswith("DR drill FAILED on localhost") and "failed at backup" in lines[0], lines
    assert "backup failed" in lines[1] and "disaster not run" in lines[1], lines


def test_the_printed_replay_hint_and_a_plain_command_work_from_a_checkout(demo_host):
    import shlex
    import subprocess
    import sys

    from tests.harness.demo import host
    # What `python -m tests.harness.demo play` prints before each playbook, run as printed by an operator's shell:
    # from the checkout, with none of the variables the Makefile exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHONPATH"))}
    env["HOME"] = demo_host.root
    printed = host.replay_hint(demo_host.layout, os.path.join(PLAY, "health_check.yml"))
    assert printed.startswith("cd %s && " % shlex.quote(REPO)), printed
    proc = subprocess.run(["/bin/sh", "-c", printed + " --check"], capture_output=True, text=True, env=env,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Health of localhost" in proc.stdout
    # The plain form of the runbook, with the venv's ansible-playbook on PATH.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["ansible-playbook", "-i", demo_host.inventory, "playbooks/backup.yml", "--check"],
                          capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Backup summary" in proc.stdout
