"""Fixtures of the monitoring tests: one real rsyslog receiver for the session."""
from __future__ import annotations

import uuid

import pytest

from tests.harness.rsyslog import Rsyslog


@pytest.fixture(scope="session")
def rsyslog():
    receiver = Rsyslog()
    try:
        receiver.start()
        yield receiver
    finally:
        receiver.destroy()


@pytest.fixture
def marker():
    """A unique token per test, put in MSGID or the message so each test finds only its own records."""
    return "T" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def mon_demo():
    """A small demo host (PostgreSQL, supervisord services, mTLS certs) for the health_check.yml end-to-end test."""
    import shutil
    import tempfile

    from tests.harness.demo import host
    from tests.harness.demo.layout import Layout

    root = tempfile.mkdtemp(prefix="re-mondemo-", dir="/tmp")  # short: sockets live below it
    try:
        state = host.up(root, scale=2, seed=1, quiet=True)
        yield Layout(root), state
    finally:
        try:
            host.down(root, quiet=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
