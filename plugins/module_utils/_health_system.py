# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: host health checks (disk, inodes, disk I/O, load, memory, swap).

psutil's I/O counters are cumulative since boot, so I/O rates, utilisation and
latency come from two samples ``sample_seconds`` apart. Load is per usable CPU
(process affinity), memory is ``available`` (not ``free``), inodes come from
``statvfs``.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import Threshold, make_check, UNKNOWN
from ansible_collections.ransomeye.ops.plugins.module_utils._psutil import psutil

Thresholds = t.Mapping[str, Threshold]


def disk_checks(paths: t.Sequence[str], thresholds: Thresholds, inodes: bool = True, space: bool = True) -> t.List[dict]:
    checks = []
    for path in paths:
        try:
            st = os.statvfs(path)
        except OSError as exc:
            for name, wanted in (("disk_used_percent", space), ("inodes_used_percent", inodes)):
                if wanted:
                    checks.append(make_check(name, None, thresholds, target=path, message=str(exc), status=UNKNOWN))
            continue
        if space:
            # As df: used / (used + available to unprivileged users).
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            avail = st.f_bavail * st.f_frsize
            total = used + avail
            percent = 100.0 * used / total if total else 0.0
            checks.append(make_check("disk_used_percent", percent, thresholds, target=path,
                                     used_bytes=used, available_bytes=avail))
        if inodes:
            if st.f_files:
                used_inodes = st.f_files - st.f_ffree
                total_inodes = used_inodes + st.f_favail
                percent = 100.0 * used_inodes / total_inodes if total_inodes else 0.0
                checks.append(make_check("inodes_used_percent", percent, thresholds, target=path,
                                         inodes_used=used_inodes, inodes_free=st.f_favail))
            else:
                checks.append(make_check("inodes_used_percent", 0.0, thresholds, target=path,
                                         message="filesystem has no inode limit"))
    return checks


def _device_of(path: str) -> t.Optional[str]:
    """The block device name (``sda1``, ``dm-0``) holding ``path``, as psutil's per-disk counters name it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    try:
        link = os.readlink("/sys/dev/block/%d:%d" % (major, minor))
    except OSError:
        return None
    return os.path.basename(link)


def io_sample() -> t.Tuple[float, t.Dict[str, t.Any], t.Any]:
    return time.monotonic(), psutil.disk_io_counters(perdisk=True) or {}, psutil.disk_io_counters(perdisk=False)


def io_checks(paths: t.Sequence[str], thresholds: Thresholds, before: t.Any, after: t.Any) -> t.List[dict]:
    """Rates, utilisation and latency between two ``io_sample()`` results, per device of ``paths``."""
    t0, per0, all0 = before
    t1, per1, all1 = after
    elapsed = max(t1 - t0, 1e-6)
    targets: t.List[t.Tuple[str, t.Any, t.Any]] = []
    seen = set()
    for path in paths:
        device = _device_of(path)
        if device and device in per0 and device in per1:
            if device not in seen:
                seen.add(device)
                targets.append((device, per0[device], per1[device]))
        elif "all" not in seen and all0 is not None and all1 is not None:
            # overlay, tmpfs, network filesystems: no block device of their own.
            seen.add("all")
            targets.append(("all", all0, all1))
    checks = []
    if not targets:
        return [make_check("io_util_percent", None, thresholds, target="all", status=UNKNOWN,
                           message="no disk I/O counters on this host")]
    for name, a, b in targets:
        ops = (b.read_count - a.read_count) + (b.write_count - a.write_count)
        busy_ms = (b.read_time - a.read_time) + (b.write_time - a.write_time)
        latency = busy_ms / ops if ops else 0.0
        checks.append(make_check("io_read_bytes_per_s", (b.read_bytes - a.read_bytes) / elapsed, thresholds, target=name))
        checks.append(make_check("io_write_bytes_per_s", (b.write_bytes - a.write_bytes) / elapsed, thresholds, target=name))
        checks.append(make_check("io_latency_ms", latency, thresholds, target=name, operations=ops))
        if hasattr(a, "busy_time") and hasattr(b, "busy_time"):
            util = min(100.0, 100.0 * (b.busy_time - a.busy_time) / (elapsed * 1000.0))
            checks.append(make_check("io_util_percent", util, thresholds, target=name))
        else:
            checks.append(make_check("io_util_percent", None, thresholds, target=name, status=UNKNOWN,
                                     message="this platform reports no busy time"))
    return checks


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_checks(thresholds: Thresholds) -> t.List[dict]:
    cpus = usable_cpus()
    try:
        load1, load5, load15 = os.getloadavg()
    except OSError as exc:
        return [make_check("load_per_core", None, thresholds, message=str(exc), status=UNKNOWN)]
    return [make_check("load_per_core", load1 / cpus, thresholds, target="1min", cpus=cpus,
                       load=[round(load1, 2), round(load5, 2), round(load15, 2)])]


def memory_checks(thresholds: Thresholds) -> t.List[dict]:
    mem = psutil.virtual_memory()
    percent = 100.0 * mem.available / mem.total if mem.total else 0.0
    return [make_check("memory_available_percent", percent, thresholds, available_bytes=mem.available,
                       total_bytes=mem.total)]


def swap_checks(thresholds: Thresholds) -> t.List[dict]:
    swap = psutil.swap_memory()
    if not swap.total:
        return [make_check("swap_used_percent", 0.0, thresholds, message="no swap configured", total_bytes=0)]
    return [make_check("swap_used_percent", float(swap.percent), thresholds, used_bytes=swap.used,
                       total_bytes=swap.total)]
