# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: compression of stored objects (zstd for new data, zlib still readable).

One place for the choice and for the strict decoders, so that every format
that stores compressed pieces (v2 blobs, docs/BACKUP_FORMAT.md 5.3; other
writers may import it too) refuses the same things: a piece that does not
decode to exactly its recorded length, trailing bytes, a zstd frame without
its content size. zstd is about 10-20 times as fast as zlib at a better
ratio on the data measured here (bench/bench_repo.py), so new data uses it;
zlib stays for reading what older versions wrote.

``zstandard`` is a required dependency (requirements.txt); if it is missing
the functions that need it raise RansomeyeError with Ansible's usual
missing-library text, never an ImportError traceback.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import threading
import typing as t
import zlib

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

try:
    import zstandard as _zstd
    HAS_ZSTD = True
    ZSTD_IMPORT_ERROR: t.Optional[str] = None
except ImportError as _exc:  # pragma: no cover - exercised by a test that hides the library
    _zstd = None
    HAS_ZSTD = False
    ZSTD_IMPORT_ERROR = str(_exc)

NONE = 0
ZLIB = 1
ZSTD = 2
NAMES = {NONE: "none", ZLIB: "zlib", ZSTD: "zstd"}

MIN_SIZE = 128           # smaller pieces are stored as they are
PROBE = 16384            # a piece larger than PROBE_OVER is probed on its first PROBE bytes first
PROBE_OVER = 65536
PROBE_KEEP = 0.9         # the probe must shrink below this fraction, or the piece is stored raw
MIN_SAVING = 0.97        # compressed output is kept only below this fraction of the input

_local = threading.local()


class CompressionError(RansomeyeError):
    """A compressed piece that does not decode to what its record says."""


def require_zstd() -> None:
    """Raise the usual missing-library message when zstandard cannot be imported."""
    if HAS_ZSTD:
        return
    try:
        from ansible.module_utils.basic import missing_required_lib
        msg = missing_required_lib("zstandard")
    except ImportError:  # pragma: no cover - outside Ansible
        msg = "Failed to import the required Python library (zstandard)"
    raise RansomeyeError("%s (it compresses and decompresses repository data; pip install zstandard): %s"
                         % (msg, ZSTD_IMPORT_ERROR), exception=ZSTD_IMPORT_ERROR)


def _compressor(level: int) -> t.Any:
    # a compressor keeps its context between calls (cheap for many small pieces) but is not thread-safe
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    worker = cache.get(level)
    if worker is None:
        require_zstd()
        worker = cache[level] = _zstd.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return worker


def _decompressor() -> t.Any:
    worker = getattr(_local, "decompressor", None)
    if worker is None:
        require_zstd()
        worker = _local.decompressor = _zstd.ZstdDecompressor()
    return worker


def zstd_compress(data: t.Union[bytes, memoryview], level: int = 1) -> bytes:
    """One zstd frame (RFC 8878) holding ``data``, with its content size and no checksum."""
    return _compressor(level).compress(data)


def zstd_decompress(stored: t.Union[bytes, memoryview], raw_length: int) -> bytes:
    """The content of one zstd frame that must declare and hold exactly ``raw_length`` bytes, nothing after it."""
    require_zstd()
    try:
        declared = _zstd.frame_content_size(stored)
    except _zstd.ZstdError as exc:
        raise CompressionError("a zstd piece has no valid frame header: %s" % exc)
    if declared < 0:
        raise CompressionError("a zstd piece does not declare its content size in its frame header")
    if declared != raw_length:
        raise CompressionError("a zstd piece declares %d bytes, its record says %d" % (declared, raw_length))
    try:
        data = _decompressor().decompress(stored, max_output_size=raw_length, allow_extra_data=False)
    except _zstd.ZstdError as exc:
        raise CompressionError("a zstd piece does not decompress: %s" % exc)
    if len(data) != raw_length:
        raise CompressionError("a zstd piece has %d bytes, its record says %d" % (len(data), raw_length))
    return data


def zlib_decompress(stored: t.Union[bytes, memoryview], raw_length: int) -> bytes:
    """An RFC 1950 stream that inflates to exactly ``raw_length`` bytes and ends (output capped: no bomb)."""
    try:
        worker = zlib.decompressobj()
        data = worker.decompress(stored, raw_length + 1)
        if worker.unconsumed_tail or not worker.eof or worker.unused_data:
            raise CompressionError("a zlib piece is longer than its recorded length, incomplete or followed by data")
    except zlib.error as exc:
        raise CompressionError("a zlib piece does not decompress: %s" % exc)
    if len(data) != raw_length:
        raise CompressionError("a zlib piece has %d bytes, its record says %d" % (len(data), raw_length))
    return data


def encode(data: bytes, level: int = 1) -> t.Tuple[bytes, int]:
    """(stored bytes, method): zstd at ``level`` when that saves at least 3 %, else the data itself (NONE).

    Data larger than 64 KiB is probed on its first 16 KiB first: random-looking content (already compressed or
    encrypted evidence) is stored raw without paying for a full compression pass.
    """
    if len(data) < MIN_SIZE:
        return data, NONE
    worker = _compressor(level)
    if len(data) > PROBE_OVER:
        sample = data[:PROBE]
        if len(worker.compress(sample)) > PROBE * PROBE_KEEP:
            return data, NONE
    packed = worker.compress(data)
    if len(packed) >= len(data) * MIN_SAVING:
        return data, NONE
    return packed, ZSTD


def decode(stored: t.Union[bytes, memoryview], method: int, raw_length: int) -> bytes:
    """The original bytes of a piece stored with ``method`` (NONE, ZLIB or ZSTD), exactly ``raw_length`` long."""
    if method == NONE:
        data = bytes(stored)
        if len(data) != raw_length:
            raise CompressionError("a stored piece has %d bytes, its record says %d" % (len(data), raw_length))
        return data
    if method == ZSTD:
        return zstd_decompress(stored, raw_length)
    if method == ZLIB:
        return zlib_decompress(stored, raw_length)
    raise CompressionError("unknown compression method %d" % method)
