"""Each AWX job template run the way AWX runs it (issue 12, section 3): ansible-runner, the credential type's
injector output and the survey's extra vars, against one demo host; each test asserts the effect, not only rc=0.

The keys of the demo host are made passphrase-protected first, so the injected passphrases must reach the modules.
"""
from __future__ import annotations

import json
import os
import re

import jinja2
import pytest
import yaml

from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    key_id, key_type_of, load_signing_private_key, private_key_pem)
from tests.harness.ansible_runner import ansible_env
from tests.harness.demo import database
from tests.harness.paths import REPO

ansible_runner = pytest.importorskip("ansible_runner", reason="requirements-dev.txt installs ansible-runner")

SIGNING_PASS = "sign 'pass' {{x}}"
RECIPIENT_PASS = "recipient-pass-2"


def _injected(demo) -> dict:
    """The extra vars AWX injects from the "RansomEye secrets" credential (awx/credential_type.yml)."""
    with open(os.path.join(REPO, "awx", "credential_type.yml")) as handle:
        cred = yaml.safe_load(handle)
    inputs = {"db_admin_user": "postgres", "db_admin_password": demo.state["admin_password"],
              "signing_key_passphrase": SIGNING_PASS, "backup_private_key_passphrase": RECIPIENT_PASS}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return {var: env.from_string(template).render(**inputs) for var, template in cred["injectors"]["extra_vars"].items()}


def _job(demo, tmp_path, playbook: str, survey: dict):
    """ansible-runner as AWX uses it: a private data dir, the inventory, extra vars = injector + survey."""
    private = tmp_path / ("job-" + playbook.replace(".yml", ""))
    (private / "env").mkdir(parents=True, exist_ok=True)
    # AWX writes the injected credential values tagged !unsafe (its safe_dump), so Ansible never templates a secret
    # that happens to contain "{{"; the survey answers are plain values.
    lines = ["%s: !unsafe %s" % (name, json.dumps(value)) for name, value in _injected(demo).items()]
    lines += ["%s: %s" % (name, json.dumps(value)) for name, value in survey.items()]
    (private / "env" / "extravars").write_text("\n".join(lines) + "\n")
    run = ansible_runner.run(private_data_dir=str(private), playbook=os.path.join(REPO, "playbooks", playbook),
                             inventory=demo.inventory, envvars=ansible_env(), quiet=True, timeout=600)
    results = {}
    for event in run.events:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and data.get("task"):
            results[data["task"]] = dict(data.get("res") or {}, _event=event["event"])
    stdout = run.stdout.read()
    for secret in (demo.state["admin_password"], SIGNING_PASS, RECIPIENT_PASS):
        assert secret not in stdout
    return run, results, stdout


@pytest.fixture(scope="module")
def awx_demo(demo_host):
    """The demo host with a passphrase-protected signing key and recipient key."""
    layout = demo_host.layout
    active = os.path.join(layout.signing_key_dir, "active.key")
    key = load_signing_private_key(active)
    with open(active, "wb") as handle:
        handle.write(private_key_pem(key, SIGNING_PASS))
    recipient = os.path.join(layout.backup_key_dir, "recipient.key")
    rkey = load_signing_private_key(recipient)
    with open(recipient, "wb") as handle:
        handle.write(private_key_pem(rkey, RECIPIENT_PASS))
    return demo_host


def test_backup_and_restore_templates_with_passphrase_protected_keys(awx_demo, tmp_path):
    run, results, stdout = _job(awx_demo, tmp_path, "backup.yml", {"backup_components": ["config"],
                                                                   "backup_keep_last": 5})
    assert run.rc == 0 and run.status == "successful", stdout[-3000:]
    backup = next(r for t, r in results.items() if t.startswith("Back up the RansomEye components into"))
    assert backup["backup_id"] and backup["seq"] >= 1
    os.unlink(os.path.join(awx_demo.layout.config_dir, "app.env"))  # what the restore must bring back
    run, results, stdout = _job(awx_demo, tmp_path, "restore.yml",
                                {"restore_backup": backup["backup_id"], "restore_components": ["config"]})
    assert run.rc == 0, stdout[-3000:]
    assert results["Restore the backup"]["backup_id"] == backup["backup_id"]
    assert os.path.exists(os.path.join(awx_demo.layout.config_dir, "app.env"))


