# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: parsing of durations and sizes, shared by every module."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([wdhms]?)\s*$", re.IGNORECASE)

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_duration(value: t.Union[str, int, float, None], name: str = "duration") -> t.Optional[float]:
    """Seconds from ``30d``, ``12h``, ``15m``, ``45s``, ``2w`` or a plain number of days."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RansomeyeError("%s must be a duration such as 30d, 12h, 15m or 45s, not %r" % (name, value))
    if isinstance(value, (int, float)):
        seconds = float(value) * 86400
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise RansomeyeError("%s must be a duration such as 30d, 12h, 15m or 45s, not %r" % (name, value))
        number, unit = match.groups()
        seconds = float(number) * _DURATION_UNITS[(unit or "d").lower()]
    if seconds < 0:
        raise RansomeyeError("%s must not be negative: %r" % (name, value))
    return seconds


def parse_size(value: t.Union[str, int, None], name: str = "size") -> t.Optional[int]:
    """Bytes from ``16GB``, ``512MiB``, ``1024`` (binary units, as PostgreSQL and PGTune use)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RansomeyeError("%s must be a size such as 16GB or 512MB, not %r" % (name, value))
    if isinstance(value, int):
        if value < 0:
            raise RansomeyeError("%s must not be negative: %r" % (name, value))
        return value
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise RansomeyeError("%s must be a size such as 16GB or 512MB, not %r" % (name, value))
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def throughput(nbytes: int, seconds: float) -> t.Dict[str, t.Any]:
    """The figures a long step reports (bytes, seconds): ``duration`` and ``bytes_per_second`` (0 when too fast to
    measure), so that a summary line can say how much, how long and how fast."""
    seconds = max(float(seconds), 0.0)
    return {"duration": round(seconds, 3), "bytes_per_second": int(nbytes / seconds) if seconds >= 0.001 else 0}
