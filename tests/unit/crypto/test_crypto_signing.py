"""Canonical JSON, Ed25519 and RSA-PSS signatures and key ids, cross-checked with the openssl CLI."""
from __future__ import annotations

import base64
import hashlib
import subprocess

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _signing


@pytest.fixture(scope="module")
def keys(rsa4096_key):
    return {"ed25519": _signing.generate_signing_key("ed25519"), "rsa4096": rsa4096_key}


@pytest.mark.parametrize("key_type,alg", [("ed25519", "ed25519"), ("rsa4096", "rsa-pss-sha256")])
def test_sign_and_verify(keys, key_type, alg):
    key = keys[key_type]
    data = _signing.canonical_json({"seq": 3, "objects": ["a", "b"]})
    sig = _signing.sign(key, data)
    assert set(sig) == {"alg", "key_id", "sig"}
    assert sig["alg"] == alg and sig["key_id"] == _signing.key_id(key.public_key())
    _signing.verify(key.public_key(), data, sig)
    _signing.verify(key, data, sig)  # a private key verifies with its public half
    assert _signing.key_type_of(key) == key_type


@pytest.mark.parametrize("key_type", ["ed25519", "rsa4096"])
def test_modified_data_signature_or_key_is_rejected(keys, key_type):
    key = keys[key_type]
    other = _signing.generate_signing_key("ed25519")
    data = b'{"seq":1}'
    sig = _signing.sign(key, data)
    with pytest.raises(_signing.SignatureError, match="bad signature"):
        _signing.verify(key.public_key(), b'{"seq":2}', sig)
    raw = bytearray(base64.b64decode(sig["sig"]))
    raw[len(raw) // 2] ^= 1
    with pytest.raises(_signing.SignatureError, match="bad signature"):
        _signing.verify(key.public_key(), data, dict(sig, sig=base64.b64encode(bytes(raw)).decode()))
    with pytest.raises(_signing.SignatureError, match="not by key"):
        _signing.verify(other.public_key(), data, sig)
    # A signature relabelled with the other key's id still fails.
    with pytest.raises(_signing.SignatureError, match="bad signature|says"):
        _signing.verify(other.public_key(), data, dict(sig, key_id=_signing.key_id(other)))
    with pytest.raises(_signing.SignatureError, match="base64"):
        _signing.verify(key.public_key(), data, dict(sig, sig="***"))
    with pytest.raises(_signing.SignatureError, match="says"):
        _signing.verify(key.public_key(), data, dict(sig, alg="ed25519" if key_type == "rsa4096" else "rsa-pss-sha256"))
    for bad in (None, "sig", {"alg": "ed25519"}, {"alg": 1, "key_id": "x", "sig": "y"}):
        with pytest.raises(_signing.SignatureError):
            _signing.verify(key.public_key(), data, bad)


def test_verify_trusted_picks_the_named_key(keys):
    trusted = {_signing.key_id(k): k.public_key() for k in keys.values()}
    sig = _signing.sign(keys["ed25519"], b"m")
    assert _signing.verify_trusted(trusted, b"m", sig) == _signing.key_id(keys["ed25519"])
    stranger = _signing.generate_signing_key("ed25519")
    with pytest.raises(_signing.SignatureError, match="untrusted key"):
        _signing.verify_trusted(trusted, b"m", _signing.sign(stranger, b"m"))


@pytest.mark.parametrize("key_type", ["ed25519", "rsa4096"])
def test_key_id_is_stable_and_matches_openssl(tmp_path, keys, key_type):
    key = keys[key_type]
    pub_path = tmp_path / "k.pub"
    pub_path.write_bytes(_signing.public_key_pem(key))
    key_path = tmp_path / "k.key"
    key_path.write_bytes(_signing.private_key_pem(key, passphrase="pw"))
    expected = _signing.key_id(key)
    assert len(expected) == 32
    assert _signing.key_id(_signing.load_signing_public_key(str(pub_path))) == expected
    assert _signing.key_id(_signing.load_signing_private_key(str(key_path), passphrase="pw")) == expected
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub_path), "-outform", "DER"], capture_output=True, check=True
    ).stdout
    assert hashlib.sha256(der).hexdigest()[:32] == expected


@pytest.mark.parametrize("key_type", ["ed25519", "rsa4096"])
def test_signatures_verify_with_openssl(tmp_path, keys, key_type):
    key = keys[key_type]
    data = _signing.canonical_json({"manifest": "x", "seq": 9})
    sig = _signing.sign(key, data)
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(base64.b64decode(sig["sig"]))
    (tmp_path / "k.pub").write_bytes(_signing.public_key_pem(key))
    if key_type == "ed25519":
        cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "k.pub", "-rawin", "-in", "data", "-sigfile", "sig"]
    else:
        cmd = ["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
               "-verify", "k.pub", "-signature", "sig", "data"]
    ok = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "data").write_bytes(data + b" ")
    bad = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_key_loading_errors_are_clear(tmp_path, keys):
    enc = tmp_path / "enc.key"
    enc.write_bytes(_signing.private_key_pem(keys["ed25519"], passphrase=b"pw"))
    plain = tmp_path / "plain.key"
    plain.write_bytes(_signing.private_key_pem(keys["ed25519"]))
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    with pytest.raises(_signing.SignatureError, match="passphrase is required"):
        _signing.load_signing_private_key(str(enc))
    with pytest.raises(_signing.SignatureError, match="passphrase is wrong"):
        _signing.load_signing_private_key(str(enc), passphrase="bad")
    with pytest.raises(_signing.SignatureError, match="not encrypted"):
        _signing.load_signing_private_key(str(plain), passphrase="pw")
    with pytest.raises(_signing.SignatureError, match="not a PEM private key"):
        _signing.load_signing_private_key(str(junk))
    with pytest.raises(_signing.SignatureError, match="holds a private key"):
        _signing.load_signing_public_key(str(plain))
    with pytest.raises(_signing.SignatureError, match="cannot read key file"):
        _signing.load_signing_public_key(str(tmp_path / "missing.pub"))
    with pytest.raises(_signing.SignatureError, match="unknown key_type"):
        _signing.generate_signing_key("dsa")
    # The passphrase never appears in an error message.
    with pytest.raises(_signing.SignatureError) as err:
        _signing.load_signing_private_key(str(enc), passphrase="Sup3r-Secret")
    assert "Sup3r-Secret" not in err.value.msg


def test_canonical_json_is_deterministic():
    one = {"b": [1, {"z": None, "a": True}], "a": "é€\u2028", "c": {"y": -5, "x": 10**30}}
    two = {"c": {"x": 10**30, "y": -5}, "a": "é€\u2028", "b": [1, {"a": True, "z": None}]}
    expected = '{"a":"é€\u2028","b":[1,{"a":true,"z":null}],"c":{"x":%d,"y":-5}}' % 10**30
    assert _signing.canonical_json(one) == _signing.canonical_json(two) == expected.encode("utf-8")
    assert _signing.canonical_json({"\u00e9": 1, "e": 2, "Z": 3}) == '{"Z":3,"e":2,"é":1}'.encode("utf-8")
    assert _signing.canonical_json(("t", 1)) == b'["t",1]'
    assert _signing.canonical_json('quote"back\\slash\n') == b'"quote\\"back\\\\slash\\n"'


@pytest.mark.parametrize("bad", [1.5, {"a": 0.0}, [float("nan")], {1: "x"}, {"s": {1, 2}}, b"bytes", "\ud800"])
def test_canonical_json_rejects_what_it_cannot_represent(bad):
    with pytest.raises(_signing.CanonicalJSONError):
        _signing.canonical_json(bad)
