"""Two runs never interleave: each module takes an flock and a second run fails clearly (or waits its turn)."""
from __future__ import annotations

import fcntl
import os

from tests.integration.keys.conftest import failed
from tests.integration.keys.test_keys_cert_renew import make_ca, make_leaf


def _hold(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_db_creds_rotation_refuses_to_run_twice_at_once(creds, run_module_direct):
    before = creds.snapshot()
    fd = _hold(creds.state_file + ".lock")
    try:
        result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args())
    finally:
        os.close(fd)
    assert failed(result) and "another credential rotation for role" in result["msg"], result
    assert creds.snapshot() == before
    assert run_module_direct("ransomeye_rotate_db_creds", creds.module_args())["changed"] is True


def test_signing_rotation_and_cert_renewal_refuse_to_run_twice_at_once(tmp_path, run_module_direct):
    key_dir = tmp_path / "signing"
    key_dir.mkdir()
    fd = _hold(str(key_dir / ".rotation.lock"))
    try:
        result = run_module_direct("ransomeye_rotate_signing_keys", dict(key_dir=str(key_dir), key_type="ed25519",
                                                                         state="initialized"))
    finally:
        os.close(fd)
    assert failed(result) and "another signing-key rotation" in result["msg"], result
    assert sorted(os.listdir(key_dir)) == [".rotation.lock"]

    tls = tmp_path / "tls"
    tls.mkdir()
    ca = make_ca(str(tls))
    from cryptography.x509.oid import ExtendedKeyUsageOID
    server = make_leaf(str(tls), "server", ca, 5, ExtendedKeyUsageOID.SERVER_AUTH)
    with open(server[0], "rb") as handle:
        original = handle.read()
    os.makedirs(str(tls / ".ransomeye-pairs"))
    fd = _hold(str(tls / ".ransomeye-pairs" / ".server.crt.lock"))
    try:
        args = dict(path=server[0], key_path=server[1], ca_cert=ca[0], ca_key=ca[1])
        result = run_module_direct("ransomeye_cert_renew", args)
    finally:
        os.close(fd)
    assert failed(result) and "another renewal of" in result["msg"], result
    with open(server[0], "rb") as handle:
        assert handle.read() == original
    assert run_module_direct("ransomeye_cert_renew", args)["changed"] is True
