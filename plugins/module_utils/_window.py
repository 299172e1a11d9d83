# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: maintenance windows such as ``02:00-04:00`` (local time, may cross midnight)."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class Window(t.NamedTuple):
    """A daily window in minutes after local midnight; ``end`` may be smaller than ``start``."""

    start: int
    end: int
    text: str

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, when: t.Optional[datetime.datetime] = None) -> bool:
        """True when ``when`` (default: now, local time) lies in the window (start inclusive, end exclusive)."""
        when = when or datetime.datetime.now()
        minute = when.hour * 60 + when.minute
        if self.crosses_midnight:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def describe(self) -> str:
        return "%s (local time%s)" % (self.text, ", crossing midnight" if self.crosses_midnight else "")


def _minutes(hour: str, minute: str, value: str, allow_24: bool) -> int:
    h, m = int(hour), int(minute)
    if m > 59 or h > 24 or (h == 24 and (m != 0 or not allow_24)):
        raise RansomeyeError(
            "maintenance_window %r is not valid: %02d:%02d is not a time of day (use HH:MM-HH:MM, 00:00 to 23:59)"
            % (value, h, m)
        )
    return h * 60 + m


def parse_window(value: t.Optional[str]) -> t.Optional[Window]:
    """Parse ``HH:MM-HH:MM``; None or empty gives None (no window). Raises RansomeyeError on bad input."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    match = _WINDOW_RE.match(text)
    if not match:
        raise RansomeyeError("maintenance_window %r is not valid: use HH:MM-HH:MM, for example 02:00-04:00" % value)
    start = _minutes(match.group(1), match.group(2), text, allow_24=False)
    end = _minutes(match.group(3), match.group(4), text, allow_24=True)
    if end == 24 * 60 and start != 0:
        end = 0  # "22:00-24:00" is "22:00-00:00"; "00:00-24:00" stays the whole day
    if start == end:
        raise RansomeyeError("maintenance_window %r is empty: start and end must differ" % value)
    return Window(start, end, text)
