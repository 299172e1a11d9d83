"""The demo RansomEye worker: a loop that reads ``worker.env`` once and touches the database.

Every ``WORKER_INTERVAL`` seconds it updates ``hosts.last_seen`` of one host, appends a
line to ``WORKER_LOG`` and keeps its own live upload session in ``BUFFER_DIR``
(``live-worker/chunk-0000`` plus ``live-worker.session`` with its pid), as the buffer rule
of docs/DEMO_HOST.md describes.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import psycopg2

from tests.harness.demo_app.envfile import db_params, read_env

RUNNING = True


def _stop(_signum, _frame):
    global RUNNING  # pylint: disable=global-statement
    RUNNING = False


def _write_session(buffer_dir: str) -> None:
    session = os.path.join(buffer_dir, "live-worker")
    os.makedirs(session, exist_ok=True)
    with open(os.path.join(session, "chunk-0000"), "ab") as handle:
        handle.write(b"x" * 64)
    tmp = os.path.join(buffer_dir, ".live-worker.session.tmp")
    with open(tmp, "w") as handle:
        json.dump({"pid": os.getpid(), "state": "uploading"}, handle)
    os.replace(tmp, os.path.join(buffer_dir, "live-worker.session"))


def main() -> int:
    env = read_env(os.environ.get("RANSOMEYE_ENV_FILE", "/etc/ransomeye/worker.env"))
    params = db_params(env)
    interval = float(env.get("WORKER_INTERVAL", "5"))
    log_path = env.get("WORKER_LOG")
    buffer_dir = env.get("BUFFER_DIR")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tick = 0
    while RUNNING:
        tick += 1
        status = "ok"
        try:
            conn = psycopg2.connect(connect_timeout=3, application_name="ransomeye-worker", **params)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("UPDATE hosts SET last_seen = now() WHERE id = "
                                "(SELECT id FROM hosts ORDER BY id OFFSET %s LIMIT 1)", (tick % 7,))
            finally:
                conn.close()
        except psycopg2.Error as exc:
            status = "db error: %s" % (str(exc).strip().splitlines() or ["?"])[0]
        if buffer_dir and os.path.isdir(buffer_dir):
            try:
                _write_session(buffer_dir)
            except OSError as exc:
                status += "; buffer: %s" % exc
        if log_path:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write("%s worker[%d] tick=%d %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), tick, status))
        deadline = time.time() + interval
        while RUNNING and time.time() < deadline:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
