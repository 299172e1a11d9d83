# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: gunicorn and celery worker sizing, and their config files.

Gunicorn: ``workers`` starts at ``(2 x cpus) + 1`` (gunicorn's documented
starting point), is capped by memory, ``(memory - reserve) / per_worker_memory``,
then bounded by ``min_workers``/``max_workers``. Celery: ``concurrency`` is the
CPU count for CPU-bound tasks or ``cpus x io_multiplier`` for IO-bound tasks,
capped by the memory gunicorn leaves. Every number comes with its reasoning.

The config files are Python. Only a marked block at their end is managed, so
other settings of the file (``bind``, ``broker_url``...) are kept; Python's
later assignment wins, so the block's values are the ones in force.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

BEGIN_MARK = "# BEGIN ransomeye.ops tune_workers (managed block: edits inside it are replaced)"
END_MARK = "# END ransomeye.ops tune_workers"
WORKER_CLASSES = ("sync", "gthread", "gevent", "eventlet", "tornado", "uvicorn.workers.UvicornWorker")
WORKLOADS = ("cpu", "io")
_MIB = 1024 * 1024


class WorkerInput(t.NamedTuple):
    cpus: int
    memory: int                      # bytes available to the host (cgroup aware)
    reserve_memory: int              # bytes kept for PostgreSQL and the OS
    per_worker_memory: int = 256 * _MIB
    worker_class: str = "sync"
    threads: t.Optional[int] = None
    min_workers: int = 2
    max_workers: t.Optional[int] = 12
    max_requests: int = 1000
    max_requests_jitter: t.Optional[int] = None
    timeout: int = 30
    workload: str = "io"
    io_multiplier: int = 4
    celery_per_child_memory: t.Optional[int] = None
    max_tasks_per_child: int = 1000
    prefetch_multiplier: t.Optional[int] = None


class Recommendation(t.NamedTuple):
    gunicorn: t.Dict[str, t.Any]
    celery: t.Dict[str, t.Any]
    reasoning: t.Dict[str, str]
    warnings: t.List[str]


def human(size: int) -> str:
    """Bytes as a short binary size for reasoning text (``1.5GiB``, ``256MiB``)."""
    for unit, factor in (("GiB", 1024 ** 3), ("MiB", _MIB), ("KiB", 1024)):
        if abs(size) >= factor:
            value = size / factor
            return ("%d%s" % (value, unit)) if value == int(value) else ("%.1f%s" % (value, unit))
    return "%dB" % size


def validate(inp: WorkerInput) -> None:
    def positive(name: str, value: t.Any, minimum: int = 1) -> None:
        if value is None or isinstance(value, bool) or int(value) < minimum:
            raise RansomeyeError("%s must be a whole number of at least %d, not %r" % (name, minimum, value))

    positive("cpus", inp.cpus)
    positive("memory", inp.memory)
    positive("per_worker_memory", inp.per_worker_memory)
    positive("min_workers", inp.min_workers)
    positive("max_requests", inp.max_requests, 0)
    positive("timeout", inp.timeout)
    positive("io_multiplier", inp.io_multiplier)
    positive("max_tasks_per_child", inp.max_tasks_per_child, 0)
    if inp.reserve_memory < 0:
        raise RansomeyeError("reserve_memory must not be negative")
    if inp.max_workers is not None:
        positive("max_workers", inp.max_workers)
        if inp.max_workers < inp.min_workers:
            raise RansomeyeError("max_workers (%d) must not be below min_workers (%d)" % (inp.max_workers, inp.min_workers))
    if inp.threads is not None:
        positive("threads", inp.threads)
    if inp.max_requests_jitter is not None:
        positive("max_requests_jitter", inp.max_requests_jitter, 0)
    if inp.prefetch_multiplier is not None:
        positive("prefetch_multiplier", inp.prefetch_multiplier)
    if inp.celery_per_child_memory is not None:
        positive("celery_per_child_memory", inp.celery_per_child_memory)
    if inp.workload not in WORKLOADS:
        raise RansomeyeError("workload must be one of %s, not %r" % (", ".join(WORKLOADS), inp.workload))
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", inp.worker_class or ""):
        raise RansomeyeError("worker_class %r is not a gunicorn worker class name" % (inp.worker_class,))


