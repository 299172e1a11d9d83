# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one scheduled ransomeye.ops job (installed by the ransomeye.ops.schedule role; cron and systemd call it).

  ransomeye_ops_run.py --job NAME --log FILE --lock FILE [--max-bytes N] [--keep K] -- COMMAND...

- Runs never overlap: an exclusive, non-blocking lock on --lock. A run that finds it held writes one line
  saying it skipped, and exits 0 (the earlier run is still working).
- Every line of the command's output goes to --log with a UTC timestamp, between a start and an end line
  (exit code and duration).
- Before a run, a log larger than --max-bytes is rotated: FILE.1 ... FILE.K, the oldest dropped.
Exits with the command's exit code.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rotate(log: str, max_bytes: int, keep: int) -> None:
    try:
        size = os.path.getsize(log)
    except OSError:
        return
    if size <= max_bytes or keep < 1:
        return
    for index in range(keep - 1, 0, -1):
        older = "%s.%d" % (log, index)
        if os.path.exists(older):
            os.replace(older, "%s.%d" % (log, index + 1))
    os.replace(log, log + ".1")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--lock", required=True)
    parser.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    lock = os.open(args.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        with open(args.log, "a", encoding="utf-8") as log:
            log.write("%s [%s] skipped: an earlier run still holds %s\n" % (stamp(), args.job, args.lock))
        return 0
    rotate(args.log, args.max_bytes, args.keep)
    started = time.monotonic()
    with open(args.log, "a", encoding="utf-8", errors="replace") as log:
        log.write("%s [%s] start: %s\n" % (stamp(), args.job, " ".join(command)))
        log.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for raw in iter(proc.stdout.readline, b""):
            log.write("%s %s\n" % (stamp(), raw.decode("utf-8", "replace").rstrip("\n")))
            log.flush()
        rc = proc.wait()
        log.write("%s [%s] end: rc=%d after %.1f s\n" % (stamp(), args.job, rc, time.monotonic() - started))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
