"""Pure rules of the maintenance helpers: table ranking, names, options, liveness, archive names."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _disk_clean as dc
from ansible_collections.ransomeye.ops.plugins.module_utils import _log_archive as la
from ansible_collections.ransomeye.ops.plugins.module_utils import _vacuum as vac
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def stats(dead, live, xid=1000, mods=0):
    return dict(n_dead_tup=dead, n_live_tup=live, dead_ratio=dead / float(dead + live) if dead + live else 0.0,
                max_xid_age=xid, n_mod_since_analyze=mods)


def test_urgency_thresholds_and_ranking():
    opts = vac.build_options(dict(min_dead_ratio=0.05, min_dead_tuples=100, min_xid_age=1000000))
    assert vac.urgency(stats(99, 10), opts) is None  # ratio high, count too low
    assert vac.urgency(stats(100, 100000), opts) is None  # count ok, ratio 0.1 %
    mild = vac.urgency(stats(200, 1800), opts)
    heavy = vac.urgency(stats(900, 100), opts)
    old = vac.urgency(stats(0, 100, xid=5000000), opts)
    assert mild and heavy and old
    assert heavy[0] > mild[0]
    assert "xid age 5000000" in old[1]
    assert old[0] == pytest.approx(6.0)


def test_analyze_mode_uses_modified_rows():
    opts = vac.build_options(dict(mode="analyze", min_dead_ratio=0.1, min_dead_tuples=50))
    assert vac.urgency(stats(0, 100, mods=60), opts)[1].startswith("60 rows modified since analyze")
    assert vac.urgency(stats(5000, 100, mods=0), opts) is None


def test_table_names_and_durations():
    assert vac.split_table("events") == (None, "events")
    assert vac.split_table("audit.events") == ("audit", "events")
    for bad in ("a.b.c", ".x", ""):
        with pytest.raises(RansomeyeError):
            vac.split_table(bad)
    assert vac.build_options(dict(lock_timeout="250ms")).lock_timeout_ms == 250
    assert vac.build_options(dict(lock_timeout="2s", time_budget="30m")).time_budget == 1800


def test_pid_alive():
    assert dc.pid_alive(os.getpid()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert dc.pid_alive(proc.pid) is False
    for bad in (None, "123", -1, 0, True, 4194305 + 1, 2 ** 70):
        assert dc.pid_alive(bad) is False


def test_mount_points_include_root_and_proc():
    points = dc.mount_points()
    assert "/" in points and "/proc" in points


def test_disk_clean_options_nest_roots_once(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    opts = dc.build_options(dict(roots=[str(inner), str(tmp_path / "a")], orphan_age="1d", temp_age=""))
    assert opts.roots == [str(tmp_path / "a")]
    assert opts.temp_age is None


def test_archive_names_match_the_prune_pattern_only_for_ours():
    name = la.archive_name("/var/log/x/app.log.3", 1790000000, "ab" * 32, "gzip")
    assert name == "app.log.3.20260921.abababababab.gz"  # 2026-09-21T14:13:20Z
    assert la.ARCHIVE_RE.match(name).group("name") == "app.log.3"
    for foreign in ("app.log.3.gz", "app.log.20260922.gz", "evidence.20260922.abababababab.tar.gz",
                    "app.log.20260922.ABABABABABAB.gz", "app.log.20260922.abababababab.gz.bak"):
        assert not la.ARCHIVE_RE.match(foreign)
    assert la.TEMP_RE.match(".ransomeye-archive.k2j3h4.tmp") and not la.TEMP_RE.match("app.tmp")


def test_missing_zstd_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without zstd: the real lookup, no mock
    with pytest.raises(RansomeyeError) as info:
        la.build_options(dict(paths=[str(tmp_path / "*.log")], retention_days=7, archive_retention_days=9,
                              compression="zstd"))
    assert "needs the zstd command" in info.value.msg
