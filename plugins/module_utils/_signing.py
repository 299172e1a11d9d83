# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: canonical JSON and detached signatures (Ed25519, RSA-PSS-SHA256) with key ids.

A signature is a small dict ``{"alg", "key_id", "sig"}``; ``key_id`` is the
first 32 hex characters of the SHA-256 of the signer's SubjectPublicKeyInfo
DER, so it names one public key exactly. See docs/BACKUP_FORMAT.md
("Signatures and key ids").
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import base64
import binascii
import hashlib
import json
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    # Not the serialization package: it imports the SSH key code, which costs the WAL program (a process per
    # segment) more than all its other imports; its loaders are imported where a PEM is parsed.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import _serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR: t.Optional[str] = None
except ImportError as _exc:  # pragma: no cover - exercised only without the library
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(_exc)

ALG_ED25519 = "ed25519"
ALG_RSA_PSS = "rsa-pss-sha256"
KEY_TYPES = ("rsa4096", "ed25519")
MIN_RSA_BITS = 2048
KEY_ID_HEX = 32


class SignatureError(RansomeyeError):
    """A signature does not verify, names another key, or a signing key is unusable."""


class CanonicalJSONError(RansomeyeError, ValueError):
    """The value cannot be written as canonical JSON (a float, a non-string key, ...)."""


def _pem_loaders() -> t.Any:
    """cryptography's serialization package, imported on first use (see the import above)."""
    from cryptography.hazmat.primitives import serialization
    return serialization


def require_cryptography() -> None:
    """Raise SignatureError when the cryptography library is missing."""
    if not HAS_CRYPTOGRAPHY:
        raise SignatureError(
            "the Python library 'cryptography' is required for signing: %s" % CRYPTOGRAPHY_IMPORT_ERROR
        )


# ---------------------------------------------------------------- canonical JSON


def _canonical_ok(obj: t.Any) -> bool:
    """The check below without building a location string per node (it is only needed to report a failure)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                return False
            if not isinstance(value, (str, bool, int)) and value is not None and not _canonical_ok(value):
                return False
        return True
    if isinstance(obj, (list, tuple)):
        for value in obj:
            if not isinstance(value, (str, bool, int)) and value is not None and not _canonical_ok(value):
                return False
        return True
    return obj is None or isinstance(obj, (str, bool, int))


def _check_canonical(obj: t.Any, where: str) -> None:
    if _canonical_ok(obj):
        return
    _locate_non_canonical(obj, where)


def _locate_non_canonical(obj: t.Any, where: str) -> None:
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, int):
        return
    if isinstance(obj, float):
        raise CanonicalJSONError("canonical JSON allows integers only; %s is the float %r" % (where, obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CanonicalJSONError("canonical JSON object keys must be strings; %s has key %r" % (where, key))
            _locate_non_canonical(value, "%s.%s" % (where, key))
        return
    if isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _locate_non_canonical(value, "%s[%d]" % (where, index))
        return
    raise CanonicalJSONError("canonical JSON cannot hold %s (%s)" % (type(obj).__name__, where))


def canonical_json(obj: t.Any) -> bytes:
    """Deterministic UTF-8 JSON: keys sorted by code point, no whitespace, no ASCII escaping, integers only."""
    _check_canonical(obj, "$")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8", "strict")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("canonical JSON must be valid Unicode (lone surrogate?): %s" % exc)


# ---------------------------------------------------------------- keys


def _public(key: t.Any) -> t.Any:
    return key.public_key() if hasattr(key, "public_key") else key


def key_type_of(key: t.Any) -> str:
    """``ed25519`` or ``rsa<bits>`` for a public or private signing key."""
    require_cryptography()
    pub = _public(key)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(pub, rsa.RSAPublicKey):
        return "rsa%d" % pub.key_size
    raise SignatureError("unsupported signing key type %s (use Ed25519 or RSA)" % type(pub).__name__)


def _check_signing_key(key: t.Any, what: str) -> t.Any:
    pub = _public(key)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return key
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < MIN_RSA_BITS:
            raise SignatureError("%s is a %d-bit RSA key; at least %d bits are required" % (what, pub.key_size, MIN_RSA_BITS))
        return key
    raise SignatureError("%s is not an Ed25519 or RSA key" % what)


def generate_signing_key(key_type: str = "rsa4096") -> t.Any:
    """A new private signing key: ``rsa4096`` (RSA-PSS) or ``ed25519``."""
    require_cryptography()
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise SignatureError("unknown key_type %r (choose one of %s)" % (key_type, ", ".join(KEY_TYPES)))


def private_key_pem(key: t.Any, passphrase: t.Optional[t.Union[str, bytes]] = None) -> bytes:
    """PKCS#8 PEM of a private key, encrypted when ``passphrase`` is given."""
    require_cryptography()
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    enc: t.Any = (
        ser.BestAvailableEncryption(passphrase) if passphrase else ser.NoEncryption()
    )
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc)


