"""The schedule role installs cron entries and systemd units idempotently, and their command runs."""
from __future__ import annotations

import os
import shlex
import subprocess


HELLO = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: leave a mark
      ansible.builtin.copy:
        dest: "{{ mark }}"
        content: "ran\\n"
        mode: "0644"
"""


def _play(tmp_path, method, state="present", **extra_vars):
    jobs = [{"name": "hello", "playbook": str(tmp_path / "hello.yml"), "cron": "*/5 * * * *",
             "on_calendar": "*-*-* 02:00:00", "extra_args": ["-e", "mark=%s" % (tmp_path / "mark")]}]
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{
        "role": "schedule",
        "vars": {"schedule_method": method, "schedule_state": state, "schedule_jobs": jobs,
                 "schedule_cron_dir": str(tmp_path / "cron.d"), "schedule_systemd_dir": str(tmp_path / "systemd"),
                 "schedule_systemd_reload": False, "schedule_log_dir": str(tmp_path / "log"),
                 "schedule_lock_dir": str(tmp_path), "schedule_inventory": str(tmp_path / "inv.ini"),
                 "schedule_bin_dir": str(tmp_path / "bin"), **extra_vars}}]}]
    path = tmp_path / ("play-%s.yml" % method)
    import json
    path.write_text(json.dumps(play))
    return str(path)


def _setup(tmp_path):
    import sys
    (tmp_path / "hello.yml").write_text(HELLO)
    (tmp_path / "inv.ini").write_text(
        "localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    (tmp_path / "cron.d").mkdir()
    (tmp_path / "systemd").mkdir()


def test_cron_entry_is_installed_once_and_its_command_runs(tmp_path, run_playbook):
    _setup(tmp_path)
    first = run_playbook(_play(tmp_path, "cron"))
    assert first.rc == 0, first.stdout
    assert first.task("Install cron entries")["result"]["changed"] is True
    second = run_playbook(_play(tmp_path, "cron"))
    assert second.rc == 0 and second.task("Install cron entries")["result"]["changed"] is False
    entry = (tmp_path / "cron.d" / "ransomeye-ops-hello").read_text()
    line = [ln for ln in entry.splitlines() if ln.startswith("*/5")][0]
    fields = line.split(None, 6)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"] and fields[5] == "root"
    proc = subprocess.run(["/bin/sh", "-c", fields[6]], capture_output=True, text=True, check=False,
                          env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mark").read_text() == "ran\n"
    assert "PLAY RECAP" in (tmp_path / "log" / "hello.log").read_text()


def test_systemd_units_are_installed_and_exec_start_runs(tmp_path, run_playbook):
    _setup(tmp_path)
    assert run_playbook(_play(tmp_path, "systemd")).rc == 0
    again = run_playbook(_play(tmp_path, "systemd"))
    assert again.task("Install systemd timers")["result"]["changed"] is False
    service = (tmp_path / "systemd" / "ransomeye-ops-hello.service").read_text()
    timer = (tmp_path / "systemd" / "ransomeye-ops-hello.timer").read_text()
    assert "OnCalendar=*-*-* 02:00:00" in timer
    exec_start = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")][0][len("ExecStart="):]
    proc = subprocess.run(shlex.split(exec_start), capture_output=True, text=True, check=False,
                          env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "mark").read_text() == "ran\n"


def test_absent_removes_the_entries(tmp_path, run_playbook):
    _setup(tmp_path)
    assert run_playbook(_play(tmp_path, "cron")).rc == 0
    assert run_playbook(_play(tmp_path, "cron", state="absent")).rc == 0
    assert not (tmp_path / "cron.d" / "ransomeye-ops-hello").exists()


def test_bad_job_definition_fails_clearly(tmp_path, run_playbook):
    _setup(tmp_path)
    play = _play(tmp_path, "cron").replace('"name": "hello"', '"name": "bad name; rm -rf /"')
    bad = tmp_path / "bad.yml"
    bad.write_text(open(play).read().replace('"name": "hello"', '"name": "bad name; rm -rf /"'))
    run = run_playbook(str(bad))
    assert run.rc != 0
    assert "needs name, playbook" in run.task("Check the job definitions")["result"]["results"][0]["msg"]
    assert list((tmp_path / "cron.d").iterdir()) == []


def test_runs_log_with_timestamps_rotate_and_a_skipped_overlap_leaves_a_line(tmp_path, run_playbook):
    import fcntl
    import re
    _setup(tmp_path)
    assert run_playbook(_play(tmp_path, "cron", schedule_log_max_bytes=200, schedule_log_keep=2)).rc == 0
    entry = (tmp_path / "cron.d" / "ransomeye-ops-hello").read_text()
    command = [ln for ln in entry.splitlines() if ln.startswith("*/5")][0].split(None, 6)[6]
    log = tmp_path / "log" / "hello.log"
    env = dict(os.environ, HOME=str(tmp_path))
    assert subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode == 0
    lines = log.read_text().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[hello\] start: ", lines[0])
    assert re.match(r"^\S+Z \[hello\] end: rc=0 after ", lines[-1]) and any("PLAY RECAP" in ln for ln in lines)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\S+Z ", ln) for ln in lines)
    # An overlapping run (the lock is held) leaves one line saying it skipped, and does not run.
    (tmp_path / "mark").unlink()
    fd = os.open(str(tmp_path / "ransomeye-ops-hello.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode == 0
    finally:
        os.close(fd)
    assert "[hello] skipped: an earlier run still holds" in log.read_text().splitlines()[-1]
    assert not (tmp_path / "mark").exists()
    # The log is over 200 bytes: the next runs rotate it, keeping two rotated logs.
    for dummy in range(3):
        assert subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode == 0
    assert (tmp_path / "log" / "hello.log.1").exists() and (tmp_path / "log" / "hello.log.2").exists()
    assert not (tmp_path / "log" / "hello.log.3").exists()
