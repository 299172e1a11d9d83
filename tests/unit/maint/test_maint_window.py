"""Maintenance windows: HH:MM-HH:MM, local time, crossing midnight, clear errors."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._window import parse_window


def at(hour, minute=0):
    return datetime.datetime(2026, 11, 27, hour, minute)


def test_window_same_day_start_inclusive_end_exclusive():
    window = parse_window("02:00-04:00")
    assert not window.crosses_midnight
    assert window.contains(at(2, 0)) and window.contains(at(3, 59))
    assert not window.contains(at(4, 0)) and not window.contains(at(1, 59))


def test_window_crossing_midnight():
    window = parse_window("23:30-01:15")
    assert window.crosses_midnight
    assert window.contains(at(23, 30)) and window.contains(at(0, 0)) and window.contains(at(1, 14))
    assert not window.contains(at(1, 15)) and not window.contains(at(12, 0)) and not window.contains(at(23, 29))


def test_window_ending_at_24_and_whole_day():
    late = parse_window("22:00-24:00")
    assert late.contains(at(23, 59)) and not late.contains(at(0, 0)) and not late.contains(at(21, 59))
    whole = parse_window("00:00-24:00")
    assert all(whole.contains(at(h, m)) for h in range(24) for m in (0, 59))


def test_no_window_is_none():
    assert parse_window(None) is None
    assert parse_window("  ") is None


@pytest.mark.parametrize("bad,fragment", [
    ("25:00-01:00", "25:00 is not a time of day"),
    ("02:60-03:00", "02:60 is not a time of day"),
    ("24:00-01:00", "24:00 is not a time of day"),
    ("2am-4am", "use HH:MM-HH:MM"),
    ("02:00", "use HH:MM-HH:MM"),
    ("03:00-03:00", "is empty"),
])
def test_bad_windows_are_refused_clearly(bad, fragment):
    with pytest.raises(RansomeyeError) as info:
        parse_window(bad)
    assert fragment in info.value.msg
    assert "maintenance_window" in info.value.msg
