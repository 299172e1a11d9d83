# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the WAL archive/restore program that PostgreSQL runs (``ransomeye-wal``).

``push`` is the archive_command: it encrypts one WAL file into the repository
(the collection's container), fsyncs it and its directory, then appends a
hash-chain entry (signed every ``sign_every`` entries) and only then exits 0.
``get`` is the restore_command: it decrypts and authenticates one file, checks
it against the verified plan written by ransomeye_restore, and only then
renames it to where PostgreSQL wants it. ``check`` is the installer's preflight.

Runs as the PostgreSQL OS user, from module_utils files installed beside a small
launcher by ransomeye_wal_archive; no secret ever appears on its command line
(the config file names key files). Every failure is one ``ransomeye-wal:`` line
on stderr, which PostgreSQL copies into the server log, and exit status 1
(never above 125, which would make the archiver or startup process FATAL).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import json
import os
import signal
import sys
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils._files import (
    atomic_write, ensure_directory, file_lock, fsync_dir)

PROGRAM_FORMAT = "ransomeye-wal-program"
READ_CHUNK = 1 << 20
HOOK_ENV = "RANSOMEYE_WAL_TEST_HOOK"


class Timeout(RansomeyeError):
    """The bounded run time of one push or get ran out."""


def _hook(point: str) -> None:
    """Crash-test hook (``RANSOMEYE_WAL_TEST_HOOK=<point>:kill|sleep``); does nothing when unset."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    wanted, _sep, action = spec.partition(":")
    if wanted != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "sleep":
        time.sleep(3600)


def load_program_config(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(1 << 22).decode("utf-8"))
    except FileNotFoundError:
        raise RansomeyeError("config %s does not exist" % path)
    except PermissionError:
        raise RansomeyeError("config %s is not readable by uid %d" % (path, os.getuid()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RansomeyeError("config %s is not valid JSON: %s" % (path, exc))
    if not isinstance(data, dict) or data.get("format") != PROGRAM_FORMAT or not isinstance(data.get("repo"), str):
        raise RansomeyeError("config %s is not a ransomeye-wal config" % path)
    return data


# ----------------------------------------------------------------------------- push (archive_command)


def _find_entry(layout: wf.WalLayout, name: str) -> t.Optional[wf.ChainEntry]:
    for n, entry_name, path in reversed(layout.chain_files()):
        if entry_name == name:
            return wf.load_entry(n, entry_name, path)
    return None


def _hash_file(path: str) -> t.Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _check_segment_header(name: str, first: bytes, size: int, config: dict) -> None:
    """Refuse a segment whose page header disagrees with its name or comes from another cluster."""
    header = wf.parse_long_header(first)
    if header is None:
        raise wf.WalError("%s does not start with a WAL long page header" % name)
    seg_size = header["segment_size"]
    if wf.wal_kind(name) == "segment" and size != seg_size:
        raise wf.WalError("%s is %d bytes, not the segment size %d (truncated?)" % (name, size, seg_size))
    # The first segment of a new timeline is a copy of the parent's up to the switch point, so its first page
    # carries the parent's (lower) timeline; a higher one is never right.
    if header["timeline"] > int(name[:8], 16):
        raise wf.WalError("%s holds WAL of timeline %d" % (name, header["timeline"]))
    if header["pageaddr"] != wf.segment_number(name, seg_size) * seg_size:
        raise wf.WalError("%s holds WAL of another segment (page address %s)" % (name, wf.format_lsn(header["pageaddr"])))
    expected = config.get("system_identifier")
    if expected and header["system_identifier"] != str(expected):
        raise wf.WalError("%s comes from database system %s, but this repository archives system %s; "
                          "refusing to mix clusters" % (name, header["system_identifier"], expected))


def _encryption(config: dict) -> dict:
    if config.get("mode") == "aes":
        return {"key": container.load_key_file(config["key_file"])}
    recipients = config.get("recipients") or []
    if not recipients:
        raise RansomeyeError("config names no recipients")
    return {"recipients": [container.load_public_key(p) for p in recipients]}


def _signer(config: dict) -> t.Any:
    path = config.get("signing_key")
    if not path:
        raise RansomeyeError("config names no signing_key")
    return signing.load_signing_private_key(path)


def push(config: dict, source: str, name: str) -> str:
    """Archive ``source`` as ``name``; return what was done (``archived`` or ``already archived``)."""
    kind = wf.wal_kind(name)
    layout = wf.WalLayout(config["repo"])
    wal_config = wf.read_config(layout)
    if config.get("repo_id") and wal_config.get("repo_id") != config["repo_id"]:
        raise RansomeyeError("repository %s has id %s, not %s" % (layout.repo, wal_config.get("repo_id"),
                                                                  config["repo_id"]))
    enc = _encryption(config)
    signer = _signer(config)
    with file_lock(layout.lock, "WAL archive run", timeout=float(config.get("lock_timeout") or 30)):
        _clean_tmp(layout)
        existing = _find_entry(layout, name)
        if existing is not None:
            sha, size = _hash_file(source)
            entry = existing.entry
            if sha == entry["plaintext_sha256"] and size == entry["plaintext_size"]:
                try:
                    stored = os.lstat(layout.stored_path(name)).st_size
                except FileNotFoundError:
                    stored = None
                if stored != entry["ciphertext_size"]:
                    raise RansomeyeError("%s is in the chain (entry %d) but its stored file is missing or has the "
                                         "wrong size; the repository was damaged, run ransomeye_backup_verify"
                                         % (name, existing.n))
                return "already archived"
            raise RansomeyeError("%s was already archived with different content (chain entry %d: sha256 %s, this "
                                 "file: %s); refusing to overwrite. Is another cluster archiving into this "
                                 "repository?" % (name, existing.n, entry["plaintext_sha256"][:16], sha[:16]))
        record = _store(layout, config, enc, source, name, kind)
        _append(layout, config, signer, name, kind, record)
    return "archived"


def _clean_tmp(layout: wf.WalLayout) -> None:
    """Remove what killed runs left in tmp/ (we hold the lock, so no live run is writing there)."""
    try:
        names = os.listdir(layout.tmp)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(layout.tmp, name))
            except FileNotFoundError:
                pass


def _store(layout: wf.WalLayout, config: dict, enc: dict, source: str, name: str, kind: str) -> dict:
    ensure_directory(layout.tmp, 0o700)
    tmp = os.path.join(layout.tmp, "%s.%d.tmp" % (name, os.getpid()))
    final = layout.stored_path(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
            writer = container.encryptor(dst, object_id="wal/" + name, **enc)
            first = True
            size = 0
            try:
                for block in iter(lambda: src.read(READ_CHUNK), b""):
                    if first and kind in ("segment", "partial"):
                        _check_segment_header(name, block, os.fstat(src.fileno()).st_size, config)
                    first = False
                    writer.write(block)
                    size += len(block)
                    _hook("during_encrypt")
                info = writer.close()
            except BaseException:
                writer.abort()
                raise
            dst.flush()
            os.fsync(dst.fileno())
        _hook("before_rename")
        directory = os.path.dirname(final)
        if ensure_directory(directory, 0o700):
            fsync_dir(layout.segments)
        os.rename(tmp, final)
        fsync_dir(directory)
        _hook("after_rename")
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return {"plaintext_sha256": info.plaintext_sha256, "plaintext_size": int(info.plaintext_size),
            "ciphertext_sha256": info.ciphertext_sha256, "ciphertext_size": int(info.ciphertext_size)}


def _append(layout: wf.WalLayout, config: dict, signer: t.Any, name: str, kind: str, record: dict) -> wf.ChainEntry:
    ensure_directory(layout.chain, 0o700)
    files = layout.chain_files()
    prev = None
    n = 1
    if files:
        last_n, last_name, last_path = files[-1]
        last = wf.load_entry(last_n, last_name, last_path)
        prev = last.digest
        n = last_n + 1
    entry = {
        "format": wf.CHAIN_FORMAT, "version": wf.FORMAT_VERSION, "repo_id": str(config.get("repo_id") or ""),
        "system_identifier": str(config.get("system_identifier") or ""),
        "n": n, "name": name, "kind": kind, "timeline": wf.timeline_of(name), "prev": prev,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "signer": signing.key_id(signer.public_key()),
    }
    entry.update(record)
    every = int(config.get("sign_every") or 1)
    signatures = []
    if every <= 1 or n % every == 0 or kind != "segment":
        signatures = [signing.sign(signer, signing.canonical_json(entry))]
    data = signing.canonical_json({"entry": entry, "signatures": signatures})
    path = layout.chain_path(n, name)
    atomic_write(path, data, mode=0o640)
    _hook("after_chain")
    return wf.ChainEntry(n, name, path, data, entry, signatures)


# ----------------------------------------------------------------------------- get (restore_command)


def get(config: dict, name: str, dest: str) -> str:
    wf.wal_kind(name)
    files = config.get("files") or {}
    expected = files.get(name)
    if not isinstance(expected, dict):
        return "missing"
    layout = wf.WalLayout(config["repo"])
    if config.get("private_key"):
        decrypt = {"private_key": container.load_private_key(config["private_key"])}
    else:
        decrypt = {"key": container.load_key_file(config["key_file"])}
    tmp = dest + ".ransomeye-tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(layout.stored_path(name), "rb") as src, open(tmp, "wb") as dst:
            for chunk in container.decrypt_chunks(src, expected_object_id="wal/" + name, **decrypt):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        if digest.hexdigest() != expected.get("plaintext_sha256") or size != expected.get("plaintext_size"):
            raise RansomeyeError("%s decrypted to content that differs from the verified chain entry" % name)
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return "restored"


# ----------------------------------------------------------------------------- check (installer preflight)


def _self_test() -> None:
    """Round-trip a small multi-chunk container: catches a cryptography library too old for the container code."""
    import io
    key = os.urandom(32)
    sink = io.BytesIO()
    try:
        writer = container.encryptor(sink, key=key, object_id="check", chunk_size=16)
        writer.write(os.urandom(40))
        writer.close()
        sink.seek(0)
        b"".join(container.decrypt_chunks(sink, key=key, expected_object_id="check"))
    except TypeError as exc:
        import cryptography
        raise RansomeyeError("the interpreter %s has cryptography %s, which cannot run the container code (%s); "
                             "cryptography 41 or newer is needed" % (sys.executable, cryptography.__version__, exc))


def check(config: dict) -> str:
    _self_test()
    layout = wf.WalLayout(config["repo"])
    wf.read_config(layout)
    _encryption(config)
    _signer(config)
    ensure_directory(layout.tmp, 0o700)
    probe = os.path.join(layout.tmp, "check.%d" % os.getpid())
    with open(probe, "wb") as handle:
        handle.write(b"ok")
        os.fsync(handle.fileno())
    os.unlink(probe)
    return "ok"


# ----------------------------------------------------------------------------- entry point


def _on_alarm(signum: int, frame: t.Any) -> None:
    raise Timeout("gave up after the configured timeout")


def main(argv: t.Optional[t.List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: ransomeye-wal push|get|check --config FILE [ARGS]"
    config_path = None
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            sys.stderr.write("ransomeye-wal: %s\n" % usage)
            return 2
        config_path = args[index + 1]
        del args[index:index + 2]
    if not args or config_path is None:
        sys.stderr.write("ransomeye-wal: %s\n" % usage)
        return 2
    command, rest = args[0], args[1:]
    what = " ".join([command] + rest[-1:])
    try:
        config = load_program_config(config_path)
        timeout = int(config.get("timeout") or 60)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(max(1, timeout))
        if command == "push" and len(rest) == 2:
            outcome = push(config, rest[0], rest[1])
        elif command == "get" and len(rest) == 2:
            outcome = get(config, rest[0], rest[1])
            if outcome == "missing":
                return 1
        elif command == "check" and not rest:
            outcome = check(config)
            sys.stdout.write("ransomeye-wal: check ok\n")
        else:
            sys.stderr.write("ransomeye-wal: %s\n" % usage)
            return 2
        signal.alarm(0)
        return 0
    except RansomeyeError as exc:
        sys.stderr.write("ransomeye-wal: ERROR: %s failed: %s\n" % (what, exc.msg))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        sys.stderr.write("ransomeye-wal: ERROR: %s failed: %s: %s\n" % (what, reason, exc.filename or ""))
    except (ValueError, TypeError, KeyError) as exc:
        sys.stderr.write("ransomeye-wal: ERROR: %s failed: %s: %s\n" % (what, type(exc).__name__, exc))
    sys.stderr.flush()
    return 1
