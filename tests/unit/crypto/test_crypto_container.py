"""Round trips of the streaming container, its key files, header and API edges."""
from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as cc
from ansible_collections.ransomeye.ops.plugins.module_utils import _signing
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

CS = cc.CHUNK_SIZE


def _encrypt(data: bytes, **kwargs) -> "tuple[bytes, cc.ContainerInfo]":
    out = io.BytesIO()
    info = cc.encrypt_stream(io.BytesIO(data), out, **kwargs)
    return out.getvalue(), info


def _expected_size(plain: int, header: int, chunk: int = CS) -> int:
    chunks = max(1, -(-plain // chunk))
    return header + plain + chunks * cc.TAG_SIZE


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS + 7], ids=lambda n: "%d-bytes" % n)
def test_aes_round_trip_sizes(size, aes_key):
    data = os.urandom(size)
    blob, info = _encrypt(data, key=aes_key, object_id="obj-%d" % size)
    header = cc.read_header(io.BytesIO(blob))
    assert len(blob) == _expected_size(size, header.header_size)
    assert info == cc.ContainerInfo(hashlib.sha256(data).hexdigest(), size, hashlib.sha256(blob).hexdigest(), len(blob))

    back = io.BytesIO()
    info2 = cc.decrypt_stream(io.BytesIO(blob), back, key=aes_key, expected_object_id="obj-%d" % size)
    assert back.getvalue() == data
    assert info2 == info

    chunks = list(cc.decrypt_chunks(io.BytesIO(blob), key=aes_key))
    assert b"".join(chunks) == data
    assert len(chunks) == max(1, -(-size // CS))
    assert all(len(c) == CS for c in chunks[:-1])


def test_rsa_two_recipients_each_decrypts_and_third_is_refused(rsa_keys):
    one, two, stranger = rsa_keys
    data = os.urandom(2 * CS + 123)
    blob, info = _encrypt(data, recipients=[one.public_key(), two.public_key()], object_id="db/1")
    for priv in (one, two):
        back = io.BytesIO()
        assert cc.decrypt_stream(io.BytesIO(blob), back, private_key=priv) == info
        assert back.getvalue() == data
    with pytest.raises(cc.ContainerError, match="wrong private key") as err:
        list(cc.decrypt_chunks(io.BytesIO(blob), private_key=stranger))
    assert _signing.key_id(one) in err.value.msg and _signing.key_id(two) in err.value.msg


def test_recipients_and_private_key_may_be_paths(tmp_path, rsa_keys):
    priv = rsa_keys[0]
    pub_path = tmp_path / "r.pub"
    key_path = tmp_path / "r.key"
    pub_path.write_bytes(_signing.public_key_pem(priv))
    key_path.write_bytes(_signing.private_key_pem(priv, passphrase="s3cret"))
    blob, _info = _encrypt(b"payload", recipients=[str(pub_path)])
    loaded = cc.load_private_key(str(key_path), passphrase="s3cret")
    assert b"".join(cc.decrypt_chunks(io.BytesIO(blob), private_key=loaded)) == b"payload"
    with pytest.raises(cc.ContainerError, match="passphrase"):
        cc.load_private_key(str(key_path))
    with pytest.raises(cc.ContainerError, match="passphrase is wrong"):
        cc.load_private_key(str(key_path), passphrase="nope")


def test_header_is_readable_without_a_secret(rsa_keys, aes_key):
    pubs = [k.public_key() for k in rsa_keys[:2]]
    blob, _info = _encrypt(b"x" * 10, recipients=pubs, object_id="artifacts/ab/cd")
    header = cc.read_header(io.BytesIO(blob))
    assert header.object_id == "artifacts/ab/cd"
    assert header.mode == "rsa" and header.chunk_size == CS and header.version == 1
    assert header.recipient_key_ids == tuple(_signing.key_id(p) for p in pubs)
    assert header.key_file_id is None

    blob, _info = _encrypt(b"", key=aes_key, object_id="")
    header = cc.read_header(io.BytesIO(blob))
    assert header.mode == "aes" and header.key_file_id == cc.key_file_id(aes_key)
    assert header.recipient_key_ids == ()


def test_duplicate_recipients_get_one_stanza(rsa_keys):
    pub = rsa_keys[0].public_key()
    blob, _info = _encrypt(b"a", recipients=[pub, rsa_keys[0], pub])
    assert len(cc.read_header(io.BytesIO(blob)).recipient_key_ids) == 1


def test_writer_accepts_any_write_pattern_and_copies_reused_buffers(aes_key):
    chunk = 64
    out = io.BytesIO()
    expected = bytearray()
    reused = bytearray(50)
    with cc.encryptor(out, key=aes_key, object_id="w", chunk_size=chunk) as writer:
        for index in range(1, 40):
            piece = bytes([index]) * (index * 7 % 150)
            writer.write(piece)
            expected += piece
            reused[:] = bytes([200 + index % 50]) * 50
            writer.write(reused)          # the caller then overwrites the same buffer
            expected += reused
            writer.write(memoryview(b"mv"))
            expected += b"mv"
        assert writer.tell() == len(expected)
    assert writer.info.plaintext_sha256 == hashlib.sha256(expected).hexdigest()
    chunks = list(cc.decrypt_chunks(io.BytesIO(out.getvalue()), key=aes_key))
    assert b"".join(chunks) == bytes(expected)
    assert [len(c) for c in chunks[:-1]] == [chunk] * (len(chunks) - 1)


def test_close_is_idempotent_and_write_after_close_fails(aes_key):
    out = io.BytesIO()
    writer = cc.encryptor(out, key=aes_key)
    writer.write(b"abc")
    first = writer.close()
    assert writer.close() == first and writer.closed
    with pytest.raises(cc.ContainerError, match="closed"):
        writer.write(b"more")


def test_failed_producer_never_yields_a_valid_container(aes_key):
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with cc.encryptor(out, key=aes_key, chunk_size=16) as writer:
            writer.write(b"p" * 100)
            raise RuntimeError("pg_dump died")
    with pytest.raises(cc.ContainerError, match="truncated"):
        list(cc.decrypt_chunks(io.BytesIO(out.getvalue()), key=aes_key))
    with pytest.raises(cc.ContainerError, match="aborted"):
        writer.close()


def test_expected_object_id_mismatch(aes_key):
    blob, _info = _encrypt(b"data", key=aes_key, object_id="config/7")
    with pytest.raises(cc.ContainerError, match="object id mismatch"):
        list(cc.decrypt_chunks(io.BytesIO(blob), key=aes_key, expected_object_id="config/8"))


def test_exactly_one_secret_and_matching_mode(rsa_keys, aes_key):
    pub = rsa_keys[0].public_key()
    with pytest.raises(cc.ContainerError, match="exactly one"):
        cc.encryptor(io.BytesIO(), recipients=[pub], key=aes_key)
    with pytest.raises(cc.ContainerError, match="exactly one"):
        cc.encryptor(io.BytesIO())
    with pytest.raises(cc.ContainerError, match="empty"):
        cc.encryptor(io.BytesIO(), recipients=[])
    with pytest.raises(cc.ContainerError, match="32 bytes"):
        cc.encryptor(io.BytesIO(), key=b"short")
    rsa_blob, _info = _encrypt(b"x", recipients=[pub])
    with pytest.raises(cc.ContainerError, match="private key is required"):
        list(cc.decrypt_chunks(io.BytesIO(rsa_blob), key=aes_key))
    aes_blob, _info = _encrypt(b"x", key=aes_key)
    with pytest.raises(cc.ContainerError, match="key is required"):
        list(cc.decrypt_chunks(io.BytesIO(aes_blob), private_key=rsa_keys[0]))
    with pytest.raises(cc.ContainerError, match="exactly one"):
        list(cc.decrypt_chunks(io.BytesIO(aes_blob)))


def test_key_file_formats(tmp_path):
    key = os.urandom(32)
    forms = {
        "raw": key,
        "raw-newline": key + b"\n",
        "hex": key.hex().encode(),
        "hex-newline": key.hex().upper().encode() + b"\n",
        "b64": base64.b64encode(key),
        "b64-crlf": base64.b64encode(key) + b"\r\n",
    }
    for name, data in forms.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert cc.load_key_file(str(path)) == key, name


@pytest.mark.parametrize("data", [b"", b"short\n", b"0" * 63, b"z" * 64, base64.b64encode(b"k" * 31), b"k" * 100])
def test_bad_key_files_fail_clearly(tmp_path, data):
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    with pytest.raises(cc.ContainerError) as err:
        cc.load_key_file(str(path))
    assert str(path) in err.value.msg and "256-bit key" in err.value.msg
    assert isinstance(err.value, RansomeyeError)


def test_missing_key_file_fails_clearly(tmp_path):
    with pytest.raises(cc.ContainerError, match="cannot read key file .*missing"):
        cc.load_key_file(str(tmp_path / "missing"))


def test_recipient_keys_must_be_rsa_public_keys_of_2048_bits_or_more(tmp_path, rsa_keys):
    priv_path = tmp_path / "priv.pem"
    priv_path.write_bytes(_signing.private_key_pem(rsa_keys[0]))
    with pytest.raises(cc.ContainerError, match="holds a private key"):
        cc.load_public_key(str(priv_path))
    ed_path = tmp_path / "ed.pub"
    ed_path.write_bytes(_signing.public_key_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(cc.ContainerError, match="not an RSA key"):
        cc.load_public_key(str(ed_path))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_path = tmp_path / "small.pub"
    small_path.write_bytes(small.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(cc.ContainerError, match="1024-bit"):
        cc.load_public_key(str(small_path))
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(cc.ContainerError, match="not a PEM public key"):
        cc.load_public_key(str(junk))


def test_recipient_key_id_equals_signing_key_id(rsa_keys):
    assert cc.public_key_id(rsa_keys[0]) == _signing.key_id(rsa_keys[0].public_key())


def test_pipe_source_with_short_reads(aes_key):
    data = os.urandom(5000)
    blob, info = _encrypt(data, key=aes_key, chunk_size=100)

    class Trickle(io.RawIOBase):
        """Returns at most 7 bytes per read, like a slow pipe."""

        def __init__(self, payload):
            self._src = io.BytesIO(payload)

        def readable(self):
            return True

        def readinto(self, buf):
            piece = self._src.read(min(7, len(buf)))
            buf[: len(piece)] = piece
            return len(piece)

    back = io.BytesIO()
    assert cc.decrypt_stream(Trickle(blob), back, key=aes_key) == info
    assert back.getvalue() == data


def test_tarfile_streams_straight_into_a_container(tmp_path, aes_key):
    import tarfile

    src = tmp_path / "conf"
    src.mkdir()
    (src / "app.env").write_text("DB_PASSWORD=x\n")
    (src / "big.bin").write_bytes(os.urandom(3 * CS // 2))
    os.symlink("app.env", src / "link")
    sealed = tmp_path / "config.rye"
    with open(sealed, "wb") as dst:
        with cc.encryptor(dst, key=aes_key, object_id="config") as writer:
            with tarfile.open(fileobj=writer, mode="w|") as tar:
                tar.add(str(src), arcname="conf")
    assert writer.info.ciphertext_size == os.path.getsize(sealed)
    plain = io.BytesIO()
    with open(sealed, "rb") as handle:
        cc.decrypt_stream(handle, plain, key=aes_key, expected_object_id="config")
    plain.seek(0)
    with tarfile.open(fileobj=plain, mode="r|") as tar:
        members = {m.name: m for m in tar}
    assert members["conf/link"].issym() and members["conf/link"].linkname == "app.env"
    assert members["conf/big.bin"].size == 3 * CS // 2


def test_a_failing_destination_aborts_the_writer(aes_key):
    class FullDisk(io.BytesIO):
        def write(self, data):
            if self.tell() > 200:
                raise OSError(28, "No space left on device")
            return super().write(data)

    dst = FullDisk()
    writer = cc.encryptor(dst, key=aes_key, chunk_size=64)
    with pytest.raises(OSError):
        for _round in range(20):
            writer.write(b"z" * 64)
    assert writer.closed
    with pytest.raises(cc.ContainerError, match="closed or aborted"):
        writer.write(b"more")
    with pytest.raises(cc.ContainerError, match="aborted"):
        writer.close()
    with pytest.raises(cc.ContainerError):
        list(cc.decrypt_chunks(io.BytesIO(dst.getvalue()), key=aes_key))


def test_decrypt_without_ciphertext_hash_still_authenticates(aes_key):
    data = os.urandom(CS + 10)
    blob, info = _encrypt(data, key=aes_key)
    fast = cc.decrypt_stream(io.BytesIO(blob), None, key=aes_key, hash_ciphertext=False)
    assert fast == info._replace(ciphertext_sha256="")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(cc.ContainerError, match="failed authentication"):
        cc.decrypt_stream(io.BytesIO(bytes(tampered)), None, key=aes_key, hash_ciphertext=False)
