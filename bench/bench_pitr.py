"""WAL archive throughput and peak memory: ransomeye-wal push versus pgbackrest archive-push, same run.

    .venv/bin/python bench/bench_pitr.py [--segments 24] [--rounds 2]

Both tools archive the same 16 MiB segments (synthetic, with a valid long page header for the cluster they
archive for; half random, half text-like), each run as the postgres OS user, one process per segment as
PostgreSQL runs them, synchronously. Ours encrypts (AES-256-GCM, RSA-3072 recipient), fsyncs file and directory
and signs the chain entry (Ed25519); pgBackRest uses repo1-cipher-type=aes-256-cbc, compress-type=zst
(its default archive-push settings otherwise, archive-async off). Peak RSS is GNU time's maximum resident size
of each process; every segment is a fresh process, so memory is flat in segment count by construction and the
figure is per segment. The baseline is the Debian package pgbackrest, installed by this bench when missing
(apt-get install -y pgbackrest, as root), never by the product.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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


def timed(argvs):
    """Wall time of running every argv in turn; peak RSS (KiB) of any one run (GNU time's maximum resident size)."""
    peak = 0
    start = time.monotonic()
    for argv in argvs:
        proc = subprocess.run(as_postgres(["/usr/bin/time", "-f", "MAXRSS=%M"] + argv), capture_output=True,
                              text=True, cwd="/", check=False)
        if proc.returncode != 0:
            raise SystemExit("failed: %s\n%s%s" % (" ".join(argv), proc.stdout, proc.stderr))
        for line in proc.stderr.splitlines():
            if line.startswith("MAXRSS="):
                peak = max(peak, int(line[7:]))
    return time.monotonic() - start, peak


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=24)
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
        names = ["00000001000000%02X000000%02X" % (r + 1, i) for r in range(args.rounds * 2)
                 for i in range(args.segments)]
        print("segments: %d x 16 MiB per round, %d rounds, load %s" % (args.segments, args.rounds,
                                                                       os.getloadavg()))
        for r in range(args.rounds):
            for tool in ("ours", "pgbackrest"):
                batch = names[(2 * r + (tool == "pgbackrest")) * args.segments:][:args.segments]
                paths = []
                for i, name in enumerate(batch):
                    path = os.path.join(segs, name)
                    segment(path, name, sysid, i)
                    paths.append((path, name))
                if tool == "ours":
                    argvs = [[os.path.join(prog, "ransomeye-wal"), "push", "--config",
                              os.path.join(prog, "archive.json"), p, n] for p, n in paths]
                else:
                    argvs = [["pgbackrest", "--config=" + conf, "--stanza=bench", "archive-push", p]
                             for p, _n in paths]
                elapsed, peak = timed(argvs)
                mb = args.segments * 16.0
                print(json.dumps({"round": r + 1, "tool": tool, "seconds": round(elapsed, 2),
                                  "MB_per_s": round(mb / elapsed, 1), "peak_rss_MiB": round(peak / 1024, 1),
                                  "load": os.getloadavg()[0]}))
                for path, _n in paths:
                    os.unlink(path)
        return 0
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
