"""Cost of ransomeye_pg_tune's idempotency check against a real cluster, measured in one run.

    .venv/bin/python bench/bench_tune.py [--repeat 200]

Figure: reading pg_settings plus the pending configuration (pg_file_settings) for the PGTune
settings and planning the ALTER SYSTEM changes (what every run does before deciding).
Baselines from the same run on the same connection: a bare ``SELECT 1`` round trip, and reading
the running values only (``SELECT name, setting FROM pg_settings WHERE name = ANY(...)``, what a
tool comparing with the running value does). Also the pure PGTune computation per call.
Each figure is the median of --repeat runs (the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from tests.harness.paths import ensure_collection_link  # noqa: E402

sys.path.insert(0, ensure_collection_link())

from ansible_collections.ransomeye.ops.plugins.module_utils import _pg_settings, _pgtune  # noqa: E402
from tests.harness.pgcluster import running_cluster  # noqa: E402


def median_ms(repeat, func):
    times = []
    for _round in range(repeat):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    inp = _pgtune.PgTuneInput(memory=16 * 1024 ** 3, cpus=8, pg_version=15)
    wanted = _pgtune.compute(inp)
    with running_cluster() as cluster:
        conn = cluster.connect()
        try:
            def select1():
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()

            def running_only():
                with conn.cursor() as cur:
                    cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(wanted)])
                    cur.fetchall()

            def pending_plan():
                settings = _pg_settings.read_settings(conn, wanted)
                _pg_settings.plan_alter_system(settings, wanted)

            base1 = median_ms(args.repeat, select1)
            base2 = median_ms(args.repeat, running_only)
            ours = median_ms(args.repeat, pending_plan)
        finally:
            conn.close()
    compute_us = median_ms(args.repeat, lambda: _pgtune.compute(inp)) * 1000
    print("pg_tune idempotency check (%d settings): %.3f ms per run (median of %d)" % (len(wanted), ours, args.repeat))
    print("baseline SELECT 1 round trip:              %.3f ms" % base1)
    print("baseline running values only (pg_settings): %.3f ms" % base2)
    print("PGTune computation: %.1f us per call" % compute_us)


if __name__ == "__main__":
    main()
