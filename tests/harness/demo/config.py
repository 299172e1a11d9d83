"""The demo host's config tree (.env files, gunicorn, celery), mTLS material and keys.

Secrets (passwords, private keys, the backup key) are random per build, never seeded.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import typing as t

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.demo.layout import Layout


def _write(path: str, data: t.Union[str, bytes], mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def env_text(layout: Layout, state: dict, role: str, password: str, worker: bool) -> str:
    port = state["pg_port"]
    lines = [
        "# RansomEye %s environment (demo host; managed by ransomeye.ops)" % ("worker" if worker else "web application"),
        "# Database credentials are rotated by ransomeye.ops.ransomeye_rotate_db_creds:",
        "# DB_PASSWORD and DATABASE_URL must always agree.",
        "RANSOMEYE_ENV=demo",
        "LOG_LEVEL=info",
        "",
        "# --- database ---",
        "DB_HOST=127.0.0.1",
        "DB_PORT=%d" % port,
        "DB_NAME=ransomeye",
        "DB_USER=%s" % role,
        "DB_PASSWORD=%s" % password,
        "DATABASE_URL=postgresql://%s:%s@127.0.0.1:%d/ransomeye" % (role, password, port),
        "DB_SSLMODE=disable",
        "",
        "# --- paths ---",
        "ARTIFACT_DIR=%s" % layout.artifact_dir,
        "BUFFER_DIR=%s" % layout.buffer_dir,
        "LOG_DIR=%s" % layout.log_dir,
        "TLS_CA=%s/ca.crt" % layout.tls_dir,
        "TLS_CERT=%s/%s.crt" % (layout.tls_dir, "client" if worker else "server"),
        "TLS_KEY=%s/%s.key" % (layout.tls_dir, "client" if worker else "server"),
    ]
    if worker:
        lines += ["", "# --- worker ---", "WORKER_INTERVAL=5", "WORKER_LOG=%s/worker.log" % layout.log_dir,
                  "CELERY_CONFIG=%s" % layout.celery_config, 'CELERY_BROKER_URL="redis://127.0.0.1:6379/0"']
    else:
        lines += ["", "# --- web ---", "SECRET_KEY=%s" % state["secret_key"], "SESSION_COOKIE_SECURE=true",
                  "UPLOAD_MAX_MB=512"]
    return "\n".join(lines) + "\n"


def gunicorn_text(layout: Layout, web_port: int) -> str:
    return """# gunicorn settings of ransomeye-web (worker counts tuned by ransomeye.ops.ransomeye_tune_workers)
bind = "127.0.0.1:%d"
workers = 2
worker_class = "sync"
threads = 1
timeout = 30
graceful_timeout = 10
keepalive = 2
max_requests = 1000
max_requests_jitter = 100
accesslog = "%s/web-access.log"
errorlog = "%s/web-error.log"
loglevel = "info"
proc_name = "ransomeye-web"
""" % (web_port, layout.log_dir, layout.log_dir)


CELERY_TEXT = """# celery settings of ransomeye-worker (concurrency tuned by ransomeye.ops.ransomeye_tune_workers)
broker_url = "redis://127.0.0.1:6379/0"
result_backend = "redis://127.0.0.1:6379/1"
task_serializer = "json"
accept_content = ["json"]
task_acks_late = True
worker_concurrency = 2
worker_prefetch_multiplier = 1
worker_max_tasks_per_child = 200
worker_max_memory_per_child = 262144
"""


def write_config(layout: Layout, state: dict) -> None:
    _write(layout.app_env, env_text(layout, state, "ransomeye_app", state["app_password"], worker=False), 0o640)
    _write(layout.worker_env, env_text(layout, state, "ransomeye_app", state["app_password"], worker=True), 0o640)
    _write(layout.gunicorn_config, gunicorn_text(layout, state["web_port"]), 0o644)
    _write(layout.celery_config, CELERY_TEXT, 0o644)


def _pem_key(key: t.Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_pub(key: t.Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RansomEye Demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_tls(layout: Layout, server_days: int = 20, client_days: int = 365) -> None:
    """Internal CA, server and client certificates (the server one is due for renewal: 20 days left)."""
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_name = _name("RansomEye Demo Internal CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    _write(os.path.join(layout.tls_dir, "ca.key"), _pem_key(ca_key), 0o600)
    _write(os.path.join(layout.tls_dir, "ca.crt"), ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for name, days, eku, sans in (
        ("server", server_days, ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.DNSName("ransomeye.demo"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", client_days, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("ransomeye-worker")]),
    ):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cn = "ransomeye.demo" if name == "server" else "ransomeye-worker"
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write(os.path.join(layout.tls_dir, name + ".key"), _pem_key(key), 0o600)
        _write(os.path.join(layout.tls_dir, name + ".crt"), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    link = os.path.join(layout.tls_dir, "current.crt")
    if not os.path.islink(link):
        os.symlink("server.crt", link)


def write_signing_key_dir(key_dir: str) -> None:
    """The key-directory layout of ``_keychain.py``: active key, keys/<id>.pub, chain/000001.json, state.json."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain, _signing
    signing = ed25519.Ed25519PrivateKey.generate()
    kid = _signing.key_id(signing)
    _write(os.path.join(key_dir, _keychain.ACTIVE_KEY), _pem_key(signing), 0o600)
    _write(os.path.join(key_dir, _keychain.ACTIVE_PUB), _pem_pub(signing), 0o644)
    _write(os.path.join(key_dir, _keychain.KEYS_DIR, kid + ".pub"), _pem_pub(signing), 0o644)
    bundle = _keychain.make_bundle(signing, 1)
    _keychain.write_bundle(key_dir, bundle)
    _keychain.write_state(key_dir, {"active_key_id": kid, "active_since": bundle["created"], "seq": 1})


def write_keys(layout: Layout) -> None:
    """Signing key (Ed25519 active.key/active.pub) and backup keys (RSA-3072 recipient, 32-byte AES key)."""
    os.makedirs(layout.signing_key_dir, mode=0o700, exist_ok=True)
    os.makedirs(layout.backup_key_dir, mode=0o700, exist_ok=True)
    write_signing_key_dir(layout.signing_key_dir)
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    _write(os.path.join(layout.backup_key_dir, "recipient.key"), _pem_key(recipient), 0o600)
    _write(os.path.join(layout.backup_key_dir, "recipient.pub"), _pem_pub(recipient), 0o644)
    _write(os.path.join(layout.backup_key_dir, "backup.key"), secrets.token_bytes(32), 0o600)
