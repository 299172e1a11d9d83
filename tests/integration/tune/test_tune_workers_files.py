"""ransomeye_tune_workers: real gunicorn and celery load the files it writes; idempotence, check mode, backup."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
EXISTING_GUNICORN = "# demo settings\nbind = '127.0.0.1:18999'\nworkers = 1\nwsgi_app = 'app:app'\n"
EXISTING_CELERY = "broker_url = 'memory://'\nworker_concurrency = 1\n"


@pytest.fixture
def conf_dir(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(EXISTING_GUNICORN)
    (tmp_path / "celery_config.py").write_text(EXISTING_CELERY)
    return tmp_path


def _args(conf_dir, **extra):
    args = dict(cpus=2, memory="8GB", reserve_memory="4GB", worker_class="gthread",
                gunicorn_config=str(conf_dir / "gunicorn.conf.py"), celery_config=str(conf_dir / "celery_config.py"))
    args.update(extra)
    return args


def _gunicorn_check(conf_dir):
    return subprocess.run([os.path.join(BIN, "gunicorn"), "--check-config", "-c", str(conf_dir / "gunicorn.conf.py"),
                           "--print-config", "app:app"],
                          cwd=str(conf_dir), capture_output=True, text=True, timeout=120, check=False)


def _celery_conf(conf_dir):
    code = ("import json, sys; sys.path.insert(0, %r)\n"
            "from celery import Celery\n"
            "app = Celery('t'); app.config_from_object('celery_config')\n"
            "c = app.conf\n"
            "print(json.dumps([c.worker_concurrency, c.worker_prefetch_multiplier, c.worker_max_tasks_per_child,"
            " c.worker_max_memory_per_child, c.broker_url]))\n" % str(conf_dir))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_four_steps_and_real_gunicorn_and_celery_accept_the_files(conf_dir, run_module_direct):
    check = run_module_direct("ransomeye_tune_workers", _args(conf_dir), check=True, diff=True)
    assert check["_rc"] == 0, check
    assert check["changed"] is True
    assert (conf_dir / "gunicorn.conf.py").read_text() == EXISTING_GUNICORN  # check mode wrote nothing
    assert any("workers = 5" in d["after"] for d in check["diff"])

    applied = run_module_direct("ransomeye_tune_workers", _args(conf_dir, backup=True))
    assert applied["changed"] is True
    assert applied["gunicorn"]["workers"] == 5 and applied["gunicorn"]["threads"] == 4
    assert os.path.exists(applied["files"]["gunicorn"]["backup_file"])
    assert (conf_dir / "gunicorn.conf.py").read_text().startswith(EXISTING_GUNICORN)  # the rest is kept

    assert run_module_direct("ransomeye_tune_workers", _args(conf_dir), check=True)["changed"] is False
    again = run_module_direct("ransomeye_tune_workers", _args(conf_dir, backup=True))
    assert again["changed"] is False
    assert not any(f.get("backup_file") for f in again["files"].values())

    proc = _gunicorn_check(conf_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = dict(line.split("=", 1) for line in proc.stdout.replace(" ", "").splitlines() if "=" in line)
    assert printed["workers"] == "5" and printed["threads"] == "4" and printed["worker_class"] == "gthread"
    assert printed["max_requests"] == "1000" and printed["max_requests_jitter"] == "100"
    assert printed["bind"] == "['127.0.0.1:18999']"

    concurrency, prefetch, tasks, memory, broker = _celery_conf(conf_dir)
    assert [concurrency, prefetch, tasks, memory] == [applied["celery"][k] for k in (
        "concurrency", "prefetch_multiplier", "max_tasks_per_child", "max_memory_per_child")]
    assert broker == "memory://"


def test_changed_only_when_a_file_changes_and_reasoning_returned(conf_dir, run_module_direct):
    run_module_direct("ransomeye_tune_workers", _args(conf_dir))
    cpu = run_module_direct("ransomeye_tune_workers", _args(conf_dir, workload="cpu"), diff=True)
    assert cpu["changed"] is True
    assert cpu["files"]["celery"]["changed"] is True
    assert cpu["celery"]["concurrency"] == 2 and cpu["celery"]["prefetch_multiplier"] == 1
    assert "CPU-bound" in cpu["reasoning"]["celery.concurrency"]
    assert "(2 x 2 CPUs) + 1 = 5" in cpu["reasoning"]["gunicorn.workers"]
    assert _celery_conf(conf_dir)[:2] == [2, 1]


def test_detected_hardware_without_cpus_or_memory(conf_dir, run_module_direct):
    result = run_module_direct("ransomeye_tune_workers", dict(reserve_memory="50%"))
    assert result["_rc"] == 0, result
    assert 1 <= result["inputs"]["cpus"] <= len(os.sched_getaffinity(0))
    assert result["gunicorn"]["workers"] >= 2 and result["changed"] is False and result["files"] == {}


@pytest.mark.parametrize("args,fragment", [
    (dict(memory="12 parsecs"), "memory must be a size"), (dict(cpus=0), "cpus must be"),
    (dict(reserve_memory="150%"), "percentage"), (dict(min_workers=8, max_workers=2), "max_workers"),
    (dict(workload="gpu"), "workload must be one of")])
def test_bad_input_fails_clearly(conf_dir, run_module_direct, args, fragment):
    result = run_module_direct("ransomeye_tune_workers", _args(conf_dir, **args))
    assert result["failed"] is True and fragment in result["msg"], result
    assert "Traceback" not in result["_stderr"]
    assert (conf_dir / "gunicorn.conf.py").read_text() == EXISTING_GUNICORN


def test_missing_directory_fails_clearly(tmp_path, run_module_direct):
    result = run_module_direct("ransomeye_tune_workers", dict(cpus=2, memory="4GB",
                                                              gunicorn_config=str(tmp_path / "nope" / "g.py")))
    assert result["failed"] is True and "does not exist" in result["msg"]
