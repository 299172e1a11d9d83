"""Maintenance benchmarks; every figure is printed next to its baseline measured in the same run.

1. Archiving throughput: ransomeye_log_archive's helper (stream compress + SHA-256 + fsync + full
   decompress-and-compare + delete) against the ``gzip -6`` command line (and ``zstd -3`` when
   installed) on the same log files. Target: >= 0.9x the command line.
2. Disk-clean scan of 200k files with nothing to delete against ``find ROOT -mmin +N`` on the same
   tree. Target: <= 2x find's time.

Usage: python bench/bench_maint.py [--log-mb 64] [--files 200000] [--repeat 3]
Archiving: the CLI and the module alternate in each round and the median per-round ratio is printed, with
the best rate of each side (the machine is shared). gzip level 5 is the module's default (see its
compression_level); level 6 is printed too, with the archive sizes.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from tests.harness.paths import ensure_collection_link  # noqa: E402

sys.path.insert(0, ensure_collection_link())

from ansible_collections.ransomeye.ops.plugins.module_utils import _log_archive as la  # noqa: E402
from ansible_collections.ransomeye.ops.plugins.module_utils._disk_clean import run as clean_run  # noqa: E402

DAY = 86400


def make_logs(directory, total_mb, files=6):
    rnd = random.Random(5)
    words = ["alert raised", "event batch ingested", "detection scored", "artifact stored", "upload chunk received",
             "rule engine reloaded", "health ok", "login failed", "process tree captured", "hash matched"]
    per_file = total_mb * 1024 * 1024 // files
    paths = []
    for n in range(files):
        path = os.path.join(directory, "ransomeye.log.%d" % (n + 1))
        with open(path, "w") as handle:
            written = 0
            i = 0
            while written < per_file:
                line = "2026-11-%02dT%02d:%02d:%02d.%06d INFO ransomeye[%d]: %s host=ws-%04d sha=%016x seq=%d\n" % (
                    1 + i % 28, i % 24, i % 60, (i * 7) % 60, rnd.randrange(10 ** 6), 1000 + n, rnd.choice(words),
                    rnd.randint(1, 9999), rnd.getrandbits(64), i)
                handle.write(line)
                written += len(line)
                i += 1
        paths.append(path)
    return paths


def best(runs):
    return min(runs)


def _our_archive(work, originals, compression, level):
    """Seconds taken by ransomeye_log_archive's helper on copies of ``originals``; archive bytes."""
    logdir = os.path.join(work, "log")
    os.makedirs(os.path.join(logdir, "archive"))
    try:
        for path in originals:
            dest = os.path.join(logdir, os.path.basename(path))
            shutil.copyfile(path, dest)
            os.utime(dest, (time.time() - 30 * DAY, time.time() - 30 * DAY))
        params = dict(paths=[os.path.join(logdir, "*.log.*")], retention_days=7, archive_retention_days=90,
                      compression=compression, compression_level=level)
        started = time.perf_counter()
        result = la.run(params, False)  # the whole module: candidates, lock, archive+verify, delete, prune
        out = result["bytes_after"]
        assert len(result["archived"]) == len(originals)
        elapsed = time.perf_counter() - started
        assert not any(os.path.exists(item["path"]) for item in result["archived"])
        return elapsed, out
    finally:
        shutil.rmtree(logdir)


def _cli(work, originals, argv):
    out = os.path.join(work, "cli")
    os.makedirs(out)
    try:
        started = time.perf_counter()
        for path in originals:
            with open(os.path.join(out, os.path.basename(path) + ".x"), "wb") as dst:
                subprocess.run(argv + [path], stdout=dst, check=True)
        elapsed = time.perf_counter() - started
        return elapsed, sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    finally:
        shutil.rmtree(out)


def bench_archive(total_mb, repeat):
    """CLI and module alternate within each round (the machine is shared); ratios are per round, median shown."""
    work = tempfile.mkdtemp(prefix="bench-maint-")
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        originals = make_logs(src, total_mb)
        mb = sum(os.path.getsize(p) for p in originals) / 1024.0 / 1024.0
        cases = [("gzip", 5, ["gzip", "-6", "-c"]), ("gzip", 6, ["gzip", "-6", "-c"]),  # 5 is the module's default
                 ("zstd", 3, ["zstd", "-3", "-q", "-c"])]
        print("Archiving %.0f MiB of logs in %d files (%d rounds; CLI and module alternate in each round):"
              % (mb, len(originals), repeat))
        rows = []
        for compression, level, argv in cases:
            if not shutil.which(argv[0]):
                print("  %s: command not installed, skipped" % argv[0])
                continue
            ratios, cli_best, our_best = [], None, None
            for _round in range(repeat):
                cli_t, cli_bytes = _cli(work, originals, argv)
                our_t, our_bytes = _our_archive(work, originals, compression, level)
                ratios.append(cli_t / our_t)
                cli_best = min(cli_best or cli_t, cli_t)
                our_best = min(our_best or our_t, our_t)
            ratios.sort()
            median = ratios[len(ratios) // 2]
            print("  %-16s %6.1f MiB/s (%5.1f%% size)   module %s level %d: %6.1f MiB/s (%5.1f%% size, incl. "
                  "verify+fsync+delete)   ratio median %.2fx (rounds %s)"
                  % (" ".join(argv[:2]), mb / cli_best, 100.0 * cli_bytes / (mb * 1048576), compression, level,
                     mb / our_best, 100.0 * our_bytes / (mb * 1048576), median,
                     ", ".join("%.2f" % r for r in ratios)))
            rows.append((compression, level, median))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_tree(root, files):
    per_dir = 1000
    for d in range(max(1, files // per_dir)):
        sub = os.path.join(root, "d%03d" % (d // 10), "s%d" % (d % 10))
        os.makedirs(sub, exist_ok=True)
        for f in range(per_dir):
            fd = os.open(os.path.join(sub, "f%04d.tmp" % f), os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)


def bench_scan(files, repeat):
    work = tempfile.mkdtemp(prefix="bench-scan-")
    try:
        make_tree(work, files)
        subprocess.run(["find", work, "-mmin", "+60"], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        find_times, our_times = [], []
        for _round in range(repeat):
            started = time.perf_counter()
            out = subprocess.run(["find", work, "-mmin", "+60"], capture_output=True, check=True).stdout
            find_times.append(time.perf_counter() - started)
            assert out == b""
            started = time.perf_counter()
            result = clean_run(dict(roots=[work], temp_age="1h", orphan_age="1d", max_runtime="10m"), False)
            our_times.append(time.perf_counter() - started)
            assert result["removed_count"] == 0 and result["scanned"] >= files
        f, o = best(find_times), best(our_times)
        print("Disk-clean scan of %d files, nothing to delete (best of %d):" % (files, repeat))
        print("  find ROOT -mmin +60   %.3f s   ransomeye_disk_clean %.3f s   ratio %.2fx (target <= 2x)"
              % (f, o, o / f))
        return f, o
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-mb", type=int, default=64)
    parser.add_argument("--files", type=int, default=200000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench_archive(args.log_mb, args.repeat)
    bench_scan(args.files, args.repeat)


if __name__ == "__main__":
    main()
