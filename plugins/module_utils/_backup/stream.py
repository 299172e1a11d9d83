# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: a stream (a pg_dump) stored in v2 packs as one file entry of a one-entry tree.

The stream is cut by the keyed content-defined chunker (``chunker``), each
chunk becomes a data blob (keyed id, compressed when that pays) and lands in
packs of its own (dump chunks are not interleaved with files, so a restore of
the database decrypts only dump packs). Chunks already stored by the base
backup (the newest manifest with a v2 stream of the same component, verified
as in ``engine.choose_base``) are referenced, not stored: a daily dump of a
mostly unchanged database adds only its changed chunks. Nothing is read or
written to disk in plaintext.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import collections
import concurrent.futures
import hashlib
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, pack as bpack, chunker as bchunker

STREAM_LAYOUT = "stream-v2"
# pg_dump -Fc compresses at zlib's default level 6; with -Z0 that work moves here (zstd releases the GIL, so it
# runs beside the file walk): zstd's default level 3 stores a dump at least as small, many times faster.
STREAM_LEVEL = 3
SEGMENT_MASK = 0x0FFF      # a segment holds about 4096 chunks (~160 MiB of dump) ...
SEGMENT_MAX = 16384        # ... and never more than this many
COMPRESS_WORKERS = max(1, min(3, os.cpu_count() or 1))
COMPRESS_WINDOW = 16       # chunks in flight (at most 128 KiB each)


def is_v2_stream(comp: t.Any) -> bool:
    """A component whose stream is a file entry in v2 packs (the database component written by v2)."""
    return isinstance(comp, dict) and comp.get("layout") == STREAM_LAYOUT


class _NoCache:
    """Streams keep no host-local cache: dedup goes through the base manifest's verified indexes."""

    def abort(self) -> None:
        pass


