"""A repository written with zlib blobs (before format 5.13) still verifies and restores; new blobs are zstd.

The pre-5.13 writer is reproduced by making the blob encoder emit what it emitted then (zlib level 1 when that
saved 3 %, else raw); everything else is the real backup, verify and restore code on real files.
"""
from __future__ import annotations

import json
import os
import zlib

from tests.integration.dr.test_dr_v2 import backup, verify, restore, restored_view, snapshot, age_tree  # noqa: F401
from tests.integration.dr.test_dr_v2 import v2site  # noqa: F401 pylint: disable=unused-import

from ansible_collections.ransomeye.ops.plugins.module_utils import _compress as compress
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt


def _old_encode(data, level=1):
    if len(data) < 128:
        return data, compress.NONE
    packed = zlib.compress(data, 1)
    return (packed, compress.ZLIB) if len(packed) < len(data) * 0.97 else (data, compress.NONE)


def _methods(manifest_path, repo, skip=()):
    """The compression bytes of every blob record in the indexes the manifest lists (except ``skip``)."""
    body = json.load(open(manifest_path))["manifest"]
    found = set()
    for oid, rec in body["objects"].items():
        if rec["kind"] == "index" and oid not in skip:
            data = open(os.path.join(repo, "objects", oid[:2], oid), "rb").read()
            index = fmt.Index(data)
            for i in range(index.count):
                found.add(fmt.INDEX_RECORD.unpack_from(data, index.base + i * fmt.INDEX_RECORD.size)[-1])
    return found


def test_a_zlib_repository_still_verifies_and_restores_and_later_backups_add_zstd(v2site, monkeypatch):
    site = v2site
    age_tree(site["base"])
    with monkeypatch.context() as patch:
        patch.setattr(compress, "encode", _old_encode)
        first = backup(site)
    assert _methods(first["manifest"], site["repo"]) == {compress.NONE, compress.ZLIB}
    assert verify(site)["problems"] == []
    dest = site["tmp"] / "dest1"
    restore(site, dest)
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))

    # the next backup (this version) writes zstd blobs into the same repository and reuses the zlib ones
    changed = site["base"] + b"/x/app-x/events/d03/new-evidence.log"
    with open(changed, "wb") as handle:
        handle.write(b"host=web-7 op=encrypt path=/srv/share/%d.docx\n" * 3000)
    second = backup(site)
    first_objects = json.load(open(first["manifest"]))["manifest"]["objects"]
    assert _methods(second["manifest"], site["repo"], skip=first_objects) == {compress.ZSTD}
    assert compress.ZLIB in _methods(second["manifest"], site["repo"])   # reused from the first backup
    assert second["stats"]["artifacts"]["files_unchanged"] > 200
    checked = verify(site)
    assert checked["problems"] == [] and len(checked["verified"]) == 2
    dest = site["tmp"] / "dest2"
    restore(site, dest)
    for root in site["roots"]:
        assert restored_view(dest, root) == snapshot(os.fsencode(root))
