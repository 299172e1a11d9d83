# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: checking the WAL hash chain and what a base backup can replay from it.

``check_chain`` reads every chain entry, checks shape, links, signatures and
the stored files; an entry is authentic when a valid signature by a trusted
key covers it through unbroken links. ``coverage`` walks the segments a base
backup needs from its start LSN onward and names the first missing one.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import container, signing
from ansible_collections.ransomeye.ops.plugins.module_utils._files import fsync_dir

READ_CHUNK = 1 << 20


class ChainReport(t.NamedTuple):
    good: t.Dict[str, wf.ChainEntry]          # authentic entries whose stored file checked out, by WAL name
    problems: t.List[dict]                     # {backup, object, reason}
    unsigned_tail: t.List[str]                 # names after the last valid signature (not trusted)
    entries: int
    segment_size: int
    repo_id: str


def _problem(obj: str, reason: str) -> dict:
    return {"backup": None, "object": obj, "reason": reason}


def stored_plaintext(src: t.BinaryIO, entry: wf.ChainEntry, decrypt: dict) -> t.Iterator[bytes]:
    """The archived WAL file's bytes: decrypted, authenticated and (version-2 entries) unframed."""
    chunks = container.decrypt_chunks(src, expected_object_id="wal/" + entry.name, **decrypt)
    return wf.plaintext(chunks, entry.entry.get("compression"))


def _check_stored(layout: wf.WalLayout, entry: wf.ChainEntry, level: str, decrypt: dict) -> t.Optional[str]:
    path = layout.stored_path(entry.name)
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return "segment file is missing from the archive"
    if size != entry.entry["ciphertext_size"]:
        return "stored size %d differs from the chain's %d (truncated or replaced)" % (
            size, entry.entry["ciphertext_size"])
    if level == "quick":
        return None
    with open(path, "rb") as src:
        if level == "ciphertext":
            digest = hashlib.sha256()
            for block in iter(lambda: src.read(READ_CHUNK), b""):
                digest.update(block)
            if digest.hexdigest() != entry.entry["ciphertext_sha256"]:
                return "ciphertext SHA-256 differs from the chain entry (file modified or swapped)"
            return None
        digest = hashlib.sha256()
        plain = 0
        try:
            for chunk in stored_plaintext(src, entry, decrypt):
                digest.update(chunk)
                plain += len(chunk)
        except wf.WalError as exc:
            return "decrypted content is damaged: %s" % exc.msg
        except RansomeyeError as exc:
            return "decryption failed: %s" % exc.msg
    if digest.hexdigest() != entry.entry["plaintext_sha256"] or plain != entry.entry["plaintext_size"]:
        return "plaintext SHA-256 or size differs from the chain entry"
    return None


