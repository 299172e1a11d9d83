"""Repository v2 (trees of deduplicated blobs in packs): round trips, cost of a backup, cache and repository attacks.

Real files, a real repository, the real helpers of ransomeye_backup / _backup_verify / ransomeye_restore called
in-process (the modules themselves are exercised by test_dr_roundtrip.py and test_dr_crash.py, which run v2 by
default now).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from tests.integration.dr.conftest import module_namespace
from tests.harness.paths import REPO

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_restore import run_restore_module
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import run_verify_module
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import reader as v2reader

RNG_SEED = 1234


def _write(path, data, mode=0o644):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def build_tree(base: bytes, small_files: int = 240, seed: int = RNG_SEED) -> None:
    """Shape A and shape B in miniature, plus every awkward entry type."""
    import random
    rng = random.Random(seed)
    app = base + b"/x/app"
    sub = app + b"/sub"
    appx = base + b"/x/app-x"
    for d in (sub + b"/evidence", sub + b"/empty/deeper", appx + b"/events"):
        os.makedirs(d)
    # shape A: mixed sizes, half incompressible
    for i in range(6):
        size = (16 << 10) << (i % 5)
        data = os.urandom(size) if i % 2 else (b"event host=%d kind=rename path=/srv/%d\n" % (i, i)) * (size // 36)
        _write(sub + b"/evidence/sample-%d.bin" % i, data[:size], 0o640)
    # more than BIG_FILE: streamed in chunks by the walking thread
    _write(sub + b"/evidence/big.img", os.urandom(3 << 20) + b"\0" * (6 << 20) + b"tail", 0o600)
    # shape B: many small files in a few directories
    for i in range(small_files):
        d = appx + b"/events/d%02d" % (i % 8)
        os.makedirs(d, exist_ok=True)
        _write(d + b"/e%05d.json" % i, json.dumps({"id": i, "host": "h%d" % rng.randint(1, 50),
                                                   "pad": "x" * rng.randint(900, 4000)}).encode())
    # names that are not UTF-8, a directory too
    os.makedirs(sub + b"/caf\xe9-dir")
    _write(sub + b"/caf\xe9-dir/r\xe9sum\xe9 \xff.txt", b"latin-1 name\n")
    _write(sub + b"/\x80\x81raw", b"raw bytes name\n")
    # hard links: the first name sorts after a subdirectory holding the second
    _write(sub + b"/z-original.bin", b"linked content\n" * 100)
    os.makedirs(sub + b"/a-dir")
    os.link(sub + b"/z-original.bin", sub + b"/a-dir/second-name")
    os.link(sub + b"/z-original.bin", sub + b"/z-third")
    # sparse: 4 MiB hole, data, 3 MiB hole
    with open(sub + b"/sparse.db", "wb") as handle:
        handle.seek(4 << 20)
        handle.write(b"DATA" * 1000)
        handle.truncate(11 << 20)
    os.symlink(b"evidence/sample-0.bin", sub + b"/latest")
    os.symlink(appx + b"/events", sub + b"/events-link")  # absolute, into the other root
    os.chmod(sub + b"/empty", 0o750)
    # the parent /x/app holds a file that is NOT a root: it must not be restored
    _write(app + b"/outside.txt", b"not backed up")


def snapshot(root: bytes) -> dict:
    """Everything a restore must reproduce, keyed by path bytes relative to root."""
    out = {}
    inodes = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest, st.st_mtime_ns)
                inodes.setdefault(st.st_ino, []).append(rel)
    out[b"<hardlink groups>"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out


def restored_view(dest, root) -> dict:
    """snapshot() of <dest>/<root>, absolute link targets (rewritten under dest by design) mapped back."""
    prefix = os.fsencode(str(dest))
    out = snapshot(prefix + os.fsencode(root))
    for key, value in out.items():
        if isinstance(value, tuple) and value[0] == "link" and value[1].startswith(prefix + b"/"):
            out[key] = ("link", value[1][len(prefix):])
    return out


def age_tree(root: bytes, seconds: int = 3600) -> None:
    """Push mtimes into the past, then wait out the racy-timestamp window (ctime cannot be set)."""
    past = time.time() - seconds
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)
    time.sleep(2.1)


@pytest.fixture
def v2site(tmp_path, dr_keys):
    base = os.fsencode(str(tmp_path / "site"))
    build_tree(base)
    roots = [os.fsdecode(base + b"/x/app/sub"), os.fsdecode(base + b"/x/app-x")]
    repo = str(tmp_path / "repo")
    args = dict(repo=repo, components=["config", "artifacts"], config_paths=[roots[1] + "/events/d00"],
                artifact_paths=roots, mode="rsa", recipients=[dr_keys["recipient_pub"]],
                signing_key=dr_keys["signing_key"], cache_dir=str(tmp_path / "host-cache"), lock_timeout=5,
                rehash_percent=0.0, format="v2")
    read = dict(repo=repo, trusted_keys=[dr_keys["signing_pub"]], private_key=dr_keys["recipient_key"],
                lock_timeout=5, fail_on_problems=False)
    return dict(base=base, roots=roots, repo=repo, args=args, read=read, tmp=tmp_path, keys=dr_keys)


def backup(site, **extra):
    module = module_namespace(**dict(site["args"], **extra))
    result = run_backup(module)
    result["warnings"] = module.warnings
    return result


def verify(site, level="full", backup_id="all"):
    return run_verify_module(module_namespace(**dict(site["read"], backup=backup_id, level=level)))


def restore(site, dest, backup_id="latest", components=("artifacts",), check=False):
    args = dict(site["read"], backup=backup_id, components=list(components), dest=str(dest), state="restored",
                verify_level="ciphertext", _check_mode=check)
    args.pop("fail_on_problems")
    return run_restore_module(module_namespace(**args))


def object_files(repo):
    found = set()
    for dirpath, _dirs, files in os.walk(os.path.join(repo, "objects")):
        found.update(files)
    return found


def test_round_trip_keeps_bytes_names_hard_links_sparse_files_empty_dirs_and_cross_root_order(v2site):
    site = v2site
    first = backup(site)
    body = json.load(open(first["manifest"]))["manifest"]
    art = body["components"]["artifacts"]
    assert art["format"] == "tree-v2" and sorted(art["paths"]) == sorted(site["roots"])
    assert {r["kind"] for r in body["objects"].values()} == {"pack", "index"}
    assert art["entries"]["hardlinks"] == 2 and art["entries"]["files"] >= 250
    assert len(open(first["manifest"], "rb").read()) < 20000     # the manifest stays small
    checked = verify(site)
    assert checked["problems"] == [] and checked["verified"] == [first["backup_id"]]

    dest = site["tmp"] / "dest"
    restored = restore(site, dest, components=("config", "artifacts"))
    assert restored["changed"] is True
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))
    sparse = os.stat(os.fsencode(str(dest)) + site["base"] + b"/x/app/sub/sparse.db")
    assert sparse.st_size == 11 << 20 and sparse.st_blocks * 512 < 1 << 20
    # /x/app is only the parent of a root: its other contents are not part of the backup
    assert not os.path.exists(os.fsencode(str(dest)) + site["base"] + b"/x/app/outside.txt")
    # the absolute symlink into the other root is rewritten under dest
    link = os.readlink(os.fsencode(str(dest)) + site["base"] + b"/x/app/sub/events-link")
    assert link == os.fsencode(str(dest)) + site["base"] + b"/x/app-x/events"

    again = restore(site, dest, components=("config", "artifacts"))
    assert again["changed"] is False
    assert again["stats"]["artifacts"]["files_restored"] == 0


def test_nothing_changed_writes_nothing_and_one_percent_changed_writes_one_pack(v2site):
    site = v2site
    age_tree(site["base"])
    backup(site)                                 # reads everything, fills the host-local cache
    objects_before = object_files(site["repo"])
    second = backup(site)
    stats = second["stats"]["artifacts"]
    assert stats["bytes_read"] == 0 and stats["files_new"] == 0 and stats["objects_new"] == 0
    assert stats["files_unchanged"] >= 250
    assert object_files(site["repo"]) == objects_before       # not one new object, only a manifest
    assert os.path.getsize(second["manifest"]) < 20000

    events = site["base"] + b"/x/app-x/events"
    for name in (b"d01/e00001.json", b"d02/e00002.json", b"d03/e00003.json"):
        with open(events + b"/" + name, "ab") as handle:
            handle.write(b" ")
    third = backup(site)
    stats = third["stats"]["artifacts"]
    assert stats["files_new"] == 3 and stats["bytes_read"] < 20000
    new = object_files(site["repo"]) - objects_before
    kinds = sorted(json.load(open(third["manifest"]))["manifest"]["objects"][o]["kind"] for o in new)
    assert kinds == ["index", "pack", "pack"]                    # one data pack, one tree pack, one index
    dest = site["tmp"] / "dest"
    restore(site, dest)
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))


def test_unchanged_directories_reuse_their_cached_trees_without_decoding_them(v2site, monkeypatch):
    """A directory whose listing has the same stat signature as in the cache keeps its tree id with no tree
    decoded or encoded; a change deep down rebuilds only the trees on its path."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import engine as v2engine
    site = v2site
    age_tree(site["base"])
    backup(site)
    calls = {"decode": 0, "encode": 0}
    decode, encode = v2engine.fmt.decode_tree, v2engine.fmt.encode_tree

    def counting_decode(*args, **kwargs):
        calls["decode"] += 1
        return decode(*args, **kwargs)

    def counting_encode(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)
    monkeypatch.setattr(v2engine.fmt, "decode_tree", counting_decode)
    monkeypatch.setattr(v2engine.fmt, "encode_tree", counting_encode)
    first_tree = json.load(open(backup(site)["manifest"]))["manifest"]["components"]["artifacts"]["tree"]
    # /x/app/sub holds hard links: it (and the top tree above it) always takes the full path
    assert calls["decode"] <= 2 and calls["encode"] <= 2, calls
    # a file appended in place: its directory's mtime does not move, its own size and ctime do
    with open(site["base"] + b"/x/app-x/events/d05/e00005.json", "ab") as handle:
        handle.write(b"\n")
    calls.update(decode=0, encode=0)
    changed = backup(site)
    assert changed["stats"]["artifacts"]["files_new"] == 1
    assert json.load(open(changed["manifest"]))["manifest"]["components"]["artifacts"]["tree"] != first_tree
    # d05, events, app-x, the top tree, plus /x/app/sub's full path: far fewer than the 16 directories
    assert calls["decode"] <= 6 and calls["encode"] <= 6, calls
    dest = site["tmp"] / "dest"
    restore(site, dest)
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))


