"""AWX artefacts: the execution environment renders, the credential type injects what the playbooks read."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import jinja2
import yaml

from tests.harness.paths import REPO


def _load(path):
    with open(os.path.join(REPO, path)) as handle:
        return yaml.safe_load(handle)


def test_ansible_builder_renders_the_execution_environment(tmp_path):
    builder = os.path.join(os.path.dirname(sys.executable), "ansible-builder")
    dist = os.path.join(REPO, ".build", "dist")
    os.makedirs(dist, exist_ok=True)
    galaxy = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--force", "--output-path", dist, REPO],
                   check=True, capture_output=True)
    proc = subprocess.run([builder, "create", "-f", os.path.join(REPO, "execution-environment.yml"),
                           "-c", str(tmp_path / "ctx")], capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = tmp_path / "ctx" / "_build"
    # The image gets the runtime requirements only (meta/), never the test profile of bindep.txt.
    with open(os.path.join(REPO, "meta", "ee-requirements.txt")) as handle:
        assert (build / "requirements.txt").read_text() == handle.read()
    with open(os.path.join(REPO, "meta", "ee-bindep.txt")) as handle:
        assert (build / "bindep.txt").read_text() == handle.read()
    assert not re.search(r"\[[^]]*\btest\b", (build / "bindep.txt").read_text())
    version = _load("galaxy.yml")["version"]
    tarball = "ransomeye-ops-%s.tar.gz" % version
    assert (build / "collections" / tarball).exists()
    wanted = _load("ee/requirements.yml")["collections"][0]["name"]
    assert wanted == "/tmp/collections/" + tarball, "ee/requirements.yml must follow galaxy.yml's version"


def test_credential_type_injects_every_secret_as_extra_vars_and_marks_them_secret():
    cred = _load("awx/credential_type.yml")
    fields = {f["id"]: f for f in cred["inputs"]["fields"]}
    for name, field in fields.items():
        if "password" in name or "passphrase" in name:
            assert field.get("secret") is True, name
    inputs = {"db_admin_password": "pw'\"{{x}}", "signing_key_passphrase": "s3"}
    rendered = {}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for var, template in cred["injectors"]["extra_vars"].items():
        # AWX renders injectors with the inputs as the Jinja context.
        for ref in re.findall(r"\{\{\s*(\w+)", template):
            assert ref in fields, "injector %s references unknown input %s" % (var, ref)
        rendered[var] = env.from_string(template).render(**inputs)
    assert rendered["ransomeye_db_admin_password"] == "pw'\"{{x}}"
    assert rendered["ransomeye_db_admin_user"] == "postgres"
    with open(os.path.join(REPO, "docs", "INVENTORY_VARIABLES.md")) as handle:
        documented = handle.read()
    for var in ("ransomeye_db_admin_user", "ransomeye_db_admin_password", "ransomeye_syslog_server"):
        assert "`%s`" % var in documented


def test_schedules_name_existing_playbooks_in_the_awx_doc():
    with open(os.path.join(REPO, "docs", "AWX.md")) as handle:
        doc = handle.read()
    for item in _load("awx/schedules.yml")["schedules"]:
        assert item["unified_job_template"] in doc
        assert item["rrule"].startswith("DTSTART:")
    for playbook in re.findall(r"playbooks/(\w+\.yml)", doc):
        assert os.path.exists(os.path.join(REPO, "playbooks", playbook)), playbook
