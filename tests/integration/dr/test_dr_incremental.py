"""Incremental artifacts: only changed content is stored; identical content once; retention prunes safely."""
from __future__ import annotations

import json
import os
import time


def _object_files(repo):
    out = {}
    for dirpath, _dirs, files in os.walk(os.path.join(repo, "objects")):
        for name in files:
            out[name] = os.path.getsize(os.path.join(dirpath, name))
    return out


def _repo_bytes(repo):
    return sum(_object_files(repo).values())


def test_second_backup_stores_only_changed_artifacts(dr_site, run_module_direct):
    site = dr_site
    args = dict(site["args"], components=["artifacts"], format="v1")  # v1 layout: one object per artifact
    first = run_module_direct("ransomeye_backup", args)
    assert first["_rc"] == 0, first.get("msg")
    stats1 = first["stats"]["artifacts"]
    regular = stats1["files_new"]
    assert regular == 304
    # dup-a.bin and dup-b.bin share their content: one object fewer than files
    assert stats1["objects_new"] == regular - 1
    assert stats1["bytes_deduplicated"] == 6500
    size1 = _repo_bytes(site["repo"])
    objects1 = _object_files(site["repo"])

    changed = [os.path.join(site["artifacts"], "case-%02d" % (i % 12), "sample-%04d.bin" % i) for i in (3, 40, 77)]
    for path in changed:
        with open(path, "ab") as handle:
            handle.write(os.urandom(1000) + path.encode())
    second = run_module_direct("ransomeye_backup", args)
    assert second["_rc"] == 0, second.get("msg")
    stats2 = second["stats"]["artifacts"]
    assert stats2["objects_new"] == 3
    assert stats2["files_changed"] == 3
    assert stats2["files_unchanged"] == regular - 3
    assert stats2["files_new"] == 0
    grown = _repo_bytes(site["repo"]) - size1
    changed_bytes = sum(os.path.getsize(p) for p in changed)
    assert changed_bytes <= grown < changed_bytes + 3 * 4096 + 4096  # container overhead only
    assert grown < size1 / 20

    third = run_module_direct("ransomeye_backup", args)
    assert third["_rc"] == 0, third.get("msg")
    assert third["stats"]["artifacts"]["objects_new"] == 0
    assert third["stats"]["artifacts"]["bytes_stored"] == 0
    new_names = set(_object_files(site["repo"])) - set(objects1)
    assert len(new_names) == 3  # only the three changed files ever added objects

    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="full"))
    assert verify["_rc"] == 0 and len(verify["verified"]) == 3, verify.get("msg")


def test_stat_cache_skips_reading_unchanged_files_and_forced_rehash_reads_them(dr_site, run_module_direct):
    site = dr_site
    args = dict(site["args"], components=["artifacts"], rehash_percent=0, format="v1")
    time.sleep(2.5)  # files changed within 2 s of a run are "racy" and always re-read
    first = run_module_direct("ransomeye_backup", args)
    assert first["_rc"] == 0, first.get("msg")
    assert first["stats"]["artifacts"]["bytes_read"] > 3_000_000
    again = run_module_direct("ransomeye_backup", args)
    assert again["_rc"] == 0, again.get("msg")
    stats = again["stats"]["artifacts"]
    assert stats["bytes_read"] == 0 and stats["files_unchanged"] == 304 and stats["objects_new"] == 0
    forced = run_module_direct("ransomeye_backup", dict(args, rehash_percent=100))
    assert forced["stats"]["artifacts"]["files_rehashed"] == 304
    assert forced["stats"]["artifacts"]["cache_mismatches"] == 0
    # a file whose content changed behind an identical stat (size, mtime, ctime, inode) is caught by rehash
    victim = os.path.join(site["artifacts"], "case-01", "sample-0001.bin")
    cache_path = os.path.join(site["repo"], "cache", "stat-cache.json")
    with open(cache_path) as handle:
        cache = json.load(handle)
    cache["entries"][victim][4] = "0" * 64  # the cache now lies about the content
    with open(cache_path, "w") as handle:
        json.dump(cache, handle)
    caught = run_module_direct("ransomeye_backup", dict(args, rehash_percent=100))
    assert caught["stats"]["artifacts"]["cache_mismatches"] == 1
    assert caught["stats"]["artifacts"]["objects_new"] == 0  # the real content was already stored


def test_keep_last_prunes_manifests_and_unreferenced_objects_only(dr_site, run_module_direct):
    site = dr_site
    args = dict(site["args"], components=["config", "artifacts"], keep_last=2, format="v1")
    victim = os.path.join(site["artifacts"], "case-00", "sample-0000.bin")
    ids = []
    for round_no in range(3):
        with open(victim, "wb") as handle:
            handle.write(("round %d\n" % round_no).encode() * 100)
        result = run_module_direct("ransomeye_backup", args)
        assert result["_rc"] == 0, result.get("msg")
        ids.append(result["backup_id"])
    assert result["pruned"]["manifests"] == [ids[0]]
    # round 0's version of the file and round 0's config tar were referenced only by backup 1
    assert result["pruned"]["objects"] == 2
    manifests = sorted(os.listdir(os.path.join(site["repo"], "manifests")))
    assert manifests == ["00000002.json", "00000003.json"]
    referenced = set()
    for name in manifests:
        with open(os.path.join(site["repo"], "manifests", name)) as handle:
            referenced.update(json.load(handle)["manifest"]["objects"])
    assert set(_object_files(site["repo"])) == referenced
    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup="all", level="ciphertext"))
    assert verify["_rc"] == 0 and verify["verified"] == ids[1:], verify.get("msg")
