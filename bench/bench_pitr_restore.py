"""Point-in-time recovery against pgBackRest, same cluster, same run: base backup, replay, RPO, restore memory.

    .venv/bin/python bench/bench_pitr_restore.py [--size-mb 256] [--wal-mb 128] [--archive-timeout 10]
                                                 [--rpo-seconds N] [--skip-rpo]

The issue's scale is --size-mb 1024 --wal-mb 2048 --archive-timeout 60 (the product default). One throwaway
cluster (PostgreSQL 15, the harness settings: fsync off) is loaded with --size-mb of event rows, then archives
every WAL segment to both tools (archive_command = ours && pgbackrest archive-push), so both hold the same WAL:

* base backup: ransomeye_backup components=[physical] (the module, start-up included; rsa mode, Ed25519
  signature) against ``pgbackrest backup --type=full`` (zst, aes-256-cbc, process-max 2, start-fast), each until
  its backup is complete, which includes waiting for the end segment in its own archive;
* replay: after --wal-mb more WAL and a named restore point, ransomeye_restore target_name=... into a new
  data_dir against ``pgbackrest restore --type=name --target-action=promote`` into another new directory and
  ``pg_ctl start``; both timed from the start of the command to the moment the recovered server accepts a
  connection out of recovery (polled every 0.1 s from here); hot_standby off in both;
* restore-program memory: peak RSS (GNU time) of ``ransomeye-wal get`` on the replayed segments with the exact
  config ransomeye_restore writes, against ``pgbackrest archive-get`` on the same segments;
* RPO under a steady write load (10 single-row transactions per second): with archive_command = ours only, then
  pgBackRest only, every 0.5 s the gap between now and the newest commit inside the last archived segment (the
  segment named by pg_stat_archiver, which counts it only after the command returned 0); max and mean.

pgBackRest 2.45 is the Debian package, a baseline of this bench only (installed here as root when missing).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from bench_dr import make_database  # noqa: E402  (same directory: the demo-like event rows)
from tests.harness.ansible_runner import run_module_direct  # noqa: E402
from tests.harness.pgcluster import PgCluster, free_port  # noqa: E402
from tests.harness.pgpython import pg_python  # noqa: E402

SEG = 16 * 1024 * 1024
TARGET = "bench_target"


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


def run_pg(argv, timeout=3600):
    proc = subprocess.run(as_postgres(argv), capture_output=True, text=True, cwd="/", timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit("failed: %s\n%s%s" % (" ".join(argv), proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc


def write_file(path, data, mode, owner=None):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    if owner and os.geteuid() == 0:
        shutil.chown(path, owner, owner)
    return path


def make_keys(base):
    pem = serialization.Encoding.PEM
    none = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    rec = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    sig = ed25519.Ed25519PrivateKey.generate()
    return {
        "recipient_pub": write_file(os.path.join(base, "rec.pub"), rec.public_key().public_bytes(pem, spki), 0o644),
        "recipient_key": write_file(os.path.join(base, "rec.key"), rec.private_bytes(pem, pkcs8, none), 0o600,
                                    "postgres"),
        "signing_key": write_file(os.path.join(base, "sig.key"), sig.private_bytes(pem, pkcs8, none), 0o600,
                                  "postgres"),
        "signing_pub": write_file(os.path.join(base, "sig.pub"), sig.public_key().public_bytes(pem, spki), 0o644),
    }


class PgBackRest:
    """A stanza in a temp directory: repo with zst + aes-256-cbc, process-max 2, fast start checkpoint."""

    def __init__(self, base, pg):
        self.dir = os.path.join(base, "pgbackrest")
        for sub in ("repo", "log", "spool"):
            os.makedirs(os.path.join(self.dir, sub))
        self.conf = os.path.join(self.dir, "pgbackrest.conf")
        with open(self.conf, "w") as handle:
            handle.write("[global]\nrepo1-path=%s/repo\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=%s\n"
                         "repo1-retention-full=99\ncompress-type=zst\nprocess-max=2\nstart-fast=y\n"
                         "log-path=%s/log\nlock-path=%s\nspool-path=%s/spool\nlog-level-console=warn\n"
                         "log-level-file=warn\n[bench]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\n"
                         % (self.dir, os.urandom(24).hex(), self.dir, self.dir, self.dir, pg.data, pg.port,
                            pg.sockdir))
        passfile = os.path.join(self.dir, "pgpass")
        write_file(passfile, ("*:*:*:*:%s\n" % pg.password).encode(), 0o600)
        os.environ["PGPASSFILE"] = passfile  # pgBackRest's libpq login to the bench's throwaway cluster
        subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        os.chmod(self.conf, 0o600)

    def argv(self, *args):
        return ["pgbackrest", "--config=" + self.conf, "--stanza=bench"] + list(args)

    def archive_command(self):
        return "pgbackrest --config=%s --stanza=bench archive-push %%p" % self.conf


def alter(pg, name, value):
    pg.execute("ALTER SYSTEM SET %s = %s" % (name, "'%s'" % value.replace("'", "''")))
    pg.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while pg.execute("SELECT current_setting(%s)", [name])[0][0] != value and time.monotonic() < deadline:
        time.sleep(0.05)


def switch_and_wait(pg, timeout=600):
    name = pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pg.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if last and last[:24] >= name:
            return name
        time.sleep(0.1)
    raise SystemExit("segment %s was not archived within %ds:\n%s" % (name, timeout, pg.log_text()[-3000:]))


def make_wal(pg, megabytes):
    """Write about ``megabytes`` of WAL (inserts in 32 MB transactions); return the bytes written."""
    pg.execute("CREATE TABLE IF NOT EXISTS walload (id bigint, note text)", dbname="bench")
    start = pg.execute("SELECT pg_current_wal_lsn()")[0][0]
    n = 0
    while True:
        done = int(pg.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", [start])[0][0])
        if done >= megabytes * 1024 * 1024:
            return done
        pg.execute("INSERT INTO walload SELECT g, md5(g::text) || repeat(md5((g * 3)::text), 3) "
                   "FROM generate_series(%s, %s) g", [n, n + 199_999], dbname="bench")
        n += 200_000


def wait_accepting(pg, port, deadline, alive):
    """Seconds (monotonic) when a server on ``port`` accepts a connection and is out of recovery."""
    import psycopg2
    while time.monotonic() < deadline:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=pg.password,
                                    dbname="postgres", connect_timeout=2, sslmode="disable")
        except psycopg2.OperationalError:
            if not alive():
                return None
            time.sleep(0.1)
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                if not cur.fetchone()[0]:
                    return time.monotonic()
        finally:
            conn.close()
        time.sleep(0.1)
    return None


def timed_rss(argv):
    """(seconds, peak RSS KiB) of one run as the postgres user."""
    start = time.monotonic()
    proc = subprocess.run(as_postgres(["/usr/bin/time", "-f", "MAXRSS=%M"] + argv), capture_output=True, text=True,
                          cwd="/", check=False)
    if proc.returncode != 0:
        raise SystemExit("failed: %s\n%s%s" % (" ".join(argv), proc.stdout, proc.stderr))
    peak = max([int(line[7:]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS=")] or [0])
    return time.monotonic() - start, peak


def line(**fields):
    print(json.dumps(fields), flush=True)


def bench_base(pg, pgb, keys, repo):
    args = dict(pg.conn_params(), repo=repo, components=["physical"], signing_key=keys["signing_key"],
                mode="rsa", recipients=[keys["recipient_pub"]])
    start = time.monotonic()
    result = run_module_direct("ransomeye_backup", args, timeout=3600)
    ours = time.monotonic() - start
    if result["_rc"] != 0:
        raise SystemExit("ransomeye_backup failed: %s" % result.get("msg"))
    start = time.monotonic()
    run_pg(pgb.argv("backup", "--type=full"))
    theirs = time.monotonic() - start
    info = json.loads(run_pg(pgb.argv("info", "--output=json")).stdout)[0]["backup"][-1]
    stats = (result.get("stats") or {}).get("physical") or {}
    line(figure="base backup", ours_s=round(ours, 2), pgbackrest_s=round(theirs, 2), ratio=round(ours / theirs, 2),
         target="<= 1.0x", ours_stored_MB=round((stats.get("bytes_stored") or 0) / 1e6, 1),
         pgbackrest_stored_MB=round(info["info"]["repository"]["delta"] / 1e6, 1),
         plaintext_MB=round((stats.get("bytes_read") or 0) / 1e6, 1), load=os.getloadavg()[0])


def restore_ours(pg, keys, repo, base):
    data_dir = os.path.join(base, "restored-ours")
    port = free_port()
    args = dict(pg.conn_params(), repo=repo, trusted_keys=[keys["signing_pub"]], data_dir=data_dir,
                python=pg_python(), private_key=keys["recipient_key"], target_name=TARGET, side_port=port,
                recovery_timeout=3600, db="bench")
    out = {}
    thread = threading.Thread(target=lambda: out.update(run_module_direct("ransomeye_restore", args, timeout=7200)))
    peak = [0]

    def sample():
        # The module process decrypts the base backup and reads WAL ahead: its peak RSS, sampled every 0.1 s.
        import psutil
        while thread.is_alive():
            for child in psutil.Process().children(recursive=True):
                try:
                    if any("ransomeye_restore" in part for part in child.cmdline()):
                        peak[0] = max(peak[0], child.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    start = time.monotonic()
    thread.start()
    sampler.start()
    accepted = wait_accepting(pg, port, start + 7200, thread.is_alive)
    thread.join()
    sampler.join()
    out["module_peak_rss_MiB"] = round(peak[0] / 1048576, 1)
    total = time.monotonic() - start
    if out.get("_rc") != 0 or accepted is None:
        raise SystemExit("ransomeye_restore failed: %s" % str(out.get("msg"))[-3000:])
    return accepted - start, total, out


def restore_pgbackrest(pg, pgb, base):
    data_dir = os.path.join(base, "restored-pgbackrest")
    sock = os.path.join(base, "sock-pgbackrest")
    for path in (data_dir, sock):
        os.makedirs(path, 0o700)
        shutil.chown(path, "postgres", "postgres")
    log = os.path.join(base, "restored-pgbackrest.log")
    write_file(log, b"", 0o600, "postgres")
    port = free_port()
    pg_ctl = os.path.join(pg.bindir, "pg_ctl")
    start = time.monotonic()
    run_pg(pgb.argv("--pg1-path=" + data_dir, "restore", "--type=name", "--target=" + TARGET,
                    "--target-action=promote"))
    options = "-p %d -c unix_socket_directories=%s -c archive_mode=off -c hot_standby=off" % (port, sock)
    run_pg([pg_ctl, "-D", data_dir, "-l", log, "-o", options, "start"])
    accepted = wait_accepting(pg, port, start + 7200, lambda: os.path.exists(os.path.join(data_dir, "postmaster.pid")))
    if accepted is None:
        raise SystemExit("pgBackRest's restored cluster did not come up:\n%s" % open(log).read()[-3000:])
    seconds = accepted - start
    rows = pg_count(pg, port)
    run_pg([pg_ctl, "-D", data_dir, "-m", "fast", "-w", "stop"])
    return seconds, rows


def pg_count(pg, port):
    import psycopg2
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=pg.password, dbname="bench",
                            sslmode="disable")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM walload")
            return cur.fetchone()[0]
    finally:
        conn.close()


def bench_get_memory(pg, pgb, keys, repo, base, prog, limit):
    """Peak RSS and time of ransomeye-wal get against pgbackrest archive-get, on the replayed segments."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_restore as pr
    from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_install as inst
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_decryption, load_trust
    params = dict(repo=repo, target_name=TARGET, private_key=keys["recipient_key"], backup="latest")
    work = os.path.join(base, "get-work")
    os.makedirs(work, 0o711)
    repo_obj = brepo.Repo.open(repo)
    decrypt = load_decryption(keys["recipient_key"], None, None)
    plan = pr.plan_restore(params, repo_obj, load_trust([keys["signing_pub"]]), decrypt)
    config = pr._restore_config(work, repo_obj, plan, decrypt, params, inst.os_user("postgres"))  # noqa: SLF001
    names = [n for n in plan.names if len(n) == 24][:limit]
    dest = os.path.join(base, "get-dest")
    os.makedirs(dest, 0o700)
    shutil.chown(dest, "postgres", "postgres")
    out = {}
    for tool in ("ours", "pgbackrest"):
        seconds, peak = 0.0, 0
        for name in names:
            target = os.path.join(dest, "RECOVERYXLOG")
            if tool == "ours":
                argv = [os.path.join(prog, "ransomeye-wal"), "get", "--config", config, name, target]
            else:
                argv = pgb.argv("archive-get", name, target)
            took, rss = timed_rss(argv)
            seconds += took
            peak = max(peak, rss)
            os.unlink(target)
        out[tool] = (seconds, peak)
    shutil.rmtree(work, ignore_errors=True)
    line(figure="restore program per segment", segments=len(names),
         ours_s_per_segment=round(out["ours"][0] / len(names), 3),
         pgbackrest_s_per_segment=round(out["pgbackrest"][0] / len(names), 3),
         ours_peak_rss_MiB=round(out["ours"][1] / 1024, 1), pgbackrest_peak_rss_MiB=round(out["pgbackrest"][1] / 1024, 1),
         target="ours <= 64 MiB, flat in segment count (one process per segment)")


