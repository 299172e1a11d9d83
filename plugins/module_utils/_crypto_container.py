# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the streaming encrypted container (STREAM over AES-256-GCM).

The byte layout is specified in docs/BACKUP_FORMAT.md ("The encrypted
container"). In short: an authenticated header (magic, version, chunk size,
salt, object id, the per-object file key wrapped for each RSA recipient with
RSA-OAEP-SHA256 or under an AES-256 key file with AES-GCM, then an HMAC), then
the payload as AES-256-GCM chunks whose nonce is an 11-byte big-endian counter
and a last-chunk flag and whose AAD is SHA-256(header || mac).

Plaintext is only ever released by ``AESGCM.decrypt``, which checks the tag
before returning: a chunk is yielded only after it authenticated. Truncation,
reordering, appended bytes, a missing or empty final chunk, a wrong key and
an object id mismatch all raise ContainerError.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import base64
import binascii
import collections
import hashlib
import hmac
import os
import struct
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

try:
    from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
    # Not the serialization package: it imports the SSH key code, which costs the WAL program (a process per
    # segment) more than all its other imports; its loaders are imported where a PEM is parsed.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import _serialization as ser
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR: t.Optional[str] = None
except ImportError as _exc:  # pragma: no cover - exercised only without the library
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(_exc)

CHUNK_SIZE = 1 << 20
MAGIC = b"RYECNTR\n"
VERSION = 1
SUITE_AES256GCM_STREAM = 1
MODE_RSA = 1
MODE_AES = 2
MODE_NAMES = {MODE_RSA: "rsa", MODE_AES: "aes"}

TAG_SIZE = 16
KEY_SIZE = 32
SALT_SIZE = 32
MAC_SIZE = 32
KEY_ID_SIZE = 16
WRAP_NONCE_SIZE = 12
MAX_CHUNK_SIZE = 16 << 20
MAX_OBJECT_ID = 1024
MAX_STANZAS = 256
MAX_WRAPPED = 2048
MIN_RSA_BITS = 2048

LABEL_RSA_WRAP = b"ransomeye.ops/v1 file key"
LABEL_AES_WRAP = b"ransomeye.ops/v1 key-file wrap"
LABEL_KEY_FILE_ID = b"ransomeye.ops/v1 key-file id"
INFO_HEADER = b"ransomeye.ops/v1 header"
INFO_PAYLOAD = b"ransomeye.ops/v1 payload"

_FIXED = struct.Struct(">8sBBBBI32s")  # magic, version, suite, mode, reserved, chunk_size, salt


class ContainerError(RansomeyeError):
    """The container is malformed, was tampered with, or the key does not open it."""


class ContainerInfo(t.NamedTuple):
    """Hashes and sizes of one container (hex SHA-256 digests, sizes in bytes)."""

    plaintext_sha256: str
    plaintext_size: int
    ciphertext_sha256: str
    ciphertext_size: int


class ContainerHeader(t.NamedTuple):
    """What the header says, readable without any secret (and not yet authenticated)."""

    version: int
    object_id: str
    chunk_size: int
    mode: str
    recipient_key_ids: t.Tuple[str, ...]
    key_file_id: t.Optional[str]
    header_size: int


class _Stanza(t.NamedTuple):
    key_id: bytes
    wrapped: bytes


class _ParsedHeader(t.NamedTuple):
    header: ContainerHeader
    raw: bytes  # every header byte before the MAC
    mac: bytes
    salt: bytes
    mode: int
    stanzas: t.Tuple[_Stanza, ...]


def _pem_loaders() -> t.Any:
    """cryptography's serialization package, imported on first use (see the import above)."""
    from cryptography.hazmat.primitives import serialization
    return serialization


def require_cryptography() -> None:
    """Raise ContainerError when the cryptography library is missing."""
    if not HAS_CRYPTOGRAPHY:
        raise ContainerError(
            "the Python library 'cryptography' is required for encryption and signing: %s"
            % CRYPTOGRAPHY_IMPORT_ERROR
        )


# ---------------------------------------------------------------- keys


