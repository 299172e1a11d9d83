# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: certificate inspection, issuance, and the atomic swap of a key/certificate pair.

Two files cannot be renamed at once, so the pair lives in a versioned
directory and the two paths the services read are symlinks through one
``current`` symlink::

    <cert dir>/.ransomeye-pairs/<cert name>/v<time>-<serial>/{cert.pem,key.pem}
    <cert dir>/.ransomeye-pairs/<cert name>/current -> v<time>-<serial>
    <path>      -> .ransomeye-pairs/<cert name>/current/cert.pem
    <key_path>  -> <relative path to>/.ransomeye-pairs/<cert name>/current/key.pem

Renaming a new ``current`` symlink over the old one swaps the pair in one
atomic step, so a reader (or a crash at any point) sees either the old pair
or the new pair, never a certificate next to a key that does not match.

Steps of a renewal (test hook names in brackets):

1. adopt (first renewal only): copy the existing pair into a version
   directory, point ``current`` at it, then replace the certificate path
   and the key path by symlinks, each with an atomic rename; both always
   show the old, matching content [``adopt``, between the two paths];
2. back up the old pair (``<path>.<time>~`` copies) when asked;
3. stage the new pair in a new version directory, fsynced [``stage``];
4. swap ``current`` [``swap``];
5. point ``previous`` at the replaced version and remove version directories
   that neither ``current`` nor ``previous`` references (also done at the
   start of every run, which is the recovery rule after a crash).

``state=rolled_back`` renames ``current`` back to the ``previous`` version
(again one atomic step) and removes the rolled-back one.

Test hook (tests only, never in production): ``RANSOMEYE_TEST_KILL_AT=<step>``
kills the process with SIGKILL right after that step, as a power loss would.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import signal
import stat
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import backup_copy, fsync_dir, file_lock, unlink_on_error

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the managed host
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

PAIRS_DIR = ".ransomeye-pairs"
CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
TEST_HOOK_ENV = "RANSOMEYE_TEST_KILL_AT"
DEFAULT_VALID_DAYS = 365

NAME_ATTRIBUTES = {
    "CN": "COMMON_NAME", "commonName": "COMMON_NAME",
    "O": "ORGANIZATION_NAME", "organizationName": "ORGANIZATION_NAME",
    "OU": "ORGANIZATIONAL_UNIT_NAME", "organizationalUnitName": "ORGANIZATIONAL_UNIT_NAME",
    "C": "COUNTRY_NAME", "countryName": "COUNTRY_NAME",
    "ST": "STATE_OR_PROVINCE_NAME", "stateOrProvinceName": "STATE_OR_PROVINCE_NAME",
    "L": "LOCALITY_NAME", "localityName": "LOCALITY_NAME",
    "emailAddress": "EMAIL_ADDRESS", "serialNumber": "SERIAL_NUMBER",
}
EKU_NAMES = {"serverAuth": "SERVER_AUTH", "clientAuth": "CLIENT_AUTH", "codeSigning": "CODE_SIGNING",
             "emailProtection": "EMAIL_PROTECTION", "timeStamping": "TIME_STAMPING", "OCSPSigning": "OCSP_SIGNING"}
KU_NAMES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
KU_ALIASES = {"digitalSignature": "digital_signature", "nonRepudiation": "content_commitment",
              "contentCommitment": "content_commitment", "keyEncipherment": "key_encipherment",
              "dataEncipherment": "data_encipherment", "keyAgreement": "key_agreement",
              "keyCertSign": "key_cert_sign", "cRLSign": "crl_sign", "encipherOnly": "encipher_only",
              "decipherOnly": "decipher_only"}


