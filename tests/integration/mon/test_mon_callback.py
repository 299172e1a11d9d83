"""The ransomeye.ops.siem callback: failures and the recap reach a real rsyslog, secrets never do."""
from __future__ import annotations

import json
import os
import secrets

import pytest


def _playbook(tmp_path, secret, marker):
    play = [{
        "name": "siem callback play",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"db_secret": secret},
        "tasks": [
            {"name": "fine", "ansible.builtin.debug": {"msg": "all good"}},
            {"name": "secret task", "ansible.builtin.fail": {"msg": "password is {{ db_secret }}"},
             "no_log": True, "ignore_errors": True},
            {"name": "secret command", "ansible.builtin.command": {"argv": ["/bin/sh", "-c", "echo {{ db_secret }} >&2; exit 3"]},
             "no_log": True, "ignore_errors": True},
            {"name": "boom task", "ansible.builtin.fail": {"msg": "boom %s \"quoted\" [x] \\ ü" % marker}},
        ],
    }]
    path = tmp_path / "play.yml"
    path.write_text(json.dumps(play))
    return str(path)


def _env(rsyslog, marker, **extra):
    env = {
        "ANSIBLE_CALLBACKS_ENABLED": "ransomeye_recorder,ransomeye.ops.siem",
        "RANSOMEYE_SIEM_SERVER": "127.0.0.1",
        "RANSOMEYE_SIEM_PORT": str(rsyslog.ports["tcp"]),
        "RANSOMEYE_SIEM_PROTOCOL": "tcp",
        "RANSOMEYE_SIEM_HOSTNAME": marker,
        "RANSOMEYE_SIEM_SEND_IGNORED": "true",
    }
    env.update(extra)
    return env


def test_failures_and_recap_reach_rsyslog_without_secrets(rsyslog, run_playbook, tmp_path, marker):
    secret = "S3cr3t-" + secrets.token_hex(8)
    run = run_playbook(_playbook(tmp_path, secret, marker), env=_env(rsyslog, marker))
    assert run.rc != 0  # the boom task failed the play
    records = rsyslog.wait_for(lambda r: r["hostname"] == marker, count=4, settle=1.0)
    by_msgid = {}
    for record in records:
        by_msgid.setdefault(record["msgid"], []).append(record)
    failed = by_msgid["TASK_FAILED"]
    assert len(failed) == 3
    boom = [r for r in failed if "boom task" in r["msg"]]
    assert len(boom) == 1
    assert 'boom %s "quoted" [x] \\ ü' % marker in boom[0]["msg"]
    assert 'task="boom task"' in boom[0]["structured_data"]
    assert int(boom[0]["pri"]) == 20 * 8 + 3  # local4.err
    # A no_log task's (possibly secret-templated) name is never sent.
    censored = [r for r in failed if "name hidden: no_log task" in r["msg"]]
    assert len(censored) == 2
    for record in censored:
        assert "no_log: true" in record["msg"] and "secret" not in record["raw"]
    (recap,) = by_msgid["PLAY_RECAP"]
    assert 'failures="1"' in recap["structured_data"] and 'ignored="2"' in recap["structured_data"]
    assert int(recap["pri"]) == 20 * 8 + 3  # a host with failures is reported at failure severity
    # No trace of the secret anywhere rsyslog received it, nor in the controller output.
    for record in rsyslog.records():
        assert secret not in record["raw"]
    # (ansible-core 2.19's own default stdout callback prints the msg of a failing no_log `fail` task in its
    # "[ERROR]: Task failed" banner, so the controller's stdout is not asserted here: that is core's output.)


def test_receiver_down_spools_on_the_controller_and_next_run_delivers(rsyslog, run_playbook, tmp_path, marker):
    spool = str(tmp_path / "siem-spool")
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "first failure", "ansible.builtin.fail": {"msg": "first"}}]}]
    path = tmp_path / "p1.yml"
    path.write_text(json.dumps(play))
    down_port = rsyslog.ports["tcp"] + 0
    # Nothing listens on this port (a fresh one), so the callback queues.
    from tests.harness.rsyslog import free_port
    env = _env(rsyslog, marker, RANSOMEYE_SIEM_PORT=str(free_port()), RANSOMEYE_SIEM_SPOOL_DIR=spool,
               RANSOMEYE_SIEM_SEND_RECAP="false")
    run = run_playbook(str(path), env=env)
    assert run.rc != 0
    assert "ransomeye.ops.siem" in run.stdout + run.stderr  # the operator is warned
    assert len([n for n in os.listdir(spool) if n.endswith(".alert")]) == 1
    env["RANSOMEYE_SIEM_PORT"] = str(down_port)
    play[0]["tasks"][0] = {"name": "second failure", "ansible.builtin.fail": {"msg": "second"}}
    path.write_text(json.dumps(play))
    run_playbook(str(path), env=env)
    records = rsyslog.wait_for(lambda r: r["hostname"] == marker, count=2, settle=0.5)
    assert ["first failure" in records[0]["msg"], "second failure" in records[1]["msg"]] == [True, True]
    assert [n for n in os.listdir(spool) if n.endswith(".alert")] == []


