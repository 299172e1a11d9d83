"""Result keys Ansible itself reads: a module that changed things must never be reported as skipped.

Ansible treats a non-empty ``skipped`` in a result as "this task skipped":
the recap said changed=0 and notified handlers never ran. One real play
with a handler proves the renamed keys (``skipped_entries``,
``skipped_tables``) leave the task changed.
"""
from __future__ import annotations

import ast
import json
import os
import time

from tests.harness.paths import REPO

RESERVED = {"skipped", "failed", "changed", "unreachable", "skip_reason", "rc"}


def test_a_clean_that_removed_files_and_skipped_others_is_changed_and_notifies(tmp_path, run_playbook):
    root = tmp_path / "tmp"
    root.mkdir()
    old = root / "old.tmp"
    old.write_bytes(b"x")
    time.sleep(2.2)  # disk_clean keeps a file while any of atime, mtime or ctime is young; ctime cannot be set back
    os.symlink("/etc/hostname", str(root / "link"))  # left alone: reported among the skipped entries
    marker = tmp_path / "handler-ran"
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "clean", "ransomeye.ops.ransomeye_disk_clean": {"roots": [str(root)], "temp_age": "2s"},
                   "register": "out", "notify": "mark"}],
        "handlers": [{"name": "mark", "ansible.builtin.file": {"path": str(marker), "state": "touch"}}],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    run = run_playbook(str(playbook))
    assert run.rc == 0, run.stdout[-3000:]
    record = run.task("clean")
    assert record["status"] == "ok" and record["result"]["changed"] is True, record  # "skipped" before the fix
    assert record["result"]["skipped_entries"] == {"symlink": 1}
    assert run.stats["localhost"]["changed"] >= 2 and run.stats["localhost"]["skipped"] == 0
    assert marker.exists(), "the handler did not run"


def test_no_module_documents_a_result_key_that_ansible_reads():
    import yaml
    offenders = []
    modules = os.path.join(REPO, "plugins", "modules")
    for name in sorted(os.listdir(modules)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(modules, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        text = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "RETURN"][0]
        returned = yaml.safe_load(text) or {}
        offenders += ["%s: %s" % (name, key) for key in returned if key in RESERVED - {"changed", "rc"}]
    assert offenders == []