def test_a_poisoned_host_cache_is_detected_and_every_file_read_again(v2site):
    site = v2site
    age_tree(site["base"])
    backup(site)
    cache_root = os.path.join(site["args"]["cache_dir"], os.listdir(site["args"]["cache_dir"])[0])
    # the attacker makes a file look unchanged: same size and mtime, other content
    victim = site["base"] + b"/x/app-x/events/d04/e00004.json"
    st = os.stat(victim)
    with open(victim, "r+b") as handle:
        handle.write(b"{")
        handle.seek(st.st_size - 1)
        handle.write(b"}")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    # ... and flips one byte of the cached trees
    path = os.path.join(cache_root, "artifacts.cache")
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    poisoned = backup(site)
    assert any("failed authentication" in w for w in poisoned["warnings"])
    assert poisoned["stats"]["artifacts"]["files_new"] >= 1
    # a state file copied from another run (valid MAC, other manifest) is not used either
    state = os.path.join(cache_root, "artifacts.state")
    old_state = open(state, "rb").read()
    backup(site)
    with open(state, "wb") as handle:
        handle.write(old_state)
    replayed = backup(site)
    assert replayed["stats"]["artifacts"]["files_unchanged"] == 0
    # a forged state is refused outright
    with open(state, "r+b") as handle:
        data = handle.read().replace(b'"manifest_seq":', b'"manifest_seq":1', 1)
        handle.seek(0)
        handle.write(data)
    forged = backup(site)
    assert any("failed authentication" in w or "malformed" in w for w in forged["warnings"])
    dest = site["tmp"] / "dest"
    restore(site, dest)
    assert restored_view(dest, site["roots"][1]) == snapshot(os.fsencode(site["roots"][1]))