def _kill_point(step: str) -> None:
    if os.environ.get(TEST_HOOK_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# -- reading ----------------------------------------------------------------------------------------------------------

def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise RansomeyeError("cannot read %s %s: %s" % (what, path, exc.strerror or exc))


def load_cert(path: str, what: str = "certificate") -> t.Any:
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_der_x509_certificate(data)
        except ValueError:
            raise RansomeyeError("%s %s is not a PEM or DER certificate" % (what, path))


def load_key(path: str, passphrase: t.Optional[str] = None, what: str = "private key") -> t.Any:
    data = _read(path, what)
    try:
        return serialization.load_pem_private_key(data, passphrase.encode("utf-8") if passphrase else None)
    except TypeError:
        if passphrase:
            raise RansomeyeError("%s %s is not encrypted, but a passphrase was given; remove the passphrase option"
                                 % (what, path))
        raise RansomeyeError("%s %s is encrypted; give its passphrase" % (what, path))
    except ValueError:
        raise RansomeyeError("%s %s is not a PEM private key (or the passphrase is wrong)" % (what, path))


def _spki(public_key: t.Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: t.Any, key: t.Any) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def not_after(cert: t.Any) -> datetime.datetime:
    return cert.not_valid_after_utc


def not_before(cert: t.Any) -> datetime.datetime:
    return cert.not_valid_before_utc


def fingerprint(cert: t.Any) -> str:
    """SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` prints it (AA:BB:...)."""
    return ":".join("%02X" % b for b in cert.fingerprint(hashes.SHA256()))


def describe(cert: t.Any) -> dict:
    return dict(
        not_after=not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        serial=cert.serial_number,
        fingerprint=fingerprint(cert),
        subject=cert.subject.rfc4514_string(),
    )


def _extension(cert: t.Any, ext_class: t.Any) -> t.Any:
    try:
        return cert.extensions.get_extension_for_class(ext_class).value
    except x509.ExtensionNotFound:
        return None


# -- what the new certificate should look like -----------------------------------------------------------------------

class Spec(t.NamedTuple):
    subject: t.Any
    sans: t.List[t.Any]
    key_type: str
    key_size: int
    valid_days: int
    key_usage: t.Dict[str, bool]
    extended_key_usage: t.List[t.Any]


def parse_subject(value: t.Dict[str, t.Any]) -> t.Any:
    attributes = []
    for name, item in value.items():
        oid_name = NAME_ATTRIBUTES.get(name)
        if oid_name is None:
            raise RansomeyeError("unknown subject attribute %r (use one of %s)"
                                 % (name, ", ".join(sorted(NAME_ATTRIBUTES))))
        for part in item if isinstance(item, list) else [item]:
            attributes.append(x509.NameAttribute(getattr(NameOID, oid_name), str(part)))
    if not attributes:
        raise RansomeyeError("subject must not be empty")
    return x509.Name(attributes)


_DNS_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


def parse_san(value: str) -> t.Any:
    kind, sep, rest = value.partition(":")
    if not sep:
        kind, rest = ("IP", value) if _is_ip(value) else ("DNS", value)
    kind = kind.strip().upper()
    if kind == "DNS":
        if not _DNS_NAME.match(rest) or len(rest) > 253:
            raise RansomeyeError("subject_alt_names: %r is not a valid DNS name (letters, digits, '-' and '_' in "
                                 "labels of 1 to 63 characters separated by dots, optionally '*.' first; no spaces)"
                                 % value)
        return x509.DNSName(rest)
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(rest))
        except ValueError:
            raise RansomeyeError("subject_alt_names: %r is not an IP address" % value)
    if kind == "URI":
        return x509.UniformResourceIdentifier(rest)
    if kind == "EMAIL":
        return x509.RFC822Name(rest)
    raise RansomeyeError("subject_alt_names: %r must start with DNS:, IP:, URI: or email:" % value)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _current_key_type(cert: t.Any) -> t.Tuple[str, int]:
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa", public.key_size
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec", public.curve.key_size
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    raise RansomeyeError("the current certificate's key type is not supported (RSA, EC or Ed25519)")


