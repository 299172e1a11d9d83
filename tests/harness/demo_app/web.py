"""The demo RansomEye web app (WSGI, run by gunicorn).

It reads its database credentials once, at start-up, from the ``.env`` file named by
``RANSOMEYE_ENV_FILE``, so a credential rotation is visible only after a restart, as on a
real host. ``GET /health`` answers 200 with row counts from a real query, or 503.
"""
from __future__ import annotations

import json
import os
import time
import typing as t

import psycopg2

from tests.harness.demo_app.envfile import db_params, read_env

ENV_FILE = os.environ.get("RANSOMEYE_ENV_FILE", "/etc/ransomeye/app.env")
ENV = read_env(ENV_FILE)
DB = db_params(ENV)
STARTED = time.time()
TABLES = ("hosts", "events", "alerts", "detections", "artifacts")
COUNT_SQL = "SELECT " + ", ".join("(SELECT count(*) FROM %s)" % name for name in TABLES) + \
    ", current_user, current_database(), current_setting('server_version')"


def health() -> t.Tuple[int, dict]:
    try:
        conn = psycopg2.connect(connect_timeout=3, application_name="ransomeye-web", **DB)
    except psycopg2.Error as exc:
        return 503, {"status": "unavailable", "error": str(exc).strip().splitlines()[0] if str(exc).strip() else "connect failed"}
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 5000")
            cur.execute(COUNT_SQL)
            row = cur.fetchone()
    except psycopg2.Error as exc:
        return 503, {"status": "unavailable", "error": str(exc).strip().splitlines()[0]}
    finally:
        conn.close()
    counts = dict(zip(TABLES, row[:len(TABLES)]))
    return 200, {"status": "ok", "counts": counts, "db_user": row[-3], "database": row[-2],
                 "server_version": row[-1], "pid": os.getpid(), "started": STARTED}


def app(environ: dict, start_response: t.Callable) -> t.List[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        status, body = health()
    elif path == "/":
        status, body = 200, {"app": "ransomeye-demo", "health": "/health"}
    else:
        status, body = 404, {"error": "not found"}
    data = json.dumps(body, sort_keys=True).encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response("%d %s" % (status, reason), [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(data)))])
    return [data]