def test_rsa_v2_keeps_the_blob_id_key_out_of_the_repository(v2site):
    site = v2site
    backup(site)
    assert not os.path.exists(os.path.join(site["repo"], "keys", "dedup.key"))
    assert not os.listdir(os.path.join(site["repo"], "cache"))
    host_key = os.path.join(site["args"]["cache_dir"], os.listdir(site["args"]["cache_dir"])[0], "host.key")
    assert stat.S_IMODE(os.stat(host_key).st_mode) == 0o600
    with pytest.raises(RansomeyeError, match="must not be inside the repository"):
        backup(site, cache_dir=os.path.join(site["repo"], "cache"))


def test_tampered_pack_or_index_is_caught_by_verify_and_refused_by_restore(v2site):
    site = v2site
    first = backup(site)
    objects = json.load(open(first["manifest"]))["manifest"]["objects"]
    pack = max((o for o in objects if objects[o]["kind"] == "pack"), key=lambda o: objects[o]["ciphertext_size"])
    index = next(o for o in objects if objects[o]["kind"] == "index")
    pack_path = os.path.join(site["repo"], "objects", pack[:2], pack)
    with open(pack_path, "r+b") as handle:
        handle.seek(objects[pack]["ciphertext_size"] // 2)
        handle.write(b"\x00\x01\x02")
    problems = verify(site, level="ciphertext")["problems"]
    assert [p["object"] for p in problems] == [pack]
    assert "modified" in problems[0]["reason"]
    problems = verify(site, level="full")["problems"]
    assert [p["object"] for p in problems] == [pack] and "decryption failed" in problems[0]["reason"]
    dest = site["tmp"] / "dest"
    with pytest.raises(RansomeyeError, match="refusing to restore"):
        restore(site, dest)
    assert not os.path.exists(dest)
    # a re-sorted index with the same size (offsets swapped) does not match the manifest
    index_path = os.path.join(site["repo"], "objects", index[:2], index)
    data = bytearray(open(index_path, "rb").read())
    data[-5] ^= 0xFF
    with open(index_path, "wb") as handle:
        handle.write(bytes(data))
    reasons = {p["object"]: p["reason"] for p in verify(site, level="ciphertext")["problems"]}
    assert index in reasons and "modified" in reasons[index]


def test_a_pack_failing_late_in_a_restore_replaces_nothing(v2site, monkeypatch):
    """The restore reads each pack once and stages files under temp names: a pack that fails authentication after
    many files were staged must leave the target exactly as it was, with no temp file and no new directory."""
    site = v2site
    backup(site)
    dest = site["tmp"] / "dest"
    restore(site, dest)
    before = restored_view(dest, site["roots"][0])
    # the last file in walk order gets new content: backup 2 needs a new pack only at the very end of its walk
    last = os.fsencode(site["roots"][0]) + b"/evidence/sample-5.bin"
    with open(last, "ab") as handle:
        handle.write(os.urandom(3 << 19))   # 1.5 MiB: two container chunks; the damage goes into the second
    second = backup(site)
    objects = json.load(open(second["manifest"]))["manifest"]["objects"]
    new_packs = [o for o in objects if objects[o]["kind"] == "pack" and o not in json.dumps(
        [json.load(open(os.path.join(site["repo"], "manifests", m)))["manifest"]["objects"]
         for m in sorted(os.listdir(os.path.join(site["repo"], "manifests")))[:-1]])]
    # a data pack and a tree pack; the trees are read as the walk goes, the data pack (the larger) only for the
    # last file (the restore's key probe decrypts the first chunk of one object: the damage is past it)
    assert len(new_packs) == 2, new_packs
    data_pack = max(new_packs, key=lambda o: objects[o]["plaintext_size"])
    path = os.path.join(site["repo"], "objects", data_pack[:2], data_pack)
    with open(path, "r+b") as handle:
        handle.seek(objects[data_pack]["ciphertext_size"] - 1000)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x10]))
    # restore into a fresh tree too, so that files are really staged before the bad pack is met
    fresh = site["tmp"] / "fresh"
    staged = []
    original = v2reader.Restorer._collect

    def counting(self, batch, results):
        staged.extend(outcome for outcome, _n in results if outcome == "written")
        return original(self, batch, results)
    monkeypatch.setattr(v2reader.Restorer, "_collect", counting)
    for target in (dest, fresh):
        with pytest.raises(RansomeyeError, match="refusing to restore.*nothing was replaced"):
            restore(site, target)
    assert len(staged) > 200, len(staged)
    assert restored_view(dest, site["roots"][0]) == before
    leftovers = [f for _d, _s, fs in os.walk(dest) for f in fs if f.startswith(".ransomeye-tmp")]
    assert leftovers == [] and not os.path.exists(fresh)


