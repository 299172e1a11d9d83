"""Fixtures of the disaster-recovery tests: keys, a realistic small database, config and artifact trees."""
from __future__ import annotations

import hashlib
import os
import random
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.harness.pgcluster import table_texts

SCHEMA = """
CREATE SEQUENCE public.detection_seq START 1000;
CREATE TABLE public.hosts (
    id serial PRIMARY KEY,
    hostname text NOT NULL UNIQUE,
    os text,
    facts jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE TABLE public.events (
    id bigserial PRIMARY KEY,
    host_id int NOT NULL REFERENCES public.hosts(id),
    kind text NOT NULL,
    payload jsonb,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.alerts (
    id bigserial PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES public.events(id),
    severity int NOT NULL CHECK (severity BETWEEN 1 AND 10),
    summary text NOT NULL,
    detection_no bigint NOT NULL DEFAULT nextval('public.detection_seq')
);
CREATE SCHEMA forensics;
CREATE TABLE forensics.artifact_index (
    sha256 text PRIMARY KEY,
    alert_id bigint REFERENCES public.alerts(id),
    path text NOT NULL,
    size bigint NOT NULL
);
"""


def populate(pg, dbname: str, seed: int = 7, hosts: int = 40, events: int = 3000, alerts: int = 800) -> dict:
    """Create the schema and data; return the expected row counts."""
    rng = random.Random(seed)
    conn = pg.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
            for i in range(hosts):
                cur.execute("INSERT INTO public.hosts (hostname, os, facts) VALUES (%s, %s, %s)",
                            ("host-%03d" % i, rng.choice(["linux", "windows", "mac"]),
                             '{"cpu": %d, "tags": ["dc", "prod"], "note": "h\\u00e9llo %d"}' % (rng.randint(1, 64), i)))
            cur.execute("""
                INSERT INTO public.events (host_id, kind, payload)
                SELECT 1 + (g %% %d), (ARRAY['exec','write','net','rename'])[1 + g %% 4],
                       jsonb_build_object('n', g, 'path', '/tmp/f' || g, 'entropy', (g %% 97) / 10.0)
                FROM generate_series(1, %d) g""" % (hosts, events))
            cur.execute("""
                INSERT INTO public.alerts (event_id, severity, summary)
                SELECT 1 + (g * 7) %% %d, 1 + g %% 10, 'ransomware-like rename burst #' || g || repeat(' x', g %% 20)
                FROM generate_series(1, %d) g""" % (events, alerts))
            cur.execute("""
                INSERT INTO forensics.artifact_index (sha256, alert_id, path, size)
                SELECT md5(g::text) || md5((g+1)::text), 1 + g %% %d, '/artifacts/' || g, g * 13
                FROM generate_series(1, 200) g""" % alerts)
    finally:
        conn.close()
    return {"public.hosts": hosts, "public.events": events, "public.alerts": alerts,
            "forensics.artifact_index": 200}


def table_rows(pg, dbname: str) -> dict:
    """Every row of every table, sorted, as text (for exact comparison after a restore)."""
    conn = pg.connect(dbname)
    out = {}
    try:
        with conn.cursor() as cur:
            out.update(table_texts(cur))
            cur.execute("SELECT last_value FROM public.detection_seq")
            out["seq:public.detection_seq"] = cur.fetchall()
    finally:
        conn.close()
    return out


def make_config(root: str) -> str:
    cfg = os.path.join(root, "etc", "ransomeye")
    os.makedirs(os.path.join(cfg, "tls"))
    with open(os.path.join(cfg, "app.env"), "w") as handle:
        handle.write("DB_PASSWORD=s3cret\nDATABASE_URL=postgresql://app:s3cret@127.0.0.1/ransomeye\n")
    os.chmod(os.path.join(cfg, "app.env"), 0o600)
    with open(os.path.join(cfg, "gunicorn.conf.py"), "w") as handle:
        handle.write("workers = 3\nbind = '127.0.0.1:8000'\n")
    with open(os.path.join(cfg, "tls", "server.crt"), "w") as handle:
        handle.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    os.chmod(os.path.join(cfg, "tls"), 0o750)
    os.symlink("tls/server.crt", os.path.join(cfg, "current.crt"))
    return cfg


