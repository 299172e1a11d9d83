"""ransomeye_cert_renew with real certificates, real openssl and a real mTLS handshake."""
from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import threading
import typing as t

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.trees import tree_snapshot
from tests.integration.keys.conftest import failed

NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RansomEye")])


def _write_key(path: str, key: t.Any) -> None:
    with open(path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _write_cert(path: str, cert: t.Any) -> None:
    with open(path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(directory: str, expired: bool = False) -> t.Tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = (NOW - datetime.timedelta(days=400), NOW - datetime.timedelta(days=1)) if expired else \
        (NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=3650))
    cert = (x509.CertificateBuilder().subject_name(_name("RansomEye Test CA")).issuer_name(_name("RansomEye Test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return cert_path, key_path


def make_leaf(directory: str, name: str, ca: t.Tuple[str, str], days_left: int, eku: t.Any,
              sans: t.Sequence[str] = ("localhost",)) -> t.Tuple[str, str]:
    with open(ca[0], "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    with open(ca[1], "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    end = NOW + datetime.timedelta(days=days_left)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(end - datetime.timedelta(days=365)).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(s) for s in sans] + [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path):
    directory = str(tmp_path / "tls")
    os.makedirs(directory)
    ca = make_ca(directory)
    server = make_leaf(directory, "server", ca, 10, ExtendedKeyUsageOID.SERVER_AUTH)
    client = make_leaf(directory, "client", ca, 200, ExtendedKeyUsageOID.CLIENT_AUTH)
    return dict(dir=directory, ca=ca, server=server, client=client)


def _args(pair, ca, **extra):
    args = dict(path=pair[0], key_path=pair[1], ca_cert=ca[0], ca_key=ca[1])
    args.update(extra)
    return args


def _pair_matches(cert_path: str, key_path: str) -> bool:
    with open(cert_path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    with open(key_path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)


def _openssl_verify(ca: str, cert: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-CAfile", ca, cert], capture_output=True, text=True, check=False)


def test_cert_renew_four_step_idempotence(tls, run_module):
    before = tree_snapshot(tls["dir"])
    check = run_module("ransomeye_cert_renew", _args(tls["server"], tls["ca"]), check=True)
    assert check["changed"] is True and check["reason"] == "expiring" and check["renewed"] is False, check
    assert tree_snapshot(tls["dir"]) == before

    applied = run_module("ransomeye_cert_renew", _args(tls["server"], tls["ca"]))
    assert applied["changed"] is True and applied["renewed"] is True, applied
    assert applied["serial"] != applied["previous_serial"]
    assert len(applied["backup_files"]) == 2 and all(os.path.exists(p) for p in applied["backup_files"])

    again_check = run_module("ransomeye_cert_renew", _args(tls["server"], tls["ca"]), check=True)
    assert again_check["changed"] is False and again_check["reason"] == "valid", again_check
    again = run_module("ransomeye_cert_renew", _args(tls["server"], tls["ca"]))
    assert again["changed"] is False and again["fingerprint"] == applied["fingerprint"]


def test_renewed_cert_passes_openssl_verify_and_keeps_names(tls, run_module_direct):
    result = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"]))
    assert result["changed"] is True, result
    verify = _openssl_verify(tls["ca"][0], tls["server"][0])
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", tls["server"][0], "-noout", "-text", "-fingerprint", "-sha256"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text and "CN = server" in text
    assert result["fingerprint"] in text
    assert "RSA Public-Key: (2048 bit)" in text or "Public-Key: (2048 bit)" in text
    assert _pair_matches(*tls["server"])
    assert oct(os.stat(tls["server"][1]).st_mode & 0o777) == "0o600"
    not_after = datetime.datetime.strptime(result["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    assert 364 <= (not_after - NOW.replace(tzinfo=None)).days <= 365


def _serve_once(ctx: ssl.SSLContext, sock: socket.socket, seen: list) -> None:
    conn = sock.accept()[0]
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls_conn:
            seen.append(tls_conn.getpeercert()["subject"])
            tls_conn.sendall(tls_conn.recv(100).upper())
    except ssl.SSLError as exc:
        seen.append(exc)


def test_mtls_handshake_with_renewed_server_and_client(tls, run_module_direct):
    old_client_fp = subprocess.run(["openssl", "x509", "-in", tls["client"][0], "-noout", "-fingerprint", "-sha256"],
                                   capture_output=True, text=True, check=False).stdout
    for pair in (tls["server"], tls["client"]):
        result = run_module_direct("ransomeye_cert_renew", _args(pair, tls["ca"], force=True))
        assert result["changed"] is True and result["reason"] == "forced", result
    assert result["fingerprint"] not in old_client_fp
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*tls["server"])
    server_ctx.load_verify_locations(tls["ca"][0])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(*tls["client"])
    client_ctx.load_verify_locations(tls["ca"][0])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        seen: list = []
        thread = threading.Thread(target=_serve_once, args=(server_ctx, listener, seen))
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                conn.sendall(b"ping")
                assert conn.recv(100) == b"PING"
        thread.join(10)
    assert seen and not isinstance(seen[0], Exception), seen
    assert (("commonName", "client"),) in seen[0]


def test_key_mismatch_triggers_renewal(tls, run_module_direct):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(tls["client"][1], other)
    assert not _pair_matches(*tls["client"])
    result = run_module_direct("ransomeye_cert_renew", _args(tls["client"], tls["ca"]))
    assert result["changed"] is True and result["reason"] == "key_mismatch", result
    assert _pair_matches(*tls["client"])
    assert _openssl_verify(tls["ca"][0], tls["client"][0]).returncode == 0


def test_self_signed_renewal_and_second_renewal_cleans_old_versions(tls, run_module_direct):
    args = dict(path=tls["server"][0], key_path=tls["server"][1], key_type="ec", key_size=256, valid_days=90,
                extended_key_usage=["serverAuth", "clientAuth"], subject={"CN": "selfsigned.local"},
                subject_alt_names=["DNS:selfsigned.local", "IP:127.0.0.1"], backup=False)
    first = run_module_direct("ransomeye_cert_renew", args)
    assert first["changed"] is True and first["subject"] == "CN=selfsigned.local", first
    verify = _openssl_verify(tls["server"][0], tls["server"][0])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    second = run_module_direct("ransomeye_cert_renew", dict(args, force=True))
    assert second["changed"] is True and second["serial"] != first["serial"]
    pairs = os.path.join(tls["dir"], ".ransomeye-pairs", "server.crt")
    versions = sorted(n for n in os.listdir(pairs) if n not in ("current", "previous"))
    assert versions == sorted([os.readlink(os.path.join(pairs, "current")), os.readlink(os.path.join(pairs, "previous"))])
    assert _pair_matches(*tls["server"])
    assert first["backup_files"] == [] and second["backup_files"] == []


@pytest.mark.parametrize("step", ["adopt", "stage", "swap"])
def test_kill_at_each_step_never_leaves_a_mismatched_pair(tls, run_module_direct, step):
    with open(tls["server"][0], "rb") as handle:
        old_cert = handle.read()
    with pytest.raises(AssertionError, match=r"rc -9"):
        run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"]), env={"RANSOMEYE_TEST_KILL_AT": step})
    assert _pair_matches(*tls["server"])
    with open(tls["server"][0], "rb") as handle:
        now_cert = handle.read()
    assert (now_cert == old_cert) == (step != "swap")
    rerun = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"]))
    assert rerun["changed"] is (step != "swap"), rerun
    assert _pair_matches(*tls["server"])
    assert _openssl_verify(tls["ca"][0], tls["server"][0]).returncode == 0
    pairs = os.path.join(tls["dir"], ".ransomeye-pairs", "server.crt")
    if rerun["changed"]:
        # The recovery rule removed what the killed run left behind.
        expected = ["current", "previous"] + [os.readlink(os.path.join(pairs, n)) for n in ("current", "previous")]
        assert sorted(os.listdir(pairs)) == sorted(expected)


def test_bad_input_expired_ca_changes_nothing(tls, run_module):
    expired_dir = os.path.join(tls["dir"], "old-ca")
    os.makedirs(expired_dir)
    expired = make_ca(expired_dir, expired=True)
    before = tree_snapshot(tls["dir"])
    result = run_module("ransomeye_cert_renew", _args(tls["server"], expired))
    assert failed(result) and "CA certificate %s expired on" % expired[0] in result["msg"], result
    assert "Traceback" not in result["_stdout"]
    assert tree_snapshot(tls["dir"]) == before


def test_bad_input_ca_key_not_matching_ca_cert_changes_nothing(tls, run_module_direct):
    before = tree_snapshot(tls["dir"])
    result = run_module_direct("ransomeye_cert_renew", _args(tls["server"], (tls["ca"][0], tls["client"][1])))
    assert failed(result) and "does not match CA certificate" in result["msg"], result
    missing = run_module_direct("ransomeye_cert_renew", _args((tls["dir"] + "/nope.crt", tls["server"][1]), tls["ca"]))
    assert failed(missing) and "does not exist" in missing["msg"]
    garbage = os.path.join(tls["dir"], "garbage.crt")
    with open(garbage, "w") as handle:
        handle.write("not a certificate\n")
    before[garbage] = b"not a certificate\n"
    bad = run_module_direct("ransomeye_cert_renew", _args((garbage, tls["server"][1]), tls["ca"]))
    assert failed(bad) and "is not a PEM or DER certificate" in bad["msg"]
    short = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], valid_days=10))
    assert failed(short) and "must be longer than renew_before" in short["msg"]
    for r in (result, missing, bad, short):
        assert "Traceback" not in r["_stderr"]
    assert tree_snapshot(tls["dir"]) == before


def test_rollback_restores_the_previous_pair_atomically(tls, run_module_direct):
    with open(tls["server"][0], "rb") as handle:
        original = handle.read()
    nothing = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], state="rolled_back"))
    assert nothing["changed"] is False and "no previous pair" in nothing["reason"], nothing
    renewed = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"]))
    assert renewed["changed"] is True
    check = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], state="rolled_back"), check=True)
    assert check["changed"] is True and check["serial"] == renewed["previous_serial"]
    rolled = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], state="rolled_back"))
    assert rolled["changed"] is True and rolled["previous_serial"] == renewed["serial"], rolled
    with open(tls["server"][0], "rb") as handle:
        assert handle.read() == original
    assert _pair_matches(*tls["server"])
    again = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], state="rolled_back"))
    assert again["changed"] is False
    pairs = os.path.join(tls["dir"], ".ransomeye-pairs", "server.crt")
    assert sorted(os.listdir(pairs)) == sorted(["current", os.readlink(os.path.join(pairs, "current"))])


def test_diff_shows_old_and_new_certificate_and_no_key_material(tls, run_module):
    args = _args(tls["server"], tls["ca"])
    check = run_module("ransomeye_cert_renew", args, check=True, diff=True)
    assert check["changed"] is True, check
    assert check["diff"]["before"]["serial"] == check["serial"]
    assert check["diff"]["after"]["serial"] == "(new)"
    applied = run_module("ransomeye_cert_renew", args, diff=True)
    assert applied["renewed"] is True, applied
    assert applied["diff"]["before"]["serial"] == applied["previous_serial"]
    assert applied["diff"]["after"]["serial"] == applied["serial"] != applied["previous_serial"]
    assert applied["diff"]["after"]["fingerprint"] == applied["fingerprint"]
    assert "PRIVATE KEY" not in applied["_stdout"]
    again = run_module("ransomeye_cert_renew", args, diff=True)
    assert again["changed"] is False and "diff" not in again