@pytest.mark.parametrize("env_extra, expected", [
    ({"RANSOMEYE_SIEM_FACILITY": "local99"}, "unknown syslog facility"),
    ({"RANSOMEYE_SIEM_PORT": "70000"}, "port must be between 1 and 65535"),
    ({"RANSOMEYE_SIEM_PROTOCOL": "tls", "RANSOMEYE_SIEM_CA_CERT": "/nonexistent/ca.pem"}, "is not a readable file"),
])
def test_bad_configuration_warns_and_never_breaks_the_play(rsyslog, run_playbook, tmp_path, marker, env_extra, expected):
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{"ansible.builtin.debug": {"msg": "x"}}]}]
    path = tmp_path / "p.yml"
    path.write_text(json.dumps(play))
    run = run_playbook(str(path), env=_env(rsyslog, marker, **env_extra))
    assert run.rc == 0
    assert "ransomeye.ops.siem is disabled" in run.stdout + run.stderr
    assert expected in run.stdout + run.stderr


def test_callback_over_tls_with_client_certificate_via_ansible_cfg(rsyslog, run_playbook, tmp_path, marker):
    """Configured through ansible.cfg [callback_ransomeye_siem], over TLS with a client certificate."""
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text(
        "[callback_ransomeye_siem]\nserver = 127.0.0.1\nport = %d\nprotocol = tls\nformat = rfc5424\n"
        "ca_cert = %s\nclient_cert = %s\nclient_key = %s\ntls_server_name = localhost\nhostname = %s\n"
        % (rsyslog.ports["mtls"], rsyslog.pki["ca"], rsyslog.pki["client_cert"], rsyslog.pki["client_key"], marker))
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "tls failure", "ansible.builtin.fail": {"msg": "over tls"}}]}]
    path = tmp_path / "p.yml"
    path.write_text(json.dumps(play))
    run = run_playbook(str(path), env={"ANSIBLE_CONFIG": str(cfg),
                                       "ANSIBLE_CALLBACKS_ENABLED": "ransomeye_recorder,ransomeye.ops.siem"})
    assert run.rc != 0
    records = rsyslog.wait_for(lambda r: r["hostname"] == marker, count=2, settle=0.5)
    assert {r["input"] for r in records} == {"mtls"}
    assert [r["msgid"] for r in records] == ["TASK_FAILED", "PLAY_RECAP"]
    assert "over tls" in records[0]["msg"]


def test_empty_unsafe_extra_vars_do_not_break_the_callback(run_playbook, tmp_path):
    # ansible-core 2.19 hands the callback tagged values: an empty !unsafe extra var (as AWX passes an unset survey
    # answer) in a failed task's name, message and argv must still give complete alerts (spooled: no receiver).
    extra = tmp_path / "extra.yml"
    extra.write_text("empty_unsafe: !unsafe ''\ntmpl_unsafe: !unsafe '{{ not_templated }}'\n")
    play = tmp_path / "p.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: fails with \"{{ empty_unsafe }}\"\n      ansible.builtin.fail:\n        msg: \"{{ empty_unsafe }}\"\n"
        "      ignore_errors: true\n"
        "    - name: argv with unsafe values\n      ansible.builtin.command:\n"
        "        argv: [/bin/false, \"{{ empty_unsafe }}\", \"{{ tmpl_unsafe }}\"]\n")
    spool = tmp_path / "spool"
    run = run_playbook(str(play), args=["-e", "@%s" % extra], env={
        "ANSIBLE_CALLBACKS_ENABLED": "ransomeye_recorder,ransomeye.ops.siem", "RANSOMEYE_SIEM_SPOOL_DIR": str(spool),
        "RANSOMEYE_SIEM_SEND_IGNORED": "true"})
    assert run.rc == 2 and "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
    assert "ransomeye.ops.siem" not in run.stdout + run.stderr   # no warning: nothing dropped or disabled
    alerts = [json.loads((spool / name).read_text())["message"] for name in sorted(os.listdir(spool))
              if name.endswith(".alert")]
    assert [a.split()[5] for a in alerts] == ["TASK_FAILED", "TASK_FAILED", "PLAY_RECAP"], alerts
    assert 'task="fails with \\"\\""' in alerts[0] and 'action="ansible.builtin.command"' in alerts[1]
