"""The on-disk spool: order, bounds, durability and deliver() semantics, on real files.

``send`` callables here are plain functions standing in for a transport; the
real transports against rsyslog are covered in tests/integration/mon.
"""
from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._spool import Spool, SpoolFull, deliver
from ansible_collections.ransomeye.ops.plugins.module_utils._syslog import ReceiverError


class Recorder:
    """A receiver that accepts ``accept`` messages, then fails."""

    def __init__(self, accept=10 ** 6):
        self.accept = accept
        self.got = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, message):
        if len(self.got) >= self.accept:
            raise ReceiverError("receiver went away")
        self.got.append(message)

    def confirm(self):
        self.confirmed = True


def test_entries_keep_order_and_sequence_never_reused(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    with spool.locked():
        first = spool.append("a")
        spool.append("b")
        spool.remove([first])
        spool.remove(spool.entries()[:1])
        third = spool.append("c")
    assert third.seq == 3  # numbers only grow, even after the spool emptied
    assert [e.message for e in spool.entries()] == ["c"]
    assert stat.S_IMODE(os.stat(third.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / "sp")).st_mode) == 0o700


def test_full_spool_refuses_loudly(tmp_path):
    spool = Spool(str(tmp_path / "sp"), max_messages=2)
    with spool.locked():
        spool.append("1")
        spool.append("2")
        with pytest.raises(SpoolFull, match="was not queued"):
            spool.append("3")
    assert spool.count() == 2
    small = Spool(str(tmp_path / "small"), max_bytes=100)
    with small.locked(), pytest.raises(SpoolFull, match="limit 100 bytes"):
        small.append("x" * 200)


def test_deliver_without_receiver_queues_and_reports(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    result = deliver(["m1", "m2"], None, spool)
    assert (result.sent, result.queued_now, result.queued_total) == ([], ["m1", "m2"], 2)


def test_deliver_sends_backlog_first_then_new_in_order(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    deliver(["old1", "old2"], None, spool)
    receiver = Recorder()
    result = deliver(["new"], lambda: receiver, spool)
    assert receiver.got == ["old1", "old2", "new"]
    assert (result.sent_from_spool, result.queued_total, result.error) == (2, 0, None)
    again = Recorder()
    assert deliver([], lambda: again, spool).sent == [] and again.got == []  # exactly once


def test_session_breaking_midway_keeps_everything_queued_in_order(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    deliver(["a", "b", "c"], None, spool)
    receiver = Recorder(accept=1)
    result = deliver(["d"], lambda: receiver, spool)
    assert receiver.got == ["a"]
    assert (result.sent, result.error, result.queued_now) == ([], "receiver went away", ["d"])
    # Nothing of an unconfirmed session leaves the spool: at least once, never lost.
    assert [e.message for e in spool.entries()] == ["a", "b", "c", "d"]
    final = Recorder()
    assert deliver([], lambda: final, spool).sent == ["a", "b", "c", "d"]
    assert final.got == ["a", "b", "c", "d"] and final.confirmed
    assert spool.count() == 0


def test_unsendable_without_spool_is_an_error_not_a_drop():
    receiver = Recorder(accept=0)
    with pytest.raises(RansomeyeError, match="no spool_dir"):
        deliver(["x"], lambda: receiver, None)


def test_corrupt_entry_is_reported_not_skipped(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    deliver(["a"], None, spool)
    (entry,) = spool.entries()
    with open(entry.path, "w") as handle:
        handle.write("{not json")
    with pytest.raises(RansomeyeError, match="unreadable"):
        spool.entries()


def test_lock_is_exclusive(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    other = Spool(str(tmp_path / "sp"))
    with spool.locked():
        with pytest.raises(RansomeyeError, match="locked by another run"):
            with other.locked(timeout=0.2):
                pass
