"""The SIEM callback under bad input: it must not lose alerts, nor leak a no_log task's rendered name.

The callback runs in-process with real ansible-core objects (Host, Task,
TaskResult) and a real spool directory (no receiver configured, so every
alert must land in the spool: dropping one is the failure).
"""
from __future__ import annotations

import pytest
from ansible.executor.task_result import TaskResult
from ansible.inventory.host import Host
from ansible.playbook.task import Task
import yaml

from ansible_collections.ransomeye.ops.plugins.callback import siem
from ansible_collections.ransomeye.ops.plugins.callback.siem import CallbackModule
from ansible_collections.ransomeye.ops.plugins.module_utils._spool import Spool


class _Display:
    """Collects warnings (the callback's only channel to the operator besides the SIEM)."""

    verbosity = 0

    def __init__(self):
        self.warnings = []

    def warning(self, msg, *args, **kwargs):
        self.warnings.append(msg)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _callback(tmp_path, **options):
    display = _Display()
    cb = CallbackModule(display=display)
    # The documented defaults, as Ansible's config manager would resolve them, plus the test's options.
    documented = yaml.safe_load(siem.DOCUMENTATION)["options"]
    cb._plugin_options = {name: spec.get("default") for name, spec in documented.items()}
    cb._plugin_options.update(spool_dir=str(tmp_path / "spool"), format="rfc5424", **options)
    cb.configure()
    return cb, display


def _result(name, data, no_log=False):
    task = Task.load(dict(name=name, action="ansible.builtin.command", args=dict(cmd="false"), no_log=no_log))
    return TaskResult(Host("web1"), task, data, {})


def _spooled(tmp_path):
    with Spool(str(tmp_path / "spool")).locked() as spool:
        return [entry.message for entry in spool.entries()]


def test_a_non_utf8_message_is_sent_with_replacement_not_dropped(tmp_path):
    cb, display = _callback(tmp_path)
    cb.v2_runner_on_failed(_result("restart app", {"msg": "bad bytes: \udcff\udcfe end", "failed": True}))
    messages = _spooled(tmp_path)
    assert len(messages) == 1, display.warnings
    assert "bad bytes: " in messages[0] and " end" in messages[0]
    messages[0].encode("utf-8")  # what is queued is valid UTF-8


@pytest.mark.parametrize("app_name", ["my app", "ränsom", "x" * 60, "a\tb"])
def test_a_bad_app_name_is_sanitised_at_load_and_every_alert_still_goes_out(tmp_path, app_name):
    cb, display = _callback(tmp_path, app_name=app_name)
    assert any("app_name" in w for w in display.warnings)  # told once, at load time
    warned = len(display.warnings)
    for n in range(3):
        cb.v2_runner_on_failed(_result("task %d" % n, {"msg": "boom", "failed": True}))
    assert len(_spooled(tmp_path)) == 3
    assert len(display.warnings) == warned  # no per-alert warning, no drop


def test_a_no_log_task_never_sends_its_rendered_name(tmp_path):
    cb, _display = _callback(tmp_path)
    secret = "hunter2-s3cr3t"
    failed = {"censored": "hidden", "failed": True, "_ansible_no_log": True}
    unreachable = {"msg": "unreachable", "unreachable": True, "_ansible_no_log": True}
    cb.v2_runner_on_failed(_result("log in with %s" % secret, failed, no_log=True))
    cb.v2_runner_on_unreachable(_result("reach with %s" % secret, unreachable, no_log=True))
    messages = _spooled(tmp_path)
    assert len(messages) == 2
    assert all(secret not in m for m in messages)
    assert all("no_log" in m for m in messages)


def test_an_alert_that_cannot_be_rendered_is_still_spooled(tmp_path):
    cb, display = _callback(tmp_path, hostname="bad host name")
    cb.v2_runner_on_failed(_result("t", {"msg": "boom", "failed": True}))
    assert len(_spooled(tmp_path)) == 1, display.warnings