def test_a_v1_repository_is_migrated_by_a_v2_backup_and_both_stay_restorable(v2site):
    site = v2site
    # v1 cannot store names that are not UTF-8 (one of the reasons for v2): a v1-era tree has none
    sub = site["base"] + b"/x/app/sub"
    os.unlink(sub + b"/caf\xe9-dir/r\xe9sum\xe9 \xff.txt")
    os.rmdir(sub + b"/caf\xe9-dir")
    os.unlink(sub + b"/\x80\x81raw")
    old = backup(site, format="v1")
    assert json.load(open(old["manifest"]))["manifest"]["components"]["artifacts"].get("format") != "tree-v2"
    events = site["base"] + b"/x/app-x/events/d05/e00005.json"
    before_change = snapshot(os.fsencode(site["roots"][1]))
    with open(events, "ab") as handle:
        handle.write(b"\n")
    new = backup(site)
    assert json.load(open(new["manifest"]))["manifest"]["components"]["artifacts"]["format"] == "tree-v2"
    checked = verify(site)
    assert checked["problems"] == [] and checked["verified"] == [old["backup_id"], new["backup_id"]]
    dest_old, dest_new = site["tmp"] / "old", site["tmp"] / "new"
    restore(site, dest_old, backup_id=old["backup_id"])
    restore(site, dest_new, backup_id=new["backup_id"])
    assert restored_view(dest_old, site["roots"][1]) == before_change
    assert restored_view(dest_new, site["roots"][1]) == snapshot(os.fsencode(site["roots"][1]))


def test_restore_results_stay_small(v2site, monkeypatch):
    site = v2site
    backup(site)
    monkeypatch.setattr(v2reader, "RESULT_LIMIT", 25)
    result = restore(site, site["tmp"] / "dest")
    assert len(result["files"]) == 25 and result["files_truncated"] is True
    assert result["stats"]["artifacts"]["files_restored"] >= 250


def test_a_symlink_planted_under_dest_cannot_redirect_the_restore(v2site, tmp_path):
    site = v2site
    backup(site)
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    # dest/<...>/x -> outside: the restore of /<...>/x/app-x would land in outside/app-x if it followed it
    parent = os.fsencode(str(dest)) + site["base"]
    os.makedirs(parent)
    os.symlink(str(outside), parent + b"/x")
    with pytest.raises(RansomeyeError, match="refusing to restore"):
        restore(site, dest)
    assert os.listdir(str(outside)) == []