def check_chain(repo_path: str, trusted: t.Dict[str, t.Any], level: str = "quick",
                decrypt: t.Optional[dict] = None) -> ChainReport:
    """Verify the whole chain once; stored files are checked at ``level`` (quick, ciphertext, full)."""
    if isinstance(trusted, tuple) and hasattr(trusted, "keys"):
        trusted = trusted.keys  # a _backup_trust.Trust: the chain uses its keys
    layout = wf.WalLayout(repo_path)
    config = wf.read_config(layout)
    repo_id = str(config.get("repo_id") or "")
    segment_size = int(config.get("segment_size") or wf.DEFAULT_SEGMENT_SIZE)
    problems: t.List[dict] = []
    loaded: t.List[t.Optional[wf.ChainEntry]] = []
    files = wf.read_chain(layout)
    for n, name, label, item, error in files:
        if item is None:
            problems.append(_problem("wal-chain:%s" % label, error or "unreadable"))
            loaded.append(None)
            continue
        if item.entry["repo_id"] != repo_id:
            problems.append(_problem("wal:%s" % name, "chain entry belongs to repository %s" % item.entry["repo_id"]))
            loaded.append(None)
            continue
        loaded.append(item)
    # broken[i]: the link from entry i-1 to entry i cannot be trusted
    broken = [False] * len(files)
    for i, (n, name, _label, _item, _error) in enumerate(files):
        item = loaded[i]
        if item is None:
            broken[i] = True
            if i + 1 < len(files):
                broken[i + 1] = True
            continue
        if i == 0:
            if n == 1 and item.entry.get("prev") is not None:
                problems.append(_problem("wal:%s" % name, "first chain entry names a previous entry"))
                broken[i] = True
            continue
        prev_n = files[i - 1][0]
        if prev_n >= n:
            problems.append(_problem("wal:%s" % name, "chain entry %d comes after entry %d (entries reordered or "
                                     "replayed)" % (n, prev_n)))
            broken[i] = True
        elif prev_n != n - 1:
            problems.append(_problem("wal:%s" % name, "chain entries %d..%d are missing (deleted WAL records)"
                                     % (prev_n + 1, n - 1)))
            broken[i] = True
        elif loaded[i - 1] is not None and item.entry.get("prev") != loaded[i - 1].digest:
            problems.append(_problem("wal:%s" % name, "chain link to entry %d is broken (entries replaced or "
                                     "reordered)" % prev_n))
            broken[i] = True
    signed_ok = [False] * len(files)
    for i, item in enumerate(loaded):
        if item is None or not item.signatures:
            continue
        data = signing.canonical_json(item.entry)
        errors = []
        for sig in item.signatures:
            try:
                kid = signing.verify_trusted(trusted, data, sig)
                if item.entry.get("signer") == kid:
                    signed_ok[i] = True
                    break
                errors.append("signed by %s but names signer %s" % (kid, item.entry.get("signer")))
            except RansomeyeError as exc:
                errors.append(exc.msg)
        if not signed_ok[i]:
            problems.append(_problem("wal:%s" % item.name, "no valid signature by a trusted key: %s" % "; ".join(errors)))
    authentic = [False] * len(files)
    covered = False
    for i in range(len(files) - 1, -1, -1):
        if loaded[i] is None:
            covered = False
            continue
        if signed_ok[i]:
            covered = True
        authentic[i] = covered
        if broken[i]:
            covered = False
    last_signed = max([i for i in range(len(files)) if signed_ok[i]] or [-1])
    tail = [files[i][1] for i in range(last_signed + 1, len(files)) if loaded[i] is not None]
    good: t.Dict[str, wf.ChainEntry] = {}
    seen: t.Set[str] = set()
    for i, item in enumerate(loaded):
        if item is None:
            continue
        if item.name in seen:
            problems.append(_problem("wal:%s" % item.name, "archived twice in the chain (entry %d)" % item.n))
            continue
        seen.add(item.name)
        if not authentic[i]:
            continue
        reason = _check_stored(layout, item, level, decrypt or {})
        if reason:
            problems.append(_problem("wal:%s" % item.name, reason))
            continue
        good[item.name] = item
    return ChainReport(good, problems, tail, len(files), segment_size, repo_id)


# ----------------------------------------------------------------------------- retention


