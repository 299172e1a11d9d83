"""Fixtures of the point-in-time recovery tests: keys the postgres OS user can read, a cluster that archives."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.harness.pitrsite import Site
from tests.harness.pgpython import pg_python

PEM = serialization.Encoding.PEM


def _write(path: str, data: bytes, mode: int, owner: str = "root") -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@pytest.fixture(scope="session")
def pitr_keys():
    """Recipient RSA pair (private half root-only), a WAL signing key the server can read, an AES key file."""
    base = tempfile.mkdtemp(prefix="re-pitr-keys-", dir="/tmp")
    os.chmod(base, 0o755)
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = ed25519.Ed25519PrivateKey.generate()
    rogue = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = serialization.PrivateFormat.PKCS8
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    none = serialization.NoEncryption()
    keys = {
        "dir": base,
        "recipient_key": _write(os.path.join(base, "recipient.key"), recipient.private_bytes(PEM, pkcs8, none), 0o600),
        "recipient_pub": _write(os.path.join(base, "recipient.pub"),
                                recipient.public_key().public_bytes(PEM, spki), 0o644),
        "signing_key": _write(os.path.join(base, "wal-signing.key"), signer.private_bytes(PEM, pkcs8, none), 0o600,
                              "postgres"),
        "signing_pub": _write(os.path.join(base, "wal-signing.pub"), signer.public_key().public_bytes(PEM, spki),
                              0o644),
        "rogue_key": _write(os.path.join(base, "rogue.key"), rogue.private_bytes(PEM, pkcs8, none), 0o600,
                            "postgres"),
        "rogue_pub": _write(os.path.join(base, "rogue.pub"), rogue.public_key().public_bytes(PEM, spki), 0o644),
        "aes_key": _write(os.path.join(base, "wal.key"), os.urandom(32).hex().encode() + b"\n", 0o600, "postgres"),
        "python": pg_python(),
    }
    yield keys
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pitr_site(pitr_keys):
    site = Site(pitr_keys)
    try:
        yield site
    finally:
        site.destroy()
