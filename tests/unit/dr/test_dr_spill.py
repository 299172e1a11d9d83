"""The v2 backup's spilled new-blob set and index records (plugins/module_utils/_backup/spill.py), with runs made
tiny so that every path (in memory, spilled, Bloom "no", binary search hit and miss, merge) is taken."""
from __future__ import annotations

import os
import random

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, spill


def test_new_blobs_answer_like_a_dict_across_spilled_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "RUN", 64)
    monkeypatch.setattr(spill, "STEP", 4)
    rng = random.Random(3)
    ids = [rng.randbytes(32) for _n in range(1000)]
    packs = ["%064x" % rng.getrandbits(256) for _n in range(7)]
    blobs = spill.NewBlobs(str(tmp_path / "cache"))
    for i, blob in enumerate(ids):
        blobs[blob] = packs[i % 7]
        blobs[blob] = packs[(i + 1) % 7]   # a second store changes nothing: the first pack is the indexed one
    assert len(blobs.runs) == 1000 // 64 and len(blobs) == 1000
    assert all(blob in blobs and blobs[blob] == packs[i % 7] for i, blob in enumerate(ids))
    others = [rng.randbytes(32) for _n in range(1000)]
    assert not any(blob in blobs for blob in others) and blobs.get(others[0]) is None
    # ids sharing a prefix with stored ones (same Bloom bits) are still told apart by the search
    assert not any(blob[:16] + bytes(16) in blobs for blob in ids if blob[16:] != bytes(16))
    blobs.close()


def test_records_spilled_in_runs_make_the_same_index_as_one_sorted_table(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "RECORDS_RUN", 50)
    rng = random.Random(4)
    repo = brepo.Repo.create(str(tmp_path / "repo"))
    packs = ["%064x" % rng.getrandbits(256) for _n in range(3)]
    records = spill.Records(str(tmp_path / "cache"))
    flat = bytearray()
    for i in range(777):
        row = fmt.INDEX_RECORD.pack(rng.randbytes(32), i % 3, i * 10, 10, 20, 1, i % 2)
        records.add(row)
        flat += row
    assert len(records.runs) == 777 // 50 and len(records) == 777
    index_id, record = records.write_index(repo, packs)
    with open(repo.object_path(index_id), "rb") as handle:
        data = handle.read()
    assert data == fmt.encode_index_records(packs, flat)
    assert record["ciphertext_size"] == len(data) == 16 + 32 * 3 + 50 * 777
    index = fmt.Index(data)
    for i in range(0, len(flat), 50 * 37):
        blob, pack_no, offset = fmt.INDEX_RECORD.unpack_from(flat, i)[:3]
        found = index.lookup(blob)
        assert found is not None and (found.pack, found.offset) == (packs[pack_no], offset)
    assert not os.listdir(os.path.join(repo.path, "tmp"))
    records.close()
