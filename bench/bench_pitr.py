"""WAL archive throughput and peak memory: ransomeye-wal push/get versus pgbackrest archive-push/-get, same run.

    .venv/bin/python bench/bench_pitr.py [--segments 32] [--rounds 2] [--archiver-segments 16]

Both tools archive 16 MiB segments (synthetic, with a valid long page header for the cluster they archive for;
half random, half text-like), each run as the postgres OS user, one process per segment as PostgreSQL runs them,
synchronously (pgBackRest: archive-async off). Ours runs twice: as installed (the call hands the segment to the
resident archiver, which the first call started, and waits for its answer; the archiver's CPU time is added to
the call's, and its peak resident size is shown beside the calls') and with resident_idle 0 (every call runs the
whole push itself). The runs are interleaved segment by segment (a different order each segment), so all see the
same load on a shared machine; the figure is the ratio of the throughputs.

Like with like: both compress and encrypt. Ours: zstd level 1 per 1 MiB frame (zlib level 1 when the server's
interpreter has no zstandard; the entries say which; a frame that three 4 KiB probes
show incompressible is stored as is), AES-256-GCM under an RSA-3072 recipient, SHA-256 of plaintext and
ciphertext, an Ed25519 signature on every chain entry (sign_every 1), fsync of file, directory and chain log.
pgBackRest 2.45: compress-type=zst (its default level 3), repo1-cipher-type=aes-256-cbc, its default fsyncs.
The stored size of each repository is printed too.

Then a simulated PostgreSQL archiver (``archiver_bench``): a backlog of ``--archiver-segments`` .ready segments
per round, called oldest first and renamed .done after exit 0, for ours with look-ahead (as installed), ours
without, pgBackRest sync and pgBackRest async, side by side in the same run.

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


def variant_config(directory, config, **changes):
    """Write ``config`` with ``changes`` as ``directory``/archive.json, formatted as the installer writes it (the
    launcher reads some keys line by line); its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "archive.json")
    with open(path, "w") as handle:
        json.dump(dict(config, **changes), handle, indent=1, sort_keys=True)
    os.chmod(path, 0o644)
    return path


def daemon_usage(prog):
    """(pid, CPU seconds, peak RSS KiB) of the resident archiver of ``prog``; (0, 0.0, 0) when none runs."""
    try:
        with open(os.path.join(prog, "run", "archiver.lock")) as handle:
            pid = int(handle.read().strip())
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/status" % pid) as handle:
            hwm = [int(line.split()[1]) for line in handle if line.startswith("VmHWM:")][0]
    except (OSError, ValueError, IndexError):
        return 0, 0.0, 0
    return pid, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), hwm


