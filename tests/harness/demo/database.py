"""Schema and seeded data of the demo database ``ransomeye`` (generate_series + setseed, COPY)."""
from __future__ import annotations

import io
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._scram import scram_sha256_verifier

from tests.harness.demo.content import ArtifactRecord
from tests.harness.pgcluster import PgCluster

DB_NAME = "ransomeye"
APP_ROLES = ("ransomeye_app", "ransomeye_app_b")
TABLES = ("hosts", "events", "alerts", "detections", "artifacts")

SCHEMA = """
CREATE SEQUENCE ingest_batch_seq START 1;
CREATE SEQUENCE alert_number_seq START 100000;

CREATE TABLE hosts (
    id            bigserial PRIMARY KEY,
    hostname      text NOT NULL UNIQUE,
    ip            inet NOT NULL,
    os            text NOT NULL,
    agent_version text NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL
);

CREATE TABLE events (
    id        bigserial PRIMARY KEY,
    host_id   bigint NOT NULL REFERENCES hosts(id),
    ts        timestamptz NOT NULL,
    kind      text NOT NULL,
    process   text NOT NULL,
    pid       integer NOT NULL,
    path      text,
    payload   jsonb NOT NULL,
    batch     bigint NOT NULL DEFAULT nextval('ingest_batch_seq')
);
CREATE INDEX events_host_ts_idx ON events (host_id, ts);
CREATE INDEX events_kind_idx ON events (kind);

CREATE TABLE alerts (
    id         bigserial PRIMARY KEY,
    number     bigint NOT NULL UNIQUE DEFAULT nextval('alert_number_seq'),
    host_id    bigint NOT NULL REFERENCES hosts(id),
    event_id   bigint REFERENCES events(id),
    severity   smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
    status     text NOT NULL CHECK (status IN ('open', 'triaged', 'contained', 'closed')),
    title      text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX alerts_host_idx ON alerts (host_id);
CREATE INDEX alerts_open_idx ON alerts (created_at) WHERE status <> 'closed';

CREATE TABLE detections (
    id         bigserial PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    rule       text NOT NULL,
    score      real NOT NULL,
    evidence   text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX detections_alert_idx ON detections (alert_id);

CREATE TABLE artifacts (
    id           bigserial PRIMARY KEY,
    host_id      bigint NOT NULL REFERENCES hosts(id),
    detection_id bigint REFERENCES detections(id),
    relpath      text NOT NULL UNIQUE,
    kind         text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       char(64) NOT NULL,
    collected_at timestamptz NOT NULL
);
CREATE INDEX artifacts_sha_idx ON artifacts (sha256);
"""

DATA = """
SELECT setseed(%(seed)s);
INSERT INTO hosts (hostname, ip, os, agent_version, tags, first_seen, last_seen)
SELECT h.name,
       ('10.' || (g / 250) %% 250 || '.' || g %% 250 || '.' || (1 + floor(random() * 250))::int)::inet,
       (ARRAY['Windows 10', 'Windows 11', 'Windows Server 2019', 'Windows Server 2022', 'Ubuntu 22.04'])[1 + floor(random() * 5)::int],
       '4.' || floor(random() * 10)::int || '.' || floor(random() * 30)::int,
       ARRAY[(ARRAY['finance', 'hr', 'dev', 'ops', 'sales'])[1 + floor(random() * 5)::int]],
       timestamptz '2025-06-01 00:00+00' + random() * interval '180 days',
       timestamptz '2026-01-01 00:00+00' + random() * interval '30 days'
FROM unnest(%(hostnames)s::text[]) WITH ORDINALITY AS h(name, g);

INSERT INTO events (host_id, ts, kind, process, pid, path, payload)
SELECT 1 + floor(random() * %(nhosts)s)::int,
       timestamptz '2026-01-01 00:00+00' + g * interval '7 seconds',
       (ARRAY['process_start', 'file_write', 'file_rename', 'registry_set', 'net_connect', 'shadow_delete'])[1 + floor(random() * 6)::int],
       (ARRAY['svchost.exe', 'powershell.exe', 'explorer.exe', 'vssadmin.exe', 'rundll32.exe', 'winword.exe'])[1 + floor(random() * 6)::int],
       100 + floor(random() * 60000)::int,
       'C:\\Users\\u' || floor(random() * 500)::int || '\\Documents\\file' || g || (ARRAY['.docx', '.xlsx', '.pdf', '.locked'])[1 + floor(random() * 4)::int],
       jsonb_build_object(
           'cmdline', 'cmd.exe /c ' || md5(g::text || 'c'),
           'sha256', md5(g::text || 'a') || md5(g::text || 'b'),
           'entropy', round((random() * 8)::numeric, 3),
           'bytes_written', floor(random() * 1000000)::int,
           'parents', jsonb_build_array(floor(random() * 60000)::int, floor(random() * 60000)::int),
           'user', 'CORP\\u' || floor(random() * 500)::int,
           'signed', random() < 0.7)
FROM generate_series(1, %(nevents)s) AS g;

INSERT INTO alerts (host_id, event_id, severity, status, title, created_at)
SELECT e.host_id, e.id, 1 + floor(random() * 5)::int,
       (ARRAY['open', 'triaged', 'contained', 'closed'])[1 + floor(random() * 4)::int],
       (ARRAY['Mass file rename', 'Shadow copies deleted', 'Ransom note dropped', 'High-entropy writes',
              'Suspicious PowerShell'])[1 + floor(random() * 5)::int] || ' on host ' || e.host_id,
       e.ts + interval '3 seconds'
FROM events e WHERE e.id %% 20 = 0 ORDER BY e.id;

INSERT INTO detections (alert_id, rule, score, evidence, created_at)
SELECT a.id,
       (ARRAY['RE-0001 vss-delete', 'RE-0042 entropy-burst', 'RE-0107 note-drop', 'RE-0200 lateral-smb'])[1 + floor(random() * 4)::int],
       round((random())::numeric, 4),
       (SELECT string_agg(md5(a.id::text || ':' || i::text), ' ') FROM generate_series(1, 8 + (a.id %% 50)::int) AS i),
       a.created_at + interval '1 second'
FROM alerts a ORDER BY a.id;
"""


