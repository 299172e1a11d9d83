# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the WAL archive/restore program that PostgreSQL runs (``ransomeye-wal``).

``push`` is the archive_command: it reads one WAL file once (hash, zlib frames
where they pay, encryption into the collection's container), fsyncs it and its
directory, then appends its hash-chain entry as one line of the current chain
log (signed every ``sign_every`` entries), fsyncs that, and only then exits 0.
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
import stat
import sys
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_spool as spool_mod
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_resident as resident
from ansible_collections.ransomeye.ops.plugins.module_utils._files import ensure_directory, file_lock, fsync_dir, unlink_on_error

PROGRAM_FORMAT = "ransomeye-wal-program"
READ_CHUNK = 1 << 20
HOOK_ENV = resident.HOOK_ENV


class Timeout(RansomeyeError):
    """The bounded run time of one push or get ran out."""


_HOOK_PREFIX = [""]  # "ahead_" while look-ahead segments are archived, so tests can kill at their steps


def _hook(point: str) -> None:
    """Crash-test hook (``RANSOMEYE_WAL_TEST_HOOK=<point>:kill|sleep``); does nothing when unset."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    wanted, _sep, action = spec.partition(":")
    if wanted != _HOOK_PREFIX[0] + point:
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


class _Head(t.NamedTuple):
    """The end of the chain, read without listing every entry."""
    n: int                          # last entry's n (0: empty chain)
    digest: t.Optional[str]         # its running hash (SHA-256 of canonical_json(entry))
    log: t.Optional[str]            # the current log file (None: no log yet)
    log_entries: int                # complete lines in it
    log_bytes: bytes                # its complete lines (at most LOG_SPAN of them)


def _read_head(layout: wf.WalLayout) -> _Head:
    """The last entry, from the current log (cutting off what a crashed run left unfinished) or the v1 files."""
    logs = layout.log_files()
    while logs:
        path = logs[-1][1]
        with open(path, "rb") as handle:
            data = handle.read(wf.LOG_MAX_BYTES + 1)
        if len(data) > wf.LOG_MAX_BYTES:
            raise wf.WalError("chain log %s is larger than %d bytes; it was not written by this program"
                              % (path, wf.LOG_MAX_BYTES))
        complete = data.rfind(b"\n") + 1
        if complete != len(data) or not complete:
            # Never acknowledged (the run died before its fsync returned): cut it off so the next line starts
            # clean; an empty log (died right after creating it) goes, and the previous one is the head again.
            if complete:
                with open(path, "r+b") as handle:
                    handle.truncate(complete)
                    os.fsync(handle.fileno())
                data = data[:complete]
            else:
                os.unlink(path)
                fsync_dir(layout.log)
                logs.pop()
                continue
        lines = data.count(b"\n")
        last = data[data.rfind(b"\n", 0, complete - 1) + 1:complete - 1]
        item = wf.parse_line(last, wf.log_label(path, lines))
        return _Head(item.n, item.digest, path, lines, data)
    files = layout.chain_files()
    if files:
        last = wf.load_entry(*files[-1])
        return _Head(last.n, last.digest, None, 0, b"")
    return _Head(0, None, None, 0, b"")


def _make_durable(layout: wf.WalLayout, name: str, entry: wf.ChainEntry) -> None:
    """fsync what an earlier, killed run may have written but not synced, before a retry acknowledges it."""
    paths = [layout.stored_path(name)]
    if entry.path.endswith(".json"):
        paths.append(entry.path)
    else:
        paths.append(os.path.join(layout.log, entry.path.rsplit(":", 1)[0]))
    for path in paths:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(path))


def _find_entry(layout: wf.WalLayout, name: str, head: _Head, everywhere: bool) -> t.Optional[wf.ChainEntry]:
    """The chain entry for ``name``: in the current log, or (``everywhere``) in any log or v1 file, newest first."""
    needle = b'"name":"%s"' % name.encode("ascii")
    if needle in head.log_bytes:
        for number, line in enumerate(head.log_bytes.split(b"\n")[:-1], 1):
            if needle in line:
                item = wf.parse_line(line, wf.log_label(t.cast(str, head.log), number))
                if item.name == name:
                    return item
    if not everywhere:
        return None
    for _k, path in reversed(layout.log_files()):
        if path == head.log:
            continue
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if needle in line and line.endswith(b"\n"):
                    item = wf.parse_line(line[:-1], wf.log_label(path, number))
                    if item.name == name:
                        return item
    for n, entry_name, path in reversed(layout.chain_files()):
        if entry_name == name:
            return wf.load_entry(n, entry_name, path)
    return None


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


def _pem_der(data: bytes, label: bytes) -> t.Optional[bytes]:
    """The DER inside a single ``-----BEGIN <label>-----`` PEM block, or None."""
    import base64
    import binascii
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    text = data.strip()
    if not text.startswith(begin) or not text.endswith(end) or text.count(b"-----BEGIN") != 1:
        return None
    try:
        return base64.b64decode(b"".join(text[len(begin):-len(end)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_int(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(raw)) + raw


_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")


def _tlv(data: bytes, pos: int, tag: int) -> t.Tuple[int, int]:
    """(start, end) of the DER value with ``tag`` at ``pos``; ValueError when it is not there or overruns."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError
    return pos, pos + length


def _rsa_spki(der: bytes) -> t.Optional[t.Tuple[int, int]]:
    """(n, e) of an RSA SubjectPublicKeyInfo, only when ``der`` is exactly its canonical DER encoding."""
    tlv = _tlv
    try:
        start, stop = tlv(der, 0, 0x30)
        if not der[start:].startswith(_RSA_ALGORITHM):
            return None
        bits, _end = tlv(der, start + len(_RSA_ALGORITHM), 0x03)
        seq, _end = tlv(der, bits + 1, 0x30)
        n_at, n_end = tlv(der, seq, 0x02)
        e_at, e_end = tlv(der, n_end, 0x02)
        n, e = int.from_bytes(der[n_at:n_end], "big"), int.from_bytes(der[e_at:e_end], "big")
    except (ValueError, IndexError):
        return None
    body = b"\x30" + _der_len(len(_der_int(n) + _der_int(e))) + _der_int(n) + _der_int(e)
    bitstring = b"\x03" + _der_len(len(body) + 1) + b"\x00" + body
    canonical = b"\x30" + _der_len(len(_RSA_ALGORITHM + bitstring)) + _RSA_ALGORITHM + bitstring
    return (n, e) if canonical == der and stop == len(der) else None


def _rsa_pkcs8(der: bytes) -> t.Optional[t.List[int]]:
    """[n, e, d, p, q, dmp1, dmq1, iqmp] of an unencrypted RSA PKCS#8 PrivateKeyInfo (two primes, no attributes),
    only when ``der`` is exactly its canonical DER encoding; None for anything else."""
    try:
        start, stop = _tlv(der, 0, 0x30)
        if stop != len(der) or der[start:start + 3] != b"\x02\x01\x00" or \
                not der[start + 3:].startswith(_RSA_ALGORITHM):
            return None
        octets, octets_end = _tlv(der, start + 3 + len(_RSA_ALGORITHM), 0x04)
        inner, inner_end = _tlv(der, octets, 0x30)
        if octets_end != len(der) or inner_end != octets_end or der[inner:inner + 3] != b"\x02\x01\x00":
            return None
        pos, values = inner + 3, []
        for _field in range(8):
            at, pos = _tlv(der, pos, 0x02)
            values.append(int.from_bytes(der[at:pos], "big"))
    except (ValueError, IndexError):
        return None
    body = b"\x02\x01\x00" + b"".join(_der_int(v) for v in values)
    key = b"\x30" + _der_len(len(body)) + body
    info = b"\x02\x01\x00" + _RSA_ALGORITHM + b"\x04" + _der_len(len(key)) + key
    canonical = b"\x30" + _der_len(len(info)) + info
    return values if canonical == der and pos == inner_end else None


def _recipient(path: str) -> t.Any:
    """A recipient's RSA public key; the common PEM form is decoded here, without cryptography's serialization
    package (its import costs a process per segment more than everything else it loads), anything else by it."""
    with open(path, "rb") as handle:
        data = handle.read(1 << 16)
    der = _pem_der(data, b"PUBLIC KEY")
    numbers = _rsa_spki(der) if der else None
    if numbers is None:
        return container.load_public_key(path)
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.RSAPublicNumbers(numbers[1], numbers[0]).public_key()


def _encryption(config: dict) -> dict:
    if config.get("mode") == "aes":
        return {"key": container.load_key_file(config["key_file"])}
    recipients = config.get("recipients") or []
    if not recipients:
        raise RansomeyeError("config names no recipients")
    return {"recipients": [_recipient(p) for p in recipients]}


def _signer(config: dict) -> t.Any:
    """The WAL signing key: an unencrypted Ed25519 PKCS#8 PEM decoded here (see _recipient), else by _signing."""
    path = config.get("signing_key")
    if not path:
        raise RansomeyeError("config names no signing_key")
    try:
        with open(path, "rb") as handle:
            der = _pem_der(handle.read(1 << 16), b"PRIVATE KEY")
    except OSError:
        der = None  # _signing reports it
    if der is not None and len(der) == 48 and der.startswith(_ED25519_PKCS8):
        from cryptography.hazmat.primitives.asymmetric import ed25519
        return ed25519.Ed25519PrivateKey.from_private_bytes(der[16:])
    return signing.load_signing_private_key(path)


def _hash_file(path: str) -> t.Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def push(config: dict, source: str, name: str, config_path: t.Optional[str] = None) -> str:
    """Archive ``source`` as ``name``; return what was done (``archived`` or ``already archived``).

    With ``config_path`` (whose directory holds the spool) and ``look_ahead`` in the config, the same run then
    archives up to that many later segments PostgreSQL has already marked ``.ready`` (see _look_ahead)."""
    started = time.monotonic()
    kind = wf.wal_kind(name)
    layout = wf.WalLayout(config["repo"])
    wal_config = wf.read_config(layout)
    if config.get("repo_id") and wal_config.get("repo_id") != config["repo_id"]:
        raise RansomeyeError("repository %s has id %s, not %s" % (layout.repo, wal_config.get("repo_id"),
                                                                  config["repo_id"]))
    enc = _encryption(config)
    with file_lock(layout.lock, "WAL archive run", timeout=float(config.get("lock_timeout") or 30)):
        _clean_tmp(layout)
        head = _read_head(layout)
        stored_exists = os.path.lexists(layout.stored_path(name))
        # A name is in the chain only if its stored file was written first, so a missing stored file means "new"
        # unless the current log (where a retry finds it) names it: then the repository was damaged.
        existing = _find_entry(layout, name, head, everywhere=stored_exists)
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
                _make_durable(layout, name, existing)
                outcome = "already archived"
            else:
                raise RansomeyeError("%s was already archived with different content (chain entry %d: sha256 %s, "
                                     "this file: %s); refusing to overwrite. Is another cluster archiving into this "
                                     "repository?" % (name, existing.n, entry["plaintext_sha256"][:16], sha[:16]))
        else:
            record, _stat = _store(layout, config, enc, source, name, kind)
            _append(layout, config, head, name, kind, record)
            outcome = "archived"
        if config_path and int(config.get("look_ahead") or 0) > 0 and kind == "segment":
            _look_ahead(layout, config, enc, source, name, config_path, started)
    return outcome


def _ready_segments(source: str, name: str) -> t.Tuple[t.Optional[t.Set[str]], t.List[str]]:
    """(every name PostgreSQL has marked .ready, the segments after ``name`` on its timeline to archive now).

    Nothing to archive ahead when a history, backup-label or partial file is waiting: PostgreSQL archives those
    in an order of its own (history files first), and the chain keeps PostgreSQL's order."""
    status = os.path.join(os.path.dirname(source), "archive_status")
    try:
        listing = os.listdir(status)
    except OSError:
        return None, []  # not a PostgreSQL pg_wal directory (or not readable): nothing to look at
    ready = {entry[:-6] for entry in listing if entry.endswith(".ready")}
    if any(not spool_mod.is_segment_name(other) for other in ready):
        return ready, []
    return ready, sorted(other for other in ready if other > name and other[:8] == name[:8])


def _look_ahead(layout: wf.WalLayout, config: dict, enc: dict, source: str, name: str, config_path: str,
                started: float) -> None:
    """Archive later ``.ready`` segments now (we hold the lock and cryptography is loaded), each made durable
    and entered in the chain exactly like a push of its own, and leave a marker in ``spool`` for each (written
    after its entry is durable) so that PostgreSQL's call for it is answered without starting the full program.

    Bounded: at most ``look_ahead`` segments, and never past a quarter of the timeout. Any failure here only
    ends the look-ahead: this run's own segment is already durable, and PostgreSQL's own call for a segment
    that was not finished does the full push (and reports its error)."""
    spool = spool_mod.spool_dir(config_path)
    if not os.path.isdir(spool):
        return
    ready, candidates = _ready_segments(source, name)
    if ready is None:
        return
    spool_mod.prune(spool, ready)
    budget = int(config.get("timeout") or 60) / 4.0
    slowest = 0.0
    chosen = []
    for other in candidates[:int(config.get("look_ahead") or 0)]:
        path = os.path.join(os.path.dirname(source), other)
        if os.path.lexists(layout.stored_path(other)) or os.path.lexists(os.path.join(spool, other + spool_mod.SUFFIX)):
            break  # archived before (or damaged): PostgreSQL's own call sorts it out, in order
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                break
        except OSError:
            break
        chosen.append((other, path))
    _HOOK_PREFIX[0] = "ahead_"
    try:
        # Two segments at a time: their stores are independent files (each on two threads of its own), and the
        # chain entries are then appended one after the other, in order, each fsynced before its marker.
        for index in range(0, len(chosen), 2):
            begun = time.monotonic()
            if begun - started + 2 * slowest > budget:
                break
            pair = chosen[index:index + 2]
            for (other, path), stored in zip(pair, _store_pair(layout, config, enc, pair)):
                if isinstance(stored, BaseException):
                    raise stored  # the first is in the chain; the second's file is rewritten by its own call
                record, read_stat = stored
                _append(layout, config, _read_head(layout), other, "segment", record)
                if read_stat is not None:
                    spool_mod.write_marker(spool, other, spool_mod.marker_text(config_path, path,
                                                                               layout.stored_path(other), read_stat))
                _hook("after_marker")
            slowest = max(slowest, time.monotonic() - begun)
    except Exception:  # pylint: disable=broad-except  # see the docstring: PostgreSQL's own call reports it
        pass
    finally:
        _HOOK_PREFIX[0] = ""


def _store_pair(layout: wf.WalLayout, config: dict, enc: dict,
                pair: t.List[t.Tuple[str, str]]) -> t.List[t.Any]:
    """_store() of one or two segments, the second on a thread of its own: their results in order, the second's
    failure as its exception (the first's is raised). Both are finished (or failed) on return, so nothing writes
    into the repository after the lock is released."""
    outcome: t.List[t.Any] = [None]

    def second() -> None:
        try:
            outcome[0] = _store(layout, config, enc, pair[1][1], pair[1][0], "segment")
        except Exception as exc:  # pylint: disable=broad-except  # handed to the caller, in order
            outcome[0] = exc

    if len(pair) == 1:
        return [_store(layout, config, enc, pair[0][1], pair[0][0], "segment")]
    if not _spare_cpu():
        first = _store(layout, config, enc, pair[0][1], pair[0][0], "segment")
        second()
        return [first, outcome[0]]
    import threading
    thread = threading.Thread(target=second, name="ransomeye-wal-ahead", daemon=True)
    thread.start()
    try:
        first = _store(layout, config, enc, pair[0][1], pair[0][0], "segment")
    finally:
        thread.join()
    return [first, outcome[0]]


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


class _Sink:
    """Where the container's bytes go: written (and the WAL plaintext hashed) on a second thread.

    The kernel's copy into the page cache and SHA-256 of the plaintext then overlap zlib, AES-GCM and the
    ciphertext hash on the main thread (all of them release the GIL on large buffers), which roughly halves
    the time of a push on a machine with a spare core. With one CPU everything runs inline. A bounded queue
    keeps at most ``DEPTH`` blocks in flight, so memory stays flat.
    """

    DEPTH = 4

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.digest = hashlib.sha256()
        self.size = 0
        self._error: t.Optional[BaseException] = None
        self._queue: t.Any = None
        self._thread: t.Any = None
        if _spare_cpu():
            import queue
            import threading
            self._queue = queue.Queue(self.DEPTH)
            self._thread = threading.Thread(target=self._run, name="ransomeye-wal-writer", daemon=True)
            self._thread.start()

    def hash(self, block: bytes) -> None:
        """Count ``block`` (immutable) into the plaintext SHA-256 and size."""
        self._put(False, block)

    def write(self, data: bytes) -> int:
        """The container's output (immutable bytes)."""
        self._put(True, data)
        return len(data)

    def _put(self, is_output: bool, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._do(is_output, data)
        else:
            self._queue.put((is_output, data))

    def _do(self, is_output: bool, data: bytes) -> None:
        if not is_output:
            self.digest.update(data)
            self.size += len(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._do(*item)
                except BaseException as exc:  # handed to the main thread, which raises it
                    self._error = exc

    def finish(self) -> None:
        """Wait until everything is written; raise what the writer met."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """After a failure on the main thread: stop writing (the file is removed by the caller)."""
        if self._thread is not None:
            self._error = self._error or RansomeyeError("push abandoned")
            try:
                self._queue.put(None, timeout=5)
            except Exception:  # pylint: disable=broad-except  # a stuck writer: the daemon thread dies with us
                pass


def _spare_cpu() -> bool:
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) > 1


def _store(layout: wf.WalLayout, config: dict, enc: dict, source: str, name: str,
           kind: str) -> t.Tuple[dict, t.Optional[os.stat_result]]:
    """Encrypt ``source`` into segments/ in one pass (hash, frame, encrypt); durable (file and directory) on return.

    Returns the chain entry's hashes and sizes, and the source's stat when it did not change while read."""
    ensure_directory(layout.tmp, 0o700)
    tmp = os.path.join(layout.tmp, "%s.%d.tmp" % (name, os.getpid()))
    final = layout.stored_path(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with unlink_on_error(tmp):
        with os.fdopen(fd, "wb", buffering=0) as dst, open(source, "rb", buffering=0) as src:
            before = os.fstat(src.fileno())
            sink = _Sink(dst.fileno())
            framer = wf.Framer()
            try:
                writer = container.encryptor(sink, object_id="wal/" + name, hash_plaintext=False, **enc)
                try:
                    block = src.read(wf.FRAME_SIZE)
                    if block and kind in ("segment", "partial"):
                        _check_segment_header(name, block, os.fstat(src.fileno()).st_size, config)
                    while block:
                        sink.hash(block)
                        header, data = framer.frame(block)
                        writer.write(header)
                        writer.write(data)
                        _hook("during_encrypt")
                        block = src.read(wf.FRAME_SIZE)
                    info = writer.close()
                except BaseException:
                    writer.abort()
                    raise
                sink.finish()
                after = os.fstat(src.fileno())
            except BaseException:
                sink.abandon()
                raise
            os.fsync(dst.fileno())
        _hook("before_rename")
        directory = os.path.dirname(final)
        if ensure_directory(directory, 0o700):
            fsync_dir(layout.segments)
        os.rename(tmp, final)
        fsync_dir(directory)
        _hook("after_rename")
    record = {"plaintext_sha256": sink.digest.hexdigest(), "plaintext_size": sink.size,
              "ciphertext_sha256": info.ciphertext_sha256, "ciphertext_size": int(info.ciphertext_size),
              "compression": framer.compression}
    # The file as it was read (None when it changed while being read, or its size is not what was hashed).
    unchanged = (before.st_ino, before.st_size, before.st_mtime_ns) == (after.st_ino, after.st_size, after.st_mtime_ns)
    return record, (after if unchanged and after.st_size == sink.size else None)


def _append(layout: wf.WalLayout, config: dict, head: _Head, name: str, kind: str, record: dict) -> wf.ChainEntry:
    """Append the entry as one line of the current log and fsync it: the commit point of a push."""
    n = head.n + 1
    every = int(config.get("sign_every") or 1)
    signer = _signer(config)
    entry = {
        "format": wf.CHAIN_FORMAT, "version": wf.LOG_VERSION, "repo_id": str(config.get("repo_id") or ""),
        "system_identifier": str(config.get("system_identifier") or ""),
        "n": n, "name": name, "kind": kind, "timeline": wf.timeline_of(name), "prev": head.digest,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "compression": wf.COMPRESSION,
        "signer": signing.key_id(signer.public_key()),
    }
    entry.update(record)
    due = every <= 1 or n % every == 0 or kind != "segment"
    signatures = [signing.sign(signer, signing.canonical_json(entry))] if due else []
    line = signing.canonical_json({"entry": entry, "signatures": signatures}) + b"\n"
    if head.log is not None and head.log_entries < wf.LOG_SPAN:
        path = head.log
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        new_file = False
    else:
        ensure_directory(layout.log, 0o700)
        path = layout.log_path(n)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
        new_file = True
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(28, "short write to the chain log", path)
        _hook("before_chain_sync")
        os.fsync(fd)
    finally:
        os.close(fd)
    if new_file:
        fsync_dir(layout.log)
    _hook("after_chain")
    return wf.parse_line(line[:-1], wf.log_label(path, head.log_entries + 1 if not new_file else 1))


# ----------------------------------------------------------------------------- get (restore_command)


def _restore_key(path: str) -> t.Any:
    """The recipient's private key, without cryptography's RSA consistency check (tens of ms per process, run
    once per segment): the key is the operator's own, and a wrong one cannot decrypt (the unwrap authenticates).
    The usual form (an unencrypted PKCS#8 PEM) is decoded here, without cryptography's serialization package (its
    import and PEM loading cost a ``get`` more than decrypting a segment); anything else goes through it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return container.load_private_key(path)  # says what is wrong
    der = _pem_der(data, b"PRIVATE KEY")
    values = _rsa_pkcs8(der) if der else None
    if values is not None and values[0].bit_length() >= container.MIN_RSA_BITS:
        from cryptography.hazmat.primitives.asymmetric import rsa
        numbers = rsa.RSAPrivateNumbers(values[3], values[4], values[2], values[5], values[6], values[7],
                                        rsa.RSAPublicNumbers(values[1], values[0]))
        try:
            return numbers.private_key(unsafe_skip_rsa_key_validation=True)
        except (TypeError, ValueError):
            pass  # older cryptography, or numbers it refuses: the path below says what is wrong
    try:
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    except (TypeError, ValueError, ImportError):
        return container.load_private_key(path)  # older cryptography, encrypted key, ...: the checked path
    from cryptography.hazmat.primitives.asymmetric import rsa
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < container.MIN_RSA_BITS:
        return container.load_private_key(path)  # says what is wrong with it
    return key


def get(config: dict, name: str, dest: str) -> str:
    wf.wal_kind(name)
    files = config.get("files") or {}
    expected = files.get(name)
    if not isinstance(expected, dict):
        return "missing"
    if config.get("spool"):
        return _get_from_spool(config["spool"], name, dest)
    layout = wf.WalLayout(config["repo"])
    if config.get("private_key"):
        decrypt = {"private_key": _restore_key(config["private_key"])}
    else:
        decrypt = {"key": container.load_key_file(config["key_file"])}
    tmp = dest + ".ransomeye-tmp"
    digest = hashlib.sha256()
    size = 0
    with unlink_on_error(tmp):
        with open(layout.stored_path(name), "rb") as src, open(tmp, "wb") as dst:
            if expected.get("compression") not in wf.COMPRESSIONS + (None, "none"):
                raise RansomeyeError("%s: unknown compression %r in the restore plan" % (name, expected["compression"]))
            chunks = wf.plaintext(container.decrypt_chunks(src, expected_object_id="wal/" + name, **decrypt),
                                  expected.get("compression"))
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        if digest.hexdigest() != expected.get("plaintext_sha256") or size != expected.get("plaintext_size"):
            raise RansomeyeError("%s decrypted to content that differs from the verified chain entry" % name)
        os.rename(tmp, dest)
    return "restored"


def _get_from_spool(spool: str, name: str, dest: str) -> str:
    """Ask the restore module's read-ahead for ``name`` and move the checked file to ``dest``.

    The program never decrypts here: the key stays in the module's process (docs/BACKUP_FORMAT.md 4.6). The
    wait is bounded by the program's alarm (``timeout``), and ends at once when the module is gone."""
    final = os.path.join(spool, name)
    refused = final + ".bad"
    request = final + ".want"
    owner = _spool_owner(spool)
    asked = False
    while True:
        try:
            os.rename(final, dest)
            return "restored"
        except FileNotFoundError:
            pass
        try:
            with open(refused, "rb") as handle:
                reason = handle.read(4000).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            reason = None
        if reason is not None:
            os.unlink(refused)
            raise RansomeyeError("%s was refused by the restore: %s" % (name, reason))
        if not asked:
            os.close(os.open(request, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
            asked = True
        elif not os.path.exists(request) and not os.path.exists(final) and not os.path.exists(refused):
            asked = False   # served and taken between two looks (a retry by the server): ask again
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            raise RansomeyeError("the restore that serves %s (pid %d) is gone; start the restore again" % (name, owner))
        except PermissionError:
            pass   # alive, and another user's (root's): the usual case
        time.sleep(0.02)


def _spool_owner(spool: str) -> int:
    try:
        with open(os.path.join(spool, "owner.pid"), "rb") as handle:
            return int(handle.read(32).strip())
    except (OSError, ValueError):
        raise RansomeyeError("%s names no serving restore (owner.pid); start the restore again" % spool)


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


def check(config: dict, config_path: t.Optional[str] = None) -> str:
    _self_test()
    layout = wf.WalLayout(config["repo"])
    wf.read_config(layout)
    _encryption(config)
    _signer(config)
    ensure_directory(layout.tmp, 0o700)
    probes = [layout.tmp]
    if int(config.get("look_ahead") or 0) > 0 and config_path:
        probes.append(spool_mod.spool_dir(config_path))
    for directory in probes:
        probe = os.path.join(directory, "check.%d" % os.getpid())
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            os.fsync(handle.fileno())
        os.unlink(probe)
    return "ok"


# ----------------------------------------------------------------------------- entry point


def _on_alarm(signum: int, frame: t.Any) -> None:
    raise Timeout("gave up after the configured timeout")


USAGE = "ransomeye-wal: usage: ransomeye-wal push|get|check|serve --config FILE [ARGS]\n"


def main(argv: t.Optional[t.List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            sys.stderr.write(USAGE)
            return 2
        config_path = args[index + 1]
        del args[index:index + 2]
    if not args or config_path is None:
        sys.stderr.write(USAGE)
        return 2
    command, rest = args[0], args[1:]
    if command == "serve" and len(rest) <= 1:
        return _serve(config_path, rest[0] if rest else "")
    status, text = run_command(command, rest, config_path, start_resident=True)
    sys.stderr.write(text)
    sys.stderr.flush()
    return status


def run_command(command: str, rest: t.List[str], config_path: str,
                start_resident: bool = False) -> t.Tuple[int, str]:
    """Run one push, get or check under the config's timeout: (exit status, what goes to stderr).

    ``start_resident``: after a push that succeeded, start the resident archiver when the config asks for one
    (a call does; the archiver itself, which runs pushes through here too, does not)."""
    what = " ".join([command] + rest[-1:])
    try:
        config = load_program_config(config_path)
        timeout = int(config.get("timeout") or 60)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(max(1, timeout))
        try:
            if command == "push" and len(rest) == 2:
                push(config, rest[0], rest[1], config_path=config_path)
                if start_resident and int(config.get("resident_idle") or 0) > 0:
                    resident.spawn(config_path)  # the segment is durable; a failure to start costs only time
            elif command == "get" and len(rest) == 2:
                if get(config, rest[0], rest[1]) == "missing":
                    return 1, ""
            elif command == "check" and not rest:
                check(config, config_path)
                sys.stdout.write("ransomeye-wal: check ok\n")
            else:
                return 2, USAGE
        finally:
            signal.alarm(0)
        return 0, ""
    except RansomeyeError as exc:
        return 1, "ransomeye-wal: ERROR: %s failed: %s\n" % (what, exc.msg)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return 1, "ransomeye-wal: ERROR: %s failed: %s: %s\n" % (what, reason, exc.filename or "")
    except (ValueError, TypeError, KeyError) as exc:
        return 1, "ransomeye-wal: ERROR: %s failed: %s: %s\n" % (what, type(exc).__name__, exc)


def _serve(config_path: str, watch: str) -> int:
    """The resident archiver (_wal_resident): pushes in full for PostgreSQL's calls until it is idle."""
    try:
        idle = int(load_program_config(config_path).get("resident_idle") or 0)
    except (RansomeyeError, ValueError):
        return 1
    return resident.serve(config_path, watch, idle,
                          lambda source, name: run_command("push", [source, name], config_path))
