"""Retention policies (keep_last, keep_within, keep_daily/weekly/monthly) over verified manifests, in seq order.

The host clock is simulated (time.time patched in-process): a day passes between backups, the clock jumps back, a
manifest is dated in the future. None of it may make a real backup deletable; verify must accept the gaps that
retention leaves in the middle of the seq range (they are recorded in the signed manifests), and still catch a
manifest deleted by anyone else.
"""
from __future__ import annotations

import os
import time as _time

import pytest

from tests.integration.dr.trust_helpers import backup, make_site, resign, verify

DAY = 86400
T0 = 1796083200.0  # 2026-12-01T00:00:00Z


@pytest.fixture
def site(tmp_path):
    return make_site(str(tmp_path))


@pytest.fixture
def clock(monkeypatch):
    state = {"now": T0}
    monkeypatch.setattr(_time, "time", lambda: state["now"])
    return state


def _seqs(site):
    return sorted(int(n[:8]) for n in os.listdir(os.path.join(site["repo"], "manifests")))


def test_keep_daily_keeps_the_newest_of_each_day_and_verify_accepts_the_gaps(site, clock):
    for day in range(4):
        for hour in (1, 13):
            clock["now"] = T0 + day * DAY + hour * 3600
            result = backup(site, keep_daily=2)
            assert not result.get("failed"), result
    # days 2 and 3 (their newest backup each) remain: seqs 6 and 8
    assert _seqs(site) == [6, 8], result["retention"]
    checked = verify(site, level="ciphertext", fail_on_problems=True)
    assert not checked.get("failed") and len(checked["verified"]) == 2, checked
    kept = {k["seq"]: k["reasons"] for k in result["retention"]["kept"]}
    assert kept[8][0] == "newest" and any(r.startswith("daily") for r in kept[6])


def test_a_manifest_deleted_from_the_middle_is_still_caught(site, clock):
    for i in range(3):
        clock["now"] = T0 + i * 3600
        backup(site)
    os.unlink(os.path.join(site["repo"], "manifests", "00000002.json"))
    checked = verify(site)
    assert any("missing" in p["reason"] for p in checked["problems"]), checked
    os.unlink(os.path.join(site["repo"], "manifests", "00000001.json"))  # the oldest: the signed record knows it
    checked = verify(site)
    assert any("00000001" in p["reason"] for p in checked["problems"]), checked


def test_check_mode_reports_what_would_be_removed_and_removes_nothing(site, clock):
    for i in range(3):
        clock["now"] = T0 + i * DAY
        backup(site)
    clock["now"] = T0 + 3 * DAY
    planned = backup(site, check_mode=True, keep_last=1, keep_within="36h")
    assert [r["seq"] for r in planned["retention"]["removed"]] == [1, 2]
    assert planned["pruned"]["manifests"] and _seqs(site) == [1, 2, 3]
    done = backup(site, keep_last=1, keep_within="36h")
    assert [r["seq"] for r in done["retention"]["removed"]] == [1, 2] and _seqs(site) == [3, 4]


def test_future_dated_manifest_or_clock_going_back_never_makes_real_backups_deletable(site, clock):
    for i in range(3):
        clock["now"] = T0 + i * DAY
        backup(site)
    # backup 3 was taken while the clock read a year ahead (signed by the real key: a real backup)
    resign(os.path.join(site["repo"], "manifests", "00000003.json"), site["signer"],
           edit=lambda b: b["time"].update(start="2027-12-01T00:00:00Z", end="2027-12-01T00:00:01Z"))
    clock["now"] = T0 + 3 * DAY
    result = backup(site, keep_within="2d")
    assert not result.get("failed"), result
    # restic measuring from the future-dated backup would drop 1, 2 and 4; here 3 is out of order and kept, and the
    # window is measured from the current backup
    assert _seqs(site) == [2, 3, 4], result["retention"]
    assert result["retention"]["notes"]
    # the clock now jumps back a month: the daily buckets must not merge real backups away
    clock["now"] = T0 - 30 * DAY
    result = backup(site, keep_daily=1)
    assert not result.get("failed"), result
    assert _seqs(site) == [2, 3, 4, 5], result["retention"]
    assert verify(site, fail_on_problems=True).get("failed") is None


def test_retention_options_are_validated(site):
    assert "keep_daily" in backup(site, keep_daily=0)["msg"]
    assert "keep_within" in backup(site, keep_within="soon")["msg"]
