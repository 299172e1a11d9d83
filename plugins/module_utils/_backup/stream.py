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

import hashlib
import os
import threading
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt, pack as bpack, chunker as bchunker

STREAM_LAYOUT = "stream-v2"
# pg_dump -Fc compresses at zlib's default level 6; with -Z0 that work moves here (zlib releases the GIL, so it
# runs beside the file walk), and the repository stays about as small as a compressed dump.
STREAM_ZLIB_LEVEL = 6


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
                      "chunks": 0}
        self._index: t.Optional[fmt.IndexSet] = None
        self.lock = threading.Lock()

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

    def store(self, read: t.Callable[[int], bytes], name: bytes, mtime_ns: int,
              on_first: t.Optional[t.Callable[[], None]] = None) -> dict:
        """Chunk, dedup and pack everything ``read`` returns; return the component fields (tree id, size, ...)."""
        eng = self.engine
        cutter = bchunker.Chunker(bchunker.chunker_key(eng.id_key), self.params)
        writer = eng.new_data_writer()
        index = self.index()
        whole = hashlib.sha256()
        ids: t.List[str] = []
        size = 0
        for chunk in cutter.chunks(read):
            if on_first is not None and not size:
                on_first()
            whole.update(chunk)
            size += len(chunk)
            blob = fmt.blob_id(eng.id_key, eng.enc.context, fmt.BLOB_DATA, hashlib.sha256(chunk).digest())
            ids.append(blob.hex())
            found = index.lookup(blob)
            if found is not None:
                self.used_packs.add(found.pack)
                self.stats["blobs_reused"] += 1
                self.stats["bytes_reused"] += len(chunk)
            elif eng.claim(blob):
                stored, comp = fmt.encode_blob(chunk, STREAM_ZLIB_LEVEL)
                self.used_packs.add(writer.add(blob, stored, len(chunk), comp))
                self.stats["blobs_new"] += 1
            else:
                # stored earlier in this run (by this stream or another component): a new pack of this run,
                # which the manifest lists anyway
                self.stats["blobs_reused"] += 1
                self.stats["bytes_reused"] += len(chunk)
        writer.seal()
        self.stats["bytes_stored"] = writer.bytes_stored
        entry = {"name": fmt.b64(name), "type": "file", "mode": 0o600, "uid": os.getuid(), "gid": os.getgid(),
                 "mtime_ns": int(mtime_ns), "size": size, "sha256": whole.hexdigest(), "chunks": ids}
        tree = fmt.encode_tree([entry])
        tree_blob = fmt.blob_id(eng.id_key, eng.enc.context, fmt.BLOB_TREE, hashlib.sha256(tree).digest())
        found = index.lookup(tree_blob)
        if found is not None:
            self.used_packs.add(found.pack)
        elif eng.claim(tree_blob):
            stored, comp = fmt.encode_blob(tree)
            self.used_packs.add(eng.tree_writer.add(tree_blob, stored, len(tree), comp))
        self.stats["bytes_read"] = size
        self.stats["chunks"] = len(ids)
        return {"layout": STREAM_LAYOUT, "tree": tree_blob.hex(), "name": fmt.b64(name), "size": size,
                "sha256": whole.hexdigest(), "chunker": self.params.describe()}

    def commit_cache(self, manifest_seq: int, manifest_sha256: str) -> None:
        pass
