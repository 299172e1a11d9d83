"""Retention rules (restic forget policies in seq order) and the backup_info summary, without a repository."""
from __future__ import annotations

import calendar
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_retention as ret
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_info import sizes
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_trust import retained_seqs, seq_ranges
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def _at(text):
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def _cands(*times):
    return [ret.Candidate(i + 1, "%08d" % (i + 1), _at(x) if x else None) for i, x in enumerate(times)]


def _policy(**kw):
    return ret.policy_from(kw)


def test_weekly_and_monthly_keep_the_newest_of_each_bucket():
    cands = _cands("2026-10-30 10:00", "2026-10-31 10:00", "2026-11-02 10:00", "2026-11-08 10:00",
                   "2026-11-09 10:00", "2026-11-30 10:00", "2026-12-01 10:00")
    kept, removed, _notes = ret.plan(cands, _policy(keep_weekly=2))
    # ISO weeks with backups: W49 (Nov 30, Dec 1), W46 (Nov 9), W45 (Nov 2, Nov 8), W44: the newest two are
    # W49 (its newest, seq 7) and W46 (seq 5); buckets count weeks that HAVE backups, like restic
    assert sorted(kept) == [5, 7], kept
    assert [c.seq for c in removed] == [1, 2, 3, 4, 6]
    kept, removed, _notes = ret.plan(cands, _policy(keep_monthly=3))
    assert sorted(kept) == [2, 6, 7]  # newest of December, November, October
    assert [c.seq for c in removed] == [1, 3, 4, 5]


def test_rules_are_a_union_and_the_newest_is_always_kept():
    cands = _cands("2026-12-01 01:00", "2026-12-01 02:00", "2026-12-02 01:00", "2026-12-03 01:00")
    kept, removed, _notes = ret.plan(cands, _policy(keep_last=1, keep_daily=2))
    assert sorted(kept) == [3, 4] and kept[4][0] == "newest" and [c.seq for c in removed] == [1, 2]
    kept, _removed, _notes = ret.plan(cands, _policy(keep_within="25h"))
    assert sorted(kept) == [3, 4]
    assert ret.plan(cands, None)[1] == []


def test_out_of_order_times_are_kept_only_when_a_time_rule_needs_them():
    # seq 2 was dated in the future (later than seq 3 and 4): time rules cannot place it, so it stays
    cands = _cands("2026-12-01 01:00", "2027-06-01 00:00", "2026-12-02 01:00", "2026-12-03 01:00")
    kept, _removed, notes = ret.plan(cands, _policy(keep_daily=1))
    assert sorted(kept) == [2, 4] and notes
    kept, _removed, notes = ret.plan(cands, _policy(keep_last=2))
    assert sorted(kept) == [3, 4] and not notes  # count rules need no clock
    # a manifest without a usable time is kept by time rules too
    kept, _removed, _notes = ret.plan(_cands("2026-12-01 01:00", None, "2026-12-03 01:00"), _policy(keep_within="1h"))
    assert sorted(kept) == [2, 3]


@pytest.mark.parametrize("options", [dict(keep_last=0), dict(keep_daily=-1), dict(keep_monthly=True),
                                     dict(keep_within="0s"), dict(keep_within="tomorrow"), dict(keep_weekly=10 ** 9)])
def test_bad_retention_values_are_refused(options):
    with pytest.raises(RansomeyeError):
        ret.policy_from(options)


def test_seq_ranges_round_trip_and_bad_records_are_ignored():
    seqs = {1, 2, 3, 7, 9, 10}
    assert seq_ranges(seqs) == [[1, 3], [7, 7], [9, 10]]
    assert retained_seqs({"seq": 10, "retained": seq_ranges(seqs)}) == seqs
    assert retained_seqs({"seq": 10, "retained": [[5, 99], "x", [3, 1]]}) == set()
    assert retained_seqs({"seq": 10}) is None


def test_backup_info_sizes_from_objects_or_recorded_totals():
    body = {"objects": {"a" * 64: {"plaintext_size": 10, "ciphertext_size": 70},
                        "b" * 64: {"plaintext_size": 5, "ciphertext_size": 60}}}
    assert sizes(body) == (15, 130)
    assert sizes({"totals": {"size": 1, "stored_size": 2}}) == (1, 2)
    assert sizes({}) == (None, None)
