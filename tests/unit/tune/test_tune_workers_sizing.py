"""Gunicorn and celery sizing formulas, and the managed block in their config files."""
from __future__ import annotations

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _workers
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

GB = 1024 ** 3
MB = 1024 ** 2


def _rec(**kwargs):
    kwargs.setdefault("cpus", 4)
    kwargs.setdefault("memory", 16 * GB)
    kwargs.setdefault("reserve_memory", 8 * GB)
    return _workers.recommend(_workers.WorkerInput(**kwargs))


def test_workers_start_at_two_per_cpu_plus_one():
    rec = _rec(cpus=4)
    assert rec.gunicorn["workers"] == 9
    assert "(2 x 4 CPUs) + 1 = 9" in rec.reasoning["gunicorn.workers"]


def test_workers_capped_by_memory():
    # (4GB - 3GB) / 256MB = 4 < 2 x 16 + 1
    rec = _rec(cpus=16, memory=4 * GB, reserve_memory=3 * GB)
    assert rec.gunicorn["workers"] == 4
    assert "memory cap" in rec.reasoning["gunicorn.workers"]


def test_workers_bounded_by_min_and_max():
    low = _rec(cpus=1, memory=GB, reserve_memory=GB - 100 * MB, min_workers=2)
    assert low.gunicorn["workers"] == 2
    assert any("min_workers" in w for w in low.warnings)
    high = _rec(cpus=32, memory=256 * GB, reserve_memory=64 * GB, max_workers=12)
    assert high.gunicorn["workers"] == 12
    assert "max_workers 12" in high.reasoning["gunicorn.workers"]


def test_threads_only_for_gthread():
    assert "threads" not in _rec(worker_class="sync").gunicorn
    assert _rec(worker_class="gthread").gunicorn["threads"] == 4
    assert _rec(worker_class="gthread", workload="cpu").gunicorn["threads"] == 2
    assert _rec(worker_class="gthread", threads=8).gunicorn["threads"] == 8


def test_max_requests_jitter_defaults_to_ten_percent():
    rec = _rec(max_requests=2000)
    assert (rec.gunicorn["max_requests"], rec.gunicorn["max_requests_jitter"]) == (2000, 200)
    assert _rec(max_requests_jitter=7).gunicorn["max_requests_jitter"] == 7


def test_celery_cpu_bound_uses_cpu_count_and_prefetch_one():
    rec = _rec(cpus=6, workload="cpu")
    assert rec.celery["concurrency"] == 6
    assert rec.celery["prefetch_multiplier"] == 1


def test_celery_io_bound_uses_a_multiple_capped_by_memory_left():
    assert _rec(cpus=4, workload="io", io_multiplier=3).celery["concurrency"] == 12
    # budget 2GB: gunicorn 2 x 4 + 1 = 9 > 8 by memory -> 8 workers x 256MB = 2GB; nothing left -> 1
    rec = _rec(cpus=4, memory=4 * GB, reserve_memory=2 * GB)
    assert rec.gunicorn["workers"] == 8
    assert rec.celery["concurrency"] == 1
    assert any("celery" in w for w in rec.warnings)


def test_celery_max_memory_per_child_in_kib():
    assert _rec(celery_per_child_memory=512 * MB).celery["max_memory_per_child"] == 512 * 1024
    assert _rec().celery["max_memory_per_child"] == 256 * 1024


def test_every_number_has_its_reasoning():
    rec = _rec(worker_class="gthread")
    for key in rec.gunicorn:
        assert rec.reasoning.get("gunicorn.%s" % key)
    for key in rec.celery:
        assert rec.reasoning.get("celery.%s" % key)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(cpus=0), "cpus must be"), (dict(memory=0), "memory must be"), (dict(min_workers=5, max_workers=2), "max_workers"),
    (dict(workload="gpu"), "workload must be"), (dict(worker_class="bad class;"), "worker_class"),
    (dict(per_worker_memory=0), "per_worker_memory")])
def test_bad_input_is_refused(kwargs, fragment):
    with pytest.raises(RansomeyeError) as info:
        _rec(**kwargs)
    assert fragment in info.value.msg


def test_merge_block_appends_then_replaces_keeping_the_rest():
    rec = _rec()
    block = _workers.gunicorn_block(rec)
    original = 'bind = "127.0.0.1:8000"\nworkers = 1\n'
    merged = _workers.merge_block(original, block)
    assert merged.startswith(original)
    assert merged.count(_workers.BEGIN_MARK) == 1
    namespace = {}
    exec(compile(merged, "gunicorn.conf.py", "exec"), namespace)  # the file is Python; the block wins
    assert namespace["workers"] == rec.gunicorn["workers"] and namespace["bind"] == "127.0.0.1:8000"
    other = _workers.gunicorn_block(_rec(cpus=1))
    remerged = _workers.merge_block(merged + "# trailing comment\n", other)
    assert remerged.count(_workers.BEGIN_MARK) == 1
    assert remerged.endswith("# trailing comment\n")
    assert "workers = 3" in remerged and _workers.merge_block(remerged, other) == remerged


def test_celery_block_uses_celery_setting_names():
    namespace = {}
    exec(compile(_workers.celery_block(_rec(cpus=2, workload="cpu"), {"broker_pool_limit": 10}), "c.py", "exec"), namespace)
    assert namespace["worker_concurrency"] == 2
    assert namespace["worker_prefetch_multiplier"] == 1
    assert namespace["worker_max_tasks_per_child"] == 1000
    assert namespace["worker_max_memory_per_child"] == 262144
    assert namespace["broker_pool_limit"] == 10


def test_extra_settings_may_be_lists_and_dicts():
    namespace = {}
    block = _workers.gunicorn_block(_rec(), {"bind": ["127.0.0.1:8000", "[::1]:8000"], "raw_env": {"A": "1"}})
    exec(compile(block, "g.py", "exec"), namespace)
    assert namespace["bind"] == ["127.0.0.1:8000", "[::1]:8000"] and namespace["raw_env"] == {"A": "1"}
    with pytest.raises(RansomeyeError):
        _workers.gunicorn_block(_rec(), {"bad": object()})


def test_extra_setting_name_must_be_an_identifier():
    with pytest.raises(RansomeyeError):
        _workers.gunicorn_block(_rec(), {"bad name": 1})
