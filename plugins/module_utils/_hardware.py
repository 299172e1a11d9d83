# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: how many CPUs and how much memory this host really gives us.

``os.cpu_count()`` counts the machine's CPUs, not ours: a container limited by
a cgroup CPU quota, or a process pinned by affinity/cpuset, gets fewer. The
count here is ``min(len(affinity), ceil(quota / period))`` over the cgroup and
its ancestors (v1 and v2), and the memory is ``min(physical RAM, cgroup
limit)``. The parsers take file contents, so fixture files can test them.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import math
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._psutil import HAS_PSUTIL, psutil

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages, rounded to the page size).
_V1_UNLIMITED = 1 << 62


class Detected(t.NamedTuple):
    """A detected amount and the reasoning behind it (for the module's output)."""

    value: int
    reason: str


# -- parsers (pure) -------------------------------------------------------------
def parse_proc_cgroup(text: str) -> t.Dict[str, str]:
    """``/proc/self/cgroup`` -> {controller: path}; the v2 (unified) entry is under key ``""``."""
    result: t.Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _hier, controllers, path = parts
        if not controllers:
            result[""] = path
            continue
        for controller in controllers.split(","):
            result[controller.strip()] = path
    return result


def parse_cpu_max_v2(text: str) -> t.Optional[float]:
    """cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) -> CPUs, None when unlimited."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    quota = int(fields[0])
    period = int(fields[1]) if len(fields) > 1 else 100000
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cfs_v1(quota_text: str, period_text: str) -> t.Optional[float]:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` -> CPUs, None when unlimited (quota -1)."""
    quota = int(quota_text.strip())
    period = int(period_text.strip())
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_memory_max_v2(text: str) -> t.Optional[int]:
    """cgroup v2 ``memory.max`` -> bytes, None for ``max``."""
    value = text.strip()
    if not value or value == "max":
        return None
    return int(value)


def parse_memory_limit_v1(text: str) -> t.Optional[int]:
    """cgroup v1 ``memory.limit_in_bytes`` -> bytes, None for the "unlimited" huge value."""
    value = int(text.strip())
    if value <= 0 or value >= _V1_UNLIMITED:
        return None
    return value


