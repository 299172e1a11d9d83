"""v2: content stored once for two directories in one run stays listed when one of them is later taken from the cache.

The run stores identical content once; the second directory's cache record must name the pack it went to.
Otherwise a later backup that reuses that directory from the host-local cache, after the first directory
changed, writes a manifest without the pack: the backup reports success, verify full then fails, and once the
older backup is pruned the sweep deletes the content (found while adding database streams to the engine).
"""
from __future__ import annotations

import json
import os
import time

from tests.integration.dr.conftest import dr_keys, module_namespace  # noqa: F401 pylint: disable=unused-import

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup


def test_a_duplicate_stays_restorable_when_its_twin_is_deleted_and_its_directory_comes_from_the_cache(
        tmp_path, dr_keys, run_module_direct):  # noqa: F811
    root = tmp_path / "art"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    content = os.urandom(4_700_000)          # fills a pack of its own (4 MiB target)
    (root / "a" / "x").write_bytes(content)
    (root / "b" / "y").write_bytes(content)  # the same content in another directory: stored once
    (root / "a" / "other").write_bytes(os.urandom(100))
    time.sleep(2.5)                          # older than the racy window, so the next run may use the cache
    args = dict(repo=str(tmp_path / "repo"), components=["artifacts"], artifact_paths=[str(root)], mode="aes",
                key_file=dr_keys["aes_key"], signing_key=dr_keys["signing_key"], cache_dir=str(tmp_path / "cache"),
                lock_timeout=5, rehash_percent=0)
    run_backup(module_namespace(**args))
    (root / "a" / "x").unlink()
    (root / "a" / "other").write_bytes(os.urandom(100))   # nothing of directory a is reused
    second = run_backup(module_namespace(**args))
    assert second["stats"]["artifacts"]["files_unchanged"] == 1    # b/y came from the cache
    verify = run_module_direct("ransomeye_backup_verify", dict(
        repo=args["repo"], trusted_keys=[dr_keys["signing_pub"]], key_file=dr_keys["aes_key"], backup="latest",
        level="full", fail_on_problems=False))
    assert verify["problems"] == [], verify["problems"]
    # and with the first backup gone (retention), the content survives the sweep and restores
    third = run_backup(module_namespace(**dict(args, keep_last=1)))
    with open(third["manifest"]) as handle:
        assert len(json.load(handle)["manifest"]["objects"]) >= 2
    restore = run_module_direct("ransomeye_restore", dict(
        repo=args["repo"], trusted_keys=[dr_keys["signing_pub"]], key_file=dr_keys["aes_key"],
        components=["artifacts"], dest=str(tmp_path / "out")))
    assert restore["_rc"] == 0, restore.get("msg")
    assert (tmp_path / "out").joinpath(str(root / "b" / "y").lstrip("/")).read_bytes() == content