def create(cluster: PgCluster, seed: int, scale_mb: int, hostnames: t.List[str], app_passwords: t.Dict[str, str]) -> None:
    """Roles, database, schema and data; about ``scale_mb`` MB of table data."""
    conn = cluster.connect("postgres")
    try:
        with conn.cursor() as cur:
            for role in APP_ROLES:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                # Client-side SCRAM verifier: the plaintext never reaches the server (or its log).
                cur.execute('%s ROLE "%s" LOGIN PASSWORD %%s' % (verb, role),
                            (scram_sha256_verifier(app_passwords[role]),))
            cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB_NAME)
            cur.execute("CREATE DATABASE %s" % DB_NAME)
    finally:
        conn.close()
    nevents = max(500, int(scale_mb * 1400))
    conn = cluster.connect(DB_NAME, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
            cur.execute(DATA, dict(seed=(seed % 1000) / 1000.0, hostnames=hostnames, nhosts=len(hostnames),
                                   nevents=nevents))
            for role in APP_ROLES:
                cur.execute('GRANT CONNECT ON DATABASE %s TO "%s"' % (DB_NAME, role))
                cur.execute('GRANT USAGE ON SCHEMA public TO "%s"' % role)
                cur.execute('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "%s"' % role)
                cur.execute('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "%s"' % role)
        conn.commit()
    finally:
        conn.close()


def load_artifacts(cluster: PgCluster, records: t.List[ArtifactRecord]) -> None:
    """The artifact index: one row per artifact file, through COPY."""
    conn = cluster.connect(DB_NAME, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM detections")
            ndet = cur.fetchone()[0]
            buf = io.StringIO()
            for i, rec in enumerate(records):
                detection = str(1 + (i * 7) % ndet) if ndet and i % 3 == 0 else "\\N"
                buf.write("%d\t%s\t%s\t%s\t%d\t%s\t%s\n" % (
                    rec.host_index + 1, detection, rec.relpath, rec.kind, rec.size, rec.sha256,
                    "2026-03-31 00:00:00+00"))
            buf.seek(0)
            cur.copy_expert("COPY artifacts (host_id, detection_id, relpath, kind, size, sha256, collected_at) "
                            "FROM STDIN", buf)
            cur.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def row_counts(cluster: PgCluster) -> t.Dict[str, int]:
    conn = cluster.connect(DB_NAME)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in TABLES:
                cur.execute("SELECT count(*) FROM %s" % table)
                out[table] = cur.fetchone()[0]
            return out
    finally:
        conn.close()


def database_size(cluster: PgCluster) -> int:
    """Bytes of the database on disk (pg_database_size)."""
    return int(cluster.execute("SELECT pg_database_size(%s)", (DB_NAME,))[0][0])


def content_digest(cluster: PgCluster) -> t.Dict[str, str]:
    """md5 per table over every row in id order, for the determinism test (last_seen excluded: the worker updates it)."""
    conn = cluster.connect(DB_NAME)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in TABLES:
                cols = "t" if table != "hosts" else "(t.id, t.hostname, t.ip, t.os, t.agent_version, t.tags, t.first_seen)"
                cur.execute("SELECT md5(string_agg(%s::text, '|' ORDER BY t.id)) FROM %s t" % (cols, table))
                out[table] = cur.fetchone()[0]
            return out
    finally:
        conn.close()
