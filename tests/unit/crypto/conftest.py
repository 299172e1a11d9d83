"""Keys shared by the crypto unit tests (generated once per session: RSA key generation is slow)."""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.ransomeye.ops.plugins.module_utils import _signing


@pytest.fixture(scope="session")
def rsa_keys():
    """Three independent 2048-bit RSA private keys (the smallest size the container accepts)."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _index in range(3)]


@pytest.fixture(scope="session")
def rsa4096_key():
    return _signing.generate_signing_key("rsa4096")


@pytest.fixture
def aes_key():
    return os.urandom(32)


def write_pem(path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)