def test_check_mode_restore_reports_without_writing(v2site):
    site = v2site
    backup(site)
    dest = site["tmp"] / "dest"
    result = restore(site, dest, check=True)
    assert result["changed"] is True and result["stats"]["artifacts"]["files_restored"] >= 250
    assert not os.path.exists(dest)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    sys.path.insert(0, {repo!r})
    from tests.integration.dr.conftest import module_namespace
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup
    args = json.loads(sys.argv[1])
    run_backup(module_namespace(**args))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_peak_memory_is_flat_in_the_number_of_files(tmp_path, dr_keys):
    """Peak RSS of a full backup at 3,000 and at 15,000 files (64 bytes each, 100 per directory)."""
    peaks = []
    for count in (3000, 15000):
        root = tmp_path / ("files-%d" % count)
        for i in range(count):
            d = root / ("d%04d" % (i // 100))
            if i % 100 == 0:
                d.mkdir(parents=True)
            (d / ("f%06d" % i)).write_bytes(b"%064d" % i)
        args = dict(repo=str(tmp_path / ("repo-%d" % count)), components=["artifacts"], artifact_paths=[str(root)],
                    mode="rsa", recipients=[dr_keys["recipient_pub"]], signing_key=dr_keys["signing_key"],
                    cache_dir=str(tmp_path / "cache"), lock_timeout=5, format="v2")
        proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT.format(repo=REPO), json.dumps(args)],
                              capture_output=True, text=True, env=dict(os.environ), timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks.append(int(proc.stdout.split()[-1]) / 1024.0)
    assert peaks[1] < 256 and peaks[1] <= peaks[0] * 1.2, peaks


def test_a_backup_leaves_access_times_alone(v2site):
    """Files are opened with O_NOATIME (their owner, or root): with access times older than the modification
    times, a plain read would update them (relatime); after a full backup every atime is as it was."""
    site = v2site
    past = time.time() - 7200
    atimes = {}
    for root in site["roots"]:
        for dirpath, _dirs, files in os.walk(os.fsencode(root)):
            for name in files:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    os.utime(path, ns=(int(past * 1e9), st.st_mtime_ns))
                    atimes[path] = os.lstat(path).st_atime_ns
    result = backup(site)
    assert result["stats"]["artifacts"]["files_new"] >= 250
    changed = [p for p, atime in atimes.items() if os.lstat(p).st_atime_ns != atime]
    assert changed == []


@pytest.mark.skipif(not os.path.isfile("/sys/kernel/mm/transparent_hugepage/enabled"), reason="needs sysfs")
def test_a_file_shorter_than_its_stat_size_is_stored_as_read(v2site):
    """sysfs files report 4096 bytes and read back fewer: the one-read path for small files must not take a
    short read for the whole file without asking again (the general loop goes on until read() returns nothing)."""
    site = v2site
    source = "/sys/kernel/mm/transparent_hugepage/enabled"
    with open(source, "rb") as handle:
        content = handle.read()
    assert 0 < len(content) < os.stat(source).st_size
    result = backup(site, components=["artifacts"], artifact_paths=[source])
    body = json.load(open(result["manifest"]))["manifest"]
    assert body["components"]["artifacts"]["entries"]["files"] == 1
    dest = site["tmp"] / "dest-sys"
    restore(site, dest)
    with open(str(dest) + source, "rb") as handle:
        assert handle.read() == content


def test_a_full_rehash_of_an_unchanged_tree_reads_every_file_and_stores_nothing(v2site):
    site = v2site
    age_tree(site["base"])
    backup(site)
    objects_before = object_files(site["repo"])
    sizes = {}        # one entry per inode: a hard-linked file is read under its first name only
    for root in site["roots"]:
        for dirpath, _dirs, names in os.walk(os.fsencode(root)):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    sizes[(st.st_dev, st.st_ino)] = st.st_size
    again = backup(site, rehash_percent=100.0)
    stats = again["stats"]["artifacts"]
    assert stats["files_rehashed"] == len(sizes) and stats["bytes_read"] == sum(sizes.values())
    assert stats["objects_new"] == 0     # (files in a directory with hard links are re-read by the full path)
    assert object_files(site["repo"]) == objects_before


def _make_cache_lie_about(site, directory: bytes) -> int:
    """Rewrite the host-local cache record of ``directory`` so that every file's sha256 in it is wrong, re-MACed
    with the host key as the engine would write it: what the cache says differs from the disk while every stat
    field is unchanged (the effect of disk corruption, or of content changed with the clock turned back; ctime
    cannot be set otherwise). Returns the number of files the record describes."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import cache as bcache
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt as bfmt
    repo_id = json.load(open(os.path.join(site["repo"], "repo.json")))["repo_id"]
    cache_dir = site["args"]["cache_dir"]
    key = bcache.mac_key(bcache.host_secret(cache_dir, repo_id, create=False))
    root = os.path.join(cache_dir, repo_id)
    cache_path, state_path = os.path.join(root, "artifacts.cache"), os.path.join(root, "artifacts.state")
    state = bcache.read_state(state_path, key)
    reader = bcache.CacheReader(cache_path, key, bytes.fromhex(state["nonce"]))
    wanted = sorted(os.listdir(directory))
    records, offset, size, lied = [], 0, os.path.getsize(cache_path), 0
    while offset < size:
        record = reader.read(offset)
        records.append(record)
        (length,) = struct.unpack(">I", os.pread(reader.handle.fileno(), 4, offset))
        offset += 4 + length + 32
    reader.close()
    writer = bcache.CacheWriter(cache_path, key)
    for record in records:
        try:
            entries = bfmt.decode_tree(record.tree)
        except bfmt.FormatError:
            entries = bfmt.decode_tree(record.tree, top=True)    # the record of the roots
        if sorted(name for name, _e in entries) == wanted:
            text = record.tree
            for _name, entry in entries:
                wrong = hashlib.sha256(entry["sha256"].encode()).hexdigest()
                text = text.replace(entry["sha256"].encode(), wrong.encode())
                lied += 1
            record = record._replace(tree=text)
        writer.add(record)
    writer.commit()
    bcache.write_state(state_path, key, dict(state, nonce=writer.nonce.hex()))
    return lied


def test_content_changed_behind_an_unchanged_stat_is_read_again_for_the_whole_directory(v2site):
    """A rehash that finds a file whose content is not what the cache says must not hand the directory back to
    the cache: before the fix the full path re-drew the rehash lottery per file and took most of the lying
    entries, so the backup recorded hashes its chunks do not have."""
    site = v2site
    age_tree(site["base"])
    backup(site, components=["artifacts"])
    victim = site["base"] + b"/x/app-x/events/d03"
    lied = _make_cache_lie_about(site, victim)
    assert lied == 30
    # 50 %: the directory is picked with certainty but for 2**-30, its other files are mostly not picked again
    again = backup(site, components=["artifacts"], rehash_percent=50.0)
    stats = again["stats"]["artifacts"]
    assert stats["cache_mismatches"] >= 1
    assert any("rehashing had content other than the cache recorded" in w for w in again["warnings"])
    checked = verify(site, level="full", backup_id=again["backup_id"])
    assert checked["problems"] == [], checked["problems"]
    body = json.load(open(again["manifest"]))["manifest"]
    assert body["components"]["artifacts"]["entries"]["files"] >= 250
    dest = site["tmp"] / "dest-lie"
    restore(site, dest, backup_id=again["backup_id"])
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))
    # the cache written by that run describes the disk again: nothing is re-read without a rehash
    quiet = backup(site, components=["artifacts"])
    assert quiet["stats"]["artifacts"]["cache_mismatches"] == 0
    assert quiet["stats"]["artifacts"]["bytes_read"] == 0


def test_full_verify_hashes_file_content_and_names_a_file_a_restore_would_refuse(v2site):
    """verify level full must find what a restore refuses. A backup whose file entries disagree with their
    chunks is made here with a lying cache and rehash off: a changed file sends its directory down the full
    path, whose 29 unchanged files take their (wrong) hashes from the cache. Before, full verify only checked
    that trees decode and blobs are located, and passed such a backup."""
    site = v2site
    age_tree(site["base"])
    good = backup(site, components=["artifacts"])
    victim = site["base"] + b"/x/app-x/events/d03"
    _make_cache_lie_about(site, victim)
    _write(victim + b"/e00003.json", b'{"changed": true}')
    bad = backup(site, components=["artifacts"])
    assert bad["stats"]["artifacts"]["files_new"] == 1
    quick = verify(site, level="ciphertext", backup_id=bad["backup_id"])
    assert quick["problems"] == []                  # that level proves the bytes stored, not their meaning
    full = verify(site, level="full", backup_id="all")
    assert full["verified"] == [good["backup_id"]]
    assert [p["backup"] for p in full["problems"]] == [bad["backup_id"]]
    reason = full["problems"][0]["reason"]
    assert "/x/app-x/events/d03/e000" in reason and "a restore would refuse it" in reason
    with pytest.raises(RansomeyeError, match="does not match the backup"):
        restore(site, site["tmp"] / "dest-bad", backup_id=bad["backup_id"])


def _delete_after_listing(monkeypatch, victims):
    """Make the walk meet a concurrent deleter: right after the backup lists a directory named in ``victims``
    (path -> names), those entries are removed from the disk, as evidence aged out by retention while the backup
    runs would be. Real files and a real walk; only the moment of the deletion is chosen."""
    import shutil
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import engine as v2engine
    listing = v2engine._list_dir

    def list_then_delete(fd):
        items = listing(fd)
        here = os.fsencode(os.readlink("/proc/self/fd/%d" % fd))
        action = victims.pop(here, [])
        if callable(action):
            action(here)
            return items
        for name in action:
            path = here + b"/" + name
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return items
    monkeypatch.setattr(v2engine, "_list_dir", list_then_delete)


def test_entries_deleted_while_the_backup_runs_are_left_out_and_reported_not_fatal(v2site, monkeypatch):
    """A file, a large file, a symlink and a directory deleted between the listing and the read: the backup
    completes, names each one in ``skipped`` and a warning, and restores to exactly what is left on disk. Before,
    the first of them failed the whole backup with a bare 'No such file or directory'."""
    site = v2site
    sub = site["base"] + b"/x/app/sub"
    victims = {sub: [b"latest", b"caf\xe9-dir"], sub + b"/evidence": [b"sample-1.bin", b"big.img"]}
    _delete_after_listing(monkeypatch, victims)
    result = backup(site, components=["artifacts"])
    assert victims == {}                      # every deletion happened
    record = json.load(open(result["manifest"]))["manifest"]["components"]["artifacts"]
    gone = sorted(item.rsplit(" (", 1)[0] for item in record["skipped"])
    # a name that is not UTF-8 is shown escaped: the signed manifest is canonical JSON (it failed the backup)
    assert gone == sorted(p.decode("utf-8", "backslashreplace") for p in (
        sub + b"/latest", sub + b"/caf\xe9-dir", sub + b"/evidence/sample-1.bin", sub + b"/evidence/big.img"))
    assert any(item.endswith("/caf\\xe9-dir") for item in gone)
    assert all(item.endswith("(vanished during the backup)") for item in record["skipped"])
    assert record["skipped_count"] == 4
    assert any("4 entries are not in this backup" in w for w in result["warnings"]), result["warnings"]
    assert verify(site, level="full", backup_id=result["backup_id"])["problems"] == []
    dest = site["tmp"] / "dest-vanished"
    restore(site, dest, backup_id=result["backup_id"])
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))

    # the same with the cache in use: a file of an unchanged directory deleted before its rehash read
    age_tree(site["base"])
    backup(site, components=["artifacts"])
    events = site["base"] + b"/x/app-x/events/d02"
    victims = {events: [sorted(os.listdir(events))[0]]}
    _delete_after_listing(monkeypatch, victims)
    again = backup(site, components=["artifacts"], rehash_percent=100.0)
    assert victims == {}
    stats = again["stats"]["artifacts"]
    assert stats["cache_mismatches"] == 0     # a deleted file is not content that changed behind its stat
    assert json.load(open(again["manifest"]))["manifest"]["components"]["artifacts"]["skipped_count"] == 1
    dest = site["tmp"] / "dest-vanished-2"
    restore(site, dest, backup_id=again["backup_id"])
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))


def test_entries_replaced_while_the_backup_runs_are_left_out_never_read_as_listed(v2site, monkeypatch):
    """A file swapped for another inode (here a hard link to a file the backup never lists, as an attacker who
    can write the evidence tree might plant) and a directory swapped for a symlink, between the listing and the
    read: neither is read under the listed entry's owner and mode; both are left out and reported, the rest is
    backed up. Before, the first of them failed the whole backup."""
    site = v2site
    outside = site["base"] + b"/x/app/outside.txt"
    evidence = site["base"] + b"/x/app/sub/evidence"
    events = site["base"] + b"/x/app-x/events"

    def swap_file(here):
        os.link(outside, here + b"/planted")
        os.rename(here + b"/planted", here + b"/sample-3.bin")

    def swap_dir(here):
        os.rename(here + b"/d05", here + b"/d05.old")
        os.symlink(here + b"/d04", here + b"/d05")
    victims = {evidence: swap_file, events: swap_dir}
    _delete_after_listing(monkeypatch, victims)
    result = backup(site, components=["artifacts"])
    assert victims == {}
    record = json.load(open(result["manifest"]))["manifest"]["components"]["artifacts"]
    assert sorted(record["skipped"]) == sorted([os.fsdecode(evidence) + "/sample-3.bin (replaced during the backup)",
                                                os.fsdecode(events) + "/d05 (replaced during the backup)"])
    assert verify(site, level="full", backup_id=result["backup_id"])["problems"] == []
    dest = os.fsencode(str(site["tmp"] / "dest-replaced"))
    restore(site, os.fsdecode(dest), backup_id=result["backup_id"])
    assert not os.path.lexists(dest + evidence + b"/sample-3.bin")
    assert not os.path.lexists(dest + events + b"/d05")
    assert os.path.isfile(dest + evidence + b"/sample-2.bin") and len(os.listdir(dest + events + b"/d04")) == 30
    assert b"not backed up" not in b"".join(open(os.path.join(d, f), "rb").read()
                                            for d, _s, fs in os.walk(dest + evidence) for f in fs)


def test_an_unreadable_file_fails_the_backup_naming_its_full_path(v2site, monkeypatch):
    """Unlike a deleted file, an unreadable one is a standing problem the operator must fix: the backup fails and
    names it with its whole path (before: "PermissionError: ... b'e00017.json'"). The tests run as root, who can
    read every file, so the refusal is simulated at the open; the walk and the repository are real."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import engine as v2engine
    site = v2site
    run_class = v2engine.ComponentRun
    opening = run_class._open_file

    def refuse(self, dir_fd, name, st):
        if name == b"e00017.json":
            raise PermissionError(13, "Permission denied")
        return opening(self, dir_fd, name, st)
    monkeypatch.setattr(run_class, "_open_file", refuse)
    with pytest.raises(RansomeyeError) as caught:
        backup(site, components=["artifacts"])
    assert caught.value.msg == "cannot read %s/x/app-x/events/d01/e00017.json: Permission denied" \
        % os.fsdecode(site["base"])
    assert verify(site, level="quick")["verified"] == []      # nothing was recorded as a backup


def test_a_restored_file_swapped_for_a_fifo_after_its_lstat_is_replaced_not_waited_on(v2site, monkeypatch):
    """A restore over an existing tree compares each existing regular file with the backup. Should the file be
    swapped for a FIFO between that lstat and the open (the lstat is made to report the file as it was; the FIFO
    is real), the open must not wait for a writer forever: the FIFO is replaced by the backed-up file. Before,
    the restore hung."""
    import threading
    site = v2site
    result = backup(site, components=["artifacts"])
    dest = site["tmp"] / "dest-fifo"
    restore(site, dest, backup_id=result["backup_id"])
    target = os.fsencode(str(dest)) + site["base"] + b"/x/app-x/events/d06/e00006.json"
    content = open(target, "rb").read()
    as_it_was = os.lstat(target)
    os.unlink(target)
    os.mkfifo(target)
    lstat = v2reader.Restorer._lstat

    def lstat_before_the_swap(self, dir_fd, name):
        return as_it_was if name == b"e00006.json" else lstat(self, dir_fd, name)
    monkeypatch.setattr(v2reader.Restorer, "_lstat", lstat_before_the_swap)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(r=restore(site, dest, backup_id=result["backup_id"])),
                              daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))   # a writer comes and goes: the blocked open returns
        worker.join(60)
        pytest.fail("the restore waited on a FIFO swapped in after its lstat")
    assert outcome["r"]["changed"] is True
    assert stat.S_ISREG(os.lstat(target).st_mode) and open(target, "rb").read() == content


