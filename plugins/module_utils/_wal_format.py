# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the WAL archive layout, WAL file names and LSNs, and the signed hash chain.

Layout under ``<repo>/wal/`` (docs/BACKUP_FORMAT.md, section 4)::

    wal.json                               {"format", "version", "repo_id", "system_identifier"}
    lock                                   flock(2): exclusive while a file is archived or WAL is pruned
    tmp/                                   containers being written
    segments/<name[:16]>/<name>            one encrypted container per WAL file (history files: segments/history/)
    log/<k:012d>.log                       chain entries, one line each: canonical JSON {"entry": E, "signatures": [...]}
    chain/<n:012d>.<name>.json             chain entry n of repositories written before the log (read, never written)

Entry n records the file's name, hashes and sizes and ``prev`` = SHA-256 of
canonical_json(entry n-1) (the running hash); a signature over entry n therefore
covers every entry before it. Only this file and _wal_program are needed by the
archive program PostgreSQL runs (plus _crypto_container, _signing, _files, _errors).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import json
import os
import re
import struct
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import canonical_json as canonical

WAL_FORMAT = "ransomeye-wal-archive"
CHAIN_FORMAT = "ransomeye-wal-chain"
FORMAT_VERSION = 1           # wal.json, and chain entries stored one per file under chain/
LOG_VERSION = 2              # chain entries stored as lines of log/<k>.log (stored files are framed, 4.3)
LOG_SPAN = 1024              # entries per log file before the next one is started
LOG_MAX_BYTES = 8 << 20      # a log larger than this was not written by the program (entries are < 1 KiB)
COMPRESSION = "zlib-frames"  # the stored plaintext of a version-2 entry: frames of kinds raw and zlib (4.3.1)
COMPRESSION_ZSTD = "zstd-frames"  # frames of kinds raw and zstd (4.3.1); written when the interpreter has zstandard
COMPRESSIONS = (COMPRESSION, COMPRESSION_ZSTD)
FRAME_SIZE = 1 << 20         # WAL bytes per frame
FRAME_HEADER = struct.Struct(">BII")  # kind (0 raw, 1 zlib, 2 zstd), WAL bytes, stored bytes
FRAME_RAW = 0
FRAME_ZLIB = 1
FRAME_ZSTD = 2
FRAME_KINDS = {COMPRESSION: (FRAME_RAW, FRAME_ZLIB), COMPRESSION_ZSTD: (FRAME_RAW, FRAME_ZSTD)}
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
CHAIN_RE = re.compile(r"^(\d{12})\.([0-9A-Za-z.]+)\.json$")
LOG_RE = re.compile(r"^(\d{12})\.log$")
LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

# XLogLongPageHeaderData (src/include/access/xlog_internal.h): magic u16, info u16, tli u32, pageaddr u64,
# rem_len u32, 4 bytes padding, sysid u64, seg_size u32, xlog_blcksz u32; in the server's byte order.
LONG_HEADER_SIZE = 40
XLP_LONG_HEADER = 0x0002


class WalError(RansomeyeError):
    """A WAL file name, segment or chain entry that is malformed or inconsistent."""


def wal_kind(name: str) -> str:
    """``segment``, ``history``, ``backup`` or ``partial``; WalError for anything else (never a path)."""
    if SEGMENT_RE.match(name or ""):
        return "segment"
    if HISTORY_RE.match(name or ""):
        return "history"
    if BACKUP_RE.match(name or ""):
        return "backup"
    if PARTIAL_RE.match(name or ""):
        return "partial"
    raise WalError("%r is not a WAL file name PostgreSQL archives" % (name,))


