# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: v2 byte formats (keyed blob ids, tree objects, pack index, blob encoding)."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import base64
import bisect
import hashlib
import hmac
import json
import struct
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _compress as compress

COMPONENT_FORMAT = "tree-v2"
BLOB_DATA = 1
BLOB_TREE = 2
COMP_NONE = compress.NONE
COMP_ZLIB = compress.ZLIB     # read only: what writers before format 5.13 stored
COMP_ZSTD = compress.ZSTD
CHUNK = 1 << 20              # large files are cut into blobs of this many bytes
INDEX_MAGIC = b"RYEIDX02"
INDEX_RECORD = struct.Struct(">32sIIIIBB")   # blob id, pack no, offset, stored length, raw length, type, compression
INDEX_HEAD = struct.Struct(">8sII")          # magic, pack count, blob count
MAX_TREE_ENTRIES = 1 << 22


class FormatError(RansomeyeError):
    """A v2 structure that does not decode (damaged or forged data)."""


def id_key_for(secret: bytes) -> bytes:
    return hmac.new(secret, b"ransomeye.ops/v2 id key", hashlib.sha256).digest()


def blob_id(id_key: bytes, context: str, kind: int, plaintext_sha256: bytes) -> bytes:
    """Keyed, context-bound blob id: nobody without id_key can test whether known content is stored."""
    message = b"ransomeye.ops/v2 blob\x00" + context.encode() + b"\x00" + bytes([kind]) + plaintext_sha256
    return hmac.new(id_key, message, hashlib.sha256).digest()


def encode_blob(data: bytes, level: int = 1) -> t.Tuple[bytes, int]:
    """(stored bytes, compression): zstd (level 1 unless told) when it saves at least 3 %, else raw (decided on a
    sample first); see _compress.encode. zlib (COMP_ZLIB) is only ever read (blobs written before 5.13)."""
    return compress.encode(data, level)


def decode_blob(stored: bytes, compression: int, raw_length: int) -> bytes:
    try:
        return compress.decode(stored, compression, raw_length)
    except compress.CompressionError as exc:
        raise FormatError(exc.msg.replace("piece", "blob"))


# ----------------------------------------------------------------------------- trees

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: t.Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError("%s is not a base64 string" % what)
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise FormatError("%s is not valid base64" % what)
    if b64(data) != text:
        raise FormatError("%s is not canonical base64" % what)
    return data


def encode_tree(entries: t.List[dict]) -> bytes:
    """Deterministic bytes of a tree (entries already sorted by name bytes)."""
    return json.dumps({"entries": entries, "v": 2}, sort_keys=True, separators=(",", ":")).encode("ascii")


_TYPES = ("file", "dir", "symlink", "hardlink")


def _int(entry: dict, key: str, low: int = 0, high: int = (1 << 63) - 1) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FormatError("tree entry field %s is missing or out of range" % key)
    return value


