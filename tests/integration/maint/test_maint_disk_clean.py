"""ransomeye_disk_clean on real trees: exactly the files the rules name go, nothing else.

Most tests drive the module's helper in-process (same code the module runs) so
that they can set "now" one hour ahead instead of sleeping (the temp rule uses
ctime, which a test cannot set back) and so that a hook can race the cleaner
mid-run. The module-level tests at the end go through the module itself.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._disk_clean import run

HOUR = 3600.0
DEAD_PID = 4194305 + 7  # above pid_max (4194304): never a running process


def tree(base):
    """Every path below base (files, dirs, symlinks, fifos), relative, as a set."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), base))
    return found


def write(path, data=b"x" * 5000, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def future(path):
    """Make ``path`` young relative to the run's "now" (one hour ahead): mtime in the future."""
    stamp = time.time() + 2 * HOUR
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def params(root, **extra):
    base = dict(roots=[str(root)], temp_age="30m", orphan_age="30m", buffer_dirs=[], exclude=[],
                remove_empty_dirs=True, max_runtime="5m")
    base.update(extra)
    return base


def clean(root, check=False, hook=None, **extra):
    return run(params(root, **extra), check, now=time.time() + HOUR, hook=hook)


@pytest.fixture
def layout(tmp_path, hold_files):
    """A root with every kind of entry, an outside directory, and the expected survivors."""
    root = tmp_path / "root"
    out = tmp_path / "outside"
    os.makedirs(root)
    write(str(out / "secret.txt"))
    write(str(out / "victim" / "old.tmp"))
    write(str(out / "shared.bin"), b"s" * 20000)
    # temp files
    write(str(root / "old" / "a.tmp"))
    write(str(root / "old" / "deeper" / "b.tmp"))
    future(write(str(root / "fresh.tmp")))
    future(write(str(root / "mixed" / "fresh.tmp")))
    write(str(root / "mixed" / "stale.tmp"))
    os.makedirs(root / "emptydir" / "nested")
    # symlinks: never followed, never removed
    os.symlink(str(out / "secret.txt"), str(root / "link-to-file"))
    os.symlink(str(out / "victim"), str(root / "link-to-dir"))
    # special files
    os.mkfifo(str(root / "fifo"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "sock"))
    # open and flocked files (held by another live process)
    write(str(root / "held" / "open.tmp"))
    write(str(root / "held" / "flocked.tmp"))
    hold_files(open=[str(root / "held" / "open.tmp")], flock=[str(root / "held" / "flocked.tmp")])
    # exclusions: by name, and a directory by path
    write(str(root / "cfg" / "settings.keep"))
    write(str(root / "cfg" / "junk.tmp"))
    write(str(root / "evidence" / "case-1" / "dump.bin"))
    # hard links: two names inside (freed once), one name shared with outside (not freed)
    write(str(root / "hl" / "one"), b"h" * 40000)
    os.link(str(root / "hl" / "one"), str(root / "hl" / "two"))
    os.link(str(out / "shared.bin"), str(root / "hl" / "shared"))
    before = tree(tmp_path)
    gone = {
        "root/old", "root/old/a.tmp", "root/old/deeper", "root/old/deeper/b.tmp", "root/mixed/stale.tmp",
        "root/emptydir", "root/emptydir/nested", "root/cfg/junk.tmp",
        "root/hl/one", "root/hl/two", "root/hl/shared", "root/hl",
    }
    yield dict(root=root, out=out, base=tmp_path, before=before, survivors=before - gone,
               freed=os.stat(root / "hl" / "one").st_blocks * 512 + os.stat(root / "old" / "a.tmp").st_blocks * 512
               + os.stat(root / "old" / "deeper" / "b.tmp").st_blocks * 512
               + os.stat(root / "mixed" / "stale.tmp").st_blocks * 512
               + os.stat(root / "cfg" / "junk.tmp").st_blocks * 512)
    sock.close()


EXCLUDE = ["*.keep", "*/evidence"]


def test_only_rule_matches_go_and_everything_else_survives(layout):
    result = clean(layout["root"], exclude=EXCLUDE)
    assert tree(layout["base"]) == layout["survivors"]
    assert result["changed"] is True
    assert result["counts"] == {"temp": 7, "empty_dir": 5}
    assert result["bytes_freed"] == layout["freed"]
    skipped = result["skipped_entries"]
    assert skipped["symlink"] == 2 and skipped["fifo"] == 1 and skipped["socket"] == 1
    assert skipped.get("open", 0) + skipped.get("locked", 0) == 2  # the flock holder has the file open too
    assert skipped["excluded"] == 2
    assert {p["reason"] for p in result["skipped_paths"] if p["path"].endswith("flocked.tmp")} <= {"open", "locked"}
    with open(layout["out"] / "secret.txt", "rb") as handle:
        assert handle.read() == b"x" * 5000


def test_check_mode_lists_exactly_what_apply_removes(layout):
    planned = clean(layout["root"], check=True, exclude=EXCLUDE)
    assert tree(layout["base"]) == layout["before"]
    assert planned["changed"] is True
    applied = clean(layout["root"], exclude=EXCLUDE)
    assert sorted(planned["removed"], key=lambda r: r["path"]) == sorted(applied["removed"], key=lambda r: r["path"])
    assert planned["bytes_freed"] == applied["bytes_freed"] == layout["freed"]
    again_check = clean(layout["root"], check=True, exclude=EXCLUDE)
    again = clean(layout["root"], exclude=EXCLUDE)
    assert again_check["changed"] is False and again["changed"] is False
    assert again["removed"] == [] and tree(layout["base"]) == layout["survivors"]


def test_directory_swapped_for_symlink_mid_run_is_not_entered(tmp_path):
    root, out = tmp_path / "root", tmp_path / "outside"
    write(str(root / "a" / "old.tmp"))
    write(str(root / "b" / "old.tmp"))
    write(str(out / "victim" / "precious.tmp"))
    swapped = []

    def hook(point, path):
        if point == "before_remove" and path.endswith("/a/old.tmp") and not swapped:
            os.rename(str(root / "b"), str(out / "b-moved"))
            os.symlink(str(out / "victim"), str(root / "b"))
            swapped.append(path)

    result = clean(root, hook=hook)
    assert swapped
    assert tree(tmp_path) == {"root", "root/b", "outside", "outside/victim", "outside/victim/precious.tmp",
                              "outside/b-moved", "outside/b-moved/old.tmp"}
    assert os.path.islink(root / "b")
    assert result["counts"] == {"temp": 1, "empty_dir": 1}
    # seen as a symlink when stat'ed, or caught by the O_NOFOLLOW open / inode check: never entered
    assert result["skipped_entries"] in ({"symlink": 1}, {"changed during the run": 1})


def test_file_swapped_for_symlink_after_decision_is_skipped(tmp_path):
    root, out = tmp_path / "root", tmp_path / "outside"
    write(str(root / "c" / "old.tmp"))
    write(str(out / "secret.txt"))

    def hook(point, path):
        if point == "before_remove" and path.endswith("/c/old.tmp"):
            os.rename(path, str(out / "moved.tmp"))
            os.symlink(str(out / "secret.txt"), path)

    result = clean(root, hook=hook)
    assert tree(tmp_path) == {"root", "root/c", "root/c/old.tmp", "outside", "outside/secret.txt",
                              "outside/moved.tmp"}
    assert os.path.islink(root / "c" / "old.tmp")
    assert result["removed"] == []
    assert result["skipped_entries"] == {"changed during the run": 1}


def _mount(kind, source, target):
    argv = ["mount", "-t", "tmpfs", "tmpfs", target] if kind == "tmpfs" else ["mount", "--bind", source, target]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        pytest.skip("mount is not available here: %s" % exc)
    if proc.returncode != 0:
        pytest.skip("cannot mount here (%s): %s" % (" ".join(argv), proc.stderr.strip()))


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_mount_points_under_a_root_are_never_entered(tmp_path, kind):
    root, out = tmp_path / "root", tmp_path / "outside"
    write(str(root / "old.tmp"))
    write(str(out / "evidence" / "old-but-precious.bin"))
    os.makedirs(root / "mnt")
    _mount(kind, str(out / "evidence"), str(root / "mnt"))
    try:
        if kind == "tmpfs":
            write(str(root / "mnt" / "old-on-tmpfs.bin"))
        inside = tree(root / "mnt")
        result = clean(root)
        assert tree(root / "mnt") == inside
        assert result["skipped_entries"] == {"other filesystem or mount point": 1}
        assert result["counts"] == {"temp": 1}
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=False)
    assert tree(tmp_path) == {"root", "root/mnt", "outside", "outside/evidence",
                              "outside/evidence/old-but-precious.bin"}