def recommend(inp: WorkerInput) -> Recommendation:
    """Size gunicorn and celery for ``inp``; explain every number."""
    validate(inp)
    why: t.Dict[str, str] = {}
    warnings: t.List[str] = []
    budget = inp.memory - inp.reserve_memory
    why["memory_budget"] = "%s memory - %s reserve for PostgreSQL and the OS = %s for app workers" % (
        human(inp.memory), human(inp.reserve_memory), human(max(budget, 0)))
    if budget < inp.per_worker_memory:
        warnings.append("memory %s minus reserve %s leaves less than one worker's %s"
                        % (human(inp.memory), human(inp.reserve_memory), human(inp.per_worker_memory)))

    # gunicorn
    by_cpu = 2 * inp.cpus + 1
    by_memory = max(budget, 0) // inp.per_worker_memory
    workers = min(by_cpu, by_memory)
    text = "(2 x %d CPUs) + 1 = %d; memory cap %s / %s per worker = %d" % (
        inp.cpus, by_cpu, human(max(budget, 0)), human(inp.per_worker_memory), by_memory)
    text += " -> %d" % workers
    if workers < inp.min_workers:
        text += "; raised to min_workers %d" % inp.min_workers
        if by_memory < inp.min_workers:
            warnings.append("min_workers %d exceeds what memory allows (%d workers)" % (inp.min_workers, by_memory))
        workers = inp.min_workers
    if inp.max_workers is not None and workers > inp.max_workers:
        text += "; lowered to max_workers %d" % inp.max_workers
        workers = inp.max_workers
    why["gunicorn.workers"] = text + " => %d" % workers

    gunicorn: t.Dict[str, t.Any] = {"workers": workers, "worker_class": inp.worker_class}
    why["gunicorn.worker_class"] = "given (%s)" % inp.worker_class
    if inp.worker_class == "gthread":
        threads = inp.threads or (2 if inp.workload == "cpu" else 4)
        gunicorn["threads"] = threads
        why["gunicorn.threads"] = ("given" if inp.threads else
                                   "gthread worker: %d threads per worker for %s-bound requests (threads share the "
                                   "worker's memory)" % (threads, inp.workload))
    jitter = inp.max_requests_jitter if inp.max_requests_jitter is not None else inp.max_requests // 10
    gunicorn["max_requests"] = inp.max_requests
    gunicorn["max_requests_jitter"] = jitter
    why["gunicorn.max_requests"] = "each worker is replaced after %d requests to bound memory growth" % inp.max_requests
    why["gunicorn.max_requests_jitter"] = ("given" if inp.max_requests_jitter is not None else
                                           "10%% of max_requests = %d, so workers do not restart together" % jitter)
    gunicorn["timeout"] = inp.timeout
    gunicorn["graceful_timeout"] = inp.timeout
    why["gunicorn.timeout"] = "a worker silent for %ds is killed and replaced" % inp.timeout
    why["gunicorn.graceful_timeout"] = "same as timeout (%ds): time a worker gets to finish its requests on restart" % inp.timeout

    # celery
    per_child = inp.celery_per_child_memory or inp.per_worker_memory
    left = max(budget - workers * inp.per_worker_memory, 0)
    if inp.workload == "cpu":
        by_cpu_c = inp.cpus
        text = "CPU-bound: one process per CPU = %d" % by_cpu_c
    else:
        by_cpu_c = inp.cpus * inp.io_multiplier
        text = "IO-bound: %d CPUs x %d = %d" % (inp.cpus, inp.io_multiplier, by_cpu_c)
    by_memory_c = left // per_child
    concurrency = max(1, min(by_cpu_c, by_memory_c))
    text += "; memory cap (%s budget - %d gunicorn workers x %s) / %s = %d => %d" % (
        human(max(budget, 0)), workers, human(inp.per_worker_memory), human(per_child), by_memory_c, concurrency)
    if by_memory_c < 1:
        warnings.append("no memory left for celery after gunicorn; concurrency kept at 1")
    why["celery.concurrency"] = text
    prefetch = inp.prefetch_multiplier or (1 if inp.workload == "cpu" else 4)
    why["celery.prefetch_multiplier"] = ("given" if inp.prefetch_multiplier else
                                         "%s-bound: %d (%s)" % (inp.workload, prefetch,
                                                                "long tasks are not hoarded by one process"
                                                                if prefetch == 1 else "celery's default for short tasks"))
    why["celery.max_tasks_per_child"] = "a child process is replaced after %d tasks" % inp.max_tasks_per_child
    max_mem_kib = per_child // 1024
    why["celery.max_memory_per_child"] = "%s per child, in KiB as celery expects = %d" % (human(per_child), max_mem_kib)
    celery = {
        "concurrency": concurrency,
        "prefetch_multiplier": prefetch,
        "max_tasks_per_child": inp.max_tasks_per_child,
        "max_memory_per_child": max_mem_kib,
    }
    return Recommendation(gunicorn, celery, why, warnings)


