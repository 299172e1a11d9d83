# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: writing and reading encrypted objects of a backup repository.

An object is one encrypted container (_crypto_container) whose header binds
its object id, so an object moved to another id fails authentication.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import Encryption, container, require_crypto
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_repo import Repo

READ_CHUNK = 1 << 20


def record_of(info: t.Any, kind: str) -> dict:
    """The manifest's description of an object, from a ContainerInfo."""
    return {
        "kind": kind,
        "plaintext_sha256": info.plaintext_sha256,
        "plaintext_size": int(info.plaintext_size),
        "ciphertext_sha256": info.ciphertext_sha256,
        "ciphertext_size": int(info.ciphertext_size),
    }


class NewObject:
    """``with NewObject(repo, enc, object_id, kind) as obj: obj.write(data)``; ``obj.record`` afterwards.

    The ciphertext goes to repo/tmp and is renamed into objects/ only when the
    whole plaintext was written without error; on any exception (a failed
    pg_dump, a read error) the temp file is removed and nothing is committed.
    """

    def __init__(self, repo: Repo, enc: Encryption, object_id: str, kind: str) -> None:
        require_crypto()
        self.repo = repo
        self.enc = enc
        self.object_id = object_id
        self.kind = kind
        self.tmp_path = ""
        self.record: t.Optional[dict] = None
        self._handle: t.Any = None
        self._writer: t.Any = None

    def __enter__(self) -> "NewObject":
        self.tmp_path = self.repo.new_tmp_path(self.object_id)
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._handle = os.fdopen(fd, "wb")
        self._writer = self.enc.encryptor(self._handle, self.object_id)
        return self

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def __exit__(self, exc_type: t.Any, exc: t.Any, tb: t.Any) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            info = self._writer.close()
            if not self._handle.closed:
                self._handle.flush()
                self._handle.close()
            self.repo.commit_object(self.tmp_path, self.object_id)
        except BaseException:
            self._abort()
            raise
        self.record = record_of(info, self.kind)

    def _abort(self) -> None:
        try:
            if self._handle is not None and not self._handle.closed:
                self._handle.close()
        finally:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass


def store_fd(repo: Repo, enc: Encryption, fd: int, object_id: str, kind: str) -> t.Tuple[dict, str]:
    """Encrypt everything readable from ``fd`` (from offset 0); return (record, plaintext sha256)."""
    os.lseek(fd, 0, os.SEEK_SET)
    with NewObject(repo, enc, object_id, kind) as obj:
        while True:
            block = os.read(fd, READ_CHUNK)
            if not block:
                break
            obj.write(block)
    if obj.record is None:
        raise RansomeyeError("object %s was not written" % object_id)
    return obj.record, obj.record["plaintext_sha256"]


def open_object(repo: Repo, object_id: str) -> t.BinaryIO:
    path = repo.object_path(object_id)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise RansomeyeError("object %s is missing from the repository" % object_id, object=object_id)
    return os.fdopen(fd, "rb")


def object_chunks(repo: Repo, object_id: str, decrypt_kwargs: dict) -> t.Iterator[bytes]:
    """Authenticated plaintext chunks of an object (ContainerError on any tampering)."""
    with open_object(repo, object_id) as src:
        yield from container.decrypt_chunks(src, expected_object_id=object_id, **decrypt_kwargs)


class ChunkReader:
    """A read()-able file object over an iterator of chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: t.Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        parts = []
        wanted = size
        while wanted != 0:
            if self._pos >= len(self._buffer):
                if self._eof:
                    break
                try:
                    self._buffer, self._pos = next(self._chunks), 0
                except StopIteration:
                    self._eof = True
                    break
                continue
            end = len(self._buffer) if wanted < 0 else min(len(self._buffer), self._pos + wanted)
            parts.append(self._buffer[self._pos:end])
            if wanted > 0:
                wanted -= end - self._pos
            self._pos = end
        return b"".join(parts)


class NullSink:
    """A write-only sink that discards (full verify decrypts without writing plaintext anywhere)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass
