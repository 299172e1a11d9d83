"""Every modification of a container fails with ContainerError, and no unauthenticated plaintext escapes."""
from __future__ import annotations

import io
import os
import random

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as cc

CHUNK = 64
PLAIN = bytes(random.Random(7).getrandbits(8) for _index in range(3 * CHUNK + 9))  # 4 chunks: 64, 64, 64, 9
CHUNKS = [PLAIN[i:i + CHUNK] for i in range(0, len(PLAIN), CHUNK)]


def _make(**secret) -> "tuple[bytes, int]":
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(PLAIN), out, object_id="tamper/1", chunk_size=CHUNK, **secret)
    blob = out.getvalue()
    return blob, cc.read_header(io.BytesIO(blob)).header_size


def _boundaries(header_size: int) -> "list[int]":
    """Offsets where each encrypted chunk starts, plus the end."""
    offsets = [header_size]
    for piece in CHUNKS:
        offsets.append(offsets[-1] + len(piece) + cc.TAG_SIZE)
    return offsets


def _decrypt_collect(blob: bytes, **secret) -> "tuple[list[bytes], BaseException | None]":
    released = []
    try:
        for chunk in cc.decrypt_chunks(io.BytesIO(blob), expected_object_id="tamper/1", **secret):
            released.append(chunk)
    except cc.ContainerError as exc:
        return released, exc
    return released, None


def _assert_fails_releasing_only_authentic(blob: bytes, what: str, **secret) -> cc.ContainerError:
    released, error = _decrypt_collect(blob, **secret)
    assert error is not None, "%s was not detected" % what
    assert error.msg, what
    # Whatever was released before the failure is a prefix of the genuine chunks.
    assert released == CHUNKS[: len(released)], "%s released unauthenticated plaintext" % what
    return error


@pytest.fixture(scope="module")
def aes_secret():
    return {"key": os.urandom(32)}


@pytest.fixture(scope="module")
def rsa_secret(rsa_keys):
    return rsa_keys[0]


def test_container_layout_is_as_specified(aes_secret):
    blob, header_size = _make(**aes_secret)
    assert len(blob) == _boundaries(header_size)[-1]
    released, error = _decrypt_collect(blob, **aes_secret)
    assert error is None and released == CHUNKS


def test_flipping_any_byte_fails_aes_mode(aes_secret):
    blob, _hs = _make(**aes_secret)
    for offset in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[offset] ^= mask
            _assert_fails_releasing_only_authentic(bytes(tampered), "flip 0x%02x at %d" % (mask, offset), **aes_secret)


def test_flipping_any_byte_fails_rsa_mode(rsa_keys):
    out = io.BytesIO()
    cc.encrypt_stream(
        io.BytesIO(PLAIN), out, object_id="tamper/1", chunk_size=CHUNK, recipients=[rsa_keys[0].public_key(), rsa_keys[1].public_key()]
    )
    blob = out.getvalue()
    for offset in range(len(blob)):
        tampered = bytearray(blob)
        tampered[offset] ^= 0xFF
        _assert_fails_releasing_only_authentic(bytes(tampered), "flip at %d" % offset, private_key=rsa_keys[1])


def test_truncation_at_every_chunk_boundary_and_every_offset(aes_secret):
    blob, header_size = _make(**aes_secret)
    boundaries = _boundaries(header_size)
    for cut in boundaries[:-1]:
        error = _assert_fails_releasing_only_authentic(blob[:cut], "cut at boundary %d" % cut, **aes_secret)
        if cut > header_size:
            assert "truncated" in error.msg
    for cut in range(len(blob)):
        _assert_fails_releasing_only_authentic(blob[:cut], "cut at %d" % cut, **aes_secret)
    rng = random.Random(11)
    for _round in range(50):
        cut = rng.randrange(len(blob))
        _assert_fails_releasing_only_authentic(blob[:cut], "random cut at %d" % cut, **aes_secret)


def test_swapped_dropped_and_duplicated_chunks_fail(aes_secret):
    blob, header_size = _make(**aes_secret)
    b = _boundaries(header_size)
    head = blob[: b[0]]
    enc = [blob[b[i]:b[i + 1]] for i in range(len(CHUNKS))]
    variants = {
        "swap 0 and 1": [enc[1], enc[0], enc[2], enc[3]],
        "swap 1 and 2": [enc[0], enc[2], enc[1], enc[3]],
        "drop 1": [enc[0], enc[2], enc[3]],
        "duplicate 1": [enc[0], enc[1], enc[1], enc[2], enc[3]],
        "final moved first": [enc[3], enc[0], enc[1], enc[2]],
        "final only": [enc[3]],
    }
    for what, parts in variants.items():
        _assert_fails_releasing_only_authentic(head + b"".join(parts), what, **aes_secret)


def test_appended_bytes_fail(aes_secret):
    blob, header_size = _make(**aes_secret)
    last = blob[_boundaries(header_size)[-2]:]
    for extra in (b"\x00", os.urandom(16), last, blob):
        error = _assert_fails_releasing_only_authentic(blob + extra, "append %d bytes" % len(extra), **aes_secret)
        assert "trailing" in error.msg or "failed authentication" in error.msg