def _session(buf, sid, state=None, pid=None, raw=None, chunks=2, young=False):
    paths = [write(str(buf / sid / ("chunk-%04d" % i)), b"c" * 3000) for i in range(chunks)]
    if raw is not None or state is not None:
        marker = buf / (sid + ".session")
        with open(marker, "w") as handle:
            handle.write(raw if raw is not None else json.dumps({"pid": pid, "state": state}))
        paths.append(str(marker))
    if young:
        for path in paths + [str(buf / sid)]:
            future(path)
    return paths


@pytest.fixture
def buffer_tree(tmp_path):
    root = tmp_path / "spool"
    buf = root / "buffer"
    os.makedirs(buf)
    _session(buf, "live-1", "uploading", os.getpid())
    _session(buf, "complete-1", "complete", 1)
    _session(buf, "orphan-deadpid", "uploading", DEAD_PID)
    _session(buf, "orphan-nomarker")
    _session(buf, "orphan-badmarker", raw="{not json")
    _session(buf, "recent-deadpid", "uploading", DEAD_PID, young=True)
    _session(buf, "odd-deadpid", "uploading", DEAD_PID)
    write(str(buf / "odd-deadpid" / "notes.txt"))  # not a chunk: the session stays whole
    _session(buf, "linked-deadpid", "uploading", DEAD_PID, chunks=1)
    write(str(tmp_path / "outside" / "secret"))
    os.symlink(str(tmp_path / "outside" / "secret"), str(buf / "linked-deadpid" / "chunk-0001"))
    write(str(buf / "chunk-9999"))  # stray chunk
    with open(buf / "lonely.session", "w") as handle:
        json.dump({"pid": DEAD_PID, "state": "uploading"}, handle)
    with open(buf / "waiting.session", "w") as handle:
        json.dump({"pid": DEAD_PID, "state": "complete"}, handle)
    write(str(buf / "README"))  # not ours: neither chunk nor marker
    return dict(root=root, buf=buf, base=tmp_path, before=tree(tmp_path))


