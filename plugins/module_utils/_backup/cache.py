# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the host-local, authenticated cache of v2 backups (never inside the repository).

``<cache_dir>/<repo_id>/host.key`` holds 32 random bytes (0600) from which the
cache MAC key (and, in rsa mode, the blob-id key) are derived: the repository
holds neither, so attacker R, who can write the repository, can neither forge
a cache nor test blob ids. Per component, ``<component>.cache`` holds the
trees of the last backup, one record per directory (after those below it), each
``u32 length || payload || HMAC(mac_key, nonce || offset || payload)``, and
``<component>.state`` (JSON + MAC) binds that file to the manifest it was
written for (seq and SHA-256). A record is used only when its MAC verifies,
the state's manifest still exists, has that SHA-256 and verifies with the
signing key; anything else is reported and the cache is ignored.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import hmac
import json
import os
import struct
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory, fsync_dir

_LEN = struct.Struct(">I")
_META = struct.Struct(">I")
_OFFSET = struct.Struct(">Q")
_BINARY = b"\x02"                       # first byte of a binary record meta (a JSON one starts with "{")
_FIXED = struct.Struct(">32s32sI")      # tree id, listing signature, pack count
_CHILD = struct.Struct(">HQ")           # name length, record offset
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class CacheError(RansomeyeError):
    """The cache is damaged or forged; it is ignored."""


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "ransomeye.ops", "backup")


def host_secret(cache_dir: str, repo_id: str, create: bool) -> t.Optional[bytes]:
    directory = os.path.join(cache_dir, repo_id)
    path = os.path.join(directory, "host.key")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(64)
        if len(data) != 32:
            raise RansomeyeError("host-local backup key %s is damaged (expected 32 bytes)" % path)
        return data
    except FileNotFoundError:
        if not create:
            return None
    ensure_directory(directory, 0o700)
    data = os.urandom(32)
    atomic_write(path, data, mode=0o600)
    return data


def mac_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"ransomeye.ops/v2 cache mac", hashlib.sha256).digest()


class CacheRecord(t.NamedTuple):
    tree: bytes                     # the directory's tree object bytes
    tree_id: str                    # its blob id (hex)
    packs: t.List[str]              # packs holding the blobs its direct entries and its own tree use
    children: t.Dict[bytes, int]    # subdirectory name -> offset of its record
    signature: bytes = b""          # SHA-256 of the directory's listing with its stat fields (engine._signature)


class CacheReader:
    def __init__(self, path: str, key: bytes, nonce: bytes) -> None:
        self.key, self.nonce = key, nonce
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        self.handle = os.fdopen(fd, "rb")

    def read(self, offset: int) -> CacheRecord:
        head = os.pread(self.handle.fileno(), 4, offset)
        if len(head) != 4:
            raise CacheError("cache record at %d is truncated" % offset)
        (length,) = _LEN.unpack(head)
        if length > 1 << 30:
            raise CacheError("cache record at %d is too long" % offset)
        body = os.pread(self.handle.fileno(), length + 32, offset + 4)
        if len(body) != length + 32:
            raise CacheError("cache record at %d is truncated" % offset)
        payload, mac = body[:length], body[length:]
        expected = hmac.digest(self.key, self.nonce + _OFFSET.pack(offset) + payload, "sha256")
        if not hmac.compare_digest(mac, expected):
            raise CacheError("cache record at %d failed authentication (modified or planted)" % offset)
        (meta_len,) = _META.unpack_from(payload, 0)
        meta = payload[4:4 + meta_len]
        tree = payload[4 + meta_len:]
        if meta[:1] != _BINARY:   # JSON, written before the binary meta: no signature, so never reused whole
            doc = json.loads(meta.decode("ascii"))
            children = {bytes.fromhex(k): int(v) for k, v in doc["children"].items()}
            return CacheRecord(tree, doc["id"], list(doc["packs"]), children, b"")
        try:
            tree_id, signature, n_packs = _FIXED.unpack_from(meta, 1)
            pos = 1 + _FIXED.size
            packs = [meta[pos + 32 * i:pos + 32 * (i + 1)].hex() for i in range(n_packs)]
            pos += 32 * n_packs
            (n_children,) = _LEN.unpack_from(meta, pos)
            pos += 4
            children = {}
            for _i in range(n_children):
                name_len, child = _CHILD.unpack_from(meta, pos)
                pos += _CHILD.size
                children[meta[pos:pos + name_len]] = child
                pos += name_len
        except struct.error:
            raise CacheError("cache record at %d is malformed" % offset)
        return CacheRecord(tree, tree_id.hex(), packs, children, signature)

    def close(self) -> None:
        self.handle.close()


class CacheWriter:
    def __init__(self, path: str, key: bytes) -> None:
        self.path = path
        self.tmp = "%s.tmp-%d" % (path, os.getpid())
        self.key = key
        self.nonce = os.urandom(16)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600)
        self.handle = os.fdopen(fd, "wb", buffering=1 << 20)
        self.offset = 0

    def add(self, record: CacheRecord) -> int:
        packs = sorted(record.packs)
        parts = [_BINARY, _FIXED.pack(bytes.fromhex(record.tree_id), record.signature.ljust(32, b"\0"), len(packs))]
        parts.extend(bytes.fromhex(p) for p in packs)
        parts.append(_LEN.pack(len(record.children)))
        for name, child in record.children.items():
            parts.append(_CHILD.pack(len(name), child))
            parts.append(name)
        meta = b"".join(parts)
        payload = _META.pack(len(meta)) + meta + record.tree
        mac = hmac.digest(self.key, self.nonce + _OFFSET.pack(self.offset) + payload, "sha256")
        offset = self.offset
        self.handle.write(_LEN.pack(len(payload)) + payload + mac)
        self.offset += 4 + len(payload) + 32
        return offset

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.rename(self.tmp, self.path)
        fsync_dir(os.path.dirname(self.path))

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _state_mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, b"ransomeye.ops/v2 cache state\x00" + body, hashlib.sha256).hexdigest()


def write_state(path: str, key: bytes, state: dict) -> None:
    body = json.dumps(state, sort_keys=True, separators=(",", ":")).encode("ascii")
    atomic_write(path, body + b"\n" + _state_mac(key, body).encode("ascii") + b"\n", mode=0o600)


def read_state(path: str, key: bytes) -> t.Optional[dict]:
    """The state, or None when absent; CacheError when it does not authenticate."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(1 << 20)
    parts = data.split(b"\n")
    if len(parts) != 3 or parts[2] != b"":
        raise CacheError("cache state %s is malformed" % path)
    if not hmac.compare_digest(parts[1], _state_mac(key, parts[0]).encode("ascii")):
        raise CacheError("cache state %s failed authentication (modified or planted)" % path)
    return json.loads(parts[0].decode("ascii"))
