# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: a restore that does not lock the app out (credentials, certificates).

A config backup taken before a credential rotation holds ``.env`` files with
the old password, while the database role (a cluster object, not in the
dump) keeps the new one: restoring those files as they are takes the app
down. Before anything changes, the password the backup's ``.env`` files hold
is read from the backup (authenticated, never written to disk) and compared
with the live files. On a mismatch, ``keep_current`` (the default) writes the
live credential values back into the restored files; ``resync_role`` sets the
role's password to the restored one with a SCRAM verifier computed here, as
the credential rotation does (the plaintext never reaches the server).
Nothing secret is returned.

Certificates get the same care: a certificate of the config backup that
expires before the live one at the same path is an older certificate (the
live one was renewed since); it is not brought back silently. With
``keep_newer`` (the default) the live certificate and its key (same name,
``.key``) are left out of the file restore: decided before the first write,
they are never replaced, so a restore that fails or is killed midway cannot
leave the older pair behind.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import tarfile
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import EnvFile, parse_db_url
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write

MAX_ENV_BYTES = 1024 * 1024


class EnvCreds(t.NamedTuple):
    user: t.Optional[str]
    password: t.Optional[str]
    values: t.Dict[str, str]     # env var -> raw value (for keep_current)


def creds_of(env: EnvFile, env_vars: t.Sequence[str]) -> EnvCreds:
    user = env.get("DB_USER")
    password = None
    values: t.Dict[str, str] = {}
    for var in env_vars:
        value = env.get(var)
        if value is None:
            continue
        values[var] = value
        parsed = parse_db_url(value)
        if parsed is not None:
            user = user or parsed.user
            password = password if password is not None else parsed.password
        elif password is None:
            password = value
    return EnvCreds(user, password, values)


def backup_file_bytes(comp: dict, chunks: t.Iterable[bytes], wanted: t.Sequence[str]) -> t.Dict[str, bytes]:
    """The content of the ``wanted`` small files as the config backup holds them (checked against the manifest)."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import ChunkReader
    files = comp.get("files") or {}
    names = {path.lstrip("/"): path for path in wanted if (files.get(path) or {}).get("type") == "file"}
    out: t.Dict[str, bytes] = {}
    if not names:
        return out
    with tarfile.open(fileobj=ChunkReader(iter(chunks)), mode="r|") as tar:
        for member in tar:
            path = names.get(member.name)
            if path is None or not member.isreg():
                continue
            if member.size > MAX_ENV_BYTES:
                raise RansomeyeError("%s in the backup is larger than an env file can be" % path)
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            if hashlib.sha256(data).hexdigest() != files[path].get("sha256"):
                raise RansomeyeError("%s in the backup does not match its manifest hash" % path)
            out[path] = data
            if len(out) == len(names):
                break
    return out


def plan(mode: str, env_files: t.Sequence[str], env_vars: t.Sequence[str], backup_texts: t.Dict[str, str]
         ) -> t.Tuple[dict, t.Dict[str, EnvCreds], t.Dict[str, EnvCreds]]:
    """Decide before anything changes: (public report, live creds, backup creds) per env file."""
    live: t.Dict[str, EnvCreds] = {}
    backup: t.Dict[str, EnvCreds] = {}
    differ = []
    for path in env_files:
        if path not in backup_texts:
            continue
        backup[path] = creds_of(EnvFile(backup_texts[path], path), env_vars)
        if os.path.isfile(path):
            live[path] = creds_of(EnvFile.read(path), env_vars)
            if live[path].password != backup[path].password or live[path].user != backup[path].user:
                differ.append(path)
    action = "none"
    if differ:
        action = mode
    report = {"mismatch": bool(differ), "env_files": differ, "action": action,
              "role": next((backup[p].user for p in differ if backup[p].user), None)}
    if differ:
        report["msg"] = ("the backup's .env files hold other database credentials than the live ones (a credential "
                         "rotation after the backup): %s" % (
                             "the live credentials are written back into the restored files" if mode == "keep_current"
                             else "the role's password is set to the restored one (SCRAM verifier)"))
    return report, live, backup


def keep_current(report: dict, live: t.Dict[str, EnvCreds]) -> None:
    """Write the live credential values back into the restored env files (atomic, same mode)."""
    for path in report["env_files"]:
        env = EnvFile.read(path)
        for var, value in live[path].values.items():
            env.set(var, value)
        atomic_write(path, env.render(), mode=os.stat(path).st_mode & 0o7777)


def resync_role(report: dict, backup: t.Dict[str, EnvCreds], params: t.Mapping[str, t.Any]) -> None:
    """ALTER ROLE <user> PASSWORD <SCRAM verifier of the restored password>; then prove the login."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    from ansible_collections.ransomeye.ops.plugins.module_utils._scram import scram_sha256_verifier
    pairs = {(backup[p].user, backup[p].password) for p in report["env_files"]}
    if len(pairs) != 1:
        raise RansomeyeError("the restored env files name different users or passwords; cannot re-sync one role")
    (user, password), = pairs
    if not user or password is None:
        raise RansomeyeError("the restored env files name no user and password to re-sync")
    info = pgu.ConnInfo.from_params(dict(params, login_db=params.get("db") or "postgres"))
    with pgu.connection(info) as conn:
        if not pgu.role_exists(conn, user):
            raise RansomeyeError("role %s of the restored env files does not exist" % user)
        pgu.query(conn, pgu.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            pgu.ident(user), pgu.literal(scram_sha256_verifier(password))))
    with pgu.connection(info.with_login(user, password)) as conn:
        pgu.query_one(conn, "SELECT 1")