def _orphans(prefix="spool/buffer/"):
    gone = {"chunk-9999", "lonely.session"}
    for sid in ("orphan-deadpid", "orphan-nomarker", "orphan-badmarker"):
        gone |= {sid, sid + "/chunk-0000", sid + "/chunk-0001"}
    gone |= {"orphan-deadpid.session", "orphan-badmarker.session"}
    return {prefix + g for g in gone}


def test_buffer_session_rule(buffer_tree):
    result = run(params(buffer_tree["root"], buffer_dirs=[str(buffer_tree["buf"])], temp_age="1m"), False,
                 now=time.time() + HOUR)
    assert tree(buffer_tree["base"]) == buffer_tree["before"] - _orphans()
    assert result["counts"] == {"orphan_chunk": 7, "orphan_session": 3, "orphan_marker": 3}
    assert result["skipped_entries"]["unexpected entry in upload session"] == 2


def test_buffer_complete_sessions_go_only_when_asked(buffer_tree):
    run(params(buffer_tree["root"], buffer_dirs=[str(buffer_tree["buf"])], remove_complete_sessions=True), False,
        now=time.time() + HOUR)
    complete = {"spool/buffer/" + p for p in ("complete-1", "complete-1/chunk-0000", "complete-1/chunk-0001",
                                              "complete-1.session", "waiting.session")}
    assert tree(buffer_tree["base"]) == buffer_tree["before"] - _orphans() - complete