def make_artifacts(root: str, seed: int = 11, small: int = 300, big: int = 2) -> str:
    rng = random.Random(seed)
    art = os.path.join(root, "var", "lib", "ransomeye", "artifacts")
    for i in range(small):
        sub = os.path.join(art, "case-%02d" % (i % 12))
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, "sample-%04d.bin" % i)
        with open(path, "wb") as handle:
            handle.write(rng.randbytes(rng.randint(0, 6000)))
        if i % 50 == 0:
            os.chmod(path, 0o640)
    # identical content twice: stored once
    with open(os.path.join(art, "case-00", "dup-a.bin"), "wb") as handle:
        handle.write(b"same content\n" * 500)
    with open(os.path.join(art, "case-01", "dup-b.bin"), "wb") as handle:
        handle.write(b"same content\n" * 500)
    os.makedirs(os.path.join(art, "large"), exist_ok=True)
    for i in range(big):
        with open(os.path.join(art, "large", "memdump-%d.raw" % i), "wb") as handle:
            handle.write(rng.randbytes(1 << 20))
    os.symlink("../large/memdump-0.raw", os.path.join(art, "case-03", "link-to-dump"))
    os.makedirs(os.path.join(art, "empty-dir"))
    return art


def tree_state(root: str) -> dict:
    """path -> (type, mode, content hash or link target) for every entry below root (root included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] if dirpath == root else []:
            pass
        st = os.lstat(dirpath)
        out[os.path.relpath(dirpath, root)] = ("dir", stat.S_IMODE(st.st_mode), None)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(handle.read()).hexdigest())
    return out


def _write(path: str, data: bytes, mode: int = 0o600) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="session")
def dr_keys(tmp_path_factory):
    """Recipient RSA pair, an Ed25519 signing pair, an untrusted signing key and an AES key file."""
    base = tmp_path_factory.mktemp("drkeys")
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = ed25519.Ed25519PrivateKey.generate()
    rogue = ed25519.Ed25519PrivateKey.generate()
    pem = serialization.Encoding.PEM
    priv_fmt = serialization.PrivateFormat.PKCS8
    pub_fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    none = serialization.NoEncryption()
    keys = {
        "recipient_key": _write(str(base / "recipient.key"), recipient.private_bytes(pem, priv_fmt, none)),
        "recipient_pub": _write(str(base / "recipient.pub"), recipient.public_key().public_bytes(pem, pub_fmt), 0o644),
        "signing_key": _write(str(base / "signing.key"), signer.private_bytes(pem, priv_fmt, none)),
        "signing_pub": _write(str(base / "signing.pub"), signer.public_key().public_bytes(pem, pub_fmt), 0o644),
        "rogue_key": _write(str(base / "rogue.key"), rogue.private_bytes(pem, priv_fmt, none)),
        "rogue_pub": _write(str(base / "rogue.pub"), rogue.public_key().public_bytes(pem, pub_fmt), 0o644),
        "aes_key": _write(str(base / "backup.key"), os.urandom(32).hex().encode() + b"\n"),
    }
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys["other_recipient_key"] = _write(str(base / "other.key"), other.private_bytes(pem, priv_fmt, none))
    keys["other_aes_key"] = _write(str(base / "other-backup.key"), os.urandom(32).hex().encode() + b"\n")
    return keys


@pytest.fixture
def dr_site(tmp_path, pg, pg_db, dr_keys):
    """A small RansomEye-like site: database with data, config tree, artifact tree, and module args."""
    counts = populate(pg, pg_db)
    root = str(tmp_path / "site")
    config = make_config(root)
    artifacts = make_artifacts(root)
    repo = str(tmp_path / "repo")
    args = dict(pg.conn_params(), repo=repo, db=pg_db, config_paths=[config], artifact_paths=[artifacts],
                mode="rsa", recipients=[dr_keys["recipient_pub"]], signing_key=dr_keys["signing_key"],
                cache_dir=str(tmp_path / "host-cache"))
    verify_args = dict(repo=repo, trusted_keys=[dr_keys["signing_pub"]], private_key=dr_keys["recipient_key"])
    yield dict(pg=pg, db=pg_db, counts=counts, root=root, config=config, artifacts=artifacts, repo=repo,
               args=args, verify_args=verify_args, keys=dr_keys, tmp=str(tmp_path))
    drop_side_databases(pg, pg_db)


def drop_side_databases(pg, name):
    """Restores leave <db>_pre_restore_<seq> (or a hashed short form) behind by design; drop them."""
    rows = pg.execute("SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s",
                      [name[:20].replace("_", "\\_") + "%", name])
    for (other,) in rows:
        if any(tag in other for tag in ("_pre_restore_", "_restoring_", "_rolled_back_")):
            pg.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % other)


def module_namespace(**params):
    """A stand-in for AnsibleModule (params + check_mode) to call a module's helper in-process."""
    class _Module:
        check_mode = params.pop("_check_mode", False)

        def warn(self, msg):
            self.warnings.append(msg)
    module = _Module()
    module.params = params
    module.warnings = []
    return module
