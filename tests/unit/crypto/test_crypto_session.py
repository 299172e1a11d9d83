"""encryption_session: one wrapped file key for many objects, yet every object keeps its own keys and binding."""
from __future__ import annotations

import io
import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as cc


def _seal(session, data, object_id, chunk_size=64):
    out = io.BytesIO()
    info = session.encrypt_stream(io.BytesIO(data), out, object_id=object_id, chunk_size=chunk_size)
    return out.getvalue(), info


def test_rsa_session_wraps_once_and_readers_unwrap_once(rsa_keys):
    session = cc.encryption_session(recipients=[rsa_keys[0].public_key(), rsa_keys[1].public_key()])
    objects = {"obj/%d" % i: os.urandom(100 + i) for i in range(20)}
    sealed = {oid: _seal(session, data, oid)[0] for oid, data in objects.items()}
    headers = [cc.read_header(io.BytesIO(blob)) for blob in sealed.values()]
    assert len({blob[16:48] for blob in sealed.values()}) == 20  # a fresh salt per object
    assert len({h.recipient_key_ids for h in headers}) == 1
    cc.clear_key_cache()
    for oid, blob in sealed.items():
        assert b"".join(cc.decrypt_chunks(io.BytesIO(blob), private_key=rsa_keys[1], expected_object_id=oid)) == objects[oid]
    assert len(cc._UNWRAP_CACHE) == 1  # pylint: disable=protected-access
    with pytest.raises(cc.ContainerError, match="wrong private key"):
        list(cc.decrypt_chunks(io.BytesIO(sealed["obj/0"]), private_key=rsa_keys[2]))


@pytest.mark.parametrize("mode", ["rsa", "aes"])
def test_objects_of_one_session_cannot_be_spliced(mode, rsa_keys):
    secret = {"recipients": [rsa_keys[0].public_key()]} if mode == "rsa" else {"key": os.urandom(32)}
    reader = {"private_key": rsa_keys[0]} if mode == "rsa" else {"key": secret["key"]}
    session = cc.encryption_session(**secret)
    data = os.urandom(64 * 3 + 5)
    one, _info = _seal(session, data, "a")
    two, _info = _seal(session, data, "b")
    hs1 = cc.read_header(io.BytesIO(one)).header_size
    hs2 = cc.read_header(io.BytesIO(two)).header_size
    assert one[hs1:] != two[hs2:]  # same plaintext, same file key: different ciphertext (per-object salt)
    spliced = one[:hs1] + two[hs2:]
    with pytest.raises(cc.ContainerError, match="chunk 0 failed authentication"):
        list(cc.decrypt_chunks(io.BytesIO(spliced), **reader))
    header_swap = two[:hs2] + one[hs1:]
    with pytest.raises(cc.ContainerError):
        list(cc.decrypt_chunks(io.BytesIO(header_swap), **reader))
    for blob, oid in ((one, "a"), (two, "b")):
        assert b"".join(cc.decrypt_chunks(io.BytesIO(blob), expected_object_id=oid, **reader)) == data


def test_session_argument_checks(aes_key):
    with pytest.raises(cc.ContainerError, match="exactly one"):
        cc.encryption_session()
    session = cc.encryption_session(key=aes_key)
    with pytest.raises(cc.ContainerError, match="not both"):
        cc.ContainerWriter(io.BytesIO(), key=aes_key, session=session)
    with pytest.raises(cc.ContainerError, match="chunk_size"):
        session.encryptor(io.BytesIO(), chunk_size=0)
    with pytest.raises(cc.ContainerError, match="Unicode"):
        session.encryptor(io.BytesIO(), object_id="\udcff")
