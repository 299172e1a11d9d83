"""Threshold evaluation, overall status and the Nagios line."""
from __future__ import annotations

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _health_report as h
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def test_higher_is_worse_and_lower_is_worse():
    th = h.merge_thresholds({})
    assert h.make_check("disk_used_percent", 79.9, th)["status"] == "ok"
    assert h.make_check("disk_used_percent", 80, th)["status"] == "warning"
    assert h.make_check("disk_used_percent", 95, th)["status"] == "critical"
    assert h.make_check("cert_days_left", 31, th)["status"] == "ok"
    assert h.make_check("cert_days_left", 30, th)["status"] == "warning"
    assert h.make_check("cert_days_left", -1, th)["status"] == "critical"
    assert h.make_check("disk_used_percent", None, th)["status"] == "unknown"


def test_overrides_and_switching_a_level_off():
    th = h.merge_thresholds({"disk_used_percent": {"critical": None}, "load_per_core": [1, 3]})
    assert h.make_check("disk_used_percent", 99, th)["status"] == "warning"
    assert (th["load_per_core"].warning, th["load_per_core"].critical) == (1, 3)


@pytest.mark.parametrize("overrides, message", [
    ({"nope": [1, 2]}, "unknown threshold 'nope'"),
    ({"disk_used_percent": [90, 80]}, "must be higher than warning"),
    ({"cert_days_left": [7, 30]}, "must be lower than warning"),
    ({"disk_used_percent": {"warn": 1}}, "must be {warning: W, critical: C}"),
    ({"disk_used_percent": {"warning": True}}, "must be a number"),
])
def test_bad_thresholds(overrides, message):
    with pytest.raises(RansomeyeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        h.merge_thresholds(overrides)


def test_worst_ranks_ok_unknown_warning_critical():
    checks = [{"status": s} for s in ("ok", "unknown")]
    assert h.worst(checks) == "unknown"
    assert h.worst(checks + [{"status": "warning"}]) == "warning"
    assert h.worst(checks + [{"status": "critical"}, {"status": "warning"}]) == "critical"
    assert h.worst([]) == "ok"


@pytest.mark.parametrize("status, fail_on, fails", [
    ("warning", "critical", False), ("critical", "critical", True), ("warning", "warning", True),
    ("unknown", "warning", False), ("unknown", "unknown", True), ("critical", "never", False),
])
def test_should_fail(status, fail_on, fails):
    assert h.should_fail(status, fail_on) is fails


def test_nagios_line_summary_and_perfdata():
    th = h.merge_thresholds({})
    checks = [
        h.make_check("disk_used_percent", 85.25, th, target="/var/lib"),
        h.make_check("pg_connect_ms", None, th, target="db", status="critical", message="timeout expired"),
        h.make_check("load_per_core", 0.5, th, target="1min"),
    ]
    line = h.nagios_line(checks)
    summary, perf = line.split(" | ")
    assert summary == ("RANSOMEYE CRITICAL - 1 critical, 1 warning: pg_connect_ms[db] (timeout expired); "
                       "disk_used_percent[/var/lib]=85.25%")
    assert perf == "'disk_used_percent[/var/lib]'=85.25%;80;90;0;100 'load_per_core[1min]'=0.5;2;4"


def test_nagios_line_all_ok_and_pipe_in_message_is_neutralised():
    th = h.merge_thresholds({})
    line = h.nagios_line([h.make_check("swap_used_percent", 0.0, th)])
    assert line == "RANSOMEYE OK - 1 checks ok | 'swap_used_percent'=0%;50;80;0;100"
    bad = [h.make_check("disk_used_percent", None, th, target="/x", status="unknown", message="a|b")]
    assert line.count("|") == 1
    assert h.nagios_line(bad) == "RANSOMEYE UNKNOWN - 1 unknown: disk_used_percent[/x] (a/b)"