def test_a_file_swapped_for_a_fifo_after_the_listing_is_left_out_not_waited_on(v2site, monkeypatch):
    """The backup opens what the listing showed as a regular file; a FIFO swapped in meanwhile must not make the
    open wait for a writer forever (before: the backup hung)."""
    import threading
    site = v2site
    evidence = site["base"] + b"/x/app/sub/evidence"

    def swap_for_fifo(here):
        os.unlink(here + b"/sample-4.bin")
        os.mkfifo(here + b"/sample-4.bin")
    _delete_after_listing(monkeypatch, {evidence: swap_for_fifo})
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(r=backup(site, components=["artifacts"])), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(evidence + b"/sample-4.bin", os.O_WRONLY | os.O_NONBLOCK))   # unblock it, then fail
        worker.join(60)
        pytest.fail("the backup waited on a FIFO swapped in after the listing")
    record = json.load(open(outcome["r"]["manifest"]))["manifest"]["components"]["artifacts"]
    assert record["skipped"] == [os.fsdecode(evidence) + "/sample-4.bin (replaced during the backup)"]


def test_a_hard_linked_file_deleted_while_the_backup_runs_leaves_its_other_names_restorable(v2site, monkeypatch):
    """The first name of a hard-linked file is deleted right after its directory is listed: its other names must
    not become links to a file the backup left out (the restore would refuse them); the next name carries the
    content. Before, the first name's read was on a worker thread and the other names already pointed at it."""
    site = v2site
    sub = site["base"] + b"/x/app/sub"
    victims = {sub: [b"z-original.bin"]}
    _delete_after_listing(monkeypatch, victims)
    result = backup(site, components=["artifacts"])
    assert victims == {}
    record = json.load(open(result["manifest"]))["manifest"]["components"]["artifacts"]
    assert record["skipped"] == [os.fsdecode(sub) + "/z-original.bin (vanished during the backup)"]
    assert record["entries"]["hardlinks"] == 1
    dest = site["tmp"] / "dest-links"
    restore(site, dest, backup_id=result["backup_id"])
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))
    there = os.fsencode(str(dest)) + sub
    assert os.stat(there + b"/z-third").st_ino == os.stat(there + b"/a-dir/second-name").st_ino
    assert open(there + b"/z-third", "rb").read() == b"linked content\n" * 100