def public_key_pem(key: t.Any) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key (or of a private key's public half)."""
    require_cryptography()
    return _public(key).public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError as exc:
        raise SignatureError("cannot read key file %s: %s" % (path, exc.strerror or exc), path=path)
    return data


def load_signing_private_key(path: str, passphrase: t.Optional[t.Union[str, bytes]] = None) -> t.Any:
    """Load an Ed25519 or RSA private key from a PEM file."""
    require_cryptography()
    data = _read(os.fsdecode(path))
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    try:
        key = _pem_loaders().load_pem_private_key(data, password=passphrase or None)
    except TypeError:
        if passphrase:
            raise SignatureError("%s is not encrypted but a passphrase was given" % path, path=path)
        raise SignatureError("%s is encrypted: a passphrase is required" % path, path=path)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("%s is not a PEM private key, or the passphrase is wrong" % path, path=path)
    return _check_signing_key(key, path)


def public_key_from_pem(data: t.Union[str, bytes], what: str = "public key") -> t.Any:
    """Parse a SubjectPublicKeyInfo PEM (Ed25519 or RSA)."""
    require_cryptography()
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        key = _pem_loaders().load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        if b"PRIVATE KEY" in data:
            raise SignatureError("%s holds a private key; a public key is expected" % what)
        raise SignatureError("%s is not a PEM public key" % what)
    return _check_signing_key(key, what)


def load_signing_public_key(path: str) -> t.Any:
    """Load an Ed25519 or RSA public key from a PEM file."""
    return public_key_from_pem(_read(os.fsdecode(path)), os.fsdecode(path))


def key_id(public_key: t.Any) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER, first 32 hex characters (a private key gives its public key's id)."""
    require_cryptography()
    der = _public(public_key).public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:KEY_ID_HEX]


# ---------------------------------------------------------------- sign / verify


def _pss() -> t.Any:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign(private_key: t.Any, data: bytes) -> dict:
    """Detached signature over ``data``: {"alg": "ed25519"|"rsa-pss-sha256", "key_id": ..., "sig": base64}."""
    require_cryptography()
    _check_signing_key(private_key, "signing key")
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        alg = ALG_ED25519
        raw = private_key.sign(bytes(data))
    elif isinstance(private_key, rsa.RSAPrivateKey):
        alg = ALG_RSA_PSS
        raw = private_key.sign(bytes(data), _pss(), hashes.SHA256())
    else:
        raise SignatureError("signing needs a private key, got %s" % type(private_key).__name__)
    return {"alg": alg, "key_id": key_id(private_key), "sig": base64.b64encode(raw).decode("ascii")}


def verify(public_key: t.Any, data: bytes, signature: t.Any) -> None:
    """Raise SignatureError unless ``signature`` is a valid signature of ``data`` by ``public_key``."""
    require_cryptography()
    pub = _public(public_key)
    _check_signing_key(pub, "verification key")
    if not isinstance(signature, dict):
        raise SignatureError("signature must be an object with alg, key_id and sig")
    alg, kid, sig = signature.get("alg"), signature.get("key_id"), signature.get("sig")
    if not isinstance(alg, str) or not isinstance(kid, str) or not isinstance(sig, str):
        raise SignatureError("signature must have string fields alg, key_id and sig")
    if set(signature) != {"alg", "key_id", "sig"}:
        # Extra fields would change the signed file's bytes (and so the hash chain) without touching the signature.
        raise SignatureError("signature has fields other than alg, key_id and sig: %s"
                             % ", ".join(sorted(str(k) for k in set(signature) - {"alg", "key_id", "sig"})))
    expected = key_id(pub)
    if kid != expected:
        raise SignatureError("signature was made by key %s, not by key %s" % (kid, expected), key_id=kid)
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SignatureError("signature by key %s is not valid base64" % kid, key_id=kid)
    if base64.b64encode(raw).decode("ascii") != sig:
        # One signature, one text: non-zero padding bits or other spellings are refused (section 2.2).
        raise SignatureError("signature by key %s is not canonical base64" % kid, key_id=kid)
    ed = isinstance(pub, ed25519.Ed25519PublicKey)
    if alg != (ALG_ED25519 if ed else ALG_RSA_PSS):
        raise SignatureError("key %s is %s but the signature says %r" % (kid, "Ed25519" if ed else "RSA", alg),
                             key_id=kid)
    expected_len = 64 if ed else (pub.key_size + 7) // 8
    if len(raw) != expected_len:
        raise SignatureError("signature by key %s is %d bytes, not %d" % (kid, len(raw), expected_len), key_id=kid)
    try:
        if ed:
            pub.verify(raw, bytes(data))
        else:
            pub.verify(raw, bytes(data), _pss(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("bad signature by key %s: the data or the signature was modified" % kid, key_id=kid)


def verify_trusted(trusted: t.Mapping[str, t.Any], data: bytes, signature: t.Any) -> str:
    """Verify ``signature`` with the trusted key it names; return that key id. SignatureError otherwise."""
    kid = signature.get("key_id") if isinstance(signature, dict) else None
    if not isinstance(kid, str) or kid not in trusted:
        raise SignatureError("signature by untrusted key %s" % kid, key_id=kid)
    verify(trusted[kid], data, signature)
    return kid
