# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: v2 packs (many blobs in one encrypted container) and their index files.

A pack is one container (docs/BACKUP_FORMAT.md section 1) whose plaintext is
its blobs back to back; the manifest lists it as an object of kind ``pack``
with its plaintext SHA-256, so a reader authenticates a whole pack against
signed data before it uses any blob in it. An index file (plain, binary,
sorted) says where each blob is; the manifest lists it as kind ``index``
with its SHA-256.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import collections
import concurrent.futures
import hashlib
import os
import threading
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import unlink_on_error
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import container
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt

PACK_TARGET = 4 << 20
SEALS_IN_FLIGHT = 1
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class PackWriter:
    """Collects blobs of one type into packs of about PACK_TARGET bytes; seals each into repo/objects.

    With an ``executor``, a full pack is encrypted and written on a worker thread (at most SEALS_IN_FLIGHT per
    writer at a time) while blobs go on into the next one; ``seal`` waits for every pack and raises the first
    failure, so a run's index and manifest are written only after all its packs are in place.
    """

    def __init__(self, repo: brepo.Repo, enc: t.Any, kind: int, on_pack: t.Callable[[str, dict], None],
                 records: t.Any, packs: t.List[str], table_lock: t.Optional[t.Any] = None,
                 executor: t.Optional[concurrent.futures.Executor] = None) -> None:
        self.repo, self.enc, self.kind = repo, enc, kind
        self.on_pack = on_pack
        self.records = records        # the run's index records (spill.Records; new blobs only), shared
        self.packs = packs            # shared pack-number table of the run's index
        # writers of one run share records and packs, possibly from two threads (a stream and the walk)
        self.table_lock = table_lock if table_lock is not None else threading.Lock()
        self.lock = threading.RLock()
        self.executor = executor
        self.sealing: "collections.deque[concurrent.futures.Future]" = collections.deque()
        self.count_lock = threading.Lock()
        self.buffer = bytearray()
        self.pack_id = ""
        self.pack_no = -1
        self.bytes_stored = 0

    def add(self, blob: bytes, stored: bytes, raw_length: int, compression: int) -> str:
        with self.lock:
            with self.table_lock:
                if self.pack_no < 0:
                    self.pack_id = brepo.new_object_id()
                    self.pack_no = len(self.packs)
                    self.packs.append(self.pack_id)
                self.records.add(fmt.INDEX_RECORD.pack(blob, self.pack_no, len(self.buffer), len(stored),
                                                       raw_length, self.kind, compression))
            self.buffer += stored
            pack_id = self.pack_id
            if len(self.buffer) >= PACK_TARGET:
                self._seal()
            return pack_id

    def seal(self) -> None:
        """Seal the pack being filled and wait until every pack of this writer is written."""
        with self.lock:
            self._seal()
            while self.sealing:
                self.sealing.popleft().result()

    def _seal(self) -> None:
        if self.pack_no < 0:
            return
        pack_id, data = self.pack_id, self.buffer
        self.buffer = bytearray()
        self.pack_no = -1
        self.pack_id = ""
        if self.executor is None:
            self._write(pack_id, data)
            return
        while len(self.sealing) >= SEALS_IN_FLIGHT:
            self.sealing.popleft().result()
        self.sealing.append(self.executor.submit(self._write, pack_id, data))

    def _write(self, pack_id: str, data: bytearray) -> None:
        record = write_object(self.repo, self.enc, pack_id, data, "pack")
        # not table_lock: a thread adding blobs may hold it while it waits for this pack to be written
        with self.count_lock:
            self.bytes_stored += record["ciphertext_size"]
            self.on_pack(pack_id, record)
        hook("pack_sealed")

    def abort(self) -> None:
        """Wait for packs being written (their failures no longer matter: the run is failing)."""
        while self.sealing:
            future = self.sealing.popleft()
            future.cancel()
            try:
                future.result()
            except BaseException:  # noqa: B902 - the run already failed; its objects stay unreferenced
                pass


