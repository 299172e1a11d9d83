"""In-process helpers for the repository-trust tests: a small real repository (config + artifacts, no database).

Backups, verifies and restores call the modules' helpers directly (no ansible-playbook per call), so hundreds of
attacks stay within seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import random

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_restore import run_restore_module
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import run_verify_module
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import canonical_json, sign
from tests.integration.dr.conftest import module_namespace

BACKUP_DEFAULTS = dict(components=["config", "artifacts"], db=None, mode="aes", recipients=None,
                       signing_key_passphrase=None, keep_last=None, keep_within=None, keep_daily=None,
                       keep_weekly=None, keep_monthly=None, max_age=None, lock_timeout=5, rehash_percent=2.0,
                       anchor=None, trusted_keys=None)
VERIFY_DEFAULTS = dict(backup="all", level="quick", private_key=None, private_key_passphrase=None, key_file=None,
                       fail_on_problems=False, lock_timeout=5, anchor=None)
RESTORE_DEFAULTS = dict(backup="latest", components=["config", "artifacts"], private_key=None,
                        private_key_passphrase=None, db=None, state="restored", verify_level="ciphertext", jobs=1,
                        staging_dir=None, lock_timeout=5, anchor=None)


def write_key(path: str, key) -> str:
    with open(path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return path


def write_pub(path: str, key) -> str:
    with open(path, "wb") as handle:
        handle.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def make_site(base: str, seed: int = 3, files: int = 12) -> dict:
    """Config and artifact trees with seeded content, an Ed25519 signer, a rogue signer and an AES key file."""
    rng = random.Random(seed)
    cfg = os.path.join(base, "site", "etc", "app")
    art = os.path.join(base, "site", "var", "artifacts")
    os.makedirs(cfg)
    os.makedirs(os.path.join(art, "case"))
    with open(os.path.join(cfg, "app.env"), "w") as handle:
        handle.write("DB_PASSWORD=s3cret\n")
    for i in range(files):
        with open(os.path.join(art, "case", "f%02d.bin" % i), "wb") as handle:
            handle.write(rng.randbytes(rng.randint(1, 4000)))
    keys = os.path.join(base, "keys")
    os.makedirs(keys)
    signer = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"signer%d" % seed).digest())
    rogue = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"rogue%d" % seed).digest())
    key_file = os.path.join(keys, "backup.key")
    with open(key_file, "w") as handle:
        handle.write(hashlib.sha256(b"aes%d" % seed).hexdigest() + "\n")
    os.chmod(key_file, 0o600)
    return dict(base=base, config=cfg, artifacts=art, repo=os.path.join(base, "repo"), key_file=key_file,
                signing_key=write_key(os.path.join(keys, "signing.key"), signer),
                signing_pub=write_pub(os.path.join(keys, "signing.pub"), signer),
                rogue_key=write_key(os.path.join(keys, "rogue.key"), rogue),
                rogue_pub=write_pub(os.path.join(keys, "rogue.pub"), rogue),
                signer=signer, rogue=rogue)


def backup(site: dict, check_mode: bool = False, **over) -> dict:
    """One ransomeye_backup run; returns the result, or {"failed": True, "msg": ...}."""
    params = dict(BACKUP_DEFAULTS, repo=site["repo"], config_paths=[site["config"]],
                  artifact_paths=[site["artifacts"]], key_file=site["key_file"], signing_key=site["signing_key"])
    params.update(over)
    module = module_namespace(_check_mode=check_mode, **params)
    try:
        result = run_backup(module)
    except RansomeyeError as exc:
        return {"failed": True, "msg": exc.msg, "warnings": module.warnings}
    result["warnings"] = module.warnings
    return result


def verify(site: dict, **over) -> dict:
    params = dict(VERIFY_DEFAULTS, repo=site["repo"], trusted_keys=[site["signing_pub"]])
    params.update(over)
    try:
        return run_verify_module(module_namespace(**params))
    except RansomeyeError as exc:
        return dict(exc.details if hasattr(exc, "details") else {}, failed=True, msg=exc.msg)


def restore(site: dict, dest: str, **over) -> dict:
    params = dict(RESTORE_DEFAULTS, repo=site["repo"], trusted_keys=[site["signing_pub"]], key_file=site["key_file"],
                  dest=dest)
    params.update(over)
    try:
        return run_restore_module(module_namespace(**params))
    except RansomeyeError as exc:
        return {"failed": True, "msg": exc.msg}


def resign(path: str, key, edit=None, seq_name=None) -> str:
    """Rewrite a manifest (optionally edited by ``edit(body)``) signed by ``key``; optionally under another seq."""
    with open(path, "rb") as handle:
        body = json.loads(handle.read())["manifest"]
    if edit:
        edit(body)
    data = canonical_json({"manifest": body, "signatures": [sign(key, canonical_json(body))]})
    target = path if seq_name is None else os.path.join(os.path.dirname(path), "%08d.json" % seq_name)
    with open(target, "wb") as handle:
        handle.write(data)
    return target
