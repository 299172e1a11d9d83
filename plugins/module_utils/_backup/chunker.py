# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: keyed content-defined chunking of streams (repository v2, "ryecdc1").

A cut point is where two bytes of a keyed hash of the preceding 16 bytes are
zero (docs/BACKUP_FORMAT.md section 5.11). The hash is computed in bulk with
C-speed primitives instead of a per-byte Python loop: the region is mapped
through a keyed byte permutation (``bytes.translate``), read as one
little-endian integer and multiplied by a keyed 128-bit odd constant; byte k
of the product mixes input bytes k-16..k (partial products plus carries).
``re`` then finds the first pair of zero bytes. Each search region starts
``min`` bytes after the current chunk's start and is computed on its own, so
cut points depend only on the content since the previous cut: an insertion
moves one or two boundaries and the rest realign, which is what lets daily
dumps of a mostly unchanged database deduplicate.

The permutation and the multiplier come from a key the repository never
holds in rsa mode (derived from the blob-id key), so chunk lengths, which
the index shows, cannot be matched against guessed content.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import hmac
import re
import typing as t

ALGORITHM = "ryecdc1"
WINDOW = 16          # bytes of context each hash byte mixes (the multiplier has 128 bits)


class Params(t.NamedTuple):
    min_size: int     # no cut before this many bytes
    bits: int         # a position is a cut point with probability 2**-bits (8..24)
    max_size: int     # always cut here
    region: int       # bytes searched per hash computation

    @property
    def avg_size(self) -> int:
        """Expected chunk size of random data (ignoring the max cut)."""
        return self.min_size + (1 << self.bits)

    def describe(self) -> dict:
        return {"algorithm": ALGORITHM, "min": self.min_size, "avg": self.avg_size, "max": self.max_size,
                "bits": self.bits, "region": self.region, "window": WINDOW}


# Database dumps: PostgreSQL puts new row versions wherever its free-space map finds room, so a night's changes
# are spread over the tables; chunks of ~40 KiB leave most of them intact (measured on a test dump: 1 % of the
# bytes new where 80 KiB chunks gave 2.6 %), while the index (50 bytes per new blob) and the file entry (65 bytes
# per chunk) stay near 0.3 % of the dump.
DB_PARAMS = Params(min_size=8 << 10, bits=15, max_size=128 << 10, region=32 << 10)


def chunker_key(id_key: bytes) -> bytes:
    return hmac.new(id_key, b"ransomeye.ops/v2 chunker", hashlib.sha256).digest()


def _stream(key: bytes, label: bytes, length: int) -> bytes:
    out = []
    counter = 0
    while sum(len(p) for p in out) < length:
        out.append(hmac.new(key, label + counter.to_bytes(4, "big"), hashlib.sha256).digest())
        counter += 1
    return b"".join(out)[:length]


def permutation(key: bytes) -> bytes:
    """The keyed byte permutation: Fisher-Yates, i from 255 down to 1, j = u32_be(stream[4i..4i+4]) mod (i+1)."""
    perm = list(range(256))
    stream = _stream(key, b"ransomeye.ops/v2 chunker permutation", 1024)
    for i in range(255, 0, -1):
        j = int.from_bytes(stream[4 * i:4 * i + 4], "big") % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return bytes(perm)


def multiplier(key: bytes) -> int:
    raw = hmac.new(key, b"ransomeye.ops/v2 chunker multiplier", hashlib.sha256).digest()[:16]
    return int.from_bytes(raw, "little") | 1 | (1 << 127)


def _pattern(bits: int) -> "re.Pattern[bytes]":
    """Bytes k, k+1, k+2 of the product with the low ``bits`` bits (little-endian order) all zero."""
    if not 8 <= bits <= 24:
        raise ValueError("chunker bits must be 8..24")
    parts = [b"\\x00"]
    left = bits - 8
    while left > 0:
        take = min(8, left)
        allowed = [v for v in range(256) if v & ((1 << take) - 1) == 0]
        parts.append(b"[" + b"".join(b"\\x%02x" % v for v in allowed) + b"]")
        left -= take
    return re.compile(b"".join(parts), re.S)


class Chunker:
    """Cut points of one stream under one key and parameter set."""

    def __init__(self, key: bytes, params: Params) -> None:
        if not WINDOW <= params.min_size < params.max_size or params.region < 1:
            raise ValueError("chunker parameters must satisfy 16 <= min < max and region > 0")
        self.params = params
        self.table = permutation(key)
        self.mult = multiplier(key)
        self.pattern = _pattern(params.bits)

    def cut(self, data: t.Union[bytes, bytearray], start: int, end: int, final: bool) -> t.Optional[int]:
        """End of the chunk starting at ``start`` in ``data[:end]``; None when more data is needed to decide."""
        p = self.params
        if end - start <= p.min_size:
            return end if final else None
        limit = start + p.max_size
        if limit > end:
            if not final:
                return None
            limit = end
        lo = start + p.min_size
        while lo < limit:
            hi = min(lo + p.region, limit)
            region = data[lo - WINDOW:hi]
            product = (int.from_bytes(region.translate(self.table), "little") * self.mult).to_bytes(
                len(region) + 17, "little")
            # a match at k in [WINDOW, WINDOW + hi - lo) cuts after input byte lo - WINDOW + k
            found = self.pattern.search(product, WINDOW, hi - lo + WINDOW + 2)
            if found is not None and found.start() < hi - lo + WINDOW:
                return lo - WINDOW + found.start() + 1
            lo = hi
        return limit

    def chunks(self, read: t.Callable[[int], bytes], block: int = 1 << 20) -> t.Iterator[bytes]:
        """Split what ``read`` returns (b"" at the end) into chunks; memory stays below max + 2 blocks."""
        buffer = bytearray()
        start = 0
        eof = False
        while True:
            cut = self.cut(buffer, start, len(buffer), eof)
            if cut is None:
                data = read(block)
                if not data:
                    eof = True
                else:
                    if start > (4 << 20):
                        del buffer[:start]
                        start = 0
                    buffer += data
                continue
            if cut == start:
                return
            with memoryview(buffer) as view:   # one copy, and the view is gone before the buffer changes size
                chunk = bytes(view[start:cut])
            yield chunk
            start = cut
