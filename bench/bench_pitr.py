"""WAL archive throughput and peak memory: ransomeye-wal push/get versus pgbackrest archive-push/-get, same run.

    .venv/bin/python bench/bench_pitr.py [--segments 32] [--rounds 2]

Both tools archive 16 MiB segments (synthetic, with a valid long page header for the cluster they archive for;
half random, half text-like), each run as the postgres OS user, one process per segment as PostgreSQL runs them,
synchronously (pgBackRest: archive-async off). The runs are interleaved segment by segment (ours, theirs, theirs,
ours, ...), so both see the same load on a shared machine; the figure is the ratio of the two throughputs.

Like with like: both compress and encrypt. Ours: zlib level 1 per 1 MiB frame (a frame that three 4 KiB probes
show incompressible is stored as is), AES-256-GCM under an RSA-3072 recipient, SHA-256 of plaintext and
ciphertext, an Ed25519 signature on every chain entry (sign_every 1), fsync of file, directory and chain log.
pgBackRest 2.45: compress-type=zst (its default level 3), repo1-cipher-type=aes-256-cbc, its default fsyncs.
The stored size of each repository is printed too.

Peak RSS is GNU time's maximum resident size of each process. Memory flat in segment count: the peak of the first
quarter of our pushes (short chain) is printed beside that of the last quarter (longest chain), and likewise for
``get`` (the restore_command) reading the segments back with a restore plan naming all of them. The baseline is
the Debian package pgbackrest, installed by this bench when missing (apt-get install -y pgbackrest, as root),
never by the product.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from tests.harness.ansible_runner import run_module_direct  # noqa: E402
from tests.harness.pgcluster import PgCluster  # noqa: E402
from tests.harness.pgpython import pg_python  # noqa: E402

SEG = 16 * 1024 * 1024


def segment(path: str, name: str, sysid: str, seed: int) -> None:
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, (log * 256 + seg) * SEG, 0, int(sysid), SEG, 8192)
    rng = random.Random(seed)
    half = SEG // 2
    text = (b"INSERT INTO alerts VALUES (%d, 'ransomware-like rename burst', now());\n" * 1)
    body = rng.randbytes(half - len(header)) + (text * (half // len(text) + 1))[:half]
    with open(path, "wb") as handle:
        handle.write(header + body)
    os.chmod(path, 0o644)


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


def run_one(argv):
    """(wall seconds, cpu seconds, peak RSS KiB) of one run as the postgres user, under GNU time."""
    start = time.monotonic()
    proc = subprocess.run(as_postgres(["/usr/bin/time", "-f", "RUSAGE=%M %U %S"] + argv), capture_output=True,
                          text=True, cwd="/", check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit("failed: %s\n%s%s" % (" ".join(argv), proc.stdout, proc.stderr))
    for line in proc.stderr.splitlines():
        if line.startswith("RUSAGE="):
            rss, user, system = line[7:].split()
            return wall, float(user) + float(system), int(rss)
    raise SystemExit("no rusage from GNU time: %s" % proc.stderr)


def du(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def get_bench(base, pushed, rec_key, conf, segs):
    """The restore_command (get) reading archived segments back, versus pgbackrest archive-get, interleaved."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trusted
    repo = os.path.join(base, "repo")
    report = pchain.check_chain(repo, load_trusted([os.path.join(base, "sig.pub")]), "quick")
    assert not report.problems and all(n in report.good for n in pushed), report.problems
    files = {n: {"plaintext_sha256": report.good[n].entry["plaintext_sha256"],
                 "plaintext_size": report.good[n].entry["plaintext_size"],
                 "compression": report.good[n].entry.get("compression", "none")} for n in pushed}
    prog = os.path.join(base, "prog")
    config = os.path.join(prog, "restore-bench.json")
    with open(config, "w") as handle:
        json.dump({"format": "ransomeye-wal-program", "version": 1, "repo": repo, "files": files,
                   "private_key": rec_key, "timeout": 60}, handle)
    os.chmod(config, 0o644)
    theirs = [n[:8] + "%08X" % (int(n[8:16], 16) + 1) + n[16:] for n in pushed]  # pgBackRest's names
    walls = {"ours": 0.0, "pgbackrest": 0.0}
    peaks = []
    for i, (ours, other) in enumerate(zip(pushed, theirs)):
        for tool in (("ours", "pgbackrest") if i % 2 == 0 else ("pgbackrest", "ours")):
            dest = os.path.join(segs, "restored")
            if tool == "ours":
                argv = [os.path.join(prog, "ransomeye-wal"), "get", "--config", config, ours, dest]
            else:
                argv = ["pgbackrest", "--config=" + conf, "--stanza=bench", "archive-get", other, dest]
            wall, _cpu, rss = run_one(argv)
            walls[tool] += wall
            if tool == "ours":
                peaks.append(rss)
            os.unlink(dest)
    mb = len(pushed) * 16.0
    quarter = max(1, len(peaks) // 4)
    print(json.dumps({"summary": "archive-get, %d segments each" % len(pushed),
                      "ours_MB_per_s": round(mb / walls["ours"], 1),
                      "pgbackrest_MB_per_s": round(mb / walls["pgbackrest"], 1),
                      "throughput_ratio_ours_vs_pgbackrest": round(walls["pgbackrest"] / walls["ours"], 2),
                      "ours_peak_rss_MiB_first_vs_last_quarter": [
                          round(max(peaks[:quarter]) / 1024, 1), round(max(peaks[-quarter:]) / 1024, 1)],
                      "load": os.getloadavg()}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("pgbackrest") and os.geteuid() == 0 and shutil.which("apt-get"):
        # The baseline is installed by the bench set-up only, never by the product.
        subprocess.run(["apt-get", "install", "-y", "pgbackrest"], capture_output=True, check=False)
    if not shutil.which("pgbackrest"):
        print("pgbackrest is not installed (apt-get install -y pgbackrest); bench skipped")
        return 0
    base = tempfile.mkdtemp(prefix="re-bench-pitr-", dir="/tmp")
    os.chmod(base, 0o755)
    pg = PgCluster()
    pg.start()
    try:
        rec = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        sig = ed25519.Ed25519PrivateKey.generate()
        pem = serialization.Encoding.PEM
        with open(os.path.join(base, "rec.pub"), "wb") as handle:
            handle.write(rec.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        rec_key = os.path.join(base, "rec.key")
        with open(rec_key, "wb") as handle:
            handle.write(rec.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        shutil.chown(rec_key, "postgres", "postgres")
        os.chmod(rec_key, 0o600)
        with open(os.path.join(base, "sig.pub"), "wb") as handle:
            handle.write(sig.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        key = os.path.join(base, "sig.key")
        with open(key, "wb") as handle:
            handle.write(sig.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        shutil.chown(key, "postgres", "postgres")
        os.chmod(key, 0o600)
        prog = os.path.join(base, "prog")
        result = run_module_direct("ransomeye_wal_archive", dict(
            pg.conn_params(), repo=os.path.join(base, "repo"), recipients=[os.path.join(base, "rec.pub")],
            signing_key=key, program_dir=prog, python=pg_python()))
        assert result["_rc"] == 0, result
        sysid = result["system_identifier"]
        # pgBackRest: a stanza on local disk, encrypted, zst
        pgb = os.path.join(base, "pgbackrest")
        os.makedirs(os.path.join(pgb, "repo"))
        os.makedirs(os.path.join(pgb, "log"))
        conf = os.path.join(pgb, "pgbackrest.conf")
        with open(conf, "w") as handle:
            handle.write("[global]\nrepo1-path=%s/repo\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=%s\n"
                         "compress-type=zst\nlog-path=%s/log\nlock-path=%s\nlog-level-console=warn\n"
                         "[bench]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\n"
                         % (pgb, os.urandom(16).hex(), pgb, pgb, pg.data, pg.port, pg.sockdir))
        passfile = os.path.join(pgb, "pgpass")
        with open(passfile, "w") as handle:
            handle.write("*:*:*:*:%s\n" % pg.password)
        os.chmod(passfile, 0o600)
        os.environ["PGPASSFILE"] = passfile  # pgBackRest's libpq login (the bench's throwaway cluster)
        subprocess.run(["chown", "-R", "postgres:postgres", pgb], check=True)
        os.chmod(conf, 0o600)
        proc = subprocess.run(as_postgres(["pgbackrest", "--config=" + conf, "--stanza=bench", "stanza-create"]),
                              capture_output=True, text=True, cwd="/", check=False)
        if proc.returncode != 0:
            raise SystemExit("pgbackrest stanza-create failed: %s%s" % (proc.stdout, proc.stderr))
        segs = os.path.join(base, "segs")
        os.makedirs(segs)
        os.chmod(segs, 0o777)
        print("segments: %d x 16 MiB per round and tool, %d rounds, load %s"
              % (args.segments, args.rounds, os.getloadavg()))
        print("ours: zlib-1 frames (incompressible frames stored as is), AES-256-GCM, RSA-3072 recipient, Ed25519 "
              "signature per segment; pgbackrest: compress-type=zst (level 3), aes-256-cbc; both sync, fsync")
        total = {"ours": [0.0, 0.0], "pgbackrest": [0.0, 0.0]}
        peaks = {"ours": [], "pgbackrest": []}
        pushed = []
        seq = 0
        for r in range(args.rounds):
            rnd = {"ours": [0.0, 0.0, 0], "pgbackrest": [0.0, 0.0, 0]}
            for i in range(args.segments):
                order = ("ours", "pgbackrest") if (seq % 2 == 0) else ("pgbackrest", "ours")
                for tool in order:
                    # distinct names per tool: pgBackRest and ours never see each other's files
                    name = "00000001%08X%08X" % (r * 2 + 1 + (tool == "pgbackrest"), i)
                    path = os.path.join(segs, name)
                    segment(path, name, sysid, seq)
                    if tool == "ours":
                        argv = [os.path.join(prog, "ransomeye-wal"), "push", "--config",
                                os.path.join(prog, "archive.json"), path, name]
                        pushed.append(name)
                    else:
                        argv = ["pgbackrest", "--config=" + conf, "--stanza=bench", "archive-push", path]
                    wall, cpu, rss = run_one(argv)
                    rnd[tool][0] += wall
                    rnd[tool][1] += cpu
                    rnd[tool][2] = max(rnd[tool][2], rss)
                    peaks[tool].append(rss)
                    os.unlink(path)
                seq += 1
            mb = args.segments * 16.0
            for tool in ("ours", "pgbackrest"):
                total[tool][0] += rnd[tool][0]
                total[tool][1] += rnd[tool][1]
                print(json.dumps({"round": r + 1, "tool": tool, "seconds": round(rnd[tool][0], 2),
                                  "MB_per_s": round(mb / rnd[tool][0], 1),
                                  "cpu_ms_per_segment": round(1000 * rnd[tool][1] / args.segments, 1),
                                  "peak_rss_MiB": round(rnd[tool][2] / 1024, 1), "load": os.getloadavg()[0]}))
        mb = args.segments * args.rounds * 16.0
        quarter = max(1, len(peaks["ours"]) // 4)
        print(json.dumps({
            "summary": "archive-push, %d segments each" % (args.segments * args.rounds),
            "ours_MB_per_s": round(mb / total["ours"][0], 1),
            "pgbackrest_MB_per_s": round(mb / total["pgbackrest"][0], 1),
            "throughput_ratio_ours_vs_pgbackrest": round(total["pgbackrest"][0] / total["ours"][0], 2),
            "cpu_ms_per_segment": {k: round(1000 * v[1] / (args.segments * args.rounds), 1) for k, v in total.items()},
            "stored_MiB": {"ours": round(du(os.path.join(base, "repo", "wal", "segments")) / 2**20, 1),
                           "pgbackrest": round(du(os.path.join(pgb, "repo", "archive")) / 2**20, 1)},
            "ours_peak_rss_MiB_first_vs_last_quarter": [
                round(max(peaks["ours"][:quarter]) / 1024, 1), round(max(peaks["ours"][-quarter:]) / 1024, 1)],
            "load": os.getloadavg()}))
        # Start-up alone: the program with no arguments imports everything a push needs, prints its usage, exits 2.
        # 20 runs under one GNU time (its resolution is 10 ms); the loop's shell costs both sides the same.
        loop = "for i in $(seq 20); do %s >/dev/null 2>&1; done; true"
        ours = run_one(["bash", "-c", loop % shlex.quote(os.path.join(prog, "ransomeye-wal"))])[1]
        theirs = run_one(["bash", "-c", loop % "pgbackrest version"])[1]
        print(json.dumps({"summary": "start-up only (no arguments / pgbackrest version), CPU ms per run",
                          "ours": round(1000 * ours / 20, 1), "pgbackrest": round(1000 * theirs / 20, 1)}))
        get_bench(base, pushed, rec_key, conf, segs)
        return 0
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