def test_a_v1_backup_leaves_out_a_file_deleted_while_it_runs(v2site, monkeypatch):
    """The same for the v1 format: the file is deleted right before the backup opens it."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_tree as v1tree
    site = v2site
    victim = os.fsdecode(site["base"] + b"/x/app-x/events/d01/e00001.json")
    opening = v1tree._open_entry

    def delete_then_open(entry):
        if entry.path == victim:
            os.unlink(victim)
        return opening(entry)
    monkeypatch.setattr(v1tree, "_open_entry", delete_then_open)
    result = backup(site, components=["artifacts"], artifact_paths=[site["roots"][1]], format="v1")
    assert not os.path.exists(victim)
    record = json.load(open(result["manifest"]))["manifest"]["components"]["artifacts"]
    assert record["skipped"] == [victim] and victim not in record["files"]
    assert len(record["files"]) > 200
    assert verify(site, level="full", backup_id=result["backup_id"])["problems"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="owners other than our own need root")
@pytest.mark.parametrize("fmt", ["v2", "v1"])
def test_owners_and_special_mode_bits_round_trip_also_under_a_set_group_id_destination(v2site, fmt):
    """A restored file is created with its permission bits and needs no chown when it is ours in a directory this
    run created: these cases must still come back exactly (set-uid, set-gid, sticky, read-only, other owners, and a
    destination whose set-group-id bit would otherwise hand new files its group)."""
    site = v2site
    root = site["roots"][0] + "/owners"
    os.makedirs(root)
    cases = {"setuid": (0o4755, 0, 0), "setgid": (0o2750, 0, 0), "readonly": (0o444, 0, 0),
             "private": (0o600, 0, 0), "other-user": (0o640, 1234, 5678), "other-group": (0o664, 0, 4321),
             "sticky-file": (0o1644, 0, 0)}
    for name, (mode, uid, gid) in cases.items():
        path = os.path.join(root, name)
        _write(path, name.encode() * 10)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    os.chmod(root, 0o2775)
    os.chown(root, 0, 4321)
    os.makedirs(os.path.join(root, "inherits"))   # under a setgid parent: setgid, group 4321
    _write(os.path.join(root, "inherits", "root-owned"), b"r")
    os.chown(os.path.join(root, "inherits", "root-owned"), 0, 0)
    backup(site, format=fmt, components=["artifacts"], artifact_paths=[root])   # v1 cannot store non-UTF-8 names
    dest = site["tmp"] / "setgid-dest"
    os.makedirs(dest)
    os.chown(dest, 0, 999)
    os.chmod(dest, 0o2777)   # every directory the restore creates below inherits set-group-id and group 999
    restore(site, dest)

    def owners(top):
        out = {}
        for dirpath, dirs, files in os.walk(top):
            for name in dirs + files:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.relpath(os.path.join(dirpath, name), top)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        return out

    restored = owners(os.fsdecode(os.fsencode(str(dest)) + os.fsencode(root)))
    assert restored == owners(root)
    assert restored["setuid"] == (0o4755, 0, 0) and restored["other-user"] == (0o640, 1234, 5678)
    assert restored["inherits/root-owned"][2] == 0


def test_a_v1_backup_leaves_out_a_symlink_and_a_directory_deleted_while_it_runs(v2site, monkeypatch):
    """The v1 walk meets a concurrent deleter too: a symlink removed between its listing and the reading of its
    target, and a directory (with its files) removed between its listing and its opening. The backup completes,
    names both in ``skipped``, and verifies; the restore gives exactly what is left on disk. Before, the symlink
    failed the whole backup (No such file or directory) and the directory was left out without a word."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_tree as v1tree
    site = v2site
    events = site["base"] + b"/x/app-x/events"
    os.symlink(b"d00", events + b"/newest")
    link, gone_dir = os.fsdecode(events + b"/newest"), os.fsdecode(events + b"/d03")
    describing, opening = v1tree.describe, os.open

    def delete_then_describe(entry):
        if entry.path == link:
            os.unlink(link)
        return describing(entry)

    def delete_then_open(path, flags, mode=0o777, *, dir_fd=None):
        if path == "d03" and dir_fd is not None and os.path.isdir(gone_dir):
            shutil.rmtree(gone_dir)  # after the walk listed and stat'ed it, right before it enters it
        return opening(path, flags, mode, dir_fd=dir_fd)
    monkeypatch.setattr(v1tree, "describe", delete_then_describe)
    monkeypatch.setattr(os, "open", delete_then_open)
    result = backup(site, components=["artifacts"], artifact_paths=[site["roots"][1]], format="v1")
    monkeypatch.undo()
    assert not os.path.lexists(link) and not os.path.exists(gone_dir)
    record = json.load(open(result["manifest"]))["manifest"]["components"]["artifacts"]
    assert sorted(record["skipped"]) == sorted([link, gone_dir])
    assert not any(path == gone_dir or path.startswith(gone_dir + "/") for path in record["files"])
    assert len(record["files"]) > 150
    assert verify(site, level="full", backup_id=result["backup_id"])["problems"] == []
    dest = site["tmp"] / "dest-v1-vanished"
    restore(site, dest, backup_id=result["backup_id"])
    assert restored_view(dest, site["roots"][1]) == snapshot(os.fsencode(site["roots"][1]))