def du(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def archiver_bench(base, prog, conf, sysid, count, rounds, pg_data):
    """PostgreSQL's archiver, simulated honestly: ``count`` segments waiting in a pg_wal directory with their
    ``archive_status/*.ready`` files (a backlog), the command called for the oldest .ready file, one call at a
    time, and the file renamed to .done only after exit 0. Same segments, same loop for every tool; the variants
    run interleaved (a different order each round) so that they share the machine's load.

    Variants: ours as installed (resident archiver, look_ahead 8: one push archives later .ready segments too and
    the server's calls for them are answered from the spool; the archiver's CPU time is counted), ours with every
    call a whole push (look_ahead 8, and look_ahead 0: one segment per call), pgBackRest sync, and
    pgBackRest async (archive-async=y, spool-path; its forked async process archives ahead, process-max 1, and
    its CPU is not in the per-call figure, which is the foreground's only). pgBackRest async wants the WAL inside
    its pg1-path, so the simulated data directory holds a copy of the bench cluster's global/pg_control and is
    the async configuration's pg1-path."""
    datadir = os.path.join(base, "pgdata-sim")
    ahead_conf = os.path.join(prog, "archive.json")
    with open(ahead_conf) as handle:
        config = json.load(handle)
    assert config.get("look_ahead", 0) > 0 and config.get("resident_idle", 0) > 0, config
    # The per-process variants: configs in directories of their own (no resident archiver; a spool for look-ahead)
    solo_conf = os.path.join(prog, "solo", "archive.json")  # written by main
    os.makedirs(os.path.join(prog, "solo", "spool"), exist_ok=True)
    subprocess.run(["chown", "postgres:postgres", os.path.join(prog, "solo", "spool")], check=True)
    plain_conf = variant_config(os.path.join(prog, "solo-plain"), config, look_ahead=0, resident_idle=0)
    pgb = os.path.dirname(conf)
    async_conf = os.path.join(pgb, "pgbackrest-async.conf")
    spool = os.path.join(pgb, "spool")
    os.makedirs(spool, exist_ok=True)
    with open(conf) as src, open(async_conf, "w") as dst:
        text = src.read().replace("[global]\n", "[global]\narchive-async=y\nspool-path=%s\n" % spool, 1)
        dst.write(text.replace("pg1-path=%s\n" % pg_data, "pg1-path=%s\n" % datadir))
    subprocess.run(["chown", "-R", "postgres:postgres", pgb], check=True)
    os.chmod(async_conf, 0o600)
    launcher = os.path.join(prog, "ransomeye-wal")
    variants = {
        "ours (as installed)": lambda p, n: [launcher, "push", "--config", ahead_conf, p, n],
        "ours (per process, look_ahead 8)": lambda p, n: [launcher, "push", "--config", solo_conf, p, n],
        "ours (per process, look_ahead 0)": lambda p, n: [launcher, "push", "--config", plain_conf, p, n],
        "pgbackrest sync": lambda p, n: ["pgbackrest", "--config=" + conf, "--stanza=bench", "archive-push", p],
        "pgbackrest async": lambda p, n: ["pgbackrest", "--config=" + async_conf, "--stanza=bench", "archive-push", p],
    }
    order = list(variants)
    totals = {v: [0.0, 0.0, 0] for v in order}
    for r in range(rounds):
        for index, variant in enumerate(order[r % len(order):] + order[:r % len(order)]):
            wal = os.path.join(datadir, "pg_wal")
            status = os.path.join(wal, "archive_status")
            os.makedirs(status)
            os.makedirs(os.path.join(datadir, "global"))
            shutil.copy(os.path.join(pg_data, "global", "pg_control"), os.path.join(datadir, "global"))
            log = 0x100 + r * len(order) + order.index(variant)  # names never repeat in either repository
            for i in range(count):
                name = "00000001%08X%08X" % (log, i)
                segment(os.path.join(wal, name), name, sysid, 1000 * log + i)
                open(os.path.join(status, name + ".ready"), "w").close()
            subprocess.run(["chown", "-R", "postgres:postgres", datadir], check=True)
            start = time.monotonic()
            cpu = 0.0
            peak = 0
            calls = 0
            while True:
                ready = sorted(f for f in os.listdir(status) if f.endswith(".ready"))
                if not ready:
                    break
                name = ready[0][:-6]
                before = daemon_usage(prog)
                _wall, used, rss = run_one(variants[variant](os.path.join(wal, name), name))
                if variant == "ours (as installed)":
                    after = daemon_usage(prog)
                    used += after[1] - (before[1] if before[0] == after[0] else 0.0)
                    rss = max(rss, after[2])  # the archiver's peak, not only the call's
                os.rename(os.path.join(status, name + ".ready"), os.path.join(status, name + ".done"))
                cpu += used
                peak = max(peak, rss)
                calls += 1
            wall = time.monotonic() - start
            assert calls == count
            totals[variant][0] += wall
            totals[variant][1] += cpu
            totals[variant][2] = max(totals[variant][2], peak)
            print(json.dumps({"archiver round": r + 1, "tool": variant, "seconds": round(wall, 2),
                              "MB_per_s": round(count * 16.0 / wall, 1), "load": os.getloadavg()[0]}))
            shutil.rmtree(datadir)
    mb = count * rounds * 16.0
    sync = totals["pgbackrest sync"][0]
    print(json.dumps({
        "summary": "simulated archiver, backlog of %d .ready segments, %d rounds" % (count, rounds),
        "MB_per_s": {v: round(mb / totals[v][0], 1) for v in order},
        "ratio_vs_pgbackrest_sync": {v: round(sync / totals[v][0], 2) for v in order},
        "ratio_ours_as_installed_vs_pgbackrest_async": round(
            totals["pgbackrest async"][0] / totals["ours (as installed)"][0], 2),
        "cpu_ms_per_segment_of_the_calls": {v: round(1000 * totals[v][1] / (count * rounds), 1) for v in order},
        "peak_rss_MiB (ours as installed: the archiver's)": {v: round(totals[v][2] / 1024, 1) for v in order},
        "load": os.getloadavg()}))


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
    # One of our variants (log numbers 1, 4, 7, ...: see main) against pgBackRest's copies (log numbers 3, 6, ...)
    mine = [n for n in pushed if (int(n[8:16], 16) - 1) % 3 == 0]
    theirs = [n[:8] + "%08X" % (int(n[8:16], 16) + 2) + n[16:] for n in mine]
    walls = {"ours": 0.0, "pgbackrest": 0.0}
    peaks = []
    for i, (ours, other) in enumerate(zip(mine, theirs)):
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
    mb = len(mine) * 16.0
    quarter = max(1, len(peaks) // 4)
    print(json.dumps({"summary": "archive-get, %d segments each" % len(mine),
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
    parser.add_argument("--archiver-segments", type=int, default=16,
                        help="backlog per round of the simulated archiver (0: leave it out)")
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
        head = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
        print("commit %s; uptime: %s" % (head, uptime))
        print("segments: %d x 16 MiB per round and tool, %d rounds, load %s"
              % (args.segments, args.rounds, os.getloadavg()))
        print("ours: zstd-1 frames (zlib-1 without zstandard; incompressible frames stored as is), AES-256-GCM, "
              "RSA-3072 recipient, Ed25519 "
              "signature per segment; pgbackrest: compress-type=zst (level 3), aes-256-cbc; both sync, fsync")
        with open(os.path.join(prog, "archive.json")) as handle:
            config = json.load(handle)
        assert config.get("resident_idle", 0) > 0, config
        # the same program with no resident archiver (a config directory of its own)
        solo = os.path.dirname(variant_config(os.path.join(prog, "solo"), config, resident_idle=0))
        tools = ("ours", "ours (per process)", "pgbackrest")
        total = {tool: [0.0, 0.0] for tool in tools}
        peaks = {tool: [] for tool in tools}
        resident_peaks = []
        pushed = []
        seq = 0
        for r in range(args.rounds):
            rnd = {tool: [0.0, 0.0, 0] for tool in tools}
            for i in range(args.segments):
                order = tools[seq % 3:] + tools[:seq % 3]
                for tool in order:
                    # distinct names per tool: pgBackRest and ours never see each other's files
                    name = "00000001%08X%08X" % (r * 3 + 1 + tools.index(tool), i)
                    path = os.path.join(segs, name)
                    segment(path, name, sysid, seq)
                    before = daemon_usage(prog)
                    if tool == "pgbackrest":
                        argv = ["pgbackrest", "--config=" + conf, "--stanza=bench", "archive-push", path]
                    else:
                        config_dir = prog if tool == "ours" else solo
                        argv = [os.path.join(prog, "ransomeye-wal"), "push", "--config",
                                os.path.join(config_dir, "archive.json"), path, name]
                        pushed.append(name)
                    wall, cpu, rss = run_one(argv)
                    if tool == "ours":
                        after = daemon_usage(prog)
                        # the archiver's share of this segment (all of it when this call started it)
                        cpu += after[1] - (before[1] if before[0] == after[0] else 0.0)
                        resident_peaks.append(after[2])
                    rnd[tool][0] += wall
                    rnd[tool][1] += cpu
                    rnd[tool][2] = max(rnd[tool][2], rss)
                    peaks[tool].append(rss)
                    os.unlink(path)
                seq += 1
            mb = args.segments * 16.0
            for tool in tools:
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
            "MB_per_s": {tool: round(mb / total[tool][0], 1) for tool in tools},
            "throughput_ratio_vs_pgbackrest": {
                tool: round(total["pgbackrest"][0] / total[tool][0], 2) for tool in tools[:2]},
            "cpu_ms_per_segment": {k: round(1000 * v[1] / (args.segments * args.rounds), 1) for k, v in total.items()},
            "stored_MiB": {"ours (both)": round(du(os.path.join(base, "repo", "wal", "segments")) / 2**20, 1),
                           "pgbackrest": round(du(os.path.join(pgb, "repo", "archive")) / 2**20, 1)},
            "peak_rss_MiB_first_vs_last_quarter": {
                "ours (calls)": [round(max(peaks["ours"][:quarter]) / 1024, 1),
                                 round(max(peaks["ours"][-quarter:]) / 1024, 1)],
                "ours (resident archiver)": [round(max(resident_peaks[:quarter]) / 1024, 1),
                                             round(max(resident_peaks[-quarter:]) / 1024, 1)],
                "ours (per process)": [round(max(peaks["ours (per process)"][:quarter]) / 1024, 1),
                                       round(max(peaks["ours (per process)"][-quarter:]) / 1024, 1)]},
            "load": os.getloadavg()}))
        # Start-up alone: the program with no arguments imports everything a push needs, prints its usage, exits 2.
        # 20 runs under one GNU time (its resolution is 10 ms); the loop's shell costs both sides the same.
        loop = "for i in $(seq 20); do %s >/dev/null 2>&1; done; true"
        ours = run_one(["bash", "-c", loop % shlex.quote(os.path.join(prog, "ransomeye-wal"))])[1]
        theirs = run_one(["bash", "-c", loop % "pgbackrest version"])[1]
        print(json.dumps({"summary": "start-up only (no arguments / pgbackrest version), CPU ms per run",
                          "ours": round(1000 * ours / 20, 1), "pgbackrest": round(1000 * theirs / 20, 1)}))
        if args.archiver_segments:
            archiver_bench(base, prog, conf, sysid, args.archiver_segments, args.rounds * 2, pg.data)
        get_bench(base, pushed, rec_key, conf, segs)
        return 0
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
