#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_tune_workers
short_description: Size gunicorn and celery workers from CPUs and memory and write their config files
version_added: "0.1.0"
description:
  - "Gunicorn: O(min_workers) <= C(workers) <= O(max_workers), starting at C((2 x cpus\\) + 1) and capped by
    memory, C((memory - reserve_memory\\) / per_worker_memory). C(threads) is set for the C(gthread) worker
    class; C(max_requests) with jitter, and C(timeout)."
  - "Celery: C(concurrency) is the CPU count for CPU-bound work (O(workload=cpu)) or C(cpus x io_multiplier) for
    IO-bound work, capped by the memory gunicorn leaves; C(prefetch_multiplier), C(max_tasks_per_child) and
    C(max_memory_per_child) (KiB)."
  - CPUs are counted from the process affinity and the cgroup CPU quota (v1 and v2), not from C(os.cpu_count());
    memory is the smaller of the physical memory and the cgroup memory limit.
  - Writes a managed block at the end of O(gunicorn_config) and O(celery_config) (Python files), atomically, with
    diff, backup and check mode. The rest of each file (C(bind), C(broker_url)...) is kept. C(changed) only when a
    file changes, so that handlers restart the services only then.
  - Returns the recommendation with the reasoning for every number.
author:
  - ransomeye.ops contributors (@ransomeye)
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
options:
  cpus:
    description: Number of CPUs. Detected from the affinity and the cgroup CPU quota when omitted.
    type: int
  memory:
    description: Memory of the host, such as V(16GB). Detected (cgroup aware) when omitted.
    type: str
  reserve_memory:
    description:
      - Memory kept for PostgreSQL and the OS, as a size (V(4GB)) or a percentage of O(memory) (V(50%)).
    type: str
    default: 50%
  per_worker_memory:
    description: Resident memory of one gunicorn worker.
    type: str
    default: 256MB
  worker_class:
    description: Gunicorn worker class (V(sync), V(gthread), V(gevent), ...).
    type: str
    default: sync
  threads:
    description: Threads per worker for V(gthread); 4 for IO-bound and 2 for CPU-bound work when omitted.
    type: int
  workload:
    description: Whether the work is CPU-bound or IO-bound (database and network waits).
    type: str
    choices: [cpu, io]
    default: io
  io_multiplier:
    description: Celery processes per CPU for IO-bound work.
    type: int
    default: 4
  min_workers:
    description: Lower bound of gunicorn workers.
    type: int
    default: 2
  max_workers:
    description: Upper bound of gunicorn workers (gunicorn's docs say 4 to 12 handle most loads).
    type: int
    default: 12
  max_requests:
    description: Requests after which a gunicorn worker is replaced (0 disables).
    type: int
    default: 1000
  max_requests_jitter:
    description: Random jitter added to O(max_requests); 10% of it when omitted.
    type: int
  timeout:
    description: Gunicorn worker timeout in seconds (also the graceful timeout).
    type: int
    default: 30
  celery_per_child_memory:
    description: Memory budget of one celery child process; O(per_worker_memory) when omitted. Also its C(max_memory_per_child).
    type: str
  max_tasks_per_child:
    description: Tasks after which a celery child process is replaced.
    type: int
    default: 1000
  prefetch_multiplier:
    description: Celery prefetch multiplier; 1 for CPU-bound and 4 for IO-bound work when omitted.
    type: int
  gunicorn_config:
    description: Gunicorn config file (C(gunicorn.conf.py)) to write; its directory must exist. Not written when omitted.
    type: path
  celery_config:
    description: Celery config module (Python) to write; its directory must exist. Not written when omitted.
    type: path
  gunicorn_settings:
    description: Extra gunicorn settings written into the managed block (name to value).
    type: dict
    default: {}
  celery_settings:
    description: Extra celery settings written into the managed block (name to value).
    type: dict
    default: {}
  backup:
    description: Keep a timestamped copy of a config file before changing it.
    type: bool
    default: false
  cgroup_root:
    description: Mount point of the cgroup file system.
    type: path
    default: /sys/fs/cgroup
'''

EXAMPLES = r'''
- name: Size the workers for the detected hardware and write both config files
  ransomeye.ops.ransomeye_tune_workers:
    gunicorn_config: "{{ ransomeye_gunicorn_config }}"
    celery_config: "{{ ransomeye_celery_config }}"
    worker_class: gthread
    reserve_memory: 50%
    backup: true
  register: workers

- name: Show why
  ansible.builtin.debug:
    var: workers.reasoning

- name: Compute only, for a 4 CPU, 8GB host with CPU-bound tasks
  ransomeye.ops.ransomeye_tune_workers:
    cpus: 4
    memory: 8GB
    reserve_memory: 4GB
    workload: cpu
'''

RETURN = r'''
gunicorn:
  description: Gunicorn settings written into the managed block.
  returned: always
  type: dict
  sample: {"workers": 5, "worker_class": "sync", "max_requests": 1000, "max_requests_jitter": 100, "timeout": 30}
celery:
  description: Celery settings (written as C(worker_concurrency), C(worker_prefetch_multiplier), ...).
  returned: always
  type: dict
  sample: {"concurrency": 8, "prefetch_multiplier": 4, "max_tasks_per_child": 1000, "max_memory_per_child": 262144}
reasoning:
  description: For every number, how it was obtained.
  returned: always
  type: dict
inputs:
  description: CPUs and memory used, with where they came from.
  returned: always
  type: dict
warnings_sizing:
  description: Sizing problems (too little memory for the bounds).
  returned: always
  type: list
  elements: str
files:
  description: Per config file, its path, whether it changed and its backup.
  returned: always
  type: dict
'''

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _hardware, _units, _workers
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, read_if_exists


def _reserve(value: str, memory: int) -> int:
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise RansomeyeError("reserve_memory must be a size such as 4GB or a percentage such as 50%%, not %r" % value)
        if not 0 <= percent < 100:
            raise RansomeyeError("reserve_memory percentage must be between 0 and 100, not %r" % value)
        return int(memory * percent / 100)
    return _units.parse_size(text, "reserve_memory")


def _write(module: RansomeyeModule, path: str, block: str, diffs: list) -> dict:
    old_bytes = read_if_exists(path)
    old = old_bytes.decode("utf-8") if old_bytes is not None else None
    new = _workers.merge_block(old, block)
    entry: t.Dict[str, t.Any] = dict(path=path, changed=old != new)
    if entry["changed"]:
        diffs.append(dict(before=old or "", after=new, before_header=path, after_header=path))
        if not module.check_mode:
            backup_file = atomic_write(path, new.encode("utf-8"), mode=0o644 if old is None else None,
                                       backup=module.params["backup"])
            if backup_file:
                entry["backup_file"] = backup_file
    return entry


def tune_workers(module: RansomeyeModule) -> dict:
    params = module.params
    inputs: t.Dict[str, t.Any] = {}
    if params["cpus"] is not None:
        cpus, inputs["cpus_source"] = params["cpus"], "given"
    else:
        detected = _hardware.detect_cpus(params["cgroup_root"])
        cpus, inputs["cpus_source"] = detected.value, detected.reason
    if cpus < 1:
        raise RansomeyeError("cpus must be a whole number of at least 1, not %d" % cpus)
    if params["memory"] is not None:
        memory, inputs["memory_source"] = _units.parse_size(params["memory"], "memory"), "given"
    else:
        detected = _hardware.detect_memory(params["cgroup_root"])
        memory, inputs["memory_source"] = detected.value, detected.reason
    if not memory:
        raise RansomeyeError("memory must be larger than 0")
    reserve = _reserve(params["reserve_memory"], memory)
    inputs.update(cpus=cpus, memory=memory, reserve_memory=reserve)
    inp = _workers.WorkerInput(
        cpus=cpus, memory=memory, reserve_memory=reserve,
        per_worker_memory=_units.parse_size(params["per_worker_memory"], "per_worker_memory"),
        worker_class=params["worker_class"], threads=params["threads"],
        min_workers=params["min_workers"], max_workers=params["max_workers"],
        max_requests=params["max_requests"], max_requests_jitter=params["max_requests_jitter"],
        timeout=params["timeout"], workload=params["workload"], io_multiplier=params["io_multiplier"],
        celery_per_child_memory=_units.parse_size(params["celery_per_child_memory"], "celery_per_child_memory"),
        max_tasks_per_child=params["max_tasks_per_child"], prefetch_multiplier=params["prefetch_multiplier"],
    )
    rec = _workers.recommend(inp)
    diffs: t.List[dict] = []
    files: t.Dict[str, t.Any] = {}
    if params["gunicorn_config"]:
        files["gunicorn"] = _write(module, params["gunicorn_config"],
                                   _workers.gunicorn_block(rec, params["gunicorn_settings"]), diffs)
    if params["celery_config"]:
        files["celery"] = _write(module, params["celery_config"],
                                 _workers.celery_block(rec, params["celery_settings"]), diffs)
    result: t.Dict[str, t.Any] = dict(
        changed=any(f["changed"] for f in files.values()),
        gunicorn=rec.gunicorn, celery=rec.celery, reasoning=rec.reasoning,
        inputs=inputs, warnings_sizing=rec.warnings, files=files,
    )
    if module._diff and diffs:
        result["diff"] = diffs
    return result


def main() -> None:
    argument_spec = dict(
        cpus=dict(type="int"),
        memory=dict(type="str"),
        reserve_memory=dict(type="str", default="50%"),
        per_worker_memory=dict(type="str", default="256MB"),
        worker_class=dict(type="str", default="sync"),
        threads=dict(type="int"),
        workload=dict(type="str", default="io", choices=list(_workers.WORKLOADS)),
        io_multiplier=dict(type="int", default=4),
        min_workers=dict(type="int", default=2),
        max_workers=dict(type="int", default=12),
        max_requests=dict(type="int", default=1000),
        max_requests_jitter=dict(type="int"),
        timeout=dict(type="int", default=30),
        celery_per_child_memory=dict(type="str"),
        max_tasks_per_child=dict(type="int", default=1000),
        prefetch_multiplier=dict(type="int"),
        gunicorn_config=dict(type="path"),
        celery_config=dict(type="path"),
        gunicorn_settings=dict(type="dict", default={}),
        celery_settings=dict(type="dict", default={}),
        backup=dict(type="bool", default=False),
        cgroup_root=dict(type="path", default=_hardware.CGROUP_ROOT),
    )
    module = RansomeyeModule(argument_spec, shared_specs=[ignored_connection_spec()], supports_check_mode=True)
    module.run(tune_workers)


if __name__ == "__main__":
    main()
