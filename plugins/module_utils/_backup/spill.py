# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: a v2 backup run's new blob ids and index records, spilled to disk as they grow.

A full backup of a million files meets over a million new blobs. Held in
Python objects (a set of ids, a list of records) that is 150 bytes or more per
blob, so memory would grow with the tree. Here at most ``RUN`` of each are in
memory; older ones are written, sorted, to an unlinked temp file in the
host-local cache directory (never the repository) in runs:

* ``NewBlobs``: which blob ids this run stored. A Bloom filter (8 MiB, four
  bit positions taken from the id itself, which is a keyed hash) over the
  spilled ids answers "no" for almost every new id without touching the disk;
  a "maybe" is settled by a binary search in each run (one ``pread``).
* ``Records``: the index records of the run (50 bytes each, docs/BACKUP_FORMAT.md
  5.4); the index is written at the end by merging the sorted runs, streamed
  into the repository's temp directory while its SHA-256 (its name) is taken.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import bisect
import hashlib
import heapq
import os
import struct
import tempfile
import threading
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt
from ansible_collections.ransomeye.ops.plugins.module_utils._files import unlink_on_error

RUN = 1 << 16                 # ids kept in memory before a run is spilled
# Records are only merged at the end, never looked up: shorter runs cost the merge little and keep the sort of a
# spill (a bytes object per record) small.
RECORDS_RUN = RUN // 4
STEP = 256                    # one in-memory sample per STEP spilled ids
BLOOM_BITS = 26               # 2**26 bits = 8 MiB: about 2e-5 false "maybe" at 1.2 million ids
_MASK = (1 << BLOOM_BITS) - 1
_ID = 32
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _spill_file(directory: str) -> t.Any:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return tempfile.TemporaryFile(dir=directory, prefix="spill-")