def build_spec(current: t.Any, options: dict, renew_before: int = 30) -> Spec:
    """Options given win; everything else comes from the current certificate.

    A validity taken from the current certificate that is not longer than
    ``renew_before`` becomes DEFAULT_VALID_DAYS (it would renew on every run).
    """
    subject = parse_subject(options["subject"]) if options.get("subject") else current.subject
    if options.get("subject_alt_names") is not None:
        sans = [parse_san(v) for v in options["subject_alt_names"]]
    else:
        ext = _extension(current, x509.SubjectAlternativeName)
        sans = list(ext) if ext is not None else []
    cur_type, cur_size = _current_key_type(current)
    key_type = options.get("key_type") or cur_type
    key_size = options.get("key_size") or (cur_size if key_type == cur_type else {"rsa": 3072, "ec": 256}.get(key_type, 256))
    if key_type == "rsa" and not RSA_SIZES[0] <= key_size <= RSA_SIZES[1]:
        raise RansomeyeError("key_size for RSA must be between %d and %d, not %d" % (RSA_SIZES + (key_size,)))
    if key_type == "ec" and key_size not in (256, 384, 521):
        raise RansomeyeError("key_size for EC must be 256, 384 or 521, not %d" % key_size)
    valid_days = options.get("valid_days")
    if valid_days is None:
        valid_days = max(1, int(round((not_after(current) - not_before(current)).total_seconds() / 86400.0)))
        if valid_days <= renew_before:
            # A certificate issued for less than renew_before would be renewed on every run.
            valid_days = DEFAULT_VALID_DAYS
    elif valid_days <= renew_before:
        raise RansomeyeError("valid_days (%d) must be longer than renew_before (%d), or every run would renew"
                             % (valid_days, renew_before))
    if valid_days < 1:
        raise RansomeyeError("valid_days must be at least 1")
    if options.get("key_usage") is not None:
        ku = {name: False for name in KU_NAMES}
        for name in options["key_usage"]:
            canonical = KU_ALIASES.get(name, name)
            if canonical not in ku:
                raise RansomeyeError("unknown key_usage %r (use %s)" % (name, ", ".join(sorted(KU_ALIASES))))
            ku[canonical] = True
    else:
        ext = _extension(current, x509.KeyUsage)
        if ext is not None:
            ku = {name: (getattr(ext, name) if name not in ("encipher_only", "decipher_only") or ext.key_agreement
                         else False) for name in KU_NAMES}
        else:
            ku = {name: False for name in KU_NAMES}
            ku["digital_signature"] = True
            ku["key_encipherment"] = key_type == "rsa"
    if key_type != "rsa":
        ku["key_encipherment"] = False  # not meaningful for EC/Ed25519 keys
    if options.get("extended_key_usage") is not None:
        eku = []
        for name in options["extended_key_usage"]:
            if name in EKU_NAMES:
                eku.append(getattr(ExtendedKeyUsageOID, EKU_NAMES[name]))
            else:
                try:
                    eku.append(x509.ObjectIdentifier(name))
                except ValueError:
                    raise RansomeyeError("unknown extended_key_usage %r (use %s or a dotted OID)"
                                         % (name, ", ".join(sorted(EKU_NAMES))))
    else:
        ext = _extension(current, x509.ExtendedKeyUsage)
        eku = list(ext) if ext is not None else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return Spec(subject, sans, key_type, int(key_size), int(valid_days), ku, eku)


# -- deciding ---------------------------------------------------------------------------------------------------------

class Issuer(t.NamedTuple):
    cert: t.Any
    key: t.Any