def timeline_of(name: str) -> int:
    kind = wal_kind(name)
    if kind == "history":
        return int(name[:8], 16)
    return int(name[:8], 16)


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The segment number (LSN // segment_size) of a segment (or .partial/.backup) name."""
    match = SEGMENT_RE.match(name[:24])
    if not match:
        raise WalError("%r is not a WAL segment name" % (name,))
    return int(match.group(2), 16) * segments_per_xlogid(segment_size) + int(match.group(3), 16)


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_xlogid(segment_size)
    return "%08X%08X%08X" % (timeline, segno // per, segno % per)


def parse_lsn(text: t.Any) -> int:
    match = LSN_RE.match(str(text or "").strip())
    if not match:
        raise WalError("%r is not an LSN (expected the form 0/16B3748)" % (text,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def segment_of_lsn(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    return segment_name(timeline, lsn // segment_size, segment_size)


def storage_dir(name: str) -> str:
    """Sub-directory of segments/ for a WAL file (``history`` for history files, else the first 16 hex digits)."""
    return "history" if wal_kind(name) == "history" else name[:16]


def parse_long_header(data: bytes) -> t.Optional[dict]:
    """The long page header at the start of a WAL segment: timeline, page address, system id, segment size."""
    if len(data) < LONG_HEADER_SIZE:
        return None
    for order in ("<", ">"):
        fields = struct.unpack(order + "HHIQI4xQII", data[:LONG_HEADER_SIZE])
        magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = fields
        if info & XLP_LONG_HEADER and seg_size and seg_size & (seg_size - 1) == 0 and blcksz in (
                1024, 2048, 4096, 8192, 16384, 32768, 65536):
            return {"magic": magic, "timeline": tli, "pageaddr": pageaddr, "system_identifier": str(sysid),
                    "segment_size": seg_size}
    return None


def parse_history(data: bytes) -> t.List[t.Tuple[int, int]]:
    """(parent timeline, switch LSN) lines of a timeline history file, oldest first."""
    out: t.List[t.Tuple[int, int]] = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            out.append((int(parts[0]), parse_lsn(parts[1])))
        except (ValueError, WalError):
            continue
    return out


# ----------------------------------------------------------------------------- the chain

def entry_digest(entry: dict) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


class WalLayout:
    """Paths of the WAL area of a repository (no I/O beyond listing)."""

    def __init__(self, repo_path: str) -> None:
        self.repo = os.path.abspath(repo_path)
        self.root = os.path.join(self.repo, "wal")
        self.config = os.path.join(self.root, "wal.json")
        self.lock = os.path.join(self.root, "lock")
        self.tmp = os.path.join(self.root, "tmp")
        self.segments = os.path.join(self.root, "segments")
        self.chain = os.path.join(self.root, "chain")
        self.log = os.path.join(self.root, "log")

    def stored_path(self, name: str) -> str:
        return os.path.join(self.segments, storage_dir(name), name)

    def chain_path(self, n: int, name: str) -> str:
        return os.path.join(self.chain, "%012d.%s.json" % (n, name))

    def log_path(self, k: int) -> str:
        return os.path.join(self.log, "%012d.log" % k)

    def chain_files(self) -> t.List[t.Tuple[int, str, str]]:
        """(n, WAL name, path) of every chain entry file (format version 1), in order of n."""
        try:
            names = os.listdir(self.chain)
        except FileNotFoundError:
            return []
        out = []
        for fname in names:
            match = CHAIN_RE.match(fname)
            if match:
                out.append((int(match.group(1)), match.group(2), os.path.join(self.chain, fname)))
        return sorted(out)

    def log_files(self) -> t.List[t.Tuple[int, str]]:
        """(k, path) of every chain log (format version 2), in order."""
        try:
            names = os.listdir(self.log)
        except FileNotFoundError:
            return []
        return sorted((int(m.group(1)), os.path.join(self.log, f)) for f in names for m in [LOG_RE.match(f)] if m)


class ChainEntry(t.NamedTuple):
    n: int
    name: str
    path: str          # the entry's file, or "<log file>:<line number>"
    raw: bytes
    entry: dict
    signatures: list

    @property
    def digest(self) -> str:
        return entry_digest(self.entry)


ENTRY_FIELDS = (("format", str), ("version", int), ("repo_id", str), ("n", int), ("name", str), ("kind", str),
                ("plaintext_sha256", str), ("plaintext_size", int), ("ciphertext_sha256", str),
                ("ciphertext_size", int), ("time", str))


def _parse_doc(raw: bytes, where: str, version: int) -> t.Tuple[dict, list]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WalError("chain entry %s is not valid JSON: %s" % (where, exc))
    if not isinstance(doc, dict) or not isinstance(doc.get("entry"), dict) or not isinstance(doc.get("signatures"), list):
        raise WalError("chain entry %s does not have the entry/signatures shape" % where)
    entry = doc["entry"]
    for key, kind in ENTRY_FIELDS:
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WalError("chain entry %s: field %s is missing or malformed" % (where, key))
    if entry["format"] != CHAIN_FORMAT or entry["version"] != version:
        raise WalError("chain entry %s has an unknown format or version" % where)
    if version == LOG_VERSION and entry.get("compression") not in COMPRESSIONS:
        raise WalError("chain entry %s names an unknown compression %r" % (where, entry.get("compression")))
    if canonical(doc) != raw:
        raise WalError("chain entry %s is not in canonical form (modified after writing)" % where)
    wal_kind(entry["name"])
    return entry, doc["signatures"]


def load_entry(n: int, name: str, path: str) -> ChainEntry:
    """Parse one chain file (version 1) and check it is shaped like an entry and matches its file name."""
    with open(path, "rb") as handle:
        raw = handle.read(1 << 20)
    where = os.path.basename(path)
    entry, signatures = _parse_doc(raw, where, FORMAT_VERSION)
    if entry["n"] != n or entry["name"] != name:
        raise WalError("chain entry file %s holds entry %d for %s (moved or replayed entry)"
                       % (where, entry["n"], entry["name"]))
    return ChainEntry(n, name, path, raw, entry, signatures)


def parse_line(raw: bytes, where: str) -> ChainEntry:
    """One line of a chain log (without its newline), checked like a version-2 entry."""
    entry, signatures = _parse_doc(raw, where, LOG_VERSION)
    return ChainEntry(entry["n"], entry["name"], where, raw, entry, signatures)


def log_label(path: str, line: int) -> str:
    return "%s:%d" % (os.path.basename(path), line)


class ChainItem(t.NamedTuple):
    n: int                          # the entry's number (for a line that cannot be read: one after the previous)
    name: str                       # WAL name ("?" when unreadable)
    label: str                      # where it is stored: chain file name or log:line
    item: t.Optional[ChainEntry]    # None when it cannot be read
    error: t.Optional[str]


def _log_lines(path: str, is_last: bool) -> t.Iterator[t.Tuple[int, t.Optional[bytes]]]:
    """(line number, bytes) of a log; an unterminated last line is dropped when ``is_last`` (never acknowledged)."""
    with open(path, "rb") as handle:
        number = 0
        for line in handle:
            number += 1
            if not line.endswith(b"\n"):
                if is_last:
                    return
                yield number, None
                return
            yield number, line[:-1]


def read_chain(layout: WalLayout) -> t.List[ChainItem]:
    """Every chain entry in order: version-1 files under chain/, then the lines of the logs under log/."""
    out: t.List[ChainItem] = []
    for n, name, path in layout.chain_files():
        try:
            out.append(ChainItem(n, name, os.path.basename(path), load_entry(n, name, path), None))
        except (WalError, OSError) as exc:
            out.append(ChainItem(n, name, os.path.basename(path), None, getattr(exc, "msg", None) or str(exc)))
    logs = layout.log_files()
    for index, (_k, path) in enumerate(logs):
        try:
            lines = list(_log_lines(path, index == len(logs) - 1))
        except OSError as exc:
            out.append(ChainItem((out[-1].n + 1) if out else 1, "?", os.path.basename(path), None, str(exc)))
            continue
        for number, raw in lines:
            label = log_label(path, number)
            guess = (out[-1].n + 1) if out else 1
            if raw is None:
                out.append(ChainItem(guess, "?", label, None, "chain log line %s is cut short" % label))
                continue
            try:
                item = parse_line(raw, label)
            except WalError as exc:
                out.append(ChainItem(guess, "?", label, None, exc.msg))
                continue
            out.append(ChainItem(item.n, item.name, label, item, None))
    return out


def chain_names(layout: WalLayout) -> t.List[str]:
    """WAL names in chain order (readable entries only)."""
    return [c.name for c in read_chain(layout) if c.item is not None]


# ----------------------------------------------------------------------------- the stored plaintext (frames)


def plaintext(chunks: t.Iterable[bytes], compression: t.Optional[str]) -> t.Iterable[bytes]:
    """WAL bytes of a stored file's decrypted plaintext, per its entry's ``compression`` (None or "none": as is)."""
    if compression in COMPRESSIONS:
        return unframe(chunks, t.cast(str, compression))
    if compression in (None, "none"):
        return chunks
    raise WalError("unknown compression %r" % (compression,))


def unframe(chunks: t.Iterable[bytes], compression: str = COMPRESSION) -> t.Iterator[bytes]:
    """WAL bytes from the decrypted plaintext of a version-2 stored file (frames, section 4.3); bounded memory.

    Only the frame kinds of ``compression`` are accepted (a zstd frame in a zlib-frames file is malformed)."""
    import zlib
    allowed = FRAME_KINDS[compression]
    buf = bytearray()
    need = FRAME_HEADER.size
    header: t.Optional[t.Tuple[int, int, int]] = None
    for chunk in chunks:
        buf += chunk
        while len(buf) >= need:
            if header is None:
                header = FRAME_HEADER.unpack_from(buf, 0)
                kind, raw_len, stored_len = header
                if kind not in allowed or not 0 < raw_len <= FRAME_SIZE or \
                        stored_len > FRAME_SIZE or (kind == FRAME_RAW and stored_len != raw_len):
                    raise WalError("stored WAL file has a malformed frame header")
                del buf[:FRAME_HEADER.size]
                need = stored_len
                continue
            kind, raw_len, stored_len = header
            data = bytes(buf[:stored_len])
            del buf[:stored_len]
            if kind == FRAME_ZLIB:
                inflater = zlib.decompressobj()
                try:
                    data = inflater.decompress(data, raw_len + 1)
                except zlib.error as exc:
                    raise WalError("stored WAL file has a frame that does not decompress: %s" % exc)
                if len(data) != raw_len or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
                    raise WalError("stored WAL file has a frame whose size differs from its header")
            elif kind == FRAME_ZSTD:
                from ansible_collections.ransomeye.ops.plugins.module_utils import _compress
                try:
                    data = _compress.zstd_decompress(data, raw_len)
                except _compress.CompressionError as exc:
                    raise WalError("stored WAL file has a frame that does not decompress: %s" % exc.msg)
            yield data
            header = None
            need = FRAME_HEADER.size
    if header is not None or buf:
        raise WalError("stored WAL file ends inside a frame")


def _worth_compressing(block: bytes) -> bool:
    import zlib
    size = len(block)
    if size >= 3 * 4096:
        # Three 4 KiB probes decide cheaply. zlib is fast on what shrinks a lot (zeroed pages, repeated tuples) and
        # slow on what shrinks little, so a frame is compressed only when a probe halves: the program runs once
        # per segment inside PostgreSQL's archiver, and throughput matters more there than the last 30 %.
        worth = False
        for offset in (0, size // 2, size - 4096):
            if len(zlib.compress(block[offset:offset + 4096], 1)) < 2048:
                worth = True
                break
    else:
        worth = size > 0
    return worth


def frame(block: bytes) -> t.Tuple[bytes, bytes]:
    """(header, data) of one zlib-frames frame for ``block`` (at most FRAME_SIZE bytes): zlib level 1 when it pays."""
    import zlib
    size = len(block)
    if _worth_compressing(block):
        packed = zlib.compress(block, 1)
        if len(packed) < size:
            return FRAME_HEADER.pack(FRAME_ZLIB, size, len(packed)), packed
    return FRAME_HEADER.pack(FRAME_RAW, size, size), block


class Framer:
    """Frames one stored file: zstd level 1 (the shared _compress helper) where a probe shows it pays, zlib level 1
    when the interpreter has no zstandard. ``compression`` is what the entry records: zstd-frames once a zstd frame
    was written, else zlib-frames (a file of raw frames only is readable by every version)."""

    def __init__(self) -> None:
        self.compression = COMPRESSION
        self._zstd: t.Any = None  # not looked up yet: an incompressible file never imports zstandard

    def frame(self, block: bytes) -> t.Tuple[bytes, bytes]:
        size = len(block)
        if _worth_compressing(block):
            if self._zstd is None:
                from ansible_collections.ransomeye.ops.plugins.module_utils import _compress
                self._zstd = _compress.zstd_compress if _compress.HAS_ZSTD else False
            if self._zstd:
                packed = self._zstd(block, 1)
                if len(packed) < size:
                    self.compression = COMPRESSION_ZSTD
                    return FRAME_HEADER.pack(FRAME_ZSTD, size, len(packed)), packed
            else:
                return frame(block)
        return FRAME_HEADER.pack(FRAME_RAW, size, size), block


def read_config(layout: WalLayout) -> dict:
    try:
        with open(layout.config, "rb") as handle:
            data = json.loads(handle.read(65536).decode("utf-8"))
    except FileNotFoundError:
        raise WalError("%s holds no WAL archive (no wal/wal.json); enable ransomeye_wal_archive first"
                       % layout.repo)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WalError("%s is not valid JSON: %s" % (layout.config, exc))
    if not isinstance(data, dict) or data.get("format") != WAL_FORMAT or data.get("version") != FORMAT_VERSION:
        raise WalError("%s is not a ransomeye.ops WAL archive config" % layout.config)
    return data