class StreamRun:
    """One stream of one backup run; registered with the engine so ``finish`` lists the packs it uses."""

    def __init__(self, engine: t.Any, component: str, params: bchunker.Params) -> None:
        from ansible_collections.ransomeye.ops.plugins.module_utils._backup.engine import choose_base
        self.engine = engine
        self.component = component
        self.params = params
        self.base = choose_base(engine.manifests, engine.repo, engine.signer_public, engine.enc.describe(), component,
                                accept=is_v2_stream)
        self.used_packs: t.Set[str] = set()
        self.writer = _NoCache()
        self.stats = {"bytes_read": 0, "blobs_new": 0, "blobs_reused": 0, "bytes_reused": 0, "bytes_stored": 0,
                      "chunks": 0, "segments": 0}
        self._index: t.Optional[fmt.IndexSet] = None

    def index(self) -> fmt.IndexSet:
        if self._index is None:
            if self.base is None:
                self._index = fmt.IndexSet({})
            else:
                try:
                    self._index = bpack.load_indexes(self.engine.repo, self.base.objects)
                except RansomeyeError as exc:
                    self.engine.warn("%s: not deduplicating against the previous backup: %s"
                                     % (self.component, exc.msg))
                    self._index = fmt.IndexSet({})
        return self._index

    def _known(self, blob: bytes) -> bool:
        """True when the base or this run already has ``blob`` (the caller then only references it)."""
        earlier = self.engine.new_blobs.get(blob)
        if earlier is not None:
            self.used_packs.add(earlier)
            return True
        found = self.index().lookup(blob)
        if found is not None:
            self.used_packs.add(found.pack)
            return True
        return False

    def _store(self, writer: t.Any, blob: bytes, stored: bytes, raw_length: int, comp: int) -> bool:
        pack_id, new = self.engine.store_new(writer, blob, stored, raw_length, comp)
        self.used_packs.add(pack_id)
        return new

    def _blob(self, blob: bytes, data: bytes, writer: t.Any, level: int) -> bool:
        """Store ``data`` as ``blob`` unless the base or this run has it; True when it was stored now."""
        if self._known(blob):
            return False
        stored, comp = fmt.encode_blob(data, level)
        return self._store(writer, blob, stored, len(data), comp)

    def _tree(self, entries: t.List[dict]) -> str:
        eng = self.engine
        tree = fmt.encode_tree(entries)
        blob = fmt.blob_id(eng.id_key, eng.enc.context, fmt.BLOB_TREE, hashlib.sha256(tree).digest())
        self._blob(blob, tree, eng.tree_writer, 1)
        return blob.hex()

    def store(self, read: t.Callable[[int], bytes], name: bytes,
              on_first: t.Optional[t.Callable[[], None]] = None, level: int = STREAM_LEVEL) -> dict:
        """Chunk, dedup and pack everything ``read`` returns; return the component fields (tree id, size, ...).

        The stream is kept as segments (5.12): a segment ends after a chunk whose blob id has its low 12 bits
        (of the first two bytes) zero, or after SEGMENT_MAX chunks, so memory holds one segment's chunk ids
        whatever the dump's size, and an unchanged segment yields the same tree blob as the day before.
        """
        eng = self.engine
        cutter = bchunker.Chunker(bchunker.chunker_key(eng.id_key), self.params)
        writer = eng.new_data_writer()
        self.index()
        whole = hashlib.sha256()
        size = 0
        segments: t.List[dict] = []
        ids: t.List[str] = []
        part = hashlib.sha256()
        part_size = 0

        def close_segment() -> None:
            nonlocal ids, part, part_size
            entry = {"name": fmt.b64(name), "type": "file", "mode": 0o600, "uid": os.getuid(), "gid": os.getgid(),
                     "mtime_ns": 0, "size": part_size, "sha256": part.hexdigest(), "chunks": ids}
            segments.append({"name": fmt.b64(b"%08d" % len(segments)), "type": "dir", "mode": 0o700,
                             "uid": os.getuid(), "gid": os.getgid(), "mtime_ns": 0, "tree": self._tree([entry])})
            ids, part, part_size = [], hashlib.sha256(), 0

        # zstd releases the GIL: new chunks are compressed on worker threads while this one cuts and hashes the
        # next ones (the work pg_dump -Fc would do in its own process); a bounded window keeps memory flat
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=COMPRESS_WORKERS)
        pending: "collections.deque[t.Tuple[bytes, concurrent.futures.Future, int]]" = collections.deque()

        def drain(limit: int) -> None:
            while len(pending) > limit:
                blob_done, future, raw_length = pending.popleft()
                stored, comp = future.result()
                if self._store(writer, blob_done, stored, raw_length, comp):
                    self.stats["blobs_new"] += 1
                else:   # the same chunk twice in the window, or stored by the walk meanwhile
                    self.stats["blobs_reused"] += 1
                    self.stats["bytes_reused"] += raw_length

        try:
            for chunk in cutter.chunks(read):
                if on_first is not None and not size:
                    on_first()
                whole.update(chunk)
                part.update(chunk)
                size += len(chunk)
                part_size += len(chunk)
                blob = fmt.blob_id(eng.id_key, eng.enc.context, fmt.BLOB_DATA, hashlib.sha256(chunk).digest())
                ids.append(blob.hex())
                self.stats["chunks"] += 1
                if self._known(blob):
                    self.stats["blobs_reused"] += 1
                    self.stats["bytes_reused"] += len(chunk)
                else:
                    pending.append((blob, pool.submit(fmt.encode_blob, chunk, level), len(chunk)))
                    drain(COMPRESS_WINDOW)
                if ((blob[0] << 8) | blob[1]) & SEGMENT_MASK == 0 or len(ids) >= SEGMENT_MAX:
                    close_segment()
            drain(0)
        finally:
            for _blob, future, _length in pending:
                future.cancel()
            pool.shutdown(wait=True)
        if ids or not segments:
            close_segment()
        writer.seal()
        self.stats["bytes_stored"] = writer.bytes_stored
        self.stats["bytes_read"] = size
        self.stats["segments"] = len(segments)
        return {"layout": STREAM_LAYOUT, "tree": self._tree(segments), "name": fmt.b64(name), "size": size,
                "sha256": whole.hexdigest(), "chunker": self.params.describe()}

    def commit_cache(self, manifest_seq: int, manifest_sha256: str) -> None:
        pass