def write_object(repo: brepo.Repo, enc: t.Any, object_id: str, plaintext: t.Union[bytes, bytearray], kind: str) -> dict:
    """Encrypt ``plaintext`` into repo/tmp, then rename it into objects/ (a crash leaves only tmp garbage)."""
    tmp = repo.new_tmp_path(object_id)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    with unlink_on_error(tmp):
        with os.fdopen(fd, "wb") as handle:
            writer = enc.encryptor(handle, object_id)
            view = memoryview(plaintext)
            for start in range(0, max(1, len(plaintext)), container.CHUNK_SIZE):
                writer.write(view[start:start + container.CHUNK_SIZE])
            info = writer.close()
            handle.flush()
            brepo.start_writeback(handle.fileno())   # on the sealing thread, while the backup goes on
        repo.commit_object(tmp, object_id, flushing=True)
    return {"kind": kind, "plaintext_sha256": info.plaintext_sha256, "plaintext_size": int(info.plaintext_size),
            "ciphertext_sha256": info.ciphertext_sha256, "ciphertext_size": int(info.ciphertext_size)}


def write_plain_object(repo: brepo.Repo, data: bytes, kind: str) -> t.Tuple[str, dict]:
    """A plain (unencrypted) object named by its SHA-256, e.g. an index file."""
    digest = hashlib.sha256(data).hexdigest()
    tmp = repo.new_tmp_path(digest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        brepo.start_writeback(handle.fileno())
    repo.commit_object(tmp, digest, flushing=True)
    return digest, {"kind": kind, "plaintext_sha256": digest, "plaintext_size": len(data),
                    "ciphertext_sha256": digest, "ciphertext_size": len(data)}


def read_plain_object(repo: brepo.Repo, object_id: str, record: dict, limit: int = 1 << 31) -> bytes:
    """Bytes of a plain object, only if their SHA-256 and size match the (signed) record."""
    path = repo.object_path(object_id)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        raise RansomeyeError("index %s is missing from the repository" % object_id, object=object_id)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(min(limit, int(record.get("ciphertext_size") or 0) + 1))
    if len(data) != record.get("ciphertext_size") or hashlib.sha256(data).hexdigest() != record.get("ciphertext_sha256"):
        raise RansomeyeError("index %s does not match the manifest (size or SHA-256)" % object_id, object=object_id)
    return data


def load_indexes(repo: brepo.Repo, objects: t.Dict[str, dict], packs: t.Optional[t.Set[str]] = None) -> fmt.IndexSet:
    """The verified indexes a manifest lists (``objects`` = its objects map); lookups limited to its packs."""
    live = {oid: rec for oid, rec in objects.items() if isinstance(rec, dict) and rec.get("kind") == "pack"}
    if packs is not None:
        live = {oid: rec for oid, rec in live.items() if oid in packs}
    result = fmt.IndexSet(live)
    for object_id in sorted(oid for oid, rec in objects.items() if isinstance(rec, dict) and rec.get("kind") == "index"):
        result.add(fmt.Index(read_plain_object(repo, object_id, objects[object_id]), "index %s" % object_id))
    return result


class PackCache:
    """Decrypted, authenticated pack plaintexts: prefetched in pack order by worker threads, a few kept.

    A pack is used only after its plaintext SHA-256 equals the manifest's
    record, so every blob in it is authentic before a byte is written. One
    read of each pack does it all (AES-GCM per chunk, the signed SHA-256):
    a restore does not hash the ciphertext first. ``get`` may be called from
    several threads.
    """

    def __init__(self, repo: brepo.Repo, objects: t.Dict[str, dict], decrypt: dict,
                 executor: t.Optional[concurrent.futures.Executor] = None, keep: int = 8, ahead: int = 3) -> None:
        self.repo, self.objects, self.decrypt = repo, objects, decrypt
        self.executor = executor
        self.keep, self.ahead = keep, ahead
        self.done: "collections.OrderedDict[str, bytearray]" = collections.OrderedDict()
        self.pending: t.Dict[str, concurrent.futures.Future] = {}
        self.order: t.List[str] = []
        self.position: t.Dict[str, int] = {}
        self.lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.loaded: t.Set[str] = set()    # packs authenticated by this cache (whatever was evicted since)
        self.packs_read = 0
        self.bytes_read = 0

    def set_order(self, order: t.List[str]) -> None:
        self.order = order
        self.position = {p: i for i, p in enumerate(order)}

    def note(self, pack_id: str) -> None:
        """The restore's walk met ``pack_id`` (the order packs are first needed in, for prefetching)."""
        if pack_id not in self.position:
            with self.lock:
                self.position[pack_id] = len(self.order)
                self.order.append(pack_id)

    def _load(self, pack_id: str) -> bytearray:
        record = self.objects.get(pack_id)
        if not isinstance(record, dict) or record.get("kind") != "pack":
            raise RansomeyeError("pack %s is not listed by the manifest" % pack_id, object=pack_id)
        path = self.repo.object_path(pack_id)
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            raise RansomeyeError("pack %s is missing from the repository" % pack_id, object=pack_id)
        digest = hashlib.sha256()
        # filled in place: one pack-sized buffer per pack, not its chunks plus their join
        size = record.get("plaintext_size")
        if not isinstance(size, int) or not 0 <= size <= int(record.get("ciphertext_size") or 0):
            raise RansomeyeError("pack %s has an impossible plaintext size in the manifest" % pack_id, object=pack_id)
        data = bytearray(size)
        filled = 0
        with os.fdopen(fd, "rb") as src:
            for chunk in container.decrypt_chunks(src, expected_object_id=pack_id, **self.decrypt):
                digest.update(chunk)
                end = filled + len(chunk)
                if end > size:
                    raise RansomeyeError("pack %s is longer than the signed manifest says" % pack_id, object=pack_id)
                data[filled:end] = chunk
                filled = end
        if digest.hexdigest() != record.get("plaintext_sha256") or filled != size:
            raise RansomeyeError("pack %s does not match the signed manifest (plaintext SHA-256)" % pack_id,
                                 object=pack_id)
        with self.count_lock:
            self.packs_read += 1
            self.bytes_read += int(record.get("ciphertext_size") or 0)
            self.loaded.add(pack_id)
        return data

    def authenticate(self, pack_id: str) -> None:
        """Read and authenticate a pack without keeping it (a listed pack nothing else reads)."""
        self._load(pack_id)

    def _prefetch(self, index: int) -> None:
        if self.executor is None:
            return
        for pack_id in self.order[index + 1:index + 1 + self.ahead]:
            if pack_id not in self.done and pack_id not in self.pending:
                self.pending[pack_id] = self.executor.submit(self._load, pack_id)

    def get(self, pack_id: str) -> bytearray:
        with self.lock:
            if pack_id in self.position:
                self._prefetch(self.position[pack_id])
            data = self.done.get(pack_id)
            if data is not None:
                self.done.move_to_end(pack_id)
                return data
            future = self.pending.get(pack_id)
            if future is None and self.executor is not None:
                future = self.pending[pack_id] = self.executor.submit(self._load, pack_id)
        try:
            data = future.result() if future is not None else self._load(pack_id)
        finally:
            if future is not None:
                with self.lock:
                    self.pending.pop(pack_id, None)
        with self.lock:
            self.done[pack_id] = data
            self.done.move_to_end(pack_id)
            while len(self.done) > self.keep:
                self.done.popitem(last=False)
        return data

    def close(self) -> None:
        with self.lock:
            pending = list(self.pending.values())
            self.pending.clear()
        for future in pending:
            future.cancel()
        for future in pending:
            try:
                future.result()
            except BaseException:  # noqa: B902 - a cancelled prefetch's failure no longer matters
                pass


def read_blob(packs: PackCache, entry: fmt.IndexEntry) -> bytes:
    data = packs.get(entry.pack)
    if entry.offset + entry.length > len(data):
        raise RansomeyeError("a blob lies beyond the end of pack %s" % entry.pack, object=entry.pack)
    # a view, not a copy of the stored bytes (decoding makes the one copy the caller gets)
    return fmt.decode_blob(memoryview(data)[entry.offset:entry.offset + entry.length], entry.compression,
                           entry.raw_length)
