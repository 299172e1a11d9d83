"""ransomeye_log_archive on real files: verify before delete, crash safety, no overwrite, pruning."""
from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import threading
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _log_archive as la
from ansible_collections.ransomeye.ops.plugins.module_utils._open_files import OpenFiles

DAY = 86400


def make_log(path, lines, age_days=10, tag="line"):
    with open(path, "w") as handle:
        for i in range(lines):
            handle.write("%s %s %06d event=login user=u%d\n" % (os.path.basename(path), tag, i, i % 97))
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def read_archive(path):
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-d", "-q", "-c", path], capture_output=True, check=True).stdout
    with gzip.open(path, "rb") as handle:
        return handle.read()


def content_by_name(logdir):
    """{original name: content} from surviving originals and final archives (never temp files)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(logdir, "*.log.*"))):
        with open(path, "rb") as handle:
            found.setdefault(os.path.basename(path), []).append(handle.read())
    for path in sorted(glob.glob(os.path.join(logdir, "archive", "*"))):
        match = la.ARCHIVE_RE.match(os.path.basename(path))
        if match:
            found.setdefault(match.group("name"), []).append(read_archive(path))
    return found


@pytest.fixture
def logdir(tmp_path):
    d = tmp_path / "log"
    d.mkdir()
    originals = {}
    for n in (1, 2, 3):
        path = make_log(str(d / ("app.log.%d" % n)), 2000 * n)
        with open(path, "rb") as handle:
            originals["app.log.%d" % n] = handle.read()
    make_log(str(d / "app.log"), 10, age_days=0)  # live log: too young
    return dict(dir=str(d), originals=originals, paths=[str(d / "*.log*")])


def test_idempotent_archive_with_check_mode(logdir, run_module_direct):
    args = dict(paths=logdir["paths"], retention_days=7)
    step1 = run_module_direct("ransomeye_log_archive", args, check=True)
    assert step1["changed"] is True
    assert sorted(os.path.basename(a["path"]) for a in step1["archived"]) == ["app.log.1", "app.log.2", "app.log.3"]
    assert not os.path.exists(os.path.join(logdir["dir"], "archive"))
    step2 = run_module_direct("ransomeye_log_archive", args)
    assert step2["changed"] is True, step2
    assert [a["archive"] for a in step2["archived"]] == [a["archive"] for a in step1["archived"]]
    assert step2["bytes_before"] == sum(len(v) for v in logdir["originals"].values())
    assert 0 < step2["bytes_after"] < step2["bytes_before"]
    for item in step2["archived"]:
        assert not os.path.exists(item["path"])
        assert read_archive(item["archive"]) == logdir["originals"][os.path.basename(item["path"])]
        assert la.sha256_file(item["archive"]) == item["sha256"]
        assert os.stat(item["archive"]).st_mtime == pytest.approx(time.time() - 10 * DAY, abs=60)
    step3 = run_module_direct("ransomeye_log_archive", args, check=True)
    step4 = run_module_direct("ransomeye_log_archive", args)
    assert step3["changed"] is False and step4["changed"] is False
    assert step4["archived"] == [] and step4["pruned"] == []
    assert os.path.exists(os.path.join(logdir["dir"], "app.log"))
    assert content_by_name(logdir["dir"]) == {
        k: [v] for k, v in logdir["originals"].items()}


def test_open_file_is_never_archived(logdir, run_module_direct, hold_files):
    held = os.path.join(logdir["dir"], "app.log.2")
    hold_files(open=[held])
    result = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"]))
    assert result["changed"] is True
    assert os.path.exists(held)
    assert [s for s in result["skipped_entries"] if s["path"] == held][0]["reason"] == "open by a process"
    assert sorted(os.path.basename(a["path"]) for a in result["archived"]) == ["app.log.1", "app.log.3"]
    assert not glob.glob(os.path.join(logdir["dir"], "archive", "app.log.2.*"))


def test_file_growing_during_the_run_is_kept(tmp_path):
    path = make_log(str(tmp_path / "busy.log.1"), 400000)  # ~20 MB: the read takes a while
    opts = la.build_options(dict(paths=[path], retention_days=7, archive_retention_days=90))
    os.mkdir(tmp_path / "archive")
    candidates, _skipped = la.find_candidates(opts, time.time())
    assert [c.path for c in candidates] == [path]
    stop = threading.Event()
    appended = []

    def appender():
        while not stop.is_set():
            with open(path, "a") as handle:  # open-append-close: not held open, only growing
                handle.write("late line %d\n" % len(appended))
            appended.append(1)
            time.sleep(0.002)

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        with pytest.raises(la._Skip) as info:  # pylint: disable=protected-access
            la.archive_one(opts, candidates[0], OpenFiles())
    finally:
        stop.set()
        thread.join()
    assert "chang" in str(info.value)
    with open(path) as handle:
        text = handle.read()
    assert text.count("\n") == 400000 + len(appended)
    assert os.listdir(tmp_path / "archive") == []  # no archive published, temp removed


@pytest.mark.parametrize("point", la.KILL_POINTS)
def test_sigkill_at_any_point_loses_no_line(logdir, run_module_direct, point):
    args = dict(paths=logdir["paths"])
    with pytest.raises(AssertionError, match="printed no JSON"):
        run_module_direct("ransomeye_log_archive", args, env={la.TEST_HOOK_ENV: "kill:" + point})
    after_crash = content_by_name(logdir["dir"])
    for name, data in logdir["originals"].items():
        assert after_crash.get(name), "%s lost after a crash at %s" % (name, point)
        assert all(copy == data for copy in after_crash[name])
    result = run_module_direct("ransomeye_log_archive", args)
    assert result["changed"] is True and not result.get("failed"), result
    assert content_by_name(logdir["dir"]) == {k: [v] for k, v in logdir["originals"].items()}
    leftovers = [n for n in os.listdir(os.path.join(logdir["dir"], "archive")) if la.TEMP_RE.match(n)]
    assert leftovers == []
    if point in ("compressed", "verified", "linked"):
        assert result["cleaned_temp"], "the crash left a temp file the next run must remove"
    final = run_module_direct("ransomeye_log_archive", args)
    assert final["changed"] is False


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_corrupted_archive_is_detected_and_original_kept(logdir, run_module_direct, compression):
    if compression == "zstd" and not shutil.which("zstd"):
        pytest.skip("zstd command not installed")
    result = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"], compression=compression),
                               env={la.TEST_HOOK_ENV: "corrupt"})
    assert result["failed"] is True
    assert "could not be archived safely" in result["msg"]
    assert "damaged" in result["msg"] or "verification failed" in result["msg"]
    assert "Traceback" not in result["_stderr"]
    for name, data in logdir["originals"].items():
        with open(os.path.join(logdir["dir"], name), "rb") as handle:
            assert handle.read() == data
    assert [n for n in os.listdir(os.path.join(logdir["dir"], "archive")) if n != la.LOCK_NAME] == []


def test_existing_archive_is_never_overwritten(logdir, run_module_direct):
    plan = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"]), check=True)
    target = [a for a in plan["archived"] if a["path"].endswith("app.log.1")][0]["archive"]
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as handle:
        handle.write(b"not the archive you are looking for")
    result = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"]))
    assert result["failed"] is True and "exists with different content" in result["msg"]
    with open(target, "rb") as handle:
        assert handle.read() == b"not the archive you are looking for"
    assert os.path.exists(os.path.join(logdir["dir"], "app.log.1"))
    assert sorted(os.path.basename(a["path"]) for a in result["archived"]) == ["app.log.2", "app.log.3"]


def test_identical_archive_only_removes_the_original(logdir, run_module_direct):
    first = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"]))
    item = first["archived"][0]
    with open(item["path"], "wb") as handle:  # the same log reappears (restored from a backup)
        handle.write(logdir["originals"][os.path.basename(item["path"])])
    stamp = time.time() - 10 * DAY
    os.utime(item["path"], (stamp, stamp))
    archive_stat = os.stat(item["archive"])
    again = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"]))
    assert again["changed"] is True
    assert [(a["archive"], a["reused"]) for a in again["archived"]] == [(item["archive"], True)]
    assert not os.path.exists(item["path"])
    assert os.stat(item["archive"]).st_ino == archive_stat.st_ino


def test_prune_only_our_pattern(logdir, run_module_direct):
    archive = os.path.join(logdir["dir"], "archive")
    os.makedirs(archive)
    old = time.time() - 400 * DAY
    ours = os.path.join(archive, "app.log.9.20250101.0123456789ab.gz")
    theirs = os.path.join(archive, "evidence-2025.gz")
    young = os.path.join(archive, "app.log.8.20261101.0123456789ab.gz")
    for path, stamp in ((ours, old), (theirs, old), (young, time.time())):
        with open(path, "wb") as handle:
            handle.write(b"x")
        os.utime(path, (stamp, stamp))
    check = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"], archive_retention_days=365),
                              check=True)
    assert check["pruned"] == [ours] and os.path.exists(ours)
    result = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"], archive_retention_days=365))
    assert result["pruned"] == [ours]
    assert not os.path.exists(ours) and os.path.exists(theirs) and os.path.exists(young)


def test_symlink_matching_the_glob_is_not_followed(tmp_path, run_module_direct):
    d = tmp_path / "log"
    d.mkdir()
    secret = make_log(str(tmp_path / "secret.log.1"), 10)
    os.symlink(secret, str(d / "app.log.1"))
    result = run_module_direct("ransomeye_log_archive", dict(paths=[str(d / "*.log.*")]))
    assert result["changed"] is False
    assert result["skipped_entries"] == [dict(path=str(d / "app.log.1"), reason="symlink (never followed)")]
    assert os.path.islink(d / "app.log.1") and os.path.exists(secret)


@pytest.mark.skipif(not shutil.which("zstd"), reason="zstd command not installed")
def test_zstd_round_trip(logdir, run_module_direct):
    result = run_module_direct("ransomeye_log_archive", dict(paths=logdir["paths"], compression="zstd"))
    assert result["changed"] is True and len(result["archived"]) == 3
    for item in result["archived"]:
        assert item["archive"].endswith(".zst")
        assert read_archive(item["archive"]) == logdir["originals"][os.path.basename(item["path"])]


@pytest.mark.parametrize("args,fragment", [
    (dict(paths=["relative/*.log"]), "must be absolute"),
    (dict(paths=["/nonexistent/ransomeye/*.log"]), "does not exist"),
    (dict(paths=["{d}/*.log"], retention_days=30, archive_retention_days=7), "must not be shorter"),
    (dict(paths=["{d}/*.log"], retention_days="a week"), "retention_days must be a duration"),
    (dict(paths=["{d}/*.log"], compression_level=12), "between 1 and 9"),
    (dict(paths=["{d}/*.log"], archive_dir="archive"), "archive_dir must be absolute"),
])
def test_bad_input_fails_clearly(tmp_path, run_module_direct, args, fragment):
    args = {k: ([p.format(d=tmp_path) for p in v] if k == "paths" else v) for k, v in args.items()}
    result = run_module_direct("ransomeye_log_archive", args)
    assert result.get("failed") is True
    assert fragment in result["msg"]
    assert "Traceback" not in result["_stderr"]


def test_original_changed_after_archiving_is_kept(tmp_path, hold_files):
    path = make_log(str(tmp_path / "late.log.1"), 1000)
    other = make_log(str(tmp_path / "held.log.1"), 1000)
    opts = la.build_options(dict(paths=[str(tmp_path / "*.log.*")], retention_days=7, archive_retention_days=90))
    os.mkdir(tmp_path / "archive")
    candidates, _skipped = la.find_candidates(opts, time.time())
    busy = OpenFiles()
    items = [(c, la.archive_one(opts, c, busy, delete=False)) for c in candidates]
    assert all(os.path.exists(item["archive"]) and not item["original_removed"] for _c, item in items)
    with open(path, "a") as handle:  # written to after its archive was made
        handle.write("one more line\n")
    hold_files(open=[other])  # opened after its archive was made
    busy.refresh()
    for cand, item in items:
        with pytest.raises(la._Skip):  # pylint: disable=protected-access
            la.delete_original(cand, item, busy)
        assert os.path.exists(cand.path) and item["original_removed"] is False
    with open(path) as handle:
        assert handle.read().endswith("one more line\n")
