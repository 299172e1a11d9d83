"""docs/BACKUP_FORMAT.md is enough to write a reader: an independent reader written from the spec opens the
document's test vector, and the real implementation reproduces the vector byte for byte."""
from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import struct

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as cc
from tests.harness.paths import REPO

DOC = os.path.join(REPO, "docs", "BACKUP_FORMAT.md")


@pytest.fixture(scope="module")
def vector():
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    block = re.search(r"<!-- test-vector:begin -->\n```\n(.*?)```\n<!-- test-vector:end -->", text, re.S).group(1)
    fields = {}
    container = []
    in_container = False
    for line in block.splitlines():
        if line.startswith("container ("):
            in_container = True
            continue
        if in_container and re.fullmatch(r"[0-9a-f ]+", line):
            container.append(line.replace(" ", ""))
            continue
        in_container = False
        name, _sep, value = re.split(r"(\s{2,})", line, maxsplit=1)
        fields[name] = value.strip()
    fields["container"] = bytes.fromhex("".join(container))
    fields["plaintext"] = re.match(r'"(.*)"', fields["plaintext"]).group(1).replace("\\n", "\n").encode()
    return fields


def _hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def spec_reader(blob: bytes, key: bytes = b"", private_key=None) -> bytes:
    """A reader written from docs/BACKUP_FORMAT.md section 1, sharing no code with the implementation."""
    assert blob[:8] == b"RYECNTR\n" and blob[8:10] == b"\x01\x01" and blob[11] == 0
    mode = blob[10]
    (chunk_size,) = struct.unpack(">I", blob[12:16])
    salt = blob[16:48]
    (oid_len,) = struct.unpack(">H", blob[48:50])
    pos = 50 + oid_len
    (count,) = struct.unpack(">H", blob[pos:pos + 2])
    pos += 2
    stanzas = []
    for _index in range(count):
        key_id = blob[pos:pos + 16]
        (wlen,) = struct.unpack(">H", blob[pos + 16:pos + 18])
        stanzas.append((key_id, blob[pos + 18:pos + 18 + wlen]))
        pos += 18 + wlen
    header, mac = blob[:pos], blob[pos:pos + 32]
    if mode == 2:
        [(key_id, wrapped)] = stanzas
        assert key_id == hashlib.sha256(b"ransomeye.ops/v1 key-file id\x00" + key).digest()[:16]
        file_key = AESGCM(key).decrypt(wrapped[:12], wrapped[12:], b"ransomeye.ops/v1 key-file wrap" + salt)
    else:
        assert mode == 1
        spki = private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        [wrapped] = [w for kid, w in stanzas if kid == hashlib.sha256(spki).digest()[:16]]
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"ransomeye.ops/v1 file key")
        file_key = private_key.decrypt(wrapped, oaep)
    assert hmac.compare_digest(hmac.new(_hkdf(file_key, salt, b"ransomeye.ops/v1 header"), header, hashlib.sha256).digest(), mac)
    aead = AESGCM(_hkdf(file_key, salt, b"ransomeye.ops/v1 payload"))
    aad = hashlib.sha256(header + mac).digest()
    payload = blob[pos + 32:]
    step = chunk_size + 16
    out = []
    index = 0
    while True:
        piece = payload[index * step:(index + 1) * step]
        last = len(payload) <= (index + 1) * step
        out.append(aead.decrypt(index.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), piece, aad))
        if last:
            return b"".join(out)
        index += 1


def test_independent_reader_opens_the_documented_vector(vector):
    key = bytes.fromhex(vector["key file key"])
    blob = vector["container"]
    assert hashlib.sha256(blob).hexdigest() == vector["ciphertext sha256"]
    plain = spec_reader(blob, key)
    assert plain == vector["plaintext"]
    assert hashlib.sha256(plain).hexdigest() == vector["plaintext sha256"]
    assert _hkdf(bytes.fromhex(vector["file key"]), bytes.fromhex(vector["salt"]), b"ransomeye.ops/v1 header").hex() == vector["k_header"]


def test_implementation_decrypts_and_reproduces_the_vector(vector):
    key = bytes.fromhex(vector["key file key"])
    blob = vector["container"]
    header = cc.read_header(io.BytesIO(blob))
    assert header.object_id == vector["object id"] and header.chunk_size == int(vector["chunk size"])
    assert header.key_file_id == vector["key file id"] == cc.key_file_id(key)
    back = io.BytesIO()
    info = cc.decrypt_stream(io.BytesIO(blob), back, key=key, expected_object_id="example/1")
    assert back.getvalue() == vector["plaintext"]
    assert info.ciphertext_sha256 == vector["ciphertext sha256"] and info.plaintext_sha256 == vector["plaintext sha256"]

    out = io.BytesIO()
    writer = cc.ContainerWriter(
        out,
        key=key,
        object_id=vector["object id"],
        chunk_size=int(vector["chunk size"]),
        _file_key=bytes.fromhex(vector["file key"]),
        _salt=bytes.fromhex(vector["salt"]),
        _wrap_nonce=bytes.fromhex(vector["wrap nonce"]),
    )
    writer.write(vector["plaintext"])
    writer.close()
    assert out.getvalue() == blob


def test_independent_reader_opens_a_fresh_multi_chunk_container():
    key = os.urandom(32)
    data = os.urandom(5 * 1000 + 3)
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(data), out, key=key, object_id="x", chunk_size=1000)
    assert spec_reader(out.getvalue(), key) == data


def test_independent_reader_opens_an_rsa_container_for_its_second_recipient(rsa_keys):
    data = os.urandom(3000)
    out = io.BytesIO()
    cc.encrypt_stream(io.BytesIO(data), out, recipients=[rsa_keys[0].public_key(), rsa_keys[1].public_key()], chunk_size=1024)
    assert spec_reader(out.getvalue(), private_key=rsa_keys[1]) == data
