"""Waiting for the side instance of a point-in-time restore to promote: a postmaster that stops because the target
was not reached must read as "not promoted" (so the module says the live cluster was not touched), even when it
accepts a connection and drops it on the way down. The dropping server here is a real TCP listener that closes
every connection at once, as a postmaster does between its FATAL and the removal of its pid file; real psycopg2
connects to it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_restore as restore
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def _dropping_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def serve():
        while True:
            try:
                conn = listener.accept()[0]
            except OSError:
                return
            accepted.append(1)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return listener, accepted


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "postmaster.pid").write_text("%d\n" % os.getpid())   # a live pid: the postmaster still runs
    return str(path)


def test_a_postmaster_dropping_connections_on_its_way_down_is_not_promoted(data_dir):
    listener, accepted = _dropping_listener()
    port = listener.getsockname()[1]
    threading.Timer(1.5, os.unlink, [os.path.join(data_dir, "postmaster.pid")]).start()
    try:
        started = time.monotonic()
        assert restore._wait_promoted({"login_user": "postgres"}, port, data_dir, os.devnull, 30) is False
        assert time.monotonic() - started < 20
        assert accepted, "the wait never connected, so it proved nothing"
    finally:
        listener.close()


def test_a_running_server_that_refuses_for_another_reason_is_reported(data_dir):
    # Not every failure is the server coming or going: a port where nothing speaks PostgreSQL's protocol
    # and the postmaster still runs must fail with the connection error, not wait for the timeout.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def answer_garbage():
        conn = listener.accept()[0]
        conn.recv(64)
        conn.sendall(b"X" * 64)
        time.sleep(1)
        conn.close()
    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        with pytest.raises(RansomeyeError) as caught:
            restore._wait_promoted({"login_user": "postgres"}, listener.getsockname()[1], data_dir, os.devnull, 30)
        assert "could not connect to PostgreSQL" in caught.value.msg
    finally:
        listener.close()


def test_a_postmaster_killed_outright_ends_the_wait_although_its_pid_file_stays(data_dir):
    # SIGKILL leaves postmaster.pid behind and nothing listens: the wait must end at once, not after the timeout.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(data_dir, "postmaster.pid"), "w") as handle:
        handle.write("%d\n%s\n" % (dead.pid, data_dir))
    started = time.monotonic()
    assert restore._wait_promoted({"login_user": "postgres"}, restore._free_port(), data_dir, os.devnull, 60) is False
    assert time.monotonic() - started < 5