def decode_tree(data: bytes, top: bool = False) -> t.List[t.Tuple[bytes, dict]]:
    """[(name bytes, entry)] in stored order; every field a reader relies on is checked."""
    try:
        doc = json.loads(data.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise FormatError("a tree object is not valid JSON")
    if not isinstance(doc, dict) or doc.get("v") != 2 or not isinstance(doc.get("entries"), list):
        raise FormatError("a tree object has the wrong shape")
    out: t.List[t.Tuple[bytes, dict]] = []
    previous = None
    for entry in doc["entries"]:
        if not isinstance(entry, dict) or entry.get("type") not in _TYPES:
            raise FormatError("a tree entry has an unknown type")
        name = unb64(entry.get("name"), "a tree entry name")
        if top:
            if not name.startswith(b"/") or b"\x00" in name:
                raise FormatError("a top-level tree entry is not an absolute path")
        elif not name or name in (b".", b"..") or b"/" in name or b"\x00" in name:
            raise FormatError("a tree entry name is empty, '.', '..' or contains '/' or NUL")
        if previous is not None and name <= previous:
            raise FormatError("tree entries are not sorted by name or repeat a name")
        previous = name
        _int(entry, "mode", 0, 0o7777)
        kind = entry["type"]
        if kind == "file":
            _int(entry, "size")
            chunks = entry.get("chunks")
            if not isinstance(chunks, list) or not all(isinstance(c, str) and len(c) == 64 for c in chunks):
                raise FormatError("a file entry has malformed chunks")
            if not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
                raise FormatError("a file entry has no sha256")
        elif kind == "dir":
            if not isinstance(entry.get("tree"), str) or len(entry["tree"]) != 64:
                raise FormatError("a dir entry has no tree id")
        elif kind == "symlink":
            target = unb64(entry.get("target"), "a symlink target")
            if not target or b"\x00" in target:
                raise FormatError("a symlink entry has an empty target")
        else:
            target = unb64(entry.get("target"), "a hard link target")
            if not target.startswith(b"/") or b"\x00" in target:
                raise FormatError("a hard link entry has no absolute target")
        out.append((name, entry))
    if len(out) > MAX_TREE_ENTRIES:
        raise FormatError("a tree object has too many entries")
    return out


# ----------------------------------------------------------------------------- index

class IndexEntry(t.NamedTuple):
    pack: str          # pack object id (hex)
    offset: int
    length: int
    raw_length: int
    kind: int
    compression: int


def encode_index(packs: t.List[str], records: t.Iterable[t.Tuple[bytes, int, int, int, int, int, int]]) -> bytes:
    """records: (blob id, pack no, offset, length, raw length, type, compression); sorted here, ids unique."""
    rows = sorted(records)
    out = [INDEX_HEAD.pack(INDEX_MAGIC, len(packs), len(rows))]
    out.extend(bytes.fromhex(p) for p in packs)
    previous = None
    for row in rows:
        if row[0] == previous:
            continue
        previous = row[0]
        out.append(INDEX_RECORD.pack(*row))
    if previous is not None and len(out) != 1 + len(packs) + len(rows):
        # duplicates were dropped: fix the count in the header
        out[0] = INDEX_HEAD.pack(INDEX_MAGIC, len(packs), len(out) - 1 - len(packs))
    return b"".join(out)


def encode_index_records(packs: t.List[str], records: bytearray) -> bytes:
    """An index from INDEX_RECORD-packed records (unique blob ids) kept in one bytearray: about 50 bytes per new
    blob in memory instead of a tuple of Python objects per blob."""
    size = INDEX_RECORD.size
    rows = sorted(bytes(records[i:i + size]) for i in range(0, len(records), size))
    return b"".join([INDEX_HEAD.pack(INDEX_MAGIC, len(packs), len(rows))] + [bytes.fromhex(p) for p in packs] + rows)


class _Keys:
    """A sequence view of an index's blob ids, for bisect (no per-record Python objects)."""

    def __init__(self, data: bytes, base: int, count: int) -> None:
        self.data, self.base, self.count = data, base, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> bytes:
        start = self.base + i * INDEX_RECORD.size
        return self.data[start:start + 32]


class Index:
    """One decoded index file: lookups by binary search over its sorted records."""

    def __init__(self, data: bytes, name: str = "index") -> None:
        if len(data) < INDEX_HEAD.size:
            raise FormatError("%s is truncated" % name)
        magic, n_packs, n_blobs = INDEX_HEAD.unpack_from(data, 0)
        if magic != INDEX_MAGIC:
            raise FormatError("%s has a bad magic" % name)
        base = INDEX_HEAD.size + 32 * n_packs
        if len(data) != base + n_blobs * INDEX_RECORD.size:
            raise FormatError("%s has the wrong size for its counts" % name)
        self.packs = [data[INDEX_HEAD.size + 32 * i:INDEX_HEAD.size + 32 * (i + 1)].hex() for i in range(n_packs)]
        self.data, self.base, self.count = data, base, n_blobs
        self.keys = _Keys(data, base, n_blobs)
        self.name = name

    def lookup(self, blob: bytes) -> t.Optional[IndexEntry]:
        i = bisect.bisect_left(self.keys, blob)  # type: ignore[arg-type]
        if i >= self.count or self.keys[i] != blob:
            return None
        _id, pack_no, offset, length, raw_length, kind, comp = INDEX_RECORD.unpack_from(
            self.data, self.base + i * INDEX_RECORD.size)
        if pack_no >= len(self.packs):
            raise FormatError("%s names pack number %d of %d" % (self.name, pack_no, len(self.packs)))
        return IndexEntry(self.packs[pack_no], offset, length, raw_length, kind, comp)


class IndexSet:
    """Several indexes; a lookup is answered only for blobs whose pack is in ``live_packs``."""

    def __init__(self, live_packs: t.Optional[t.Dict[str, dict]] = None) -> None:
        self.indexes: t.List[Index] = []
        self.live_packs = live_packs

    def add(self, index: Index) -> None:
        self.indexes.append(index)

    def lookup(self, blob: bytes) -> t.Optional[IndexEntry]:
        for index in reversed(self.indexes):
            found = index.lookup(blob)
            if found is not None and (self.live_packs is None or found.pack in self.live_packs):
                return found
        return None