def _read_small(path: str, limit: int = 1 << 20) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ContainerError("cannot read key file %s: %s" % (path, exc.strerror or exc), path=path)
    if len(data) > limit:
        raise ContainerError("key file %s is too large to be a key" % path, path=path)
    return data


def parse_key_bytes(data: bytes) -> bytes:
    """Decode a 256-bit key: 32 raw bytes, 64 hex characters or base64 of 32 bytes (one trailing newline allowed)."""
    if len(data) == KEY_SIZE:
        return bytes(data)
    stripped = data[:-1] if data.endswith(b"\n") else data
    stripped = stripped[:-1] if stripped.endswith(b"\r") else stripped
    if len(stripped) == KEY_SIZE:
        return bytes(stripped)
    text = stripped.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_SIZE:
        return decoded
    raise ContainerError(
        "not a 256-bit key: expected 32 raw bytes, 64 hex characters or base64 of 32 bytes (got %d bytes)" % len(data)
    )


def load_key_file(path: str) -> bytes:
    """Read an AES-256 key file (32 raw bytes, 64 hex chars or base64 of 32 bytes, optional newline)."""
    try:
        return parse_key_bytes(_read_small(path, 4096))
    except ContainerError as exc:
        if exc.msg.startswith("not a 256-bit key"):
            raise ContainerError("key file %s is %s" % (path, exc.msg), path=path)
        raise


def key_file_id(key: bytes) -> str:
    """Public identifier of an AES key-file key (32 hex chars); reveals nothing about the key."""
    return hashlib.sha256(LABEL_KEY_FILE_ID + b"\x00" + bytes(key)).hexdigest()[: 2 * KEY_ID_SIZE]