def test_health_template_reads_health_fail_on(awx_demo, tmp_path):
    # The demo's server certificate expires in 20 days: a warning. health_fail_on=warning must fail the job.
    run, results, stdout = _job(awx_demo, tmp_path, "health_check.yml", {"health_fail_on": "warning"})
    assert run.rc != 0 and run.status == "failed"
    failed = [t for t, r in results.items() if r["_event"] == "runner_on_failed"]
    assert failed == ["Fail when the host is worse than allowed"], (failed, [results[t].get("msg") for t in failed])
    # At least the certificate's warning (a loaded box may add a critical load figure); the default, never, would
    # have let the job pass.
    assert re.search(r"RANSOMEYE (WARNING|CRITICAL) - ", stdout)


def test_rotation_template_reads_key_rotation_force_and_the_signing_passphrase(awx_demo, tmp_path):
    key_dir = awx_demo.layout.signing_key_dir
    before = json.load(open(os.path.join(key_dir, "state.json")))["active_key_id"]
    run, results, stdout = _job(awx_demo, tmp_path, "quarterly_rotation.yml",
                                {"key_rotation_force": True, "key_rotation_db_strategy": "in_place"})
    assert run.rc == 0, stdout[-3000:]
    after = json.load(open(os.path.join(key_dir, "state.json")))["active_key_id"]
    assert after != before  # the key was young: only key_rotation_force rotates it
    # The new key is stored encrypted with the injected passphrase, and keeps the chain's type (Ed25519).
    with pytest.raises(Exception):
        load_signing_private_key(os.path.join(key_dir, "active.key"))
    new = load_signing_private_key(os.path.join(key_dir, "active.key"), SIGNING_PASS)
    assert key_id(new) == after and key_type_of(new) == "ed25519"


def test_tune_and_maintenance_templates_read_their_survey_variables(awx_demo, tmp_path):
    auto_conf = os.path.join(awx_demo.cluster().data, "postgresql.auto.conf")
    before = open(auto_conf).read()
    run, results, stdout = _job(awx_demo, tmp_path, "tune.yml", {"tuning_db_type": "web", "tuning_apply": "none"})
    assert run.rc == 0, stdout[-3000:]
    tuned = results["Tune PostgreSQL with PGTune's formulas"]
    assert tuned["inputs"]["db_type"] == "web", tuned["inputs"]
    assert tuned["settings"]["max_connections"] in (200, "200")  # PGTune's web profile (mixed would be 100)
    assert open(auto_conf).read() == before  # apply none: nothing written
    run, results, stdout = _job(awx_demo, tmp_path, "nightly_maintenance.yml",
                                {"maintenance_allow_full_vacuum": True})
    assert run.rc == 0, stdout[-3000:]
    vacuum = results["VACUUM (ANALYZE) the tables over the thresholds"]
    assert vacuum["mode"] == "full", vacuum


def test_drill_template_reads_dr_drill_components(awx_demo, tmp_path):
    counts = database.row_counts(awx_demo.cluster())
    survey = {"dr_drill_components": ["config"], "dr_drill_rollback": False}
    run, results, stdout = _job(awx_demo, tmp_path, "dr_drill.yml", survey)
    assert run.rc == 0, stdout[-3000:]
    reports = sorted(p for p in os.listdir(awx_demo.layout.report_dir) if re.match(r"dr-drill-.*\.json$", p))
    report = json.load(open(os.path.join(awx_demo.layout.report_dir, reports[-1])))
    assert report["result"] == "passed" and report["disaster"]["components"] == ["config"]
    assert report["disaster"]["deleted"] == [awx_demo.layout.config_dir]
    assert report["restore"]["previous_db"] is None and report["restore"]["tables"] == {}
    assert database.row_counts(awx_demo.cluster()) == counts  # the database was not part of this drill
