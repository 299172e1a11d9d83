"""The DR drill's proof helper (roles/dr_drill/files/drill_helper.py): each check fails on its own kind of damage."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest

HELPER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "dr_drill", "files", "drill_helper.py")


def _load():
    spec = importlib.util.spec_from_file_location("drill_helper", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helper = _load()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "etc"
    (root / "tls").mkdir(parents=True)
    (root / "app.env").write_text("DB_PASSWORD=x\n")
    (root / "tls" / "server.crt").write_text("cert\n")
    os.chmod(root / "app.env", 0o640)
    os.symlink("server.crt", root / "tls" / "current.crt")
    return str(root)


def _request(tree):
    snap = helper.snapshot({"roots": [tree]})
    tables = {"public.hosts": 3, "public.events": 10}
    return {
        "pre": snap, "post": copy.deepcopy(snap),
        "restore_files": {p: v["sha256"] for p, v in snap["files"].items()},
        "restore_links": dict(snap["links"]),
        "backup_tables": tables, "restore_tables": dict(tables), "manifest_tables": dict(tables),
        "health": {"status": "ok", "counts": {"hosts": 3, "events": 10}, "pid": 200, "started": 20.0},
        "health_before": {"status": "ok", "counts": {"hosts": 3, "events": 10}, "pid": 100, "started": 10.0},
    }


def _failed(result):
    return sorted(c["check"] for c in result["checks"] if not c["ok"])


def test_demo_helper_snapshot_hashes_files_modes_and_links_without_following(tree):
    snap = helper.snapshot({"roots": [tree]})
    env = os.path.join(tree, "app.env")
    assert snap["files"][env]["mode"] == "0640"
    assert snap["files"][env]["sha256"] == helper.sha256_file(env)
    assert snap["links"] == {os.path.join(tree, "tls", "current.crt"): "server.crt"}
    assert os.path.join(tree, "tls", "current.crt") not in snap["files"]


def test_demo_helper_prove_passes_on_an_exact_restore(tree):
    result = helper.prove(_request(tree))
    assert result["ok"] and result["problems"] == [] and _failed(result) == []
    assert "app_restarted" in [c["check"] for c in result["checks"]]


@pytest.mark.parametrize("damage, expected", [
    ("missing_file", ["content_hashes_vs_manifest", "files_present"]),
    ("changed_content", ["content_hashes_vs_manifest", "content_hashes_vs_pre_disaster"]),
    ("changed_mode", ["modes"]),
    ("extra_file", ["no_extra_files"]),
    ("link_target", ["symlinks"]),
    ("row_count", ["row_counts_restored"]),
    ("manifest_hash", ["content_hashes_vs_manifest"]),
    ("app_down", ["app_health_from_restored_db"]),
    ("app_counts", ["app_health_from_restored_db"]),
    ("app_not_restarted", ["app_restarted"]),
])
def test_demo_helper_prove_fails_on_each_kind_of_damage(tree, damage, expected):
    req = _request(tree)
    env = os.path.join(tree, "app.env")
    if damage == "missing_file":
        del req["post"]["files"][env]
    elif damage == "changed_content":
        req["post"]["files"][env]["sha256"] = "0" * 64
    elif damage == "changed_mode":
        req["post"]["files"][env]["mode"] = "0644"
    elif damage == "extra_file":
        req["post"]["files"][os.path.join(tree, "dropped.exe")] = {"sha256": "1" * 64, "mode": "0755", "size": 1}
    elif damage == "link_target":
        req["post"]["links"][os.path.join(tree, "tls", "current.crt")] = "/etc/shadow"
    elif damage == "row_count":
        req["restore_tables"]["public.events"] = 9
    elif damage == "manifest_hash":
        req["restore_files"][env] = "2" * 64
    elif damage == "app_down":
        req["health"] = {"status": "unavailable", "error": "connection refused"}
    elif damage == "app_counts":
        req["health"]["counts"]["events"] = 0
    elif damage == "app_not_restarted":
        req["health"]["pid"], req["health"]["started"] = 100, 10.0
    result = helper.prove(req)
    assert not result["ok"]
    assert _failed(result) == expected
    assert all(any(name in p for p in result["problems"]) for name in expected)


def test_demo_helper_prove_compares_only_the_sample_of_a_truncated_restore_result(tree):
    req = _request(tree)
    env = os.path.join(tree, "app.env")
    del req["restore_files"][env]
    assert _failed(helper.prove(req)) == ["content_hashes_vs_manifest"]
    req["restore_truncated"] = True
    assert helper.prove(req)["ok"]
    req["restore_files"][os.path.join(tree, "tls", "server.crt")] = "3" * 64
    assert _failed(helper.prove(req)) == ["content_hashes_vs_manifest"]


def test_demo_helper_cli_reports_bad_input_as_json_not_a_traceback():
    proc = subprocess.run([sys.executable, HELPER, "prove"], input="{not json", capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["failed"] and "prove failed" in out["msg"]
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, HELPER, "bogus"], input="{}", capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "usage" in json.loads(proc.stdout)["msg"]
