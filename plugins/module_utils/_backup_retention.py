# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: which backups retention keeps (keep_last, keep_within, keep_daily/weekly/monthly).

The rules are restic's ``forget`` policies: a backup is removed only when no
rule keeps it. They run over authentic manifests only (planted files are
never counted) and are decided in seq order, never by a clock that can lie:

* backups are walked from the highest seq down; a backup whose advisory time
  is later than that of any backup with a higher seq (the clock went
  backwards, or it was dated in the future) has no usable time and is kept;
* ``keep_within`` is measured back from the newest backup's time, which is
  the current run's clock (a manifest dated in the future cannot stretch or
  shift the window: it is out of order and simply kept);
* calendar buckets (UTC day, ISO week, month) keep the newest backup of each
  of the newest N buckets, like restic.

See docs/BACKUP_FORMAT.md section 3.6.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration

COUNT_OPTIONS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
BUCKETS = (("keep_daily", "daily", "%Y-%m-%d"), ("keep_weekly", "weekly", "%G-W%V"), ("keep_monthly", "monthly", "%Y-%m"))
MAX_COUNT = 100000


class Policy(t.NamedTuple):
    keep_last: t.Optional[int]
    keep_within: t.Optional[float]  # seconds
    keep_daily: t.Optional[int]
    keep_weekly: t.Optional[int]
    keep_monthly: t.Optional[int]

    def describe(self) -> dict:
        out = {k: v for k, v in self._asdict().items() if v is not None}
        if "keep_within" in out:
            out["keep_within"] = int(out["keep_within"])
        return out


class Candidate(t.NamedTuple):
    seq: int
    backup_id: str
    time: t.Optional[float]


def policy_from(params: dict) -> t.Optional[Policy]:
    """The policy given by the module options, or None when no keep_* option is set (everything is kept)."""
    values: t.Dict[str, t.Any] = {}
    for name in COUNT_OPTIONS:
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not 1 <= int(value) <= MAX_COUNT):
            raise RansomeyeError("%s must be between 1 and %d, not %r" % (name, MAX_COUNT, value))
        values[name] = int(value) if value is not None else None
    within = parse_duration(params.get("keep_within"), "keep_within")
    if within is not None and within <= 0:
        raise RansomeyeError("keep_within must be a positive duration such as 30d or 12h")
    values["keep_within"] = within
    if all(v is None for v in values.values()):
        return None
    return Policy(**values)


def plan(candidates: t.Sequence[Candidate], policy: t.Optional[Policy]) -> t.Tuple[t.Dict[int, t.List[str]], t.List[Candidate], t.List[str]]:
    """(kept seq -> reasons, removed candidates, notes). The highest seq (the new backup) is always kept."""
    ordered = sorted(candidates, key=lambda c: c.seq, reverse=True)
    kept: t.Dict[int, t.List[str]] = {}
    notes: t.List[str] = []
    if not ordered:
        return kept, [], notes
    if policy is None:
        return {c.seq: ["no retention policy"] for c in ordered}, [], notes
    kept.setdefault(ordered[0].seq, []).append("newest")
    time_rules = policy.keep_within is not None or any(getattr(policy, o) for o, _l, _f in BUCKETS)
    timed: t.List[Candidate] = []
    floor: t.Optional[float] = None
    for cand in ordered:
        if cand.time is None or (floor is not None and cand.time > floor):
            if time_rules:  # count rules need no clock; time rules cannot judge it, so it stays
                kept.setdefault(cand.seq, []).append("time not usable (later than a newer backup's, or missing)")
            continue
        floor = cand.time
        timed.append(cand)
    untimed = len(ordered) - len(timed)
    if untimed and time_rules:
        notes.append("%d backup(s) have an advisory time later than a newer backup's (the clock went backwards, or "
                     "they are dated in the future); time rules cannot judge them, so they are kept" % untimed)
    if policy.keep_last:
        for cand in ordered[:policy.keep_last]:
            kept.setdefault(cand.seq, []).append("last %d" % policy.keep_last)
    if policy.keep_within is not None and timed:
        reference = timed[0].time or 0.0
        for cand in timed:
            if (cand.time or 0.0) >= reference - policy.keep_within:
                kept.setdefault(cand.seq, []).append("within %ds of the newest" % int(policy.keep_within))
    for option, label, fmt in BUCKETS:
        count = getattr(policy, option)
        if not count:
            continue
        seen: t.List[str] = []
        for cand in timed:
            bucket = time.strftime(fmt, time.gmtime(cand.time or 0.0))
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(bucket)
            kept.setdefault(cand.seq, []).append("%s %s" % (label, bucket))
    removed = [c for c in ordered if c.seq not in kept]
    return kept, sorted(removed, key=lambda c: c.seq), notes
