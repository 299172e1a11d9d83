"""Fixtures for the key-management tests: login roles with .env files that use them."""
from __future__ import annotations

import os
import secrets
import typing as t

import psycopg2
import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import EnvFile, parse_db_url
from ansible_collections.ransomeye.ops.plugins.module_utils._scram import scram_sha256_verifier

APP_ENV = """# RansomEye web app settings
export APP_NAME=ransomeye-web
DB_HOST=127.0.0.1   # loopback
DB_USER={user}
DB_PASSWORD='{password}'
DATABASE_URL="postgresql://{user}:{password}@127.0.0.1:{port}/{db}?sslmode=disable"

# trailing comment
WORKERS=4
"""
WORKER_ENV = """DATABASE_URL=postgresql://{user}:{password}@127.0.0.1:{port}/{db}
CELERY_BROKER=memory://
"""


class CredsSetup(t.NamedTuple):
    pg: t.Any
    role: str
    alt_role: str
    db: str
    env_files: t.List[str]
    state_file: str

    def module_args(self, **extra: t.Any) -> dict:
        args = dict(self.pg.conn_params(), role=self.role, env_files=self.env_files, state_file=self.state_file)
        args.update(extra)
        return args

    def file_credentials(self) -> t.Tuple[str, str]:
        """(user, password) that the .env files hold; asserts that they all agree."""
        seen = set()
        for path in self.env_files:
            env = EnvFile.read(path)
            url = parse_db_url(env.get("DATABASE_URL"))
            seen.add((url.user, url.password))
            if env.get("DB_PASSWORD") is not None:
                seen.add((env.get("DB_USER"), env.get("DB_PASSWORD")))
        assert len(seen) == 1, "the env files disagree: %s" % len(seen)
        return seen.pop()

    def login_works(self, user: t.Optional[str] = None, password: t.Optional[str] = None) -> bool:
        if user is None:
            user, password = self.file_credentials()
        try:
            conn = self.pg.connect(self.db, user=user, password=password)
        except psycopg2.OperationalError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone()[0] == 1
        finally:
            conn.close()

    def snapshot(self) -> dict:
        files = {p: open(p, "rb").read() for p in self.env_files}
        verifiers = dict(self.pg.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (%s, %s)", [self.role, self.alt_role]))
        return dict(files=files, verifiers=verifiers, state=os.path.exists(self.state_file))


def make_creds_setup(pg: t.Any, base: str, db: str) -> CredsSetup:
    suffix = secrets.token_hex(4)
    role, alt = "app_%s" % suffix, "app_%s_b" % suffix
    password = secrets.token_urlsafe(16)
    for name in (role, alt):
        pg.execute('CREATE ROLE "%s" LOGIN PASSWORD %%s' % name, [scram_sha256_verifier(secrets.token_urlsafe(16))])
    pg.execute('ALTER ROLE "%s" PASSWORD %%s' % role, [scram_sha256_verifier(password)])
    etc = os.path.join(base, "etc")
    os.makedirs(etc)
    app = os.path.join(etc, "app.env")
    worker = os.path.join(etc, "worker.env")
    with open(app, "w") as handle:
        handle.write(APP_ENV.format(user=role, password=password, port=pg.port, db=db))
    with open(worker, "w") as handle:
        handle.write(WORKER_ENV.format(user=role, password=password, port=pg.port, db=db))
    os.chmod(app, 0o640)
    os.chmod(worker, 0o600)
    return CredsSetup(pg, role, alt, db, [app, worker], os.path.join(etc, "rotation-state.json"))


@pytest.fixture
def creds(pg, pg_db, tmp_path):
    setup = make_creds_setup(pg, str(tmp_path), pg_db)
    yield setup
    for name in (setup.role, setup.alt_role):
        pg.execute('DROP ROLE IF EXISTS "%s"' % name)


def failed(result: dict) -> bool:
    """A failed module result, whether run directly or through ansible-playbook with ignore_errors."""
    return bool(result.get("failed")) or ("msg" in result and "exception" in result)