class NewBlobs:
    """A mapping of 32-byte blob ids to the id of the pack each went to (``in``, ``get``, ``[]``), whose memory
    stays flat as it grows: spilled entries are the id and a pack number (36 bytes), looked up on disk."""

    _ENTRY = struct.Struct(">32sI")

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.recent: t.Dict[bytes, str] = {}
        self.bloom = bytearray()      # 8 MiB once the first run is spilled (a small backup never needs it)
        self.runs: t.List[t.Tuple[int, int, t.List[bytes]]] = []   # (file offset, count, every STEP-th id)
        self.pack_ids: t.List[str] = []          # pack numbers of the spilled entries
        self.pack_numbers: t.Dict[str, int] = {}
        self.file: t.Any = None
        self.size = 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def _bits(blob: bytes) -> t.Tuple[int, int, int, int]:
        h = int.from_bytes(blob[:16], "little")
        return h & _MASK, (h >> 26) & _MASK, (h >> 52) & _MASK, (h >> 78) & _MASK

    def get(self, blob: bytes, default: t.Optional[str] = None) -> t.Optional[str]:
        found = self.recent.get(blob)
        if found is not None:
            return found
        runs = self.runs
        if not runs:
            return default
        # the four Bloom positions of _bits, inlined: most lookups of a new id end at the first clear bit
        bloom = self.bloom
        h = int.from_bytes(blob[:16], "little")
        for bit in (h & _MASK, (h >> 26) & _MASK, (h >> 52) & _MASK, (h >> 78) & _MASK):
            if not bloom[bit >> 3] & (1 << (bit & 7)):
                return default
        for run in reversed(runs):
            number = self._in_run(run, blob)
            if number is not None:
                return self.pack_ids[number]
        return default

    def __contains__(self, blob: bytes) -> bool:
        return self.get(blob) is not None

    def __getitem__(self, blob: bytes) -> str:
        found = self.get(blob)
        if found is None:
            raise KeyError(blob)
        return found

    def __setitem__(self, blob: bytes, pack_id: str) -> None:
        if blob in self:
            return     # the first pack a blob went to is the one the index names
        self.add(blob, pack_id)

    def add(self, blob: bytes, pack_id: str) -> None:
        """A blob the caller knows is not in the mapping yet (checked under the caller's lock)."""
        self.recent[blob] = pack_id
        self.size += 1
        if len(self.recent) >= RUN:
            self._spill()

    def _spill(self) -> None:
        # Built straight into one buffer from the sorted keys (no tuple or row object per entry): a spill is the
        # backup's largest passing allocation, and at a million files it happens often enough that its height
        # decided the run's peak memory.
        recent = self.recent
        blobs = sorted(recent)
        rows = bytearray(len(blobs) * self._ENTRY.size)
        for position, blob in enumerate(blobs):
            pack_id = recent[blob]
            number = self.pack_numbers.get(pack_id)
            if number is None:
                number = self.pack_numbers[pack_id] = len(self.pack_ids)
                self.pack_ids.append(pack_id)
            self._ENTRY.pack_into(rows, position * self._ENTRY.size, blob, number)
        with self.lock:
            if self.file is None:
                self.file = _spill_file(self.directory)
            offset = self.file.seek(0, os.SEEK_END)
            self.file.write(rows)
            self.file.flush()
        del rows
        if not self.bloom:
            self.bloom = bytearray(1 << (BLOOM_BITS - 3))
        bloom = self.bloom
        for blob in blobs:
            for bit in self._bits(blob):
                bloom[bit >> 3] |= 1 << (bit & 7)
        # readers on other threads see a run only once it is complete; the dict is replaced, never emptied
        self.runs.append((offset, len(blobs), blobs[::STEP]))
        self.recent = {}

    def _in_run(self, run: t.Tuple[int, int, t.List[bytes]], blob: bytes) -> t.Optional[int]:
        offset, count, samples = run
        i = bisect.bisect_right(samples, blob) - 1
        if i < 0:
            return None
        size = self._ENTRY.size
        start = i * STEP
        n = min(STEP, count - start)
        block = os.pread(self.file.fileno(), n * size, offset + start * size)
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            key = block[mid * size:mid * size + _ID]
            if key == blob:
                return self._ENTRY.unpack_from(block, mid * size)[1]
            if key < blob:
                lo = mid + 1
            else:
                hi = mid
        return None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class Records:
    """The run's index records (fmt.INDEX_RECORD, unique blob ids), spilled in sorted runs."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.buffer = bytearray()
        self.runs: t.List[t.Tuple[int, int]] = []   # (file offset, count)
        self.file: t.Any = None
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, record: bytes) -> None:
        self.buffer += record
        self.count += 1
        if len(self.buffer) >= RECORDS_RUN * fmt.INDEX_RECORD.size:
            self._spill()

    def _sorted_buffer(self) -> t.List[bytes]:
        size = fmt.INDEX_RECORD.size
        buffer = self.buffer
        return sorted(bytes(buffer[i:i + size]) for i in range(0, len(buffer), size))

    def _spill(self) -> None:
        rows = self._sorted_buffer()
        if self.file is None:
            self.file = _spill_file(self.directory)
        offset = self.file.seek(0, os.SEEK_END)
        self.file.writelines(rows)
        self.file.flush()
        self.runs.append((offset, len(rows)))
        self.buffer = bytearray()

    def _read_run(self, offset: int, count: int) -> t.Iterator[bytes]:
        size = fmt.INDEX_RECORD.size
        per_read = 256   # records read per run at a time: the merge holds one block of each run
        for first in range(0, count, per_read):
            n = min(per_read, count - first)
            block = os.pread(self.file.fileno(), n * size, offset + first * size)
            for i in range(n):
                yield block[i * size:(i + 1) * size]

    def write_index(self, repo: brepo.Repo, packs: t.List[str]) -> t.Tuple[str, dict]:
        """Write the index object (5.4) from every record, in blob id order; (its id, its manifest record)."""
        streams: t.List[t.Iterable[bytes]] = [self._sorted_buffer()]
        streams.extend(self._read_run(offset, count) for offset, count in self.runs)
        digest = hashlib.sha256()
        tmp = repo.new_tmp_path("index-" + os.urandom(8).hex())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        size = 0
        with unlink_on_error(tmp):
            with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
                def put(data: bytes) -> None:
                    digest.update(data)
                    handle.write(data)
                put(fmt.INDEX_HEAD.pack(fmt.INDEX_MAGIC, len(packs), self.count))
                for pack_id in packs:
                    put(bytes.fromhex(pack_id))
                batch: t.List[bytes] = []
                for row in heapq.merge(*streams):
                    batch.append(row)
                    if len(batch) >= 4096:
                        put(b"".join(batch))
                        batch = []
                put(b"".join(batch))
                size = handle.tell()
                handle.flush()
                brepo.start_writeback(handle.fileno())
            index_id = digest.hexdigest()
            repo.commit_object(tmp, index_id, flushing=True)
        return index_id, {"kind": "index", "plaintext_sha256": index_id, "plaintext_size": size,
                          "ciphertext_sha256": index_id, "ciphertext_size": size}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
