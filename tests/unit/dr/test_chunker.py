"""The keyed content-defined chunker of repository v2 (docs/BACKUP_FORMAT.md 5.11)."""
from __future__ import annotations

import hashlib
import hmac
import io
import random

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._backup import chunker as bchunker

PARAMS = bchunker.Params(min_size=4096, bits=12, max_size=32768, region=8192)


def _data(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    # dump-like: repetitive rows with varying fields, so that chunking is not only tested on noise
    rows = []
    total = 0
    while total < size:
        row = b"%d\thost-%03d\t{\"path\": \"/srv/evidence/%x\", \"n\": %d}\n" % (
            total, rng.randrange(40), rng.getrandbits(64), rng.randrange(10 ** 6))
        rows.append(row)
        total += len(row)
    return b"".join(rows)[:size]


def _chunks(key: bytes, data: bytes, block: int = 1 << 20):
    stream = io.BytesIO(data)
    return list(bchunker.Chunker(key, PARAMS).chunks(stream.read, block))


def test_chunks_rebuild_the_stream_within_bounds_whatever_the_read_sizes():
    data = _data(1, 600_000)
    whole = _chunks(b"k" * 32, data)
    assert b"".join(whole) == data
    assert all(PARAMS.min_size < len(c) <= PARAMS.max_size for c in whole[:-1])
    assert 0 < len(whole[-1]) <= PARAMS.max_size
    # cut points depend on the content, not on how the pipe delivered it
    assert _chunks(b"k" * 32, data, block=4093) == whole
    assert _chunks(b"k" * 32, b"") == []


def test_an_insertion_moves_only_the_cuts_around_it():
    data = _data(2, 1_000_000)
    before = _chunks(b"k" * 32, data)
    edited = data[:300_000] + b"one new row\n" + data[300_000:]
    after = _chunks(b"k" * 32, edited)
    old = {hashlib.sha256(c).digest() for c in before}
    shared = sum(1 for c in after if hashlib.sha256(c).digest() in old)
    assert len(before) >= 50
    assert shared >= len(after) - 3, (shared, len(after))


def test_cut_points_are_keyed():
    data = _data(3, 400_000)
    one = [len(c) for c in _chunks(b"a" * 32, data)]
    two = [len(c) for c in _chunks(b"b" * 32, data)]
    assert one != two  # chunk lengths (visible in the index) depend on a key the repository does not hold
    assert bchunker.permutation(b"a" * 32) != bchunker.permutation(b"b" * 32)
    assert sorted(bchunker.permutation(b"a" * 32)) == list(range(256))


def test_the_bulk_product_is_the_documented_per_position_hash():
    """5.11: byte k of int_le(S[R]) * c depends only on R[..k]; recompute a few positions from a prefix alone."""
    key = hmac.new(b"x" * 32, b"ransomeye.ops/v2 chunker", hashlib.sha256).digest()
    cutter = bchunker.Chunker(key, PARAMS)
    assert key == bchunker.chunker_key(b"x" * 32)
    region = _data(4, 3000)
    mapped = region.translate(cutter.table)
    full = (int.from_bytes(mapped, "little") * cutter.mult).to_bytes(len(region) + 17, "little")
    for k in (16, 17, 500, 1999, 2999):
        prefix = (int.from_bytes(mapped[:k + 1], "little") * cutter.mult).to_bytes(k + 18, "little")
        assert prefix[k] == full[k]
    assert cutter.mult & 1 and cutter.mult >> 127 == 1 and cutter.mult < 1 << 128


@pytest.mark.parametrize("bits", [8, 12, 16, 20])
def test_the_cut_probability_follows_bits(bits):
    params = bchunker.Params(min_size=64, bits=bits, max_size=1 << 26, region=1 << (bits + 2))
    data = random.Random(5).randbytes(1 << 21)
    cutter = bchunker.Chunker(b"q" * 32, params)
    sizes = [len(c) for c in cutter.chunks(io.BytesIO(data).read)]
    mean = sum(sizes[:-1]) / max(1, len(sizes) - 1) if len(sizes) > 1 else len(data)
    expected = params.avg_size
    # random data: the mean chunk length is min + 2**bits within sampling noise (or one chunk for 2**20)
    if expected * 8 < len(data):
        assert 0.6 * expected < mean < 1.5 * expected, (mean, expected)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        bchunker.Chunker(b"k" * 32, bchunker.Params(min_size=8, bits=12, max_size=100, region=10))
    with pytest.raises(ValueError):
        bchunker.Chunker(b"k" * 32, bchunker.Params(min_size=64, bits=30, max_size=1000, region=10))