def load_issuer(ca_cert: str, ca_key: str, passphrase: t.Optional[str], now: datetime.datetime) -> Issuer:
    """The CA, checked: valid now, a CA, and its key matches its certificate."""
    cert = load_cert(ca_cert, "CA certificate")
    key = load_key(ca_key, passphrase, "CA private key")
    if not key_matches(cert, key):
        raise RansomeyeError("CA private key %s does not match CA certificate %s" % (ca_key, ca_cert))
    if not_after(cert) <= now:
        raise RansomeyeError("CA certificate %s expired on %s; renew the CA first"
                             % (ca_cert, not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ")))
    if not_before(cert) > now:
        raise RansomeyeError("CA certificate %s is not valid before %s"
                             % (ca_cert, not_before(cert).strftime("%Y-%m-%dT%H:%M:%SZ")))
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and not constraints.ca:
        raise RansomeyeError("%s is not a CA certificate (basicConstraints CA:FALSE)" % ca_cert)
    return Issuer(cert, key)


def renewal_reason(cert: t.Any, key: t.Optional[t.Any], renew_before_days: int, force: bool,
                   now: datetime.datetime) -> t.Optional[str]:
    """Why the pair must be renewed, or None."""
    if force:
        return "forced"
    if key is None or not key_matches(cert, key):
        return "key_mismatch"
    left = not_after(cert) - now
    if left.total_seconds() <= 0:
        return "expired"
    if left <= datetime.timedelta(days=renew_before_days):
        return "expiring"
    return None


# -- issuing ----------------------------------------------------------------------------------------------------------

def generate_key(spec: Spec) -> t.Any:
    if spec.key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.key_size)
    if spec.key_type == "ec":
        curve = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}[spec.key_size]
        return ec.generate_private_key(curve())
    return ed25519.Ed25519PrivateKey.generate()


def _sign_hash(key: t.Any) -> t.Any:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def issue(spec: Spec, key: t.Any, issuer: t.Optional[Issuer], renew_before_days: int,
          now: datetime.datetime) -> t.Any:
    """A new certificate for ``key``, signed by ``issuer`` (or self-signed)."""
    start = now - datetime.timedelta(minutes=5)
    end = now + datetime.timedelta(days=spec.valid_days)
    if issuer is not None and end > not_after(issuer.cert):
        end = not_after(issuer.cert)
        if end - now <= datetime.timedelta(days=renew_before_days):
            raise RansomeyeError(
                "the CA certificate expires on %s, within renew_before (%d days): a certificate it signs would be "
                "renewed on every run; renew the CA first" % (end.strftime("%Y-%m-%d"), renew_before_days))
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer.cert.subject if issuer else spec.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**spec.key_usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if spec.extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(spec.extended_key_usage), critical=False)
    if spec.sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(spec.sans), critical=False)
    if issuer is not None:
        ski = _extension(issuer.cert, x509.SubjectKeyIdentifier)
        aki = (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski) if ski is not None
               else x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()))
        builder = builder.add_extension(aki, critical=False)
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, _sign_hash(signer))
    if issuer is not None:
        cert.verify_directly_issued_by(issuer.cert)
    return cert


