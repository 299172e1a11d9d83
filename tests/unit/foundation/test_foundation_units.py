from __future__ import annotations

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration, parse_size


@pytest.mark.parametrize("value,seconds", [
    ("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("45s", 45), (7, 7 * 86400), ("2", 2 * 86400), ("1w", 604800),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["12 parsecs", "-1d", "d", True])
def test_bad_durations_are_clear(value):
    with pytest.raises(RansomeyeError, match="duration"):
        parse_duration(value, "max_age")


@pytest.mark.parametrize("value,size", [("16GB", 16 << 30), ("512MB", 512 << 20), ("1024", 1024), ("1.5GiB", 3 << 29)])
def test_sizes(value, size):
    assert parse_size(value) == size


def test_bad_size_is_clear():
    with pytest.raises(RansomeyeError, match="memory must be a size"):
        parse_size("12 parsecs", "memory")
