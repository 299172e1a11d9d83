"""The DR drill's recovery time on a demo host against a naive restore measured in the same run.

    .venv/bin/python bench/bench_demo.py [--scale 128] [--seed 1]

Builds a demo host (tests/harness/demo) at --scale MB, then measures on the same host:
  baseline  the naive recovery: stop the services, drop the database, delete config and artifacts, then
            ``createdb`` + ``pg_restore`` of a plain ``pg_dump -Fc`` file and ``tar -x`` of an uncompressed
            tar of the config and artifacts (both made beforehand, unencrypted, unverified), start the
            services and wait for the health URL;
  drill     playbooks/dr_drill.yml: its report's RTO (restore start to healthy app: verify-first restore of
            the encrypted, signed backup with per-file hash checks) and the restore task alone.
The drill additionally verifies the backup, authenticates every chunk, and proves the result; the baseline
proves nothing. Prints both and their ratio. The machine is shared and noisy (+-20%).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.harness.demo import host, services  # noqa: E402
from tests.harness.demo.layout import Layout  # noqa: E402


def _pg_env(tmp: str, state: dict) -> dict:
    passfile = os.path.join(tmp, "pgpass")
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("127.0.0.1:%d:*:postgres:%s\n" % (state["pg_port"], state["admin_password"]))
    env = dict(os.environ, PGPASSFILE=passfile, PGHOST="127.0.0.1", PGPORT=str(state["pg_port"]), PGUSER="postgres")
    return env


def naive_recovery(layout: Layout, state: dict, tmp: str) -> float:
    env = _pg_env(tmp, state)
    bindir = host.cluster_for(layout, state).bindir
    dump = os.path.join(tmp, "ransomeye.dump")
    tarball = os.path.join(tmp, "files.tar")
    subprocess.run([os.path.join(bindir, "pg_dump"), "-Fc", "-f", dump, "ransomeye"], env=env, check=True)
    subprocess.run(["tar", "-cf", tarball, "-C", "/", os.path.relpath(layout.config_dir, "/"),
                    os.path.relpath(layout.artifact_dir, "/")], check=True)
    services.supervisorctl(layout, "stop", *services.PROGRAMS)
    subprocess.run([os.path.join(bindir, "dropdb"), "--force", "ransomeye"], env=env, check=True)
    shutil.rmtree(layout.config_dir)
    shutil.rmtree(layout.artifact_dir)
    start = time.perf_counter()
    subprocess.run([os.path.join(bindir, "createdb"), "ransomeye"], env=env, check=True)
    subprocess.run([os.path.join(bindir, "pg_restore"), "-d", "ransomeye", dump], env=env, check=True)
    subprocess.run(["tar", "-xpf", tarball, "-C", "/"], check=True)
    services.supervisorctl(layout, "start", *services.PROGRAMS)
    status, _body = services.wait_health(host.health_url(state), 200, timeout=120)
    elapsed = time.perf_counter() - start
    if status != 200:
        raise RuntimeError("the app did not come back after the naive recovery")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=int(os.environ.get("RANSOMEYE_BENCH_DEMO_SCALE", "128")))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="re-bench-demo-", dir="/tmp")
    tmp = tempfile.mkdtemp(prefix="re-bench-naive-", dir="/tmp")
    try:
        start = time.perf_counter()
        state = host.up(root, scale=args.scale, seed=args.seed, quiet=True)
        build = time.perf_counter() - start
        layout = Layout(root)
        baseline = naive_recovery(layout, state, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        rc = host.play(root, [os.path.join(REPO, "playbooks", "dr_drill.yml")])
        if rc != 0:
            print("dr_drill.yml failed (rc %d)" % rc)
            return 1
        report = json.load(open(sorted(glob.glob(os.path.join(layout.report_dir, "dr-drill-*.json")))[-1]))
        print("machine: %s, %d CPUs; demo --scale %d built in %.1f s" % (
            platform.platform(), os.cpu_count() or 0, args.scale, build))
        print("baseline naive recovery (createdb + pg_restore + tar -x + service start + health): %.2f s" % baseline)
        print("drill RTO (verify-first restore + service start + health):                      %.2f s  ratio %.2fx" % (
            report["rto_seconds"], report["rto_seconds"] / baseline))
        print("drill restore task alone:                                                        %.2f s  ratio %.2fx" % (
            report["restore_wall_seconds"], report["restore_wall_seconds"] / baseline))
        print("drill RPO (backup end -> disaster): %.2f s; proof: %s" % (
            report["rpo_seconds"], "passed" if report["proof"]["ok"] else "FAILED"))
        return 0
    finally:
        host.down(root, quiet=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