def key_pem(key: t.Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: t.Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- the pair on disk ---------------------------------------------------------------------------------------------------

class PairLayout(t.NamedTuple):
    cert_path: str
    key_path: str
    pairs_dir: str      # <cert dir>/.ransomeye-pairs/<cert name>

    @classmethod
    def for_paths(cls, cert_path: str, key_path: str) -> "PairLayout":
        cert_path = os.path.abspath(cert_path)
        key_path = os.path.abspath(key_path)
        if cert_path == key_path:
            raise RansomeyeError("path and key_path must be different files")
        pairs = os.path.join(os.path.dirname(cert_path), PAIRS_DIR, os.path.basename(cert_path))
        return cls(cert_path, key_path, pairs)

    @property
    def current(self) -> str:
        return os.path.join(self.pairs_dir, "current")

    @property
    def lock_path(self) -> str:
        return os.path.join(os.path.dirname(self.pairs_dir), ".%s.lock" % os.path.basename(self.pairs_dir))

    @contextlib.contextmanager
    def locked(self) -> t.Iterator[None]:
        os.makedirs(os.path.dirname(self.pairs_dir), mode=0o755, exist_ok=True)
        with file_lock(self.lock_path, "renewal of %s" % self.cert_path):
            yield

    @property
    def previous(self) -> str:
        return os.path.join(self.pairs_dir, "previous")

    def link_target(self, path: str, name: str) -> str:
        return os.path.relpath(os.path.join(self.current, name), os.path.dirname(path))

    def managed(self) -> bool:
        if not (os.path.islink(self.cert_path) and os.path.islink(self.key_path) and os.path.islink(self.current)):
            return False
        cert_ok = os.readlink(self.cert_path) == self.link_target(self.cert_path, CERT_NAME)
        return cert_ok and os.readlink(self.key_path) == self.link_target(self.key_path, KEY_NAME)


def _write_new(path: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        pass


def _symlink_atomically(target: str, path: str) -> None:
    """Make ``path`` a symlink to ``target`` with one rename (replacing whatever is there)."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, ".%s.%s.lnk" % (os.path.basename(path), secrets.token_hex(8)))
    os.symlink(target, tmp)  # fails (never follows) if the name exists
    with unlink_on_error(tmp):
        os.rename(tmp, path)
    fsync_dir(directory)


def _meta(path: str, default_mode: int) -> t.Tuple[int, int, int]:
    try:
        st = os.stat(path)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    except FileNotFoundError:
        return default_mode, os.geteuid(), os.getegid()


def _make_version(layout: PairLayout, name: str, cert_data: bytes, key_data: t.Optional[bytes],
                  cert_meta: t.Tuple[int, int, int], key_meta: t.Tuple[int, int, int]) -> str:
    directory = os.path.join(layout.pairs_dir, name)
    os.mkdir(directory, 0o755)
    _write_new(os.path.join(directory, CERT_NAME), cert_data, *cert_meta)
    if key_data is not None:
        _write_new(os.path.join(directory, KEY_NAME), key_data, key_meta[0] & 0o640, key_meta[1], key_meta[2])
    fsync_dir(directory)
    fsync_dir(layout.pairs_dir)
    return name


def recover(layout: PairLayout) -> None:
    """After a crash: drop half-made links and version directories that ``current`` does not use."""
    if not os.path.isdir(layout.pairs_dir):
        return
    in_use = set(os.readlink(link) for link in (layout.current, layout.previous) if os.path.islink(link))
    for name in os.listdir(layout.pairs_dir):
        full = os.path.join(layout.pairs_dir, name)
        if name in ("current", "previous"):
            continue
        if name.endswith(".lnk") and os.path.islink(full):
            os.unlink(full)
        elif name not in in_use and name.startswith("v") and os.path.isdir(full) and not os.path.islink(full):
            # Only the adopted copy of a pair still read through a regular file path could
            # matter, and adopt() points current at it before any path uses it.
            shutil.rmtree(full)
    for path in (layout.cert_path, layout.key_path):
        directory = os.path.dirname(path)
        prefix = ".%s." % os.path.basename(path)
        for name in os.listdir(directory):
            full = os.path.join(directory, name)
            if name.startswith(prefix) and name.endswith(".lnk") and os.path.islink(full):
                os.unlink(full)


def adopt(layout: PairLayout) -> None:
    """Move the existing pair under the versioned layout without changing what readers see."""
    if layout.managed():
        return
    os.makedirs(layout.pairs_dir, mode=0o755, exist_ok=True)
    cert_linked = os.path.islink(layout.cert_path)
    if cert_linked:
        cert_linked = os.readlink(layout.cert_path) == layout.link_target(layout.cert_path, CERT_NAME)
    if not (cert_linked and os.path.islink(layout.current)):
        # The regular files are the truth: copy them into a version directory first.
        with open(layout.cert_path, "rb") as handle:
            cert_data = handle.read()
        key_data = None
        if os.path.exists(layout.key_path):
            with open(layout.key_path, "rb") as handle:
                key_data = handle.read()
        name = _make_version(layout, "v0-adopted-%s" % _utcnow().strftime("%Y%m%dT%H%M%S%f"), cert_data, key_data,
                             _meta(layout.cert_path, 0o644), _meta(layout.key_path, 0o600))
        _symlink_atomically(name, layout.current)
    # else: a crash between the two links of an earlier adopt; current holds copies of both files.
    _symlink_atomically(layout.link_target(layout.cert_path, CERT_NAME), layout.cert_path)
    _kill_point("adopt")
    _symlink_atomically(layout.link_target(layout.key_path, KEY_NAME), layout.key_path)


def swap_in(layout: PairLayout, cert: t.Any, key: t.Any, backup: bool) -> t.List[str]:
    """Adopt, back up, stage and swap; returns the backup files."""
    recover(layout)
    adopt(layout)
    backups: t.List[str] = []
    if backup:
        backups.append(backup_copy(layout.cert_path))
        if os.path.exists(layout.key_path):
            backups.append(backup_copy(layout.key_path))
    old = os.readlink(layout.current)
    name = "v%s-%x" % (_utcnow().strftime("%Y%m%dT%H%M%S%f"), cert.serial_number % (1 << 32))
    _make_version(layout, name, cert_pem(cert), key_pem(key),
                  _meta(layout.cert_path, 0o644), _meta(layout.key_path, 0o600))
    _kill_point("stage")
    _symlink_atomically(name, layout.current)
    _kill_point("swap")
    if old != name:
        # The replaced pair stays as "previous" for state=rolled_back; older ones go.
        _symlink_atomically(old, layout.previous)
    recover(layout)
    fsync_dir(layout.pairs_dir)
    return backups


def roll_back(layout: PairLayout, check_mode: bool) -> dict:
    """Swap the previous pair back in (one atomic rename); the rolled-back pair is removed."""
    recover(layout)
    if not (layout.managed() and os.path.islink(layout.previous)):
        current = load_cert(layout.cert_path)
        result = dict(changed=False, renewed=False, reason="no previous pair to roll back to", backup_files=[])
        result.update(describe(current))
        return result
    prev = os.readlink(layout.previous)
    prev_dir = os.path.join(layout.pairs_dir, prev)
    cert = load_cert(os.path.join(prev_dir, CERT_NAME))
    if not key_matches(cert, load_key(os.path.join(prev_dir, KEY_NAME))):
        raise RansomeyeError("the previous pair in %s does not match; refusing to roll back to it" % prev_dir)
    result = dict(changed=True, renewed=False, reason="rolled_back", backup_files=[])
    result.update(describe(cert))
    if check_mode:
        return result
    rolled = os.readlink(layout.current)
    result["previous_serial"] = load_cert(layout.cert_path).serial_number
    _symlink_atomically(prev, layout.current)
    os.unlink(layout.previous)
    fsync_dir(layout.pairs_dir)
    if rolled != prev:
        shutil.rmtree(os.path.join(layout.pairs_dir, rolled), ignore_errors=True)
    return result


class Request(t.NamedTuple):
    path: str
    key_path: str
    renew_before: int
    force: bool
    backup: bool
    ca_cert: t.Optional[str]
    ca_key: t.Optional[str]
    ca_key_passphrase: t.Optional[str]
    options: dict  # subject, subject_alt_names, key_type, key_size, valid_days, key_usage, extended_key_usage
    state: str = "renewed"  # or rolled_back


MAX_VALID_DAYS = 36500  # 100 years: far beyond any sane mTLS lifetime, far below datetime's limit
MAX_RENEW_BEFORE = 3650
RSA_SIZES = (2048, 16384)


def check_bounds(renew_before: int, options: dict) -> None:
    """Every numeric option within its range, before any key is loaded or generated."""
    if not 0 <= renew_before <= MAX_RENEW_BEFORE:
        raise RansomeyeError("renew_before must be between 0 and %d days, not %s" % (MAX_RENEW_BEFORE, renew_before))
    valid_days = options.get("valid_days")
    if valid_days is not None and not 1 <= valid_days <= MAX_VALID_DAYS:
        raise RansomeyeError("valid_days must be between 1 and %d, not %s" % (MAX_VALID_DAYS, valid_days))
    key_size = options.get("key_size")
    if key_size is not None and options.get("key_type") in (None, "rsa") and not RSA_SIZES[0] <= key_size <= RSA_SIZES[1] \
            and key_size not in (256, 384, 521):
        raise RansomeyeError("key_size for RSA must be between %d and %d, not %s" % (RSA_SIZES + (key_size,)))


def run(req: Request, check_mode: bool) -> dict:
    """Decide, then renew unless in check mode."""
    if not HAS_CRYPTOGRAPHY:
        raise RansomeyeError("the Python library cryptography is required on the managed host")
    check_bounds(req.renew_before, req.options)
    if bool(req.ca_cert) != bool(req.ca_key):
        raise RansomeyeError("ca_cert and ca_key go together (give neither for a self-signed certificate)")
    now = _utcnow()
    layout = PairLayout.for_paths(req.path, req.key_path)
    if not os.path.exists(layout.cert_path):
        raise RansomeyeError("certificate %s does not exist" % layout.cert_path)
    if req.state == "rolled_back":
        if check_mode or not os.path.isdir(layout.pairs_dir):
            return roll_back(layout, check_mode)
        with layout.locked():
            return roll_back(layout, check_mode)
    result = _decide(req, layout, now)
    if result["reason"] == "valid" or check_mode:
        return _with_diff(_strip(result), layout, describe(result["_current"]), None)
    with layout.locked():
        # Decide again under the lock: another run may have renewed meanwhile.
        result = _decide(req, layout, now)
        if result["reason"] == "valid":
            return _strip(result)
        before = describe(result["_current"])
        renewed = _renew(req, layout, now, result)
        return _with_diff(renewed, layout, before, {k: renewed[k] for k in before})


def _with_diff(result: dict, layout: PairLayout, before: dict, after: t.Optional[dict]) -> dict:
    """Add the diff of what renewal changes (or would change) about the certificate: never key material."""
    if result.get("changed"):
        if after is None:
            after = dict(before, not_after="(renewed: valid %s days)" % result.get("valid_days"),
                         serial="(new)", fingerprint="(new)")
        result["diff"] = dict(before_header=layout.cert_path, after_header=layout.cert_path,
                              before=before, after=after)
    return result


def _decide(req: Request, layout: PairLayout, now: datetime.datetime) -> dict:
    current = load_cert(layout.cert_path)
    key = load_key(layout.key_path) if os.path.exists(layout.key_path) else None
    issuer = load_issuer(req.ca_cert, req.ca_key, req.ca_key_passphrase, now) if req.ca_cert else None
    spec = build_spec(current, req.options, req.renew_before)
    reason = renewal_reason(current, key, req.renew_before, req.force, now)
    result = dict(changed=False, reason=reason or "valid", backup_files=[], renewed=False, valid_days=spec.valid_days)
    result.update(describe(current))
    result["changed"] = reason is not None
    result["_current"], result["_issuer"], result["_spec"] = current, issuer, spec
    return result


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _renew(req: Request, layout: PairLayout, now: datetime.datetime, decided: dict) -> dict:
    current, issuer, spec = decided["_current"], decided["_issuer"], decided["_spec"]
    result = _strip(decided)
    new_key = generate_key(spec)
    new_cert = issue(spec, new_key, issuer, req.renew_before, now)
    backups = swap_in(layout, new_cert, new_key, req.backup)
    # Read back through the paths the services use: the pair must match.
    if not key_matches(load_cert(layout.cert_path), load_key(layout.key_path)):
        raise RansomeyeError("after the swap %s does not match %s" % (layout.cert_path, layout.key_path))
    result.update(describe(new_cert))
    result.update(changed=True, renewed=True, backup_files=backups, previous_serial=current.serial_number,
                  previous_not_after=not_after(current).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return result
