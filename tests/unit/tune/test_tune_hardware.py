"""CPU and memory detection: cgroup v1/v2 parsing from fixture trees, and the real host."""
from __future__ import annotations

import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _hardware

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _text(name):
    with open(os.path.join(FIX, name)) as handle:
        return handle.read()


@pytest.mark.parametrize("text,expected", [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5),
                                           ("50000 100000", 0.5), ("max", None)])
def test_parse_cpu_max_v2(text, expected):
    assert _hardware.parse_cpu_max_v2(text) == expected


@pytest.mark.parametrize("quota,period,expected", [("-1", "100000", None), ("300000", "100000", 3.0), ("25000\n", "100000\n", 0.25)])
def test_parse_cfs_v1(quota, period, expected):
    assert _hardware.parse_cfs_v1(quota, period) == expected


def test_parse_memory_limits():
    assert _hardware.parse_memory_max_v2("max\n") is None
    assert _hardware.parse_memory_max_v2("2147483648\n") == 2147483648
    assert _hardware.parse_memory_limit_v1("9223372036854771712\n") is None
    assert _hardware.parse_memory_limit_v1("1073741824") == 1073741824


def test_parse_proc_cgroup_v1_and_v2_lines():
    paths = _hardware.parse_proc_cgroup(_text("proc_cgroup_v1.txt"))
    assert paths["cpu"] == paths["cpuacct"] == "/docker/abc"
    assert paths["memory"] == "/docker/abc"
    assert paths[""] == "/docker/abc"
    assert _hardware.parse_proc_cgroup(_text("proc_cgroup_v2.txt")) == {"": "/system.slice/ransomeye.service"}


def test_parse_cpuset_and_meminfo():
    assert _hardware.parse_cpuset("0-3,8,10-11\n") == 7
    assert _hardware.parse_meminfo_total(_text("meminfo.txt")) == 16384256 * 1024


def test_v2_nested_cgroup_takes_the_tightest_ancestor_quota():
    # leaf 4.0 CPUs, system.slice "max", root 1.5 CPUs: the root's quota binds.
    quota = _hardware.cgroup_cpu_quota(os.path.join(FIX, "cgroup_v2_nested"), _text("proc_cgroup_v2.txt"))
    assert quota[0] == 1.5
    assert quota[1].endswith(os.path.join("cgroup_v2_nested", "cpu.max"))
    detected = _hardware.detect_cpus(os.path.join(FIX, "cgroup_v2_nested"), _text("proc_cgroup_v2.txt"), affinity=8)
    assert detected.value == 2  # ceil(1.5)
    assert "quota" in detected.reason


def test_v2_nested_memory_limit_is_the_smallest_ancestor():
    detected = _hardware.detect_memory(os.path.join(FIX, "cgroup_v2_nested"), _text("proc_cgroup_v2.txt"),
                                       physical=64 * 1024 ** 3)
    assert detected.value == 2147483648
    assert "cgroup memory limit" in detected.reason


def test_v2_max_means_no_limit():
    root = os.path.join(FIX, "cgroup_v2_max")
    assert _hardware.cgroup_cpu_quota(root, _text("proc_cgroup_v2_root.txt")) is None
    assert _hardware.detect_cpus(root, _text("proc_cgroup_v2_root.txt"), affinity=6).value == 6
    assert _hardware.detect_memory(root, _text("proc_cgroup_v2_root.txt"), physical=8 * 1024 ** 3).value == 8 * 1024 ** 3


def test_v1_container_quota_and_memory():
    root = os.path.join(FIX, "cgroup_v1")
    detected = _hardware.detect_cpus(root, _text("proc_cgroup_v1.txt"), affinity=16)
    assert detected.value == 3  # ceil(250000 / 100000)
    assert _hardware.detect_memory(root, _text("proc_cgroup_v1.txt"), physical=32 * 1024 ** 3).value == 1073741824


def test_v1_unlimited_changes_nothing():
    root = os.path.join(FIX, "cgroup_v1_unlimited")
    assert _hardware.detect_cpus(root, _text("proc_cgroup_v1_root.txt"), affinity=4).value == 4
    assert _hardware.detect_memory(root, _text("proc_cgroup_v1_root.txt"), physical=1024 ** 3).value == 1024 ** 3


def test_affinity_below_quota_wins():
    root = os.path.join(FIX, "cgroup_v1")
    assert _hardware.detect_cpus(root, _text("proc_cgroup_v1.txt"), affinity=1).value == 1


def test_hybrid_unified_quota_below_one_cpu_still_gives_one():
    root = os.path.join(FIX, "cgroup_hybrid")
    text = "1:cpu:/\n0::/\n"
    assert _hardware.cgroup_cpu_quota(root, text)[0] == 0.5
    assert _hardware.detect_cpus(root, text, affinity=4).value == 1


def test_real_host_detection_is_bounded_by_affinity_and_ram():
    cpus = _hardware.detect_cpus()
    assert 1 <= cpus.value <= len(os.sched_getaffinity(0))
    memory = _hardware.detect_memory()
    total, _source = _hardware.physical_memory()
    assert 0 < memory.value <= total
