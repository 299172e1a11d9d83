# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the keys a backup run needs, loaded once.

Encryption (recipients' public keys or a key file), the manifest signer, the
trusted keys of a verifier, the decryption secret of a restore, and the
content-id key that names deduplicated artifact objects. The crypto itself is
in _crypto_container, _signing and _keychain (owned by the crypto helpers).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import hmac
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory

try:
    from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
    from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
    HAS_CRYPTO = True
    CRYPTO_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - cryptography missing on the managed host
    container = signing = None
    HAS_CRYPTO = False
    CRYPTO_IMPORT_ERROR = _exc


def _keychain() -> t.Any:
    """The key-chain walker, imported when a key directory or trusted_keys is given (most backups have neither)."""
    require_crypto()
    from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain as keychain
    return keychain


def require_crypto(module: t.Any = None) -> None:
    if HAS_CRYPTO:
        return
    if module is not None:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(CRYPTO_IMPORT_ERROR))
    raise RansomeyeError("the Python library cryptography is required on the managed host: %s" % CRYPTO_IMPORT_ERROR)


def _readable(path: str, what: str) -> str:
    if not path:
        raise RansomeyeError("%s is required" % what)
    if not os.path.exists(path):
        raise RansomeyeError("%s %s does not exist" % (what, path))
    if not os.access(path, os.R_OK):
        raise RansomeyeError("%s %s is not readable" % (what, path))
    return path


class Encryption:
    """How new objects are encrypted, plus the content-id key for deduplication."""

    def __init__(self, mode: str, recipients: t.Optional[list], key: t.Optional[bytes],
                 recipient_ids: t.List[str], id_key: bytes) -> None:
        self.mode = mode
        self.recipients = recipients
        self.key = key
        self.recipient_ids = recipient_ids
        self.id_key = id_key
        self._session: t.Any = None
        # Objects encrypted for other recipients cannot be reused: the content id
        # includes the encryption context, so a recipient change re-stores content.
        self.context = ("rsa:" + ",".join(sorted(recipient_ids))) if mode == "rsa" else "aes"

    def encryptor_kwargs(self) -> dict:
        if self.mode == "rsa":
            return {"recipients": self.recipients}
        return {"key": self.key}

    def prepare(self) -> None:
        """Start the run's encryption session now (before worker threads share it)."""
        if self._session is None:
            self._session = container.encryption_session(**self.encryptor_kwargs())

    def encryptor(self, dst: t.Any, object_id: str) -> t.Any:
        """A container writer. One file key per run (an encryption session): RSA wraps it once per run and
        readers unwrap it once per run instead of once per object; every object still gets its own salt,
        hence its own payload and header keys."""
        if self._session is None:
            self._session = container.encryption_session(**self.encryptor_kwargs())
        return self._session.encryptor(dst, object_id=object_id)

    def describe(self) -> dict:
        if self.mode == "rsa":
            return {"mode": "rsa", "recipients": sorted(self.recipient_ids)}
        return {"mode": "aes", "key_id": container.key_file_id(self.key or b"")}

    def blob_id(self, plaintext_sha256: str) -> str:
        """Keyed content id: only the id-key holder can test whether known content is stored."""
        message = b"ransomeye.ops blob\x00" + self.context.encode() + b"\x00" + bytes.fromhex(plaintext_sha256)
        return hmac.new(self.id_key, message, hashlib.sha256).hexdigest()


def _dedup_key(keys_dir: str) -> bytes:
    path = os.path.join(keys_dir, "dedup.key")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if len(data) == 32:
            return data
        raise RansomeyeError("repository content-id key %s is damaged (expected 32 bytes)" % path)
    except FileNotFoundError:
        ensure_directory(keys_dir, 0o700)
        data = os.urandom(32)
        atomic_write(path, data, mode=0o600)
        return data