def parse_meminfo_total(text: str) -> t.Optional[int]:
    """``/proc/meminfo`` MemTotal -> bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            return int(fields[1]) * 1024
    return None


def parse_cpuset(text: str) -> int:
    """A cpuset list such as ``0-3,8,10-11`` -> number of CPUs."""
    count = 0
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            count += int(high) - int(low) + 1
        else:
            count += 1
    return count


# -- reading the cgroup tree -----------------------------------------------------
def _read(path: str) -> t.Optional[str]:
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(base: str, cgroup_path: str) -> t.List[str]:
    """``base/cgroup_path`` and each parent directory up to ``base`` (limits nest: the lowest wins)."""
    parts = [p for p in cgroup_path.strip("/").split("/") if p and p not in (".", "..")]
    dirs = []
    for depth in range(len(parts), -1, -1):
        dirs.append(os.path.join(base, *parts[:depth]) if depth else base)
    return dirs


def _v1_dir(root: str, controller: str) -> t.Optional[str]:
    for name in (controller, "cpu,cpuacct", "cpuacct,cpu"):
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate) and (name == controller or controller in name.split(",")):
            return candidate
    return None


def _tightest(root: str, proc_cgroup_text: t.Optional[str], controller: str, v2_file: str,
              v2_parse: t.Callable[[str], t.Any], v1_files: t.Sequence[str], v1_parse: t.Callable[..., t.Any]) -> t.Any:
    """The smallest limit over our cgroup and its ancestors, v2 and v1 hierarchies: (value, file) or None.

    A limit is set in a v2 directory by ``v2_file`` and in a v1 directory of
    ``controller`` by ``v1_files`` (all of them must be readable); the file
    reported is the first one of the directory holding the tightest limit.
    """
    if proc_cgroup_text is None:
        proc_cgroup_text = _read(PROC_SELF_CGROUP) or ""
    paths = parse_proc_cgroup(proc_cgroup_text)
    found: t.List[t.Tuple[t.Any, str]] = []
    v2_base = root if os.path.exists(os.path.join(root, "cgroup.controllers")) else os.path.join(root, "unified")
    if "" in paths and os.path.isdir(v2_base):
        for directory in _ancestors(v2_base, paths[""]):
            text = _read(os.path.join(directory, v2_file))
            value = v2_parse(text) if text else None
            if value is not None:
                found.append((value, os.path.join(directory, v2_file)))
    v1_base = _v1_dir(root, controller)
    if v1_base:
        for directory in _ancestors(v1_base, paths.get(controller, "/")):
            texts = [_read(os.path.join(directory, name)) for name in v1_files]
            value = v1_parse(*texts) if all(texts) else None
            if value is not None:
                found.append((value, os.path.join(directory, v1_files[0])))
    return min(found) if found else None


def cgroup_cpu_quota(root: str = CGROUP_ROOT, proc_cgroup_text: t.Optional[str] = None) -> t.Optional[t.Tuple[float, str]]:
    """The tightest CPU quota over our cgroup and its ancestors: (cpus, file) or None."""
    return _tightest(root, proc_cgroup_text, "cpu", "cpu.max", parse_cpu_max_v2,
                     ("cpu.cfs_quota_us", "cpu.cfs_period_us"), parse_cfs_v1)


def cgroup_memory_limit(root: str = CGROUP_ROOT, proc_cgroup_text: t.Optional[str] = None) -> t.Optional[t.Tuple[int, str]]:
    """The tightest memory limit over our cgroup and its ancestors: (bytes, file) or None."""
    return _tightest(root, proc_cgroup_text, "memory", "memory.max", parse_memory_max_v2,
                     ("memory.limit_in_bytes",), parse_memory_limit_v1)


# -- detection ------------------------------------------------------------------
def affinity_cpus() -> t.Tuple[int, str]:
    """CPUs this process may run on (sched_getaffinity), else the machine's count."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is not None:
        try:
            return len(getter(0)), "CPU affinity"
        except OSError:
            pass
    return os.cpu_count() or 1, "os.cpu_count() (no affinity available)"


def detect_cpus(
    root: str = CGROUP_ROOT,
    proc_cgroup_text: t.Optional[str] = None,
    affinity: t.Optional[int] = None,
) -> Detected:
    """min(affinity, ceil(cgroup quota)), at least 1, with the reasoning."""
    if affinity is None:
        count, source = affinity_cpus()
    else:
        count, source = affinity, "CPU affinity"
    reason = "%d from %s" % (count, source)
    quota = cgroup_cpu_quota(root, proc_cgroup_text)
    if quota is not None:
        quota_cpus = max(1, int(math.ceil(quota[0] - 1e-9)))
        if quota_cpus < count:
            reason = "%d from the cgroup CPU quota %.2f in %s (affinity allows %d)" % (quota_cpus, quota[0], quota[1], count)
            count = quota_cpus
        else:
            reason += "; cgroup quota %.2f in %s does not lower it" % (quota[0], quota[1])
    return Detected(max(1, count), reason)


def physical_memory() -> t.Tuple[int, str]:
    """Total RAM: psutil when installed, else /proc/meminfo."""
    if HAS_PSUTIL:
        return int(psutil.virtual_memory().total), "psutil total memory"
    total = parse_meminfo_total(_read("/proc/meminfo") or "")
    if total:
        return total, "/proc/meminfo MemTotal"
    return 0, "unknown"


def detect_memory(
    root: str = CGROUP_ROOT,
    proc_cgroup_text: t.Optional[str] = None,
    physical: t.Optional[int] = None,
) -> Detected:
    """min(physical RAM, cgroup memory limit), with the reasoning."""
    if physical is None:
        total, source = physical_memory()
    else:
        total, source = physical, "physical memory"
    reason = "%d bytes from %s" % (total, source)
    limit = cgroup_memory_limit(root, proc_cgroup_text)
    if limit is not None and (total <= 0 or limit[0] < total):
        reason = "%d bytes from the cgroup memory limit in %s (RAM %d bytes)" % (limit[0], limit[1], total)
        total = limit[0]
    return Detected(total, reason)
