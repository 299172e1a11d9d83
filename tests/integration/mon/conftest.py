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