def public_key_id(key: t.Any) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER, first 32 chars (same as _signing.key_id)."""
    require_cryptography()
    if hasattr(key, "public_key"):
        key = key.public_key()
    der = key.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[: 2 * KEY_ID_SIZE]


def _check_rsa(key: t.Any, what: str) -> t.Any:
    if not isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        raise ContainerError("%s is not an RSA key (recipients must be RSA keys for RSA-OAEP)" % what)
    if key.key_size < MIN_RSA_BITS:
        raise ContainerError("%s is a %d-bit RSA key; at least %d bits are required" % (what, key.key_size, MIN_RSA_BITS))
    return key


def load_public_key(path: str) -> t.Any:
    """Load an RSA public key (PEM SubjectPublicKeyInfo or PKCS#1) as a recipient."""
    require_cryptography()
    data = _read_small(path)
    try:
        key = _pem_loaders().load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" in data:
            raise ContainerError("%s holds a private key; give the recipient's public key" % path, path=path)
        raise ContainerError("%s is not a PEM public key" % path, path=path)
    return _check_rsa(key, path)


def load_private_key(path: str, passphrase: t.Optional[t.Union[str, bytes]] = None) -> t.Any:
    """Load an RSA private key (PEM, optionally encrypted with ``passphrase``)."""
    require_cryptography()
    data = _read_small(path)
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    try:
        key = _pem_loaders().load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        if passphrase:
            raise ContainerError("%s is not encrypted but a passphrase was given" % path, path=path)
        raise ContainerError("%s is encrypted: a passphrase is required (%s)" % (path, exc), path=path)
    except (ValueError, UnsupportedAlgorithm):
        raise ContainerError(
            "%s is not a PEM private key, or the passphrase is wrong" % path, path=path
        )
    return _check_rsa(key, path)


def _as_public_key(item: t.Any) -> t.Any:
    if isinstance(item, (str, bytes, os.PathLike)):
        return load_public_key(os.fsdecode(item))
    if hasattr(item, "public_key"):
        item = item.public_key()
    return _check_rsa(item, "recipient key")


def _as_private_key(item: t.Any) -> t.Any:
    if isinstance(item, (str, bytes, os.PathLike)):
        return load_private_key(os.fsdecode(item))
    return _check_rsa(item, "private key")


def _derive(file_key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(file_key)


def _oaep() -> t.Any:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=LABEL_RSA_WRAP)


def chunk_nonce(counter: int, last: bool) -> bytes:
    """STREAM nonce: 11-byte big-endian counter || 0x01 for the final chunk, 0x00 otherwise."""
    if counter >= 1 << 88:
        raise ContainerError("too many chunks")
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# ---------------------------------------------------------------- writing


class EncryptionSession:
    """One file key, wrapped once, for many containers (e.g. every object of one backup run).

    RSA wrapping happens here once instead of once per object, and readers
    unwrap the identical stanza once per process (see ``_UNWRAP_CACHE``). Each
    container still draws its own random salt, so its header and payload keys
    (HKDF of file key and salt) are unique and the counter nonces stay safe.
    The cost: objects of one session visibly share their key stanzas.
    """

    def __init__(
        self,
        *,
        recipients: t.Optional[t.Sequence[t.Any]] = None,
        key: t.Optional[bytes] = None,
        _file_key: t.Optional[bytes] = None,
    ) -> None:
        require_cryptography()
        if (recipients is None) == (key is None):
            raise ContainerError("exactly one of recipients (RSA public keys) or key (an AES-256 key file key) is required")
        self.file_key = _file_key if _file_key is not None else os.urandom(KEY_SIZE)
        if len(self.file_key) != KEY_SIZE:
            raise ContainerError("internal: bad file key size")
        self.aes_key: t.Optional[bytes] = None
        self.rsa_stanzas: t.List[t.Tuple[bytes, bytes]] = []
        if recipients is not None:
            self.mode = MODE_RSA
            seen: t.Set[str] = set()
            for item in recipients:
                pub = _as_public_key(item)
                kid = public_key_id(pub)
                if kid in seen:
                    continue
                seen.add(kid)
                self.rsa_stanzas.append((bytes.fromhex(kid), pub.encrypt(self.file_key, _oaep())))
            if not self.rsa_stanzas:
                raise ContainerError("recipients is empty: at least one RSA public key is required")
            if len(self.rsa_stanzas) > MAX_STANZAS:
                raise ContainerError("too many recipients (at most %d)" % MAX_STANZAS)
        else:
            self.mode = MODE_AES
            self.aes_key = bytes(t.cast(bytes, key))
            if len(self.aes_key) != KEY_SIZE:
                raise ContainerError("key must be 32 bytes (AES-256); use load_key_file()")

    def stanzas(self, salt: bytes, wrap_nonce: t.Optional[bytes] = None) -> t.List[t.Tuple[bytes, bytes]]:
        """The key stanzas for a container with ``salt`` (RSA: the same for every container)."""
        if self.mode == MODE_RSA:
            return self.rsa_stanzas
        aes_key = t.cast(bytes, self.aes_key)
        nonce = wrap_nonce if wrap_nonce is not None else os.urandom(WRAP_NONCE_SIZE)
        wrapped = nonce + AESGCM(aes_key).encrypt(nonce, self.file_key, LABEL_AES_WRAP + salt)
        return [(bytes.fromhex(key_file_id(aes_key)), wrapped)]

    def encryptor(self, dst: t.BinaryIO, *, object_id: str = "", chunk_size: int = CHUNK_SIZE) -> "ContainerWriter":
        """A new container on ``dst`` under this session's file key (fresh salt)."""
        return ContainerWriter(dst, object_id=object_id, chunk_size=chunk_size, session=self)

    def encrypt_stream(self, src: t.BinaryIO, dst: t.BinaryIO, *, object_id: str = "", chunk_size: int = CHUNK_SIZE) -> ContainerInfo:
        """encrypt_stream() under this session."""
        return _pump(src, self.encryptor(dst, object_id=object_id, chunk_size=chunk_size), chunk_size)


def encryption_session(*, recipients: t.Optional[t.Sequence[t.Any]] = None, key: t.Optional[bytes] = None) -> EncryptionSession:
    """Wrap one file key once for many containers (see EncryptionSession)."""
    return EncryptionSession(recipients=recipients, key=key)


class ContainerWriter:
    """File-like encryptor: ``write()`` plaintext any number of times, then ``close()``.

    The header is written at construction. A chunk is emitted once more data
    is known to follow it, so the final chunk (flagged last) is written only by
    ``close()``. ``abort()`` (or leaving a ``with`` block by an exception)
    never writes the final chunk, which leaves an invalid container: a failed
    producer can never yield a container that decrypts.
    """

    def __init__(
        self,
        dst: t.BinaryIO,
        *,
        recipients: t.Optional[t.Sequence[t.Any]] = None,
        key: t.Optional[bytes] = None,
        object_id: str = "",
        chunk_size: int = CHUNK_SIZE,
        session: t.Optional[EncryptionSession] = None,
        hash_plaintext: bool = True,
        _file_key: t.Optional[bytes] = None,
        _salt: t.Optional[bytes] = None,
        _wrap_nonce: t.Optional[bytes] = None,
    ) -> None:
        require_cryptography()
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ContainerError("chunk_size must be between 1 and %d bytes" % MAX_CHUNK_SIZE)
        if not isinstance(object_id, str):
            raise ContainerError("object_id must be a string")
        try:
            oid = object_id.encode("utf-8", "strict")
        except UnicodeEncodeError:
            raise ContainerError("object_id is not valid Unicode text")
        if len(oid) > MAX_OBJECT_ID:
            raise ContainerError("object_id is longer than %d bytes" % MAX_OBJECT_ID)
        if session is None:
            session = EncryptionSession(recipients=recipients, key=key, _file_key=_file_key)
        elif recipients is not None or key is not None:
            raise ContainerError("give either a session or recipients/key, not both")
        file_key = session.file_key
        mode = session.mode
        salt = _salt if _salt is not None else os.urandom(SALT_SIZE)
        if len(salt) != SALT_SIZE:
            raise ContainerError("internal: bad salt size")
        stanzas = session.stanzas(salt, _wrap_nonce)

        parts = [_FIXED.pack(MAGIC, VERSION, SUITE_AES256GCM_STREAM, mode, 0, chunk_size, salt)]
        parts.append(struct.pack(">H", len(oid)) + oid)
        parts.append(struct.pack(">H", len(stanzas)))
        for kid_bytes, wrapped in stanzas:
            parts.append(kid_bytes + struct.pack(">H", len(wrapped)) + wrapped)
        raw = b"".join(parts)
        mac = hmac.new(_derive(file_key, salt, INFO_HEADER), raw, hashlib.sha256).digest()

        self._dst = dst
        self._chunk = chunk_size
        self._aead = AESGCM(_derive(file_key, salt, INFO_PAYLOAD))
        self._aad = hashlib.sha256(raw + mac).digest()
        self._counter = 0
        self._pending: t.Any = None
        # A caller that hashes its own input (e.g. before transforming it) skips this pass: info.plaintext_sha256 is "".
        self._pt_hash = hashlib.sha256() if hash_plaintext else None
        self._ct_hash = hashlib.sha256()
        self._pt_size = 0
        self._ct_size = 0
        self._state = "open"
        self.info: t.Optional[ContainerInfo] = None
        self._out(raw + mac)

    # file-like surface
    @property
    def closed(self) -> bool:
        return self._state != "open"

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        if hasattr(self._dst, "flush"):
            self._dst.flush()

    def tell(self) -> int:
        """Plaintext bytes accepted so far."""
        return self._pt_size

    def _out(self, data: bytes) -> None:
        self._dst.write(data)
        self._ct_hash.update(data)
        self._ct_size += len(data)

    def _emit(self, plaintext: t.Any, last: bool) -> None:
        try:
            self._out(self._aead.encrypt(chunk_nonce(self._counter, last), plaintext, self._aad))
        except BaseException:
            # A partial write (disk full, broken pipe) leaves a damaged stream:
            # refuse to go on as if nothing happened.
            self._state = "aborted"
            self._pending = None
            raise
        self._counter += 1

    def write(self, data: t.Any) -> int:
        if self._state != "open":
            raise ContainerError("write to a closed or aborted container")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = len(view)
        if not size:
            return 0
        if self._pt_hash is not None:
            self._pt_hash.update(view)
        self._pt_size += size
        chunk = self._chunk
        pending = self._pending
        if pending is not None:
            if len(pending) < chunk:
                if not isinstance(pending, bytearray):
                    pending = bytearray(pending)
                take = chunk - len(pending)
                pending += view[:take]
                view = view[take:]
                if not len(view):
                    self._pending = pending
                    return size
            # A full chunk is pending and more data follows: it is not the last.
            self._emit(pending, last=False)
            self._pending = None
        while len(view) > chunk:
            self._emit(view[:chunk], last=False)
            view = view[chunk:]
        if len(view):
            # Keep a reference to immutable input (no copy); copy anything the caller may reuse.
            self._pending = view if isinstance(data, bytes) else bytes(view)
        return size

    def close(self) -> ContainerInfo:
        """Write the final chunk; return the hashes and sizes. Does not close ``dst``."""
        if self._state == "closed":
            return t.cast(ContainerInfo, self.info)
        if self._state == "aborted":
            raise ContainerError("container was aborted; it has no final chunk and will not decrypt")
        self._emit(self._pending if self._pending is not None else b"", last=True)
        self._pending = None
        self._state = "closed"
        self.flush()
        pt_sha = self._pt_hash.hexdigest() if self._pt_hash is not None else ""
        self.info = ContainerInfo(pt_sha, self._pt_size, self._ct_hash.hexdigest(), self._ct_size)
        return self.info

    def abort(self) -> None:
        """Stop without a final chunk: what was written can never decrypt successfully."""
        if self._state == "open":
            self._state = "aborted"
            self._pending = None

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type: t.Any, exc: t.Any, tb: t.Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def encryptor(
    dst: t.BinaryIO,
    *,
    recipients: t.Optional[t.Sequence[t.Any]] = None,
    key: t.Optional[bytes] = None,
    object_id: str = "",
    chunk_size: int = CHUNK_SIZE,
    hash_plaintext: bool = True,
) -> ContainerWriter:
    """Start a container on ``dst``: exactly one of ``recipients`` (RSA public keys or paths) or ``key``.

    Each call wraps a fresh file key; for many objects use encryption_session().

    ``chunk_size`` exists for tests and special cases; the format default is 1 MiB.
    """
    return ContainerWriter(dst, recipients=recipients, key=key, object_id=object_id, chunk_size=chunk_size,
                           hash_plaintext=hash_plaintext)


def _pump(src: t.BinaryIO, writer: "ContainerWriter", chunk_size: int) -> ContainerInfo:
    with writer:
        while True:
            block = src.read(chunk_size)
            if not block:
                break
            writer.write(block)
    return t.cast(ContainerInfo, writer.info)


def encrypt_stream(
    src: t.BinaryIO,
    dst: t.BinaryIO,
    *,
    recipients: t.Optional[t.Sequence[t.Any]] = None,
    key: t.Optional[bytes] = None,
    object_id: str = "",
    chunk_size: int = CHUNK_SIZE,
) -> ContainerInfo:
    """Encrypt everything ``src`` yields into ``dst``, one chunk in memory at a time."""
    writer = encryptor(dst, recipients=recipients, key=key, object_id=object_id, chunk_size=chunk_size)
    return _pump(src, writer, chunk_size)


# ---------------------------------------------------------------- reading


def _read_exact(src: t.BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if data is None:
        data = b""
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _need(src: t.BinaryIO, size: int, raw: t.List[bytes], what: str) -> bytes:
    data = _read_exact(src, size)
    if len(data) != size:
        raise ContainerError("container is truncated inside its header (%s)" % what)
    raw.append(data)
    return data


def _parse_header(src: t.BinaryIO) -> _ParsedHeader:
    raw: t.List[bytes] = []
    fixed = _read_exact(src, _FIXED.size)
    if len(fixed) < len(MAGIC) or fixed[: len(MAGIC)] != MAGIC:
        raise ContainerError("not a ransomeye.ops container (bad magic)")
    if len(fixed) != _FIXED.size:
        raise ContainerError("container is truncated inside its header (fixed fields)")
    raw.append(fixed)
    _magic, version, suite, mode, reserved, chunk_size, salt = _FIXED.unpack(fixed)
    if version != VERSION:
        raise ContainerError("unsupported container version %d (this reader knows %d)" % (version, VERSION))
    if suite != SUITE_AES256GCM_STREAM:
        raise ContainerError("unsupported container cipher suite %d" % suite)
    if mode not in MODE_NAMES:
        raise ContainerError("unknown key wrapping mode %d" % mode)
    if reserved != 0:
        raise ContainerError("reserved header byte is not zero")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ContainerError("chunk size %d out of range" % chunk_size)
    (oid_len,) = struct.unpack(">H", _need(src, 2, raw, "object id length"))
    if oid_len > MAX_OBJECT_ID:
        raise ContainerError("object id length %d out of range" % oid_len)
    try:
        object_id = _need(src, oid_len, raw, "object id").decode("utf-8", "strict")
    except UnicodeDecodeError:
        raise ContainerError("object id in the header is not valid UTF-8")
    (count,) = struct.unpack(">H", _need(src, 2, raw, "stanza count"))
    if not 1 <= count <= MAX_STANZAS or (mode == MODE_AES and count != 1):
        raise ContainerError("key stanza count %d is invalid for mode %s" % (count, MODE_NAMES[mode]))
    stanzas = []
    for _index in range(count):
        kid = _need(src, KEY_ID_SIZE, raw, "key id")
        (wlen,) = struct.unpack(">H", _need(src, 2, raw, "wrapped key length"))
        if not 1 <= wlen <= MAX_WRAPPED or (mode == MODE_AES and wlen != WRAP_NONCE_SIZE + KEY_SIZE + TAG_SIZE):
            raise ContainerError("wrapped key length %d is invalid" % wlen)
        stanzas.append(_Stanza(kid, _need(src, wlen, raw, "wrapped key")))
    mac = _read_exact(src, MAC_SIZE)
    if len(mac) != MAC_SIZE:
        raise ContainerError("container is truncated inside its header (header MAC)")
    header_raw = b"".join(raw)
    ids = tuple(s.key_id.hex() for s in stanzas)
    header = ContainerHeader(
        version=version,
        object_id=object_id,
        chunk_size=chunk_size,
        mode=MODE_NAMES[mode],
        recipient_key_ids=ids if mode == MODE_RSA else (),
        key_file_id=ids[0] if mode == MODE_AES else None,
        header_size=len(header_raw) + MAC_SIZE,
    )
    return _ParsedHeader(header, header_raw, mac, salt, mode, tuple(stanzas))


def read_header(src: t.BinaryIO) -> ContainerHeader:
    """Parse the header at the current position of ``src`` (consumes it). Not authenticated: no secret needed."""
    return _parse_header(src).header


def _unwrap(parsed: _ParsedHeader, private_key: t.Any, key: t.Optional[bytes]) -> bytes:
    if (private_key is None) == (key is None):
        raise ContainerError("exactly one of private_key (RSA) or key (AES key file) is required to decrypt")
    if parsed.mode == MODE_RSA:
        if private_key is None:
            raise ContainerError("this container is encrypted for RSA recipients; a private key is required, not a key file")
        priv = _as_private_key(private_key)
        kid = public_key_id(priv)
        for stanza in parsed.stanzas:
            if stanza.key_id.hex() == kid:
                cache_key = (kid, stanza.wrapped)
                cached = _UNWRAP_CACHE.get(cache_key)
                if cached is not None:
                    return cached
                try:
                    file_key = priv.decrypt(stanza.wrapped, _oaep())
                except ValueError:
                    raise ContainerError("cannot unwrap the file key with private key %s: wrong key or corrupted header" % kid)
                if len(file_key) != KEY_SIZE:
                    raise ContainerError("unwrapped file key has the wrong size: corrupted header")
                # Memoising a deterministic RSA decryption changes nothing about
                # security: the header MAC is still checked with the result.
                _remember_unwrap(cache_key, file_key)
                return file_key
        raise ContainerError(
            "wrong private key: the container is not encrypted for key %s (recipients: %s)"
            % (kid, ", ".join(parsed.header.recipient_key_ids)),
            recipients=list(parsed.header.recipient_key_ids),
        )
    if key is None:
        raise ContainerError("this container is encrypted with an AES key file; a key is required, not a private key")
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ContainerError("key must be 32 bytes (AES-256)")
    stanza = parsed.stanzas[0]
    if stanza.key_id.hex() != key_file_id(key):
        raise ContainerError(
            "wrong key file: the container was encrypted with key-file id %s, this key is %s"
            % (stanza.key_id.hex(), key_file_id(key))
        )
    nonce, sealed = stanza.wrapped[:WRAP_NONCE_SIZE], stanza.wrapped[WRAP_NONCE_SIZE:]
    try:
        return AESGCM(key).decrypt(nonce, sealed, LABEL_AES_WRAP + parsed.salt)
    except InvalidTag:
        raise ContainerError("cannot unwrap the file key with this key file: wrong key or corrupted header")


# RSA unwraps cost milliseconds; objects of one EncryptionSession share their
# stanza, so a reader keeps the last few unwrapped file keys (process memory
# only, keyed by recipient key id and the exact wrapped bytes).
_UNWRAP_CACHE: "collections.OrderedDict[t.Tuple[str, bytes], bytes]" = collections.OrderedDict()
_UNWRAP_CACHE_SIZE = 16


def _remember_unwrap(cache_key: t.Tuple[str, bytes], file_key: bytes) -> None:
    _UNWRAP_CACHE[cache_key] = file_key
    _UNWRAP_CACHE.move_to_end(cache_key)
    while len(_UNWRAP_CACHE) > _UNWRAP_CACHE_SIZE:
        _UNWRAP_CACHE.popitem(last=False)


def clear_key_cache() -> None:
    """Forget every cached unwrapped file key."""
    _UNWRAP_CACHE.clear()


class _Opened(t.NamedTuple):
    parsed: _ParsedHeader
    aead: t.Any
    aad: bytes


def _open(src: t.BinaryIO, private_key: t.Any, key: t.Optional[bytes], expected_object_id: t.Optional[str]) -> _Opened:
    require_cryptography()
    parsed = _parse_header(src)
    file_key = _unwrap(parsed, private_key, key)
    expected_mac = hmac.new(_derive(file_key, parsed.salt, INFO_HEADER), parsed.raw, hashlib.sha256).digest()
    if not hmac.compare_digest(expected_mac, parsed.mac):
        raise ContainerError("header authentication failed: the container header was modified")
    if expected_object_id is not None and parsed.header.object_id != expected_object_id:
        raise ContainerError(
            "object id mismatch: expected %r, the container is %r (an object was swapped)"
            % (expected_object_id, parsed.header.object_id)
        )
    aead = AESGCM(_derive(file_key, parsed.salt, INFO_PAYLOAD))
    return _Opened(parsed, aead, hashlib.sha256(parsed.raw + parsed.mac).digest())


def _chunks(
    src: t.BinaryIO,
    opened: _Opened,
    ct_hash: t.Optional[t.Any],
) -> t.Iterator[bytes]:
    aead = opened.aead
    aad = opened.aad
    enc = opened.parsed.header.chunk_size + TAG_SIZE
    buf = bytearray(enc + 1)
    view = memoryview(buf)
    have = 0  # bytes of the current chunk already in buf (the look-ahead byte)
    counter = 0
    while True:
        # Fill up to one encrypted chunk plus one look-ahead byte.
        while have < enc + 1:
            got = src.readinto(view[have:]) if hasattr(src, "readinto") else None
            if got is None:
                data = src.read(enc + 1 - have)
                got = len(data)
                view[have:have + got] = data
            if not got:
                break
            have += got
        if have > enc:
            body = view[:enc]
            try:
                plain = aead.decrypt(chunk_nonce(counter, False), body, aad)
            except InvalidTag:
                _diagnose(aead, aad, counter, body, full=True)
            if ct_hash is not None:
                ct_hash.update(body)
            yield plain
            counter += 1
            buf[0] = buf[enc]
            have = 1
            continue
        # Final segment: everything left.
        if have < TAG_SIZE:
            if have == 0 and counter > 0:
                raise ContainerError(
                    "container is truncated: chunk %d ended without a final chunk" % (counter - 1)
                )
            raise ContainerError("container is truncated: chunk %d is shorter than its authentication tag" % counter)
        body = view[:have]
        try:
            plain = aead.decrypt(chunk_nonce(counter, True), body, aad)
        except InvalidTag:
            _diagnose(aead, aad, counter, body, full=False)
        if not plain and counter > 0:
            raise ContainerError("container has an empty final chunk after chunk %d (not allowed)" % (counter - 1))
        if ct_hash is not None:
            ct_hash.update(body)
        yield plain
        return


def _diagnose(aead: t.Any, aad: bytes, counter: int, body: t.Any, full: bool) -> t.NoReturn:
    """Name the failure after a chunk did not authenticate. Nothing here is ever released."""
    # A full-size chunk followed by more bytes: was it really the last one? A short last chunk: was it not?
    try:
        aead.decrypt(chunk_nonce(counter, full), body, aad)
    except InvalidTag:
        pass
    else:
        raise ContainerError(("container has trailing data after its final chunk %d" if full else
                              "container is truncated: chunk %d is not the final chunk and nothing follows it") % counter)
    raise ContainerError(
        "chunk %d failed authentication: the container was modified, truncated, reordered or spliced" % counter,
        chunk=counter,
    )


def decrypt_chunks(
    src: t.BinaryIO,
    *,
    private_key: t.Any = None,
    key: t.Optional[bytes] = None,
    expected_object_id: t.Optional[str] = None,
) -> t.Iterator[bytes]:
    """Yield authenticated plaintext chunks of the container read from ``src``.

    The header is checked before the first chunk; each chunk is yielded only
    after its tag verified. The object as a whole is authentic only when the
    iterator finishes without ContainerError: stage what you consume and
    commit it only then.
    """
    opened = _open(src, private_key, key, expected_object_id)
    yield from _chunks(src, opened, None)


class _Decryption:
    """decrypt_chunks plus the running hashes, for decrypt_stream and verifiers."""

    def __init__(
        self,
        src: t.BinaryIO,
        private_key: t.Any,
        key: t.Optional[bytes],
        expected_object_id: t.Optional[str],
        hash_ciphertext: bool = True,
    ) -> None:
        self.ct_hash = hashlib.sha256() if hash_ciphertext else None
        self.pt_hash = hashlib.sha256()
        self.src = src
        self.opened = _open(src, private_key, key, expected_object_id)
        if self.ct_hash is not None:
            self.ct_hash.update(self.opened.parsed.raw + self.opened.parsed.mac)
        self.ct_size = self.opened.parsed.header.header_size
        self.pt_size = 0

    def chunks(self) -> t.Iterator[bytes]:
        for plain in _chunks(self.src, self.opened, self.ct_hash):
            self.pt_hash.update(plain)
            self.pt_size += len(plain)
            self.ct_size += len(plain) + TAG_SIZE
            yield plain

    def info(self) -> ContainerInfo:
        ct_sha = self.ct_hash.hexdigest() if self.ct_hash is not None else ""
        return ContainerInfo(self.pt_hash.hexdigest(), self.pt_size, ct_sha, self.ct_size)


def decrypt_stream(
    src: t.BinaryIO,
    dst: t.Optional[t.BinaryIO],
    *,
    private_key: t.Any = None,
    key: t.Optional[bytes] = None,
    expected_object_id: t.Optional[str] = None,
    hash_ciphertext: bool = True,
) -> ContainerInfo:
    """Decrypt ``src`` into ``dst`` (``None``: verify only); return hashes and sizes of what was read and written.

    ``hash_ciphertext=False`` skips the ciphertext SHA-256 (``ciphertext_sha256`` is then ""): every
    ciphertext byte is still authenticated by the header MAC and the chunk tags, so a verifier that
    compares the plaintext hash with a signed manifest saves one hash pass.
    """
    run = _Decryption(src, private_key, key, expected_object_id, hash_ciphertext)
    for plain in run.chunks():
        if dst is not None:
            dst.write(plain)
    return run.info()