def test_trailing_data_after_full_final_chunk_is_named(aes_secret):
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(b"q" * (2 * CHUNK)), out, chunk_size=CHUNK, **aes_secret)
    with pytest.raises(cc.ContainerError, match="trailing data"):
        list(cc.decrypt_chunks(io.BytesIO(out.getvalue() + b"\x00"), **aes_secret))


def test_empty_final_chunk_is_rejected_unless_only_chunk(aes_secret):
    out = io.BytesIO()
    writer = cc.encryptor(out, chunk_size=CHUNK, **aes_secret)
    writer.write(b"e" * (2 * CHUNK))
    # Force the writer to emit its pending full chunk as non-final, then an empty final chunk.
    writer._emit(writer._pending, last=False)  # pylint: disable=protected-access
    writer._pending = b""  # pylint: disable=protected-access
    writer.close()
    released = []
    with pytest.raises(cc.ContainerError, match="empty final chunk"):
        for piece in cc.decrypt_chunks(io.BytesIO(out.getvalue()), **aes_secret):
            released.append(piece)
    assert released == [b"e" * CHUNK, b"e" * CHUNK]
    empty = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(b""), empty, **aes_secret)
    assert list(cc.decrypt_chunks(io.BytesIO(empty.getvalue()), **aes_secret)) == [b""]


def test_missing_final_chunk_is_rejected(aes_secret):
    out = io.BytesIO()
    writer = cc.encryptor(out, chunk_size=CHUNK, object_id="tamper/1", **aes_secret)
    writer.write(PLAIN)
    writer.abort()
    released, error = _decrypt_collect(out.getvalue(), **aes_secret)
    assert error is not None and "truncated" in error.msg
    assert released == CHUNKS[: len(released)]


def test_wrong_key_file_and_wrong_private_key(aes_secret, rsa_keys):
    blob, _hs = _make(**aes_secret)
    released, error = _decrypt_collect(blob, key=os.urandom(32))
    assert released == [] and "wrong key file" in error.msg
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(PLAIN), out, object_id="tamper/1", recipients=[rsa_keys[0].public_key()])
    released, error = _decrypt_collect(out.getvalue(), private_key=rsa_keys[2])
    assert released == [] and "wrong private key" in error.msg


def test_a_stanza_relabelled_for_another_key_fails(rsa_keys):
    """Rewriting the key id of a stanza so another private key tries it: the unwrap or the header MAC fails."""
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(PLAIN), out, recipients=[rsa_keys[0].public_key()])
    blob = out.getvalue()
    old = bytes.fromhex(cc.public_key_id(rsa_keys[0]))
    new = bytes.fromhex(cc.public_key_id(rsa_keys[1]))
    released, error = _decrypt_collect(blob.replace(old, new), private_key=rsa_keys[1])
    assert released == [] and error is not None and "unwrap" in error.msg


def test_no_plaintext_before_its_chunk_authenticates(aes_secret):
    blob, header_size = _make(**aes_secret)
    b = _boundaries(header_size)
    tampered = bytearray(blob)
    tampered[b[2] - 1] ^= 0x01  # last byte (tag) of chunk 2 (index 1)
    stream = cc.decrypt_chunks(io.BytesIO(bytes(tampered)), **aes_secret)
    assert next(stream) == CHUNKS[0]  # chunk 1 authenticated on its own
    with pytest.raises(cc.ContainerError, match="chunk 1 failed authentication"):
        next(stream)

    tampered = bytearray(blob)
    tampered[b[0] + 3] ^= 0x01  # inside chunk 1's ciphertext
    stream = cc.decrypt_chunks(io.BytesIO(bytes(tampered)), **aes_secret)
    with pytest.raises(cc.ContainerError, match="chunk 0 failed authentication"):
        next(stream)

    tampered = bytearray(blob)
    tampered[20] ^= 0x01  # inside the salt: the header MAC fails before any chunk
    with pytest.raises(cc.ContainerError, match="header authentication failed|unwrap"):
        next(cc.decrypt_chunks(io.BytesIO(bytes(tampered)), **aes_secret))


def test_chunks_spliced_from_another_object_fail(aes_secret):
    one, header_size = _make(**aes_secret)
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(PLAIN), out, object_id="tamper/2", chunk_size=CHUNK, **aes_secret)
    two = out.getvalue()
    spliced = one[:header_size] + two[header_size:]
    _assert_fails_releasing_only_authentic(spliced, "chunks from another object", **aes_secret)
    released, error = _decrypt_collect(two, **aes_secret)
    assert released == [] and "object id mismatch" in error.msg


def test_garbage_and_foreign_files_fail_clearly(aes_secret):
    for blob in (b"", b"RYECNT", b"PK\x03\x04" + os.urandom(200), cc.MAGIC + b"\x02" + os.urandom(100)):
        released, error = _decrypt_collect(blob, **aes_secret)
        assert released == [] and error is not None
        with pytest.raises(cc.ContainerError):
            cc.read_header(io.BytesIO(blob))
