"""The certificate guard holds when the restore fails: a live certificate (and key) newer than the backup's is
never replaced, not even for a moment, so a file restore that fails or is killed midway leaves it in place.

The config tree puts the certificate pair at its top and ``settings.conf`` in a subdirectory, so both repository
formats' restore order (v1: sorted paths; v2: a directory's files before its subdirectories) reach the certificate
first and then fail on ``settings.conf``: by a directory planted where the backup has a file (the
restorer refuses it), or by SIGKILL through the documented test hook (RANSOMEYE_BACKUP_TEST_HOOK=file_restored:kill,
sent after the first file the restore writes).
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.ansible_runner import ansible_env
from tests.harness.paths import REPO


def _cert_pair(days: int) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ransomeye.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture
def renewed_site(tmp_path, dr_keys, run_module_direct, request):
    """A config tree backed up with a certificate valid 30 days, then renewed (400 days) and changed."""
    fmt = request.param
    cfg = str(tmp_path / "site" / "etc" / "ransomeye")
    os.makedirs(os.path.join(cfg, "zz-app"))
    old_cert, old_key = _cert_pair(30)
    _write(os.path.join(cfg, "server.crt"), old_cert)
    _write(os.path.join(cfg, "server.key"), old_key)
    _write(os.path.join(cfg, "zz-app", "settings.conf"), b"workers = 3\n")
    repo = str(tmp_path / "repo")
    backup = run_module_direct("ransomeye_backup", dict(
        repo=repo, components=["config"], config_paths=[cfg], mode="rsa", recipients=[dr_keys["recipient_pub"]],
        signing_key=dr_keys["signing_key"], cache_dir=str(tmp_path / "host-cache"), format=fmt))
    assert backup["_rc"] == 0, backup.get("msg")
    new_cert, new_key = _cert_pair(400)
    _write(os.path.join(cfg, "server.crt"), new_cert)
    _write(os.path.join(cfg, "server.key"), new_key)
    args = dict(repo=repo, backup=backup["backup_id"], components=["config"], trusted_keys=[dr_keys["signing_pub"]],
                private_key=dr_keys["recipient_key"])
    return dict(cfg=cfg, args=args, new=(new_cert, new_key), old=(old_cert, old_key))


def _live_pair(site) -> tuple:
    return (_read(os.path.join(site["cfg"], "server.crt")),
            _read(os.path.join(site["cfg"], "server.key")))


@pytest.mark.parametrize("renewed_site", ["v1", "v2"], indirect=True)
def test_restore_failing_after_the_certificates_keeps_the_newer_pair(renewed_site, run_module_direct):
    site = renewed_site
    # Attack: the restore reaches settings.conf after the pair, and a directory stands where the file goes.
    os.unlink(os.path.join(site["cfg"], "zz-app", "settings.conf"))
    os.mkdir(os.path.join(site["cfg"], "zz-app", "settings.conf"))
    result = run_module_direct("ransomeye_restore", site["args"])
    assert result["_rc"] != 0 and "settings.conf" in result["msg"], result.get("msg")
    assert _live_pair(site) == site["new"]


@pytest.mark.parametrize("renewed_site", ["v1", "v2"], indirect=True)
def test_restore_killed_after_its_first_file_keeps_the_newer_pair(renewed_site):
    site = renewed_site
    _write(os.path.join(site["cfg"], "zz-app", "settings.conf"), b"workers = 9\n")   # differs: the restore must write it
    path = os.path.join(REPO, "plugins", "modules", "ransomeye_restore.py")
    data = dict(site["args"], _ansible_check_mode=False, _ansible_diff=False, _ansible_tmpdir=None,
                _ansible_remote_tmp=tempfile.gettempdir())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": data}, handle)
    try:
        proc = subprocess.run([sys.executable, path, handle.name], capture_output=True, text=True, timeout=300,
                              env=ansible_env({"RANSOMEYE_BACKUP_TEST_HOOK": "file_restored:kill"}), check=False)
    finally:
        os.unlink(handle.name)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    # The kill came after the first write, and that write was settings.conf: the pair was never touched.
    assert _read(os.path.join(site["cfg"], "zz-app", "settings.conf")) == b"workers = 3\n"
    assert _live_pair(site) == site["new"]


@pytest.mark.parametrize("renewed_site", ["v2"], indirect=True)
def test_a_completed_restore_reports_the_kept_pair_and_check_mode_does_not_count_it(renewed_site, run_module_direct):
    site = renewed_site
    _write(os.path.join(site["cfg"], "zz-app", "settings.conf"), b"workers = 9\n")
    planned = run_module_direct("ransomeye_restore", site["args"], check=True)
    assert planned["_rc"] == 0, planned.get("msg")
    assert planned["stats"]["config"]["files_restored"] == 1      # settings.conf only, not the kept pair
    assert planned["certificates"]["kept_paths"] == sorted(
        os.path.join(site["cfg"], n) for n in ("server.crt", "server.key"))
    done = run_module_direct("ransomeye_restore", site["args"])
    assert done["_rc"] == 0 and done["changed"], done.get("msg")
    assert done["stats"]["config"]["files_kept_live"] == 2
    assert _live_pair(site) == site["new"]
    assert _read(os.path.join(site["cfg"], "zz-app", "settings.conf")) == b"workers = 3\n"
