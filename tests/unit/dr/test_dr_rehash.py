"""The rehash read of the v2 backup (engine._hash_fd): two reused buffers, the hashing of one block on a worker
thread while the next is read; the digest must be the file's SHA-256 whatever the block boundaries."""
from __future__ import annotations

import concurrent.futures
import hashlib
import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._backup import engine, fmt


@pytest.mark.parametrize("size", [0, 1, fmt.CHUNK - 1, fmt.CHUNK, 2 * fmt.CHUNK + 12345])
def test_hash_fd_matches_sha256_with_and_without_a_worker(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    buffers = (bytearray(fmt.CHUNK), bytearray(fmt.CHUNK))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for executor in (None, pool):
            fd = os.open(str(path), os.O_RDONLY)
            try:
                assert engine._hash_fd(fd, buffers, executor) == (hashlib.sha256(data).hexdigest(), size)
            finally:
                os.close(fd)
