"""Attacker O (templated paths, symlinked directories, FIFOs) and H's planted links against the file modules."""
from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _files
from ansible_collections.ransomeye.ops.plugins.module_utils import _log_archive as la
from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import EnvFile
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def _old_log(path, text=b"line\n" * 50, age_days=10):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(text)
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


# ----------------------------------------------------------------------------- 3. canonical roots


@pytest.mark.parametrize("raw,canonical", [
    ("//", "/"), ("///", "/"), ("//etc", "/etc"), ("/tmp/x/..", "/tmp"), ("/tmp/x/../..", "/"),
    ("/var//log/", "/var/log"), ("/var/./log", "/var/log"), ("/var/log", "/var/log"), ("rel/../x", "x"),
])
def test_canonical_path(raw, canonical):
    assert _files.canonical_path(raw) == canonical


def test_canonical_path_keeps_the_physical_meaning_of_dotdot_after_a_symlink(tmp_path):
    real = tmp_path / "data" / "releases" / "5"
    real.mkdir(parents=True)
    os.symlink(str(real), str(tmp_path / "current"))
    assert _files.canonical_path(str(tmp_path / "current" / ".." / "4")) == str(tmp_path / "data" / "releases" / "4")


@pytest.mark.parametrize("root", ["//", "///", "/tmp/..", "/tmp/x/../.."])
def test_disk_clean_refuses_every_spelling_of_the_root_directory(run_module_direct, root):
    result = run_module_direct("ransomeye_disk_clean", dict(roots=[root]), check=True)
    assert result.get("failed") is True and "refusing to clean /" in result["msg"], result
    assert "removed" not in result


def test_path_options_reach_every_module_canonical(tmp_path, run_module_direct):
    logs = tmp_path / "logs"
    _old_log(str(logs / "a.log.1"))
    result = run_module_direct("ransomeye_log_archive", dict(paths=["/" + str(logs / "x" / ".." / "*.log.*")]),
                               check=True)
    assert result["_rc"] == 0, result
    assert [item["path"] for item in result["archived"]] == [str(logs / "a.log.1")]
    assert result["archived"][0]["archive"].startswith(str(logs / "archive") + "/")


# ----------------------------------------------------------------------------- 4. globs through symlinked dirs


def test_log_archive_never_archives_through_a_symlinked_directory(tmp_path, run_module_direct):
    logs = tmp_path / "logs"
    elsewhere = tmp_path / "elsewhere"
    own = _old_log(str(logs / "app" / "a.log.1"))
    victim = _old_log(str(elsewhere / "b.log.1"), b"not yours\n")
    os.symlink(str(elsewhere), str(logs / "evil"))
    result = run_module_direct("ransomeye_log_archive", dict(paths=[str(logs / "*" / "*.log.*")]))
    assert result["_rc"] == 0, result
    assert [item["path"] for item in result["archived"]] == [own]
    skipped = result["skipped_entries"]
    assert {"path": str(logs / "evil" / "b.log.1"), "reason": "path passes through a symlink (never followed)"} \
        in skipped
    assert os.listdir(str(elsewhere)) == ["b.log.1"]
    with open(victim, "rb") as handle:
        assert handle.read() == b"not yours\n"


def test_a_parent_swapped_for_a_symlink_after_the_scan_is_never_gone_through(tmp_path):
    logs = tmp_path / "logs"
    elsewhere = tmp_path / "elsewhere"
    _old_log(str(logs / "app" / "a.log.1"))
    _old_log(str(elsewhere / "a.log.1"), b"not yours\n")
    opts = la.build_options(dict(paths=[str(logs / "app" / "*.log.*")], retention_days=7))
    candidates, _skipped = la.find_candidates(opts, time.time())
    assert len(candidates) == 1
    os.rename(str(logs / "app"), str(logs / "app.moved"))
    os.symlink(str(elsewhere), str(logs / "app"))
    os.makedirs(str(elsewhere / "archive"))
    from ansible_collections.ransomeye.ops.plugins.module_utils._open_files import OpenFiles
    with pytest.raises(la._Skip):
        la.archive_one(opts, candidates[0], OpenFiles())
    assert sorted(os.listdir(str(elsewhere))) == ["a.log.1", "archive"]
    assert os.listdir(str(elsewhere / "archive")) == []


# ----------------------------------------------------------------------------- 5. vanish / swap between scan and open


@pytest.mark.parametrize("swap", ["vanish", "symlink", "fifo"])
def test_a_log_that_changes_between_scan_and_open_is_skipped_and_the_rest_archived(tmp_path, monkeypatch, swap):
    logs = tmp_path / "logs"
    first = _old_log(str(logs / "a.log.1"))
    second = _old_log(str(logs / "b.log.1"))
    third = _old_log(str(logs / "c.log.1"))
    secret = _old_log(str(tmp_path / "secret"), b"secret\n")
    scan = la.find_candidates

    def scan_then_swap(opts, now):
        found = scan(opts, now)
        os.unlink(second)  # between the scan and the open, as a concurrent logrotate or an attacker would
        if swap == "symlink":
            os.symlink(secret, second)
        elif swap == "fifo":
            os.mkfifo(second)
        return found

    monkeypatch.setattr(la, "find_candidates", scan_then_swap)
    result = la.run(dict(paths=[str(logs / "*.log.*")], retention_days=7), check_mode=False)
    assert sorted(item["path"] for item in result["archived"]) == [first, third]
    skipped = result["skipped_entries"]
    assert [entry["path"] for entry in skipped] == [second]
    assert not os.path.exists(first) and not os.path.exists(third)
    with open(secret, "rb") as handle:
        assert handle.read() == b"secret\n"


# ----------------------------------------------------------------------------- 6. FIFOs


def _fifo(path):
    os.mkfifo(path)
    return path


def _bounded(call, seconds=10):
    """Run ``call`` in a thread; fail (instead of hanging the suite) when it does not return in time."""
    box = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # the test inspects it
            box["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung on a FIFO"
    return box


def test_envfile_refuses_a_fifo_without_hanging(tmp_path):
    path = _fifo(str(tmp_path / "app.env"))
    box = _bounded(lambda: EnvFile.read(path))
    assert isinstance(box.get("error"), RansomeyeError) and "not a regular file" in box["error"].msg


def test_read_if_exists_refuses_a_fifo_without_hanging(tmp_path):
    path = _fifo(str(tmp_path / "conf"))
    box = _bounded(lambda: _files.read_if_exists(path))
    assert isinstance(box.get("error"), RansomeyeError) and "not a regular file" in box["error"].msg


def test_tune_workers_refuses_a_fifo_config_without_hanging(tmp_path, run_module_direct):
    path = _fifo(str(tmp_path / "gunicorn.conf.py"))
    result = run_module_direct("ransomeye_tune_workers", dict(cpus=2, memory="4GB", gunicorn_config=path),
                               timeout=30)
    assert result.get("failed") is True and "not a regular file" in result["msg"], result
    assert "Traceback" not in result["_stderr"]


def test_rotate_db_creds_refuses_a_fifo_env_file_without_hanging(tmp_path, run_module_direct):
    path = _fifo(str(tmp_path / "app.env"))
    result = run_module_direct("ransomeye_rotate_db_creds", dict(role="app", env_files=[path], force=True,
                                                                 login_host="127.0.0.1", login_port=1),
                               check=True, timeout=30)
    assert result.get("failed") is True and "not a regular file" in result["msg"], result
