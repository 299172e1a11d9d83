"""Deterministic file content of the demo host: artifacts, logs, temp files, upload buffer.

Everything here is derived from the seed (``random.Random("<seed>:<purpose>")``), so two
builds with the same seed and scale give byte-identical files. Only mtimes are relative
to the build time (old logs, stale temp files, orphaned chunks must look old *now*).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import typing as t

DAY = 86400
BLOCK = 1 << 20
BASE_DATE = (2026, 1, 1)
# A pid above the kernel's maximum (pid_max <= 2**22 on Linux): never a running process.
DEAD_PID_BASE = 4194304 + 1000


def rng(seed: int, purpose: str) -> random.Random:
    return random.Random("%s:%s" % (seed, purpose))


def hostnames(seed: int, count: int) -> t.List[str]:
    r = rng(seed, "hosts")
    kinds = ["ws", "srv", "dc", "fs", "sql", "web"]
    return ["%s-%04d.corp.example" % (r.choice(kinds), i + 1) for i in range(count)]


def _set_mtime(path: str, when: float) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


def _text_block(r: random.Random, size: int, host: str) -> bytes:
    """JSON lines: a pool of up to 256 seeded records, then lines drawn from it (fast at benchmark scale)."""
    words = ["process", "created", "file", "renamed", "entropy", "high", "vssadmin", "delete", "shadows",
             "encrypt", "note", "README", "ransom", "smb", "lateral", "token", "powershell", "-enc", "svchost",
             "registry", "run-key", "beacon", "c2", "exfil", "chunk", "hash", "sha256", "quarantine"]
    pool = []
    for n in range(min(256, size // 64 + 1)):
        rec = {"n": n, "host": host, "event": r.choice(words),
               "detail": " ".join(r.choice(words) for _word in range(r.randint(3, 12))),
               "pid": r.randint(100, 65000), "score": round(r.random(), 4), "hash": "%064x" % r.getrandbits(256)}
        pool.append((json.dumps(rec, sort_keys=True) + "\n").encode())
    average = sum(len(line) for line in pool) // len(pool)
    out = b"".join(pool[:size // average + 1])
    while len(out) < size:
        out += b"".join(r.choices(pool, k=(size - len(out)) // average + 1))
    return out[:size]


class ArtifactRecord(t.NamedTuple):
    relpath: str
    size: int
    sha256: str
    kind: str
    host_index: int
    days_ago: int


def _write_streamed(path: str, size: int, block_fn: t.Callable[[int], bytes]) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            block = block_fn(min(BLOCK, left))
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def make_artifacts(root: str, seed: int, budget: int, hosts: t.List[str], large: int = 0) -> t.List[ArtifactRecord]:
    """Nested artifacts totalling about ``budget`` bytes; ``large`` of them are 20-50 MB."""
    r = rng(seed, "artifacts")
    now = time.time()
    records: t.List[ArtifactRecord] = []
    used = 0
    n = 0
    plan: t.List[t.Tuple[str, int]] = []
    for _big in range(large):
        size = r.randint(20, 50) << 20
        plan.append(("memdump", size))
        used += size
    while used < budget:
        roll = r.random()
        if roll < 0.6:
            size = r.randint(512, 8 << 10)
        elif roll < 0.9:
            size = r.randint(8 << 10, 64 << 10)
        elif roll < 0.99:
            size = r.randint(64 << 10, 512 << 10)
        else:
            size = r.randint(512 << 10, 4 << 20)
        size = min(size, max(512, budget // 8))  # small demo hosts stay small
        plan.append((r.choice(["process", "sample", "note", "pcap", "registry", "sample"]), size))
        used += size
    for kind, size in plan:
        n += 1
        host_index = r.randrange(len(hosts))
        days_ago = r.randint(0, 90)
        month = 1 + (days_ago // 30) % 12
        seed_hex = "%016x" % r.getrandbits(64)
        ext = {"process": "json", "sample": "bin", "note": "txt", "pcap": "pcap", "registry": "reg",
               "memdump": "raw"}[kind]
        short = hosts[host_index].split(".")[0]
        rel = "2026/%02d/%s/%s/%s-%05d-%s.%s" % (month, short, seed_hex[:2], kind, n, seed_hex[2:10], ext)
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fr = random.Random("%s:artifact:%d" % (seed, n))
        if kind in ("process", "note", "registry"):
            sha = _write_streamed(path, size, lambda k, fr=fr, h=hosts[host_index]: _text_block(fr, k, h))
        elif kind == "memdump":
            # Memory dumps: half zero/pattern pages, half random pages (partly compressible).
            sha = _write_streamed(path, size, lambda k, fr=fr: fr.randbytes(k) if fr.random() < 0.5
                                  else (b"\x00" * 4096 + b"MZ\x90\x00" * 1024) * (k // 8192) + b"\x00" * (k % 8192))
        else:
            sha = _write_streamed(path, size, fr.randbytes)
        os.chmod(path, 0o640)
        _set_mtime(path, now - days_ago * DAY - fr.randint(0, DAY))
        records.append(ArtifactRecord(rel, size, sha, kind, host_index, days_ago))
    return records


def make_logs(log_dir: str, seed: int, per_file: int) -> t.List[str]:
    """Live ``*.log`` files (mtime now) and rotated ``*.log.N`` ones (mtime weeks ago)."""
    r = rng(seed, "logs")
    now = time.time()
    os.makedirs(log_dir, exist_ok=True)
    written = []
    plan = [("ransomeye.log", 4), ("web-access.log", 2), ("worker.log", 2), ("ingest.log", 3)]
    levels = ["INFO", "INFO", "INFO", "WARNING", "ERROR", "DEBUG"]
    for name, rotations in plan:
        for gen in range(rotations, -1, -1):
            path = os.path.join(log_dir, name if gen == 0 else "%s.%d" % (name, gen))
            lines = []
            total = 0
            i = 0
            while total < per_file:
                line = "2026-%02d-%02dT%02d:%02d:%02d %s ransomeye[%d]: %s host=ws-%04d seq=%d\n" % (
                    1 + gen % 12, 1 + i % 28, i % 24, i % 60, (i * 7) % 60, r.choice(levels), 1000 + gen,
                    r.choice(["alert raised", "event batch ingested", "detection scored", "artifact stored",
                              "upload chunk received", "rule engine reloaded", "health ok"]),
                    r.randint(1, 999), i)
                lines.append(line)
                total += len(line)
                i += 1
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("".join(lines))
            os.chmod(path, 0o640)
            if gen:
                _set_mtime(path, now - (gen * 7 + 1) * DAY)
            written.append(path)
    return written


def make_tmp(tmp_dir: str, seed: int, count: int) -> None:
    """Stale temp files (2-10 days old), fresh ones, nested and empty directories."""
    r = rng(seed, "tmp")
    now = time.time()
    subdirs = ["render", "export", "export/job-%03d" % 1, "export/job-%03d" % 2, "upload/staging", "cache/a/b"]
    for sub in subdirs:
        os.makedirs(os.path.join(tmp_dir, sub), exist_ok=True)
    for i in range(count):
        stale = i % 4 != 0
        sub = subdirs[i % len(subdirs)]
        path = os.path.join(tmp_dir, sub, "%s-%04d.tmp" % ("stale" if stale else "fresh", i))
        with open(path, "wb") as handle:
            handle.write(r.randbytes(r.randint(64, 32 << 10)))
        if stale:
            _set_mtime(path, now - r.randint(2, 10) * DAY)
    for name in ("export/job-empty-1", "export/job-empty-2", "cache/empty"):
        path = os.path.join(tmp_dir, name)
        os.makedirs(path, exist_ok=True)
        _set_mtime(path, now - 5 * DAY)


def _session(buffer_dir: str, name: str, r: random.Random, chunks: int, marker: t.Optional[bytes],
             age: float) -> None:
    session = os.path.join(buffer_dir, name)
    os.makedirs(session, exist_ok=True)
    when = time.time() - age
    for i in range(chunks):
        path = os.path.join(session, "chunk-%04d" % i)
        with open(path, "wb") as handle:
            handle.write(r.randbytes(r.randint(4 << 10, 64 << 10)))
        _set_mtime(path, when)
    if marker is not None:
        mpath = os.path.join(buffer_dir, name + ".session")
        with open(mpath, "wb") as handle:
            handle.write(marker)
        _set_mtime(mpath, when)
    _set_mtime(session, when)


def make_buffer(buffer_dir: str, seed: int, scale: int) -> None:
    """Upload sessions following the buffer rule of docs/DEMO_HOST.md (live ones: see write_live_sessions)."""
    r = rng(seed, "buffer")
    os.makedirs(buffer_dir, exist_ok=True)
    n = max(2, min(20, scale // 16 + 2))
    for i in range(n):
        _session(buffer_dir, "complete-%03d" % i, r, r.randint(2, 5),
                 json.dumps({"pid": DEAD_PID_BASE + i, "state": "complete"}).encode(), 4 * DAY)
        _session(buffer_dir, "orphan-deadpid-%03d" % i, r, r.randint(2, 6),
                 json.dumps({"pid": DEAD_PID_BASE + 100 + i, "state": "uploading"}).encode(), 3 * DAY)
        _session(buffer_dir, "orphan-nomarker-%03d" % i, r, r.randint(1, 4), None, 3 * DAY)
    _session(buffer_dir, "orphan-badmarker-000", r, 2, b"{not json", 3 * DAY)
    _session(buffer_dir, "recent-deadpid-000", r, 2,
             json.dumps({"pid": DEAD_PID_BASE + 999, "state": "uploading"}).encode(), 0)
    stray = os.path.join(buffer_dir, "chunk-9999")
    with open(stray, "wb") as handle:
        handle.write(r.randbytes(8 << 10))
    _set_mtime(stray, time.time() - 3 * DAY)


def write_live_sessions(buffer_dir: str, seed: int, pid: int) -> None:
    """Sessions of a running uploader (``pid``): one old, one fresh; both must be kept."""
    r = rng(seed, "buffer-live")
    for name, age in (("live-upload-000", 3 * DAY), ("live-upload-001", 0)):
        _session(buffer_dir, name, r, 3, json.dumps({"pid": pid, "state": "uploading"}).encode(), age)


def tree_hashes(root: str, skip: t.Sequence[str] = ()) -> t.Dict[str, str]:
    """SHA-256 of every regular file below ``root`` (relative path -> hex), symlinks as 'link:<target>'."""
    out: t.Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if any(rel.startswith(s) for s in skip):
                continue
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda h=handle: h.read(BLOCK), b""):
                    digest.update(block)
            out[rel] = digest.hexdigest()
    return out