def load_encryption(params: dict, keys_dir: str, create_id_key: bool = True) -> Encryption:
    require_crypto()
    mode = params.get("mode") or "rsa"
    if mode == "rsa":
        paths = params.get("recipients") or []
        if not paths:
            raise RansomeyeError("mode rsa needs at least one public key in recipients")
        keys = []
        ids = []
        for path in paths:
            _readable(path, "recipient public key")
            try:
                public = container.load_public_key(path)
            except RansomeyeError:
                raise
            except (ValueError, TypeError) as exc:
                raise RansomeyeError("recipient public key %s cannot be loaded: %s" % (path, exc))
            keys.append(public)
            ids.append(container.public_key_id(public))
        if create_id_key:
            id_key = _dedup_key(keys_dir)
        else:
            id_key = b"\x00" * 32
        return Encryption("rsa", keys, None, ids, id_key)
    path = _readable(params.get("key_file") or "", "key_file")
    key = container.load_key_file(path)
    id_key = hmac.new(key, b"ransomeye.ops dedup id key", hashlib.sha256).digest()
    return Encryption("aes", None, key, [], id_key)


def _private_key(loader: t.Callable[[str, t.Optional[bytes]], t.Any], path: str, passphrase: t.Optional[str],
                 option: str) -> t.Any:
    """``loader(path, passphrase)``; a wrong passphrase or a file that is no PEM private key is a clear error."""
    try:
        return loader(path, passphrase.encode() if isinstance(passphrase, str) else passphrase)
    except RansomeyeError:
        raise
    except (ValueError, TypeError) as exc:
        raise RansomeyeError("%s %s cannot be loaded (wrong passphrase or not a PEM private key): %s"
                             % (option, path, exc))


def load_signer(path: str, passphrase: t.Optional[str] = None) -> t.Tuple[t.Any, str]:
    """(private key, key id) from a PEM file or a signing key directory (its active.key)."""
    require_crypto()
    if path and os.path.isdir(path):
        path = os.path.join(path, "active.key")
    _readable(path, "signing_key")
    key = _private_key(signing.load_signing_private_key, path, passphrase, "signing_key")
    return key, signing.key_id(key.public_key())


def load_trusted(paths: t.List[str]) -> t.Dict[str, t.Any]:
    require_crypto()
    if not paths:
        raise RansomeyeError("trusted_keys must name at least one public key or key directory")
    for path in paths:
        _readable(path, "trusted key")
    try:
        trusted = _keychain().trusted_keys_from(list(paths))
    except RansomeyeError:
        raise
    except (ValueError, TypeError) as exc:
        raise RansomeyeError("trusted_keys cannot be loaded: %s" % exc)
    if not trusted:
        raise RansomeyeError("no usable public key found in trusted_keys %s" % ", ".join(paths))
    return trusted


def load_trust(paths: t.List[str]) -> t.Any:
    """Trusted keys plus their key-chain positions (``_backup_trust.Trust``), for the position rule."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_trust import Trust
    keys = load_trusted(paths)
    return Trust(keys, _keychain().trusted_keys_report(list(paths)).positions)


def writer_trust(signer: t.Any, signing_key_path: str, extra_paths: t.Optional[t.List[str]]) -> t.Any:
    """What a backup run trusts: its own key, the chain of its key directory, and ``trusted_keys``."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_trust import Trust
    keys = {signing.key_id(signer.public_key()): signer.public_key()}
    positions: t.Dict[str, t.List[int]] = {}
    paths = list(extra_paths or [])
    if signing_key_path and os.path.isdir(signing_key_path):
        paths.append(signing_key_path)
    if paths:
        for path in paths:
            _readable(path, "trusted key")
        report = _keychain().trusted_keys_report(paths)
        keys.update(report.trusted)
        positions = report.positions
    return Trust(keys, positions)


def load_decryption(private_key: t.Optional[str], passphrase: t.Optional[str], key_file: t.Optional[str]) -> dict:
    """Keyword arguments for decrypt_stream/decrypt_chunks, or {} when no secret was given."""
    require_crypto()
    if private_key:
        _readable(private_key, "private_key")
        return {"private_key": _private_key(container.load_private_key, private_key, passphrase, "private_key")}
    if key_file:
        _readable(key_file, "key_file")
        return {"key": container.load_key_file(key_file)}
    return {}


def decryption_from_params(params: dict) -> dict:
    """load_decryption of a module's private_key, private_key_passphrase and key_file options."""
    return load_decryption(params.get("private_key"), params.get("private_key_passphrase"), params.get("key_file"))