def seg_end(name):
    return (int(name[8:16], 16) * (0x100000000 // SEG) + int(name[16:24], 16) + 1) * SEG


def bench_rpo(pg, tool, command, timeout, seconds):
    """Max and mean of (now - newest commit inside the last archived segment), sampled every 0.5 s."""
    alter(pg, "archive_command", command)
    alter(pg, "archive_timeout", "%ds" % timeout)
    pg.execute("CREATE TABLE IF NOT EXISTS rpo_load (tool text, ts timestamptz, lsn pg_lsn, pad text)", dbname="bench")
    switch_and_wait(pg)
    phase_start = pg.execute("SELECT extract(epoch FROM clock_timestamp())")[0][0]
    stop = threading.Event()
    commits = [0]

    def load():
        conn = pg.connect("bench")
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO rpo_load VALUES (%s, clock_timestamp(), pg_current_wal_insert_lsn(), "
                            "repeat('x', 200))", [tool])
                commits[0] += 1
                stop.wait(0.1)
        conn.close()

    loader = threading.Thread(target=load)
    loader.start()
    samples = []
    conn = pg.connect("bench")
    try:
        end = time.monotonic() + seconds
        with conn.cursor() as cur:
            while time.monotonic() < end:
                cur.execute("SELECT last_archived_wal FROM pg_stat_archiver")
                last = cur.fetchone()[0] or ""
                if len(last) == 24:
                    cur.execute("SELECT extract(epoch FROM clock_timestamp()), (SELECT extract(epoch FROM max(ts)) "
                                "FROM rpo_load WHERE tool = %s AND lsn < %s::pg_lsn)",
                                ["%s" % tool, "%X/%X" % divmod(seg_end(last), 1 << 32)])
                    now, newest = cur.fetchone()
                    samples.append(float(now) - max(float(phase_start), float(newest or 0)))
                time.sleep(0.5)
    finally:
        stop.set()
        loader.join()
        conn.close()
    return max(samples), sum(samples) / len(samples), commits[0] / seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=256, help="database size (the issue: 1024)")
    parser.add_argument("--wal-mb", type=int, default=128, help="WAL to replay after the base backup (issue: 2048)")
    parser.add_argument("--archive-timeout", type=int, default=10,
                        help="archive_timeout of the RPO run in seconds (the product default, 60, for the real figure)")
    parser.add_argument("--rpo-seconds", type=int, default=0, help="load duration per tool (default 3 x timeout)")
    parser.add_argument("--skip-rpo", action="store_true")
    parser.add_argument("--get-segments", type=int, default=16, help="segments fetched by each restore program")
    args = parser.parse_args()
    if not shutil.which("pgbackrest") and os.geteuid() == 0 and shutil.which("apt-get"):
        # The baseline is installed by the bench only, never by the product.
        subprocess.run(["apt-get", "install", "-y", "pgbackrest"], capture_output=True, check=False)
    if not shutil.which("pgbackrest") or os.geteuid() != 0:
        print("needs root and pgbackrest (apt-get install -y pgbackrest); bench skipped")
        return 0
    base = tempfile.mkdtemp(prefix="re-bench-pitrr-", dir="/tmp")
    os.chmod(base, 0o755)
    pg = PgCluster()
    pg.start()
    try:
        keys = make_keys(base)
        repo = os.path.join(base, "repo")
        prog = os.path.join(base, "prog")
        started = time.monotonic()
        size = make_database(pg, "bench", args.size_mb)
        line(setup="database", MB=round(size / 1e6, 1), seconds=round(time.monotonic() - started, 1),
             uptime=subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
        result = run_module_direct("ransomeye_wal_archive", dict(
            pg.conn_params(), repo=repo, recipients=[keys["recipient_pub"]], signing_key=keys["signing_key"],
            program_dir=prog, python=pg_python()))
        if result["_rc"] != 0:
            raise SystemExit("ransomeye_wal_archive failed: %s" % result.get("msg"))
        pg.restart()
        ours_command = pg.execute("SHOW archive_command")[0][0]
        pgb = PgBackRest(base, pg)
        run_pg(pgb.argv("stanza-create"))
        alter(pg, "archive_command", "%s && %s" % (ours_command, pgb.archive_command()))
        switch_and_wait(pg)

        bench_base(pg, pgb, keys, repo)

        started = time.monotonic()
        wal = make_wal(pg, args.wal_mb)
        pg.execute("SELECT pg_create_restore_point(%s)", [TARGET])
        rows = pg.execute("SELECT count(*) FROM walload", dbname="bench")[0][0]
        pg.execute("INSERT INTO walload VALUES (-1, 'after the target')", dbname="bench")
        switch_and_wait(pg)
        line(setup="WAL after the base backups", MB=round(wal / 1e6, 1), rows_at_target=rows,
             seconds_incl_archiving_by_both=round(time.monotonic() - started, 1))

        ours_accept, ours_total, out = restore_ours(pg, keys, repo, base)
        theirs, their_rows = restore_pgbackrest(pg, pgb, base)
        line(figure="PITR restore + replay to accepting connections", ours_s=round(ours_accept, 2),
             pgbackrest_s=round(theirs, 2), ratio=round(ours_accept / theirs, 2), target="<= 1.2x",
             ours_module_total_s=round(ours_total, 2), wal_files=out.get("wal_files"),
             ours_stats=out.get("stats"), ours_module_peak_rss_MiB=out["module_peak_rss_MiB"],
             load=os.getloadavg()[0])
        if their_rows != rows:
            raise SystemExit("pgBackRest's restore has %s rows at the target, expected %s" % (their_rows, rows))
        ours_rows = (out.get("tables") or {}).get("public.walload")
        if ours_rows != rows:
            raise SystemExit("our restore has %s rows at the target, expected %s" % (ours_rows, rows))

        bench_get_memory(pg, pgb, keys, repo, base, prog, args.get_segments)

        if not args.skip_rpo:
            seconds = args.rpo_seconds or 3 * args.archive_timeout
            for tool, command in (("ours", ours_command), ("pgbackrest", pgb.archive_command())):
                worst, mean, rate = bench_rpo(pg, tool, command, args.archive_timeout, seconds)
                line(figure="RPO under steady write load", tool=tool, archive_timeout_s=args.archive_timeout,
                     load_seconds=seconds, tx_per_s=round(rate, 1), max_rpo_s=round(worst, 2),
                     mean_rpo_s=round(mean, 2), target="max <= 60 s at archive_timeout 60",
                     load=os.getloadavg()[0])
        return 0
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