def prune_chain(layout: wf.WalLayout, removable: t.Callable[[str], bool], check_mode: bool = False) -> dict:
    """Remove the oldest chain entries while ``removable(name)`` holds, then their stored files.

    Only a prefix goes, and never the last entry (the running hash the next push
    links to). Entries go first (a log is rewritten atomically without them, or
    removed when all its entries go), stored files after, so a crash leaves at
    worst unreferenced files, never an entry without its segment. Call with the
    archive's lock held.
    """
    out = {"segments": 0, "bytes": 0}
    chain = wf.read_chain(layout)
    count = 0
    for item in chain[:-1]:
        if item.item is None or not removable(item.name):
            break
        count += 1
    if not count:
        return out
    doomed = [layout.stored_path(c.name) for c in chain[:count]]
    for path in doomed:
        try:
            out["bytes"] += os.lstat(path).st_size
        except FileNotFoundError:
            pass
    out["segments"] = count
    if check_mode:
        return out
    left = count
    touched: t.Set[str] = set()
    for _n, _name, path in layout.chain_files():
        if not left:
            break
        os.unlink(path)
        touched.add(layout.chain)
        left -= 1
    for _k, path in layout.log_files():
        if not left:
            break
        with open(path, "rb") as handle:
            data = handle.read(wf.LOG_MAX_BYTES + 1)
        lines = data.split(b"\n")[:-1]
        if left >= len(lines):
            os.unlink(path)
            left -= len(lines)
        else:
            rest = b"".join(line + b"\n" for line in lines[left:])
            tmp = os.path.join(layout.log, ".prune.%d.tmp" % os.getpid())
            st = os.lstat(path)
            with open(tmp, "wb") as handle:
                handle.write(rest)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o640)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)  # the archive program (the server's user) appends to it
            os.rename(tmp, path)
            left = 0
        touched.add(layout.log)
    for directory in touched:
        fsync_dir(directory)
    touched = set()
    for path in doomed:
        try:
            os.unlink(path)
            touched.add(os.path.dirname(path))
        except FileNotFoundError:
            pass
    for directory in touched:
        fsync_dir(directory)
    return out


# ----------------------------------------------------------------------------- what a base backup can reach


class Coverage(t.NamedTuple):
    ok: bool                        # every segment from the start to the backup's end is present
    last_segment: t.Optional[str]   # the last segment of the unbroken run from the start
    end_lsn: int                    # end of that run (replay cannot go past it)
    first_missing: t.Optional[str]  # the first segment needed and missing, when WAL beyond it exists or is needed
    timeline_path: t.List[int]
    names: t.List[str]              # every file restore may hand to the server (segments and history files)


def coverage(report: ChainReport, timeline: int, start_lsn: int, end_lsn: int,
             switches: t.Optional[t.List[t.Tuple[int, int, int]]] = None) -> Coverage:
    """Walk segments from ``start_lsn`` on ``timeline`` while they are in the good chain.

    ``switches`` is [(parent timeline, child timeline, switch LSN)] to follow
    (from history files); without it the walk stays on ``timeline``.
    ``first_missing`` is set when the backup's own WAL is incomplete or when a
    gap hides later archived WAL; running off the end of the archive is not a gap.
    """
    size = report.segment_size
    segno = start_lsn // size
    tli = timeline
    path = [tli]
    names: t.List[str] = []
    last = None
    while True:
        for parent, child, lsn in sorted(switches or [], key=lambda s: s[2]):
            if parent == tli and segno >= lsn // size:
                tli = child
                path.append(tli)
                if "%08X.history" % tli in report.good:
                    names.append("%08X.history" % tli)
        name = wf.segment_name(tli, segno, size)
        if name not in report.good:
            break
        names.append(name)
        last = name
        segno += 1
    reached = segno * size if last else start_lsn
    segments = [n for n in report.good if wf.wal_kind(n) == "segment" and int(n[:8], 16) in path]
    later = [n for n in segments if wf.segment_number(n, size) > segno]
    ok = last is not None and reached >= end_lsn
    first_missing = name if (not ok or later) else None
    return Coverage(ok, last, reached, first_missing, path, names)


def history_switches(report: ChainReport, repo_path: str, decrypt: t.Optional[dict]) -> t.List[t.Tuple[int, int, int]]:
    """(parent, child, switch LSN) from the authentic history files (decrypting them needs the secret)."""
    out: t.List[t.Tuple[int, int, int]] = []
    if not decrypt:
        return out
    layout = wf.WalLayout(repo_path)
    for name, item in report.good.items():
        if wf.wal_kind(name) != "history":
            continue
        child = int(name[:8], 16)
        data = b""
        with open(layout.stored_path(name), "rb") as src:
            for chunk in stored_plaintext(src, item, decrypt):
                data += chunk
                if len(data) > 1 << 20:
                    raise RansomeyeError("history file %s is larger than 1 MiB" % name)
        lines = wf.parse_history(data)
        if lines:
            parent, lsn = lines[-1]
            out.append((parent, child, lsn))
    return out