def test_buffer_dir_is_never_judged_by_the_temp_rule(buffer_tree):
    # With no buffer_dirs the buffer is a plain subtree: make sure listing it protects the live session.
    run(params(buffer_tree["root"], buffer_dirs=[str(buffer_tree["buf"])], temp_age="1s"), False,
        now=time.time() + HOUR)
    assert {"spool/buffer/live-1/chunk-0000", "spool/buffer/complete-1/chunk-0000",
            "spool/buffer/recent-deadpid/chunk-0000"} <= tree(buffer_tree["base"])


def test_max_runtime_stops_and_next_run_finishes(tmp_path):
    root = tmp_path / "flood"
    for i in range(3000):
        write(str(root / ("d%02d" % (i % 30)) / ("f%04d.tmp" % i)), b"")
    first = clean(root, max_runtime="0.001s")
    assert first["truncated"] is True
    assert first["removed_count"] < 3030
    second = clean(root, max_runtime="5m")
    assert second["truncated"] is False
    assert first["removed_count"] + second["removed_count"] == 3030
    assert tree(tmp_path) == {"flood"}


# ------------------------------------------------------------------ through the module


def test_module_idempotence_and_check_mode(tmp_path, run_module_direct):
    root = tmp_path / "tmp"
    write(str(root / "x" / "old1.tmp"))
    write(str(root / "old2.tmp"))
    time.sleep(2.2)
    future(write(str(root / "fresh.tmp")))
    args = dict(roots=[str(root)], temp_age="2s")
    step1 = run_module_direct("ransomeye_disk_clean", args, check=True)
    assert step1["changed"] is True and tree(tmp_path) == {"tmp", "tmp/x", "tmp/x/old1.tmp", "tmp/old2.tmp",
                                                           "tmp/fresh.tmp"}
    assert {r["path"] for r in step1["removed"]} == {str(root / "x" / "old1.tmp"), str(root / "old2.tmp"),
                                                     str(root / "x")}
    step2 = run_module_direct("ransomeye_disk_clean", args)
    assert step2["changed"] is True and step2["counts"] == {"temp": 2, "empty_dir": 1}
    assert tree(tmp_path) == {"tmp", "tmp/fresh.tmp"}
    step3 = run_module_direct("ransomeye_disk_clean", args, check=True)
    step4 = run_module_direct("ransomeye_disk_clean", args)
    assert step3["changed"] is False and step4["changed"] is False
    assert tree(tmp_path) == {"tmp", "tmp/fresh.tmp"}


@pytest.mark.parametrize("args,fragment", [
    (dict(roots=["/nonexistent/ransomeye-tmp"]), "does not exist"),
    (dict(roots=["relative/tmp"]), "must be absolute"),
    (dict(roots=["/"]), "refusing to clean /"),
    (dict(roots=["{tmp}"], temp_age="soon"), "temp_age must be a duration"),
    (dict(roots=["{tmp}"], buffer_dirs=["/var"]), "is not inside any of the roots"),
    (dict(roots=["{link}"]), "is a symlink"),
])
def test_module_bad_input_fails_clearly(tmp_path, run_module_direct, args, fragment):
    os.symlink(str(tmp_path), str(tmp_path / "link"))
    args = {k: ([v.format(tmp=tmp_path, link=tmp_path / "link") for v in val] if isinstance(val, list) else val)
            for k, val in args.items()}
    result = run_module_direct("ransomeye_disk_clean", args)
    assert result.get("failed") is True
    assert fragment in result["msg"]
    assert "Traceback" not in result["msg"] and "Traceback" not in result["_stderr"]