CERT_SUFFIXES = (".crt", ".pem", ".cer")


def cert_candidates(comp: dict) -> t.List[str]:
    """Certificates of the config backup that also exist live (the only ones a restore could replace)."""
    files = comp.get("files") or {}
    small_certs = [path for path, rec in files.items()
                   if rec.get("type") == "file" and path.endswith(CERT_SUFFIXES) and rec.get("size", 0) <= MAX_ENV_BYTES]
    return sorted(path for path in small_certs if os.path.isfile(path))


def _not_after(data: bytes) -> t.Any:
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError:
            return None
    return cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") else cert.not_valid_after


def cert_plan(mode: str, backup_texts: t.Dict[str, bytes]) -> t.Tuple[dict, t.Dict[str, t.List[str]]]:
    """Which live certificates are newer than the backup's; with keep_newer, each one's live paths (certificate,
    and its key when present) that the restore must leave as they are."""
    older = []
    keep: t.Dict[str, t.List[str]] = {}
    for path, data in sorted(backup_texts.items()):
        with open(path, "rb") as handle:
            live = handle.read(MAX_ENV_BYTES + 1)
        if live == data:
            continue
        backup_end, live_end = _not_after(data), _not_after(live)
        if backup_end is None or live_end is None or backup_end >= live_end:
            continue
        older.append({"path": path, "backup_not_after": backup_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "live_not_after": live_end.strftime("%Y-%m-%dT%H:%M:%SZ")})
        if mode == "keep_newer":
            key = os.path.splitext(path)[0] + ".key"
            keep[path] = [path] + ([key] if os.path.isfile(key) else [])
    report = {"older_in_backup": older, "action": (mode if older else "none")}
    if older:
        report["msg"] = "the backup holds older certificates than the live ones (%s): %s" % (
            ", ".join(o["path"] for o in older),
            "the live certificates and keys are kept" if mode == "keep_newer" else "the backup's are restored")
    return report, keep


def v2_file_bytes(repo: t.Any, body: dict, comp: dict, decrypt: dict, wanted: t.Sequence[str]
                  ) -> t.Tuple[t.Dict[str, bytes], t.List[str]]:
    """Repository v2 (trees of blobs): the ``wanted`` files and the live-existing certificates, read from the backup.

    Returns (content by path, certificate candidates). Blobs are authenticated when their pack is decrypted.
    """
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import pack as bpack
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup.reader import TreeReader
    reader = TreeReader(repo, body, decrypt)
    out: t.Dict[str, bytes] = {}
    certs: t.List[str] = []
    try:
        for event in reader.walk(comp):
            if event.kind != "file":
                continue
            path = os.fsdecode(event.path)
            is_cert = path.endswith(CERT_SUFFIXES) and os.path.isfile(path)
            if path not in wanted and not is_cert:
                continue
            if int(event.entry.get("size") or 0) > MAX_ENV_BYTES:
                continue
            out[path] = b"".join(bpack.read_blob(reader.data, reader.locate(blob, fmt.BLOB_DATA))
                                 for blob in event.entry["chunks"])
            if is_cert:
                certs.append(path)
    finally:
        reader.close()
    return out, sorted(certs)
