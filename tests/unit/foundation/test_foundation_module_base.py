"""The module base turns expected errors into fail_json with a clear msg, never a traceback."""
from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec


def _run(action, args, capsys):
    with patch_module_args(args):
        module = RansomeyeModule(dict(name=dict(type="str", required=True)),
                                 shared_specs=[postgres_argument_spec()], supports_check_mode=True)
        with pytest.raises(SystemExit) as exit_info:
            module.run(action)
    out = json.loads(capsys.readouterr().out)
    return exit_info.value.code, out


def test_expected_error_becomes_failed_with_msg_and_details(capsys):
    def action(module):
        raise RansomeyeError("repository /srv/repo does not exist", repo="/srv/repo")
    code, out = _run(action, {"name": "x"}, capsys)
    assert code == 1
    assert out["failed"] is True
    assert out["msg"] == "repository /srv/repo does not exist"
    assert out["repo"] == "/srv/repo"
    assert "Traceback" not in json.dumps(out.get("msg"))


def test_oserror_names_the_path(capsys):
    def action(module):
        open("/nonexistent/dir/file")
    code, out = _run(action, {"name": "x"}, capsys)
    assert code == 1 and out["failed"] is True
    assert out["msg"].startswith("FileNotFoundError:") and "/nonexistent/dir/file" in out["msg"]


def test_success_defaults_changed_false_and_shared_spec_is_merged(capsys):
    def action(module):
        return {"port": module.params["login_port"]}
    code, out = _run(action, {"name": "x", "login_password": "hunter2-secret"}, capsys)
    assert code == 0
    assert out["changed"] is False and out["port"] == 5432
    assert "hunter2-secret" not in json.dumps(out)