# -- config files --------------------------------------------------------------
def _py_value(value: t.Any) -> str:
    """A Python literal for a config value: scalars, and lists/dicts of them (bind addresses, queues...)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(_py_value(item) for item in value)
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (_py_value(str(k)), _py_value(v)) for k, v in sorted(value.items()))
    raise RansomeyeError("cannot write %r into a Python config file" % (value,))


def render_block(assignments: t.Sequence[t.Tuple[str, t.Any]], comments: t.Dict[str, str]) -> str:
    lines = [BEGIN_MARK]
    for name, value in assignments:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise RansomeyeError("%r is not a valid setting name" % (name,))
        if name in comments:
            lines.append("# %s" % comments[name].replace("\n", " "))
        lines.append("%s = %s" % (name, _py_value(value)))
    lines.append(END_MARK)
    return "\n".join(lines) + "\n"


def merge_block(existing: t.Optional[str], block: str) -> str:
    """The file with its managed block replaced, or the block appended (the rest is kept)."""
    if not existing:
        return "# Worker settings; the block below is managed by ransomeye.ops.ransomeye_tune_workers.\n" + block
    start = existing.find(BEGIN_MARK)
    end = existing.find(END_MARK, start if start >= 0 else 0)
    if start >= 0 and end >= 0:
        end_line = existing.find("\n", end)
        tail = existing[end_line + 1:] if end_line >= 0 else ""
        return existing[:start] + block + tail
    if not existing.endswith("\n"):
        existing += "\n"
    return existing + "\n" + block


def gunicorn_block(rec: Recommendation, extra: t.Optional[t.Dict[str, t.Any]] = None) -> str:
    items = list(rec.gunicorn.items()) + sorted((extra or {}).items())
    comments = {}
    for key in rec.gunicorn:
        reason = rec.reasoning.get("gunicorn.%s" % key)
        if reason:
            comments[key] = reason
    return render_block(items, comments)


def celery_block(rec: Recommendation, extra: t.Optional[t.Dict[str, t.Any]] = None) -> str:
    mapping = [
        ("worker_concurrency", "concurrency"),
        ("worker_prefetch_multiplier", "prefetch_multiplier"),
        ("worker_max_tasks_per_child", "max_tasks_per_child"),
        ("worker_max_memory_per_child", "max_memory_per_child"),
    ]
    items = [(setting, rec.celery[key]) for setting, key in mapping] + sorted((extra or {}).items())
    comments = dict((setting, rec.reasoning["celery.%s" % key]) for setting, key in mapping)
    return render_block(items, comments)
