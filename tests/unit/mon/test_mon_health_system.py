"""I/O arithmetic from two counter samples, disk usage as df computes it, and process matching."""
from __future__ import annotations

import collections
import os
import subprocess
import sys

import psutil

from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import merge_thresholds
from ansible_collections.ransomeye.ops.plugins.module_utils._health_services import process_checks
from ansible_collections.ransomeye.ops.plugins.module_utils._health_system import _device_of, disk_checks, io_checks

TH = merge_thresholds({})


# The fields of psutil's Linux disk counters (psutil.disk_io_counters() returns this shape).
SDISKIO = collections.namedtuple("sdiskio", "read_count write_count read_bytes write_bytes read_time write_time "
                                            "read_merged_count write_merged_count busy_time")


def _sdiskio(**kw):
    fields = dict.fromkeys(SDISKIO._fields, 0)
    fields.update(kw)
    return SDISKIO(**fields)


def test_psutil_counters_have_the_fields_used():
    sample = psutil.disk_io_counters(perdisk=False)
    if sample is not None:  # a host without block devices has none
        assert set(SDISKIO._fields) <= set(sample._fields)


def test_io_rates_latency_and_utilisation_from_two_samples():
    before = (100.0, {"vdz": _sdiskio()}, _sdiskio())
    after = (102.0, {"vdz": _sdiskio(read_count=100, write_count=100, read_bytes=4 * 2 ** 20, write_bytes=2 ** 20,
                                     read_time=300, write_time=700, busy_time=1500)}, _sdiskio())
    # "/" is not on the fake device, so the aggregate ("all") is used: feed the same numbers there.
    before = (before[0], before[1], before[1]["vdz"])
    after = (after[0], after[1], after[1]["vdz"])
    checks = {c["name"]: c for c in io_checks(["/"], TH, before, after)}
    assert checks["io_read_bytes_per_s"]["value"] == 2 * 2 ** 20
    assert checks["io_write_bytes_per_s"]["value"] == 2 ** 19
    assert checks["io_latency_ms"]["value"] == 5.0  # 1000 ms busy over 200 operations
    assert checks["io_util_percent"]["value"] == 75.0  # 1500 ms busy in 2000 ms
    assert checks["io_latency_ms"]["status"] == "ok" and checks["io_util_percent"]["status"] == "ok"


def test_device_of_a_missing_path_is_none():
    assert _device_of("/nonexistent/path") is None


def test_disk_usage_matches_df_arithmetic(tmp_path):
    (check,) = disk_checks([str(tmp_path)], TH, inodes=False)
    st = os.statvfs(str(tmp_path))
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert check["used_bytes"] == used
    assert abs(check["value"] - 100.0 * used / (used + st.f_bavail * st.f_frsize)) < 0.01


def test_process_match_by_name_or_command_line_and_not_by_own_ancestry():
    marker = "re-mon-proc-%d" % os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        checks = {c["target"]: c for c in process_checks([marker, "re-mon-absent-%d" % os.getpid()], TH)}
    finally:
        child.kill()
        child.wait()
    assert checks[marker]["value"] == 1.0 and checks[marker]["status"] == "ok"
    assert checks["re-mon-absent-%d" % os.getpid()]["status"] == "critical"