# ----------------------------------------------------------------------------- verify: every base backup's WAL


def backup_wal_problems(repo_path: str, manifests: t.List[t.Any], trusted: t.Any, level: str,
                        decrypt: t.Optional[dict]) -> t.Tuple[t.List[dict], dict]:
    """Problems of the WAL chain and of each base backup's WAL from its start LSN onward, and a summary.

    Chain problems name the entry or segment; a base backup whose WAL has a gap
    names the first missing (or unauthentic) segment.
    """
    bases = [m for m in manifests if isinstance((m.body.get("components") or {}).get("physical"), dict)]
    layout = wf.WalLayout(repo_path)
    if not bases and not os.path.isdir(layout.chain) and not os.path.isdir(layout.log):
        return [], {}
    report = check_chain(repo_path, trusted, "full" if level == "full" else level, decrypt)
    problems = list(report.problems)
    switches = history_switches(report, repo_path, decrypt) if decrypt else []
    reach: t.Dict[str, dict] = {}
    timelines = sorted({int(n[:8], 16) for n in report.good if wf.wal_kind(n) == "segment"})
    for tli in timelines:
        if tli > 1 and "%08X.history" % tli not in report.good:
            first = min(n for n in report.good if wf.wal_kind(n) == "segment" and int(n[:8], 16) == tli)
            problems.append(_problem("wal:%08X.history" % tli, "timeline %d has WAL (from %s) but its history file "
                                     "is missing or not authentic" % (tli, first)))
    for item in bases:
        comp = item.body["components"]["physical"]
        try:
            start, end, tli = wf.parse_lsn(comp["start_lsn"]), wf.parse_lsn(comp["end_lsn"]), int(comp["timeline"])
        except (KeyError, TypeError, ValueError, wf.WalError):
            problems.append({"backup": item.backup_id, "object": "manifest", "reason": "physical component has no "
                             "usable start/end LSN"})
            continue
        cov = coverage(report, tli, start, end, switches)
        reach[item.backup_id] = {"start_lsn": comp["start_lsn"], "consistent": cov.ok,
                                 "replay_to_lsn": wf.format_lsn(cov.end_lsn), "last_segment": cov.last_segment,
                                 "timelines": cov.timeline_path}
        if not cov.ok:
            problems.append({"backup": item.backup_id, "object": "wal:%s" % cov.first_missing,
                             "reason": "WAL segment %s, needed to make this base backup consistent (up to LSN %s), "
                                       "is missing or failed verification" % (cov.first_missing, comp["end_lsn"])})
        elif cov.first_missing:
            problems.append({"backup": item.backup_id, "object": "wal:%s" % cov.first_missing,
                             "reason": "WAL segment %s is missing or failed verification: replay from this backup "
                                       "stops at LSN %s although later WAL is archived"
                                       % (cov.first_missing, wf.format_lsn(cov.end_lsn))})
    summary = {"entries": report.entries, "authentic": len(report.good), "unsigned_tail": report.unsigned_tail,
               "base_backups": reach}
    return problems, summary


class _WithWal(t.NamedTuple):
    verified: t.List[str]
    problems: t.List[dict]
    backups: t.List[dict]
    objects_checked: int
    bytes_checked: int
    wal: dict


def verify_hook(repo_path: str, result: t.Any, trusted: t.Any, level: str, decrypt: t.Optional[dict]) -> _WithWal:
    """ransomeye_backup_verify's result with the WAL checks of the selected base backups added."""
    problems, summary = backup_wal_problems(repo_path, list(result.selected), trusted, level, decrypt)
    failed = {p.get("backup") for p in problems}
    verified = [b for b in result.verified if b not in failed and None not in failed]
    return _WithWal(verified, list(result.problems) + problems, result.backups, result.objects_checked,
                    result.bytes_checked, summary)
