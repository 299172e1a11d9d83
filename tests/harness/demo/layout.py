"""Paths of the demo host and its persisted state (``DIR/state.json``, mode 0600)."""
from __future__ import annotations

import json
import os
import secrets
import sys
import typing as t

from tests.harness.paths import REPO


class Layout:
    """Every path of the demo host, named as in docs/INVENTORY_VARIABLES.md."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        r = self.root
        self.state_file = os.path.join(r, "state.json")
        self.inventory_dir = os.path.join(r, "inventory")
        self.inventory = os.path.join(self.inventory_dir, "hosts.yml")
        self.pg_base = os.path.join(r, "pg")
        self.config_dir = os.path.join(r, "etc", "ransomeye")
        self.app_env = os.path.join(self.config_dir, "app.env")
        self.worker_env = os.path.join(self.config_dir, "worker.env")
        self.gunicorn_config = os.path.join(self.config_dir, "gunicorn.conf.py")
        self.celery_config = os.path.join(self.config_dir, "celery_config.py")
        self.tls_dir = os.path.join(self.config_dir, "tls")
        self.artifact_dir = os.path.join(r, "var", "lib", "ransomeye", "artifacts")
        self.log_dir = os.path.join(r, "var", "log", "ransomeye")
        self.tmp_dir = os.path.join(r, "var", "tmp", "ransomeye")
        self.buffer_dir = os.path.join(r, "var", "spool", "ransomeye", "buffer")
        self.signing_key_dir = os.path.join(r, "keys", "signing")
        self.backup_key_dir = os.path.join(r, "keys", "backup")
        self.backup_repo = os.path.join(r, "backup", "repo")
        self.report_dir = os.path.join(r, "reports")
        self.supervisor_dir = os.path.join(r, "supervisor")
        self.supervisor_conf = os.path.join(self.supervisor_dir, "supervisord.conf")
        self.supervisor_sock = os.path.join(self.supervisor_dir, "supervisor.sock")
        self.supervisor_pid = os.path.join(self.supervisor_dir, "supervisord.pid")
        self.repo = REPO
        self.bindir = os.path.dirname(os.path.abspath(sys.executable))
        self.python = os.path.join(self.bindir, "python")

    def data_dirs(self) -> t.List[str]:
        """Everything the generator writes (the cluster, state and inventory aside)."""
        return [os.path.join(self.root, "etc"), os.path.join(self.root, "var"), os.path.join(self.root, "keys"),
                os.path.join(self.root, "backup"), self.report_dir, self.supervisor_dir]


def load_state(layout: Layout) -> t.Dict[str, t.Any]:
    if not os.path.exists(layout.state_file):
        return {}
    with open(layout.state_file, encoding="utf-8") as handle:
        return json.load(handle)


def save_state(layout: Layout, state: t.Dict[str, t.Any]) -> None:
    os.makedirs(layout.root, exist_ok=True)
    tmp = layout.state_file + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, layout.state_file)


def new_password() -> str:
    # URL-safe, so DATABASE_URL needs no escaping; random per build (never seeded).
    return secrets.token_urlsafe(24)
