"""Repository growth of daily database dumps: ransomeye_backup (repository v2) versus restic, same run.

    .venv/bin/python bench/bench_db_dedup.py [--events 240000] [--nights 3]

A throwaway cluster holds the test schema of tests/integration/dr (hosts, events, alerts, artifact index) grown
to --events events (about 240 bytes each in the dump). Night 0 is a first backup; each later night changes about
1 % of the rows (tests/integration/dr/test_dr_db_dedup.py: new events and alerts shaped like the old ones, recent
alerts updated, the oldest events expired) and backs up again.

* ours: ransomeye_backup, component database, rsa mode, run as a module process (pg_dump -Fc -Z0 streamed,
  keyed content-defined chunks, zlib per chunk, packs; nothing on disk in plaintext).
* restic: the same night's ``pg_dump -Fc -Z0`` written to a file, then ``restic backup`` of that file into a
  repository of format version 2 (compression auto), which is how restic users back up PostgreSQL.
* restic, compressed dump: the same with ``pg_dump -Fc`` (pg_dump's default compression), for reference: the
  usual way to dump, and why it does not deduplicate.
* ours v1: ``format: v1`` (one pg_dump -Fc object per night), what the collection stored before.

Then the last night is restored into a new database by each of ours (v2 and v1, the module: verify, pg_restore,
row counts) next to a bare pg_restore of the same night's dump file, and a last line times the write path's CPU
stages (chunker, SHA-256, the chunk codec: zstd at the stream level) on the final dump.

Growth is the bytes the repository's files grew by (all files, metadata included). Times are wall clock of the
backup step; the restic times include writing the dump file. restic is a Debian package installed by
``make bench-peers``, never a runtime dependency.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from tests.harness.ansible_runner import run_module_direct  # noqa: E402
from tests.harness.pgcluster import PgCluster, server_bindir  # noqa: E402
from tests.integration.dr.conftest import populate  # noqa: E402
from tests.integration.dr.test_dr_db_dedup import grow, nightly_change  # noqa: E402


def tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def keys(base: str) -> dict:
    pem = serialization.Encoding.PEM
    none = serialization.NoEncryption()
    signer = ed25519.Ed25519PrivateKey.generate()
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    out = {"signing_key": os.path.join(base, "signing.key"), "recipient": os.path.join(base, "recipient.pub"),
           "signing_pub": os.path.join(base, "signing.pub"), "private_key": os.path.join(base, "recipient.key")}
    with open(out["signing_key"], "wb") as handle:
        handle.write(signer.private_bytes(pem, serialization.PrivateFormat.PKCS8, none))
    with open(out["signing_pub"], "wb") as handle:
        handle.write(signer.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    with open(out["private_key"], "wb") as handle:
        handle.write(recipient.private_bytes(pem, serialization.PrivateFormat.PKCS8, none))
    os.chmod(out["private_key"], 0o600)
    with open(out["recipient"], "wb") as handle:
        handle.write(recipient.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(out["signing_key"], 0o600)
    return out


class Restic:
    def __init__(self, base: str, name: str, compress_dump: bool) -> None:
        self.repo = os.path.join(base, name)
        self.dumps = os.path.join(base, name + "-dumps")
        os.makedirs(self.dumps)
        self.env = dict(os.environ, RESTIC_PASSWORD="bench-only-password", RESTIC_REPOSITORY=self.repo)
        self.compress_dump = compress_dump
        subprocess.run(["restic", "init", "--repository-version", "2"], env=self.env, capture_output=True, check=True)

    def backup(self, pg: PgCluster, db: str) -> float:
        started = time.monotonic()
        params = pg.conn_params()
        path = os.path.join(self.dumps, "%s.pgdump" % db)
        argv = [os.path.join(server_bindir(), "pg_dump"), "--format=custom", "--no-password",
                "--host", params["login_host"], "--port", str(params["login_port"]),
                "--username", params["login_user"], "--file", path, db]
        if not self.compress_dump:
            argv.insert(2, "--compress=0")
        subprocess.run(argv, env=dict(os.environ, PGPASSWORD=params["login_password"]), check=True)
        subprocess.run(["restic", "backup", "--quiet", self.dumps], env=self.env, capture_output=True, check=True)
        return time.monotonic() - started


def restores(pg: PgCluster, db: str, material: dict, repo_v2: str, repo_v1: str, restic: "Restic") -> None:
    """The last night restored into a new database: ours v2 (chunks from packs into pg_restore's stdin), ours v1
    (one object), and bare pg_restore of the same night's -Z0 dump file (what restic's restore would feed it)."""
    times = {}
    for label, repo in (("ours v2", repo_v2), ("ours v1", repo_v1)):
        target = "restored_%s" % label.split()[-1]
        started = time.monotonic()
        result = run_module_direct("ransomeye_restore", dict(
            pg.conn_params(), repo=repo, trusted_keys=[material["signing_pub"]], private_key=material["private_key"],
            db=target, components=["database"]), timeout=3600)
        times[label] = time.monotonic() - started
        if result.get("_rc") != 0:
            raise SystemExit("ransomeye_restore (%s) failed: %s" % (label, result.get("msg")))
        pg.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % target)
    params = pg.conn_params()
    pg.execute('CREATE DATABASE "restored_bare"')
    started = time.monotonic()
    subprocess.run([os.path.join(server_bindir(), "pg_restore"), "--no-password", "--exit-on-error",
                    "--host", params["login_host"], "--port", str(params["login_port"]), "--username",
                    params["login_user"], "--dbname", "restored_bare", os.path.join(restic.dumps, "%s.pgdump" % db)],
                   env=dict(os.environ, PGPASSWORD=params["login_password"]), check=True)
    times["bare"] = time.monotonic() - started
    pg.execute('DROP DATABASE IF EXISTS "restored_bare" WITH (FORCE)')
    print("restore of the last night into a new database: ours v2 %.1f s, ours v1 %.1f s, bare pg_restore of the "
          "dump file %.1f s (ours v2 / bare = %.2fx; ours includes verify, row counts and the swap)"
          % (times["ours v2"], times["ours v1"], times["bare"], times["ours v2"] / times["bare"]))


def throughput(pg: PgCluster, db: str) -> None:
    """The write path's CPU stages on the last night's dump, one core each, same process and run."""
    import hashlib
    import io
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import chunker as bchunker
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt as bfmt
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import stream as bstream
    params = pg.conn_params()
    data = subprocess.run([os.path.join(server_bindir(), "pg_dump"), "--format=custom", "--compress=0",
                           "--no-password", "--host", params["login_host"], "--port", str(params["login_port"]),
                           "--username", params["login_user"], db],
                          env=dict(os.environ, PGPASSWORD=params["login_password"]), capture_output=True,
                          check=True).stdout
    mb = len(data) / 1e6
    cutter = bchunker.Chunker(os.urandom(32), bchunker.DB_PARAMS)
    started = time.perf_counter()
    chunks = list(cutter.chunks(io.BytesIO(data).read))
    cdc = time.perf_counter() - started
    started = time.perf_counter()
    for chunk in chunks:
        hashlib.sha256(chunk).digest()
    sha = time.perf_counter() - started
    started = time.perf_counter()
    for chunk in chunks:
        bfmt.encode_blob(chunk, bstream.STREAM_LEVEL)
    codec = time.perf_counter() - started
    print("write path on a %.0f MB dump (MB/s, one core): chunker %.0f, SHA-256 %.0f, chunk codec (zstd level %d, "
          "raw where it does not pay) %.0f; %d chunks of %.0f KiB on average"
          % (mb, mb / cdc, mb / sha, bstream.STREAM_LEVEL, mb / codec, len(chunks), len(data) / len(chunks) / 1024))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=240000)
    parser.add_argument("--nights", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("restic"):
        print("restic is not installed (make bench-peers); bench_db_dedup skipped")
        return 0
    base = tempfile.mkdtemp(prefix="bench-dbdedup-")
    pg = PgCluster()
    try:
        pg.start()
        db = "ransomeye"
        pg.execute('CREATE DATABASE "%s"' % db)
        populate(pg, db)
        grow(pg, db, events=args.events, alerts=args.events // 5)
        scale = max(1, round(args.events / 80000))
        material = keys(base)
        repo = os.path.join(base, "ours")
        ours = dict(pg.conn_params(), repo=repo, db=db, components=["database"], mode="rsa",
                    recipients=[material["recipient"]], signing_key=material["signing_key"],
                    cache_dir=os.path.join(base, "cache"))
        ours_v1 = dict(ours, repo=os.path.join(base, "ours-v1"), format="v1")
        peers = [("restic, same pg_dump -Fc -Z0 file", Restic(base, "restic", False)),
                 ("restic, pg_dump -Fc (compressed) file", Restic(base, "restic-z", True))]
        sizes = {"ours": [0], "ours v1": [0]}
        sizes.update({name: [0] for name, _r in peers})
        print("database: %d events; each night changes about 1 %% of the rows (%d rows)"
              % (args.events, 900 * scale))
        print("%-6s %-40s %12s %12s %9s %9s" % ("night", "tool", "dump MB", "growth MB", "vs night0", "time s"))
        for night in range(args.nights + 1):
            if night:
                nightly_change(pg, db, scale=scale, night=night)
            started = time.monotonic()
            result = run_module_direct("ransomeye_backup", ours, timeout=3600)
            took = time.monotonic() - started
            if result.get("_rc") != 0:
                raise SystemExit("ransomeye_backup failed: %s" % result.get("msg"))
            dump_mb = result["stats"]["database"]["bytes_read"] / 1e6
            rows = [("ours (ransomeye_backup v2)", "ours", repo, took)]
            started = time.monotonic()
            result = run_module_direct("ransomeye_backup", ours_v1, timeout=3600)
            if result.get("_rc") != 0:
                raise SystemExit("ransomeye_backup format v1 failed: %s" % result.get("msg"))
            rows.append(("ours v1 (one pg_dump -Fc object a night)", "ours v1", ours_v1["repo"],
                         time.monotonic() - started))
            for name, peer in peers:
                rows.append((name, name, peer.repo, peer.backup(pg, db)))
            for label, key, path, seconds in rows:
                size = tree_bytes(path)
                growth = size - sizes[key][-1]
                sizes[key].append(size)
                first = sizes[key][1]
                ratio = "%8.1f%%" % (100.0 * growth / first) if night else "%9s" % "-"
                print("%-6d %-40s %12.1f %12.2f %s %9.1f" % (night, label, dump_mb, growth / 1e6, ratio, seconds))
        print("total repository after %d nights: %s" % (args.nights, ", ".join(
            "%s %.1f MB" % (key if key.startswith("ours") else key.split(",")[0] + (" (-Fc)" if "compressed" in key
                                                                                    else ""),
                            sizes[key][-1] / 1e6) for key in sizes)))
        average = {key: (sizes[key][-1] - sizes[key][1]) / max(1, args.nights) for key in sizes}
        base_peer = peers[0][0]
        if average[base_peer] > 0:
            print("daily growth, ours vs restic on the same dump files: %.2f MB vs %.2f MB = %.2fx"
                  % (average["ours"] / 1e6, average[base_peer] / 1e6, average["ours"] / average[base_peer]))
        restores(pg, db, material, repo, ours_v1["repo"], peers[0][1])
        throughput(pg, db)
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
