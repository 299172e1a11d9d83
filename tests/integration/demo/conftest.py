"""Fixtures of the demo-host tests: small demo hosts under /tmp, always torn down."""
from __future__ import annotations

import shutil
import tempfile
import typing as t

import pytest

from tests.harness.demo import host
from tests.harness.demo.layout import Layout


class DemoHost(t.NamedTuple):
    root: str
    layout: Layout
    state: dict

    @property
    def inventory(self) -> str:
        return self.layout.inventory

    @property
    def health_url(self) -> str:
        return host.health_url(self.state)

    def cluster(self):
        return host.cluster_for(self.layout, self.state)


def make_demo(scale: int = 2, seed: int = 1) -> DemoHost:
    # Short path under /tmp: the PostgreSQL and supervisord sockets live below it.
    root = tempfile.mkdtemp(prefix="re-demo-", dir="/tmp")
    try:
        state = host.up(root, scale=scale, seed=seed, quiet=True)
    except BaseException:
        destroy_demo(root)
        raise
    return DemoHost(root, Layout(root), state)


def destroy_demo(root: str) -> None:
    try:
        host.down(root, quiet=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_host() -> t.Iterator[DemoHost]:
    """One small demo host (scale 2 MB) for a test file; services and cluster stopped afterwards."""
    demo = make_demo()
    try:
        yield demo
    finally:
        destroy_demo(demo.root)


@pytest.fixture
def demo_factory() -> t.Iterator[t.Callable[..., DemoHost]]:
    made: t.List[str] = []

    def factory(scale: int = 2, seed: int = 1) -> DemoHost:
        demo = make_demo(scale=scale, seed=seed)
        made.append(demo.root)
        return demo

    try:
        yield factory
    finally:
        for root in made:
            destroy_demo(root)
