"""Shared pytest fixtures: a throwaway PostgreSQL cluster and Ansible runners.

The collection is importable as ``ansible_collections.ransomeye.ops`` through
the symlink under .build/ (see tests/harness/paths.py), exactly as the
Makefile sets it up.
"""
from __future__ import annotations

import os
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.harness.paths import ensure_collection_link  # noqa: E402

_COLLECTIONS = ensure_collection_link()
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from tests.harness import ansible_runner  # noqa: E402
from tests.harness.pgcluster import running_cluster  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    """One cluster for the session (per xdist worker); stopped and removed even on failure."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_pg():
    """A cluster of the test's own, for tests that restart, stop or reconfigure the server."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_db(pg, request):
    """A fresh, empty database on the session cluster, dropped afterwards."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    pg.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    pg.execute('CREATE DATABASE "%s"' % name)
    yield name
    pg.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


@pytest.fixture
def run_module():
    return ansible_runner.run_module


@pytest.fixture
def run_module_direct():
    return ansible_runner.run_module_direct


@pytest.fixture
def run_playbook():
    return ansible_runner.run_playbook
