"""Benchmark: delivering a spooled backlog to a real rsyslog over TCP and TLS.

Figure: alerts/s for ``deliver()`` draining N spooled alerts (read spool, send in
one session, wait for the receiver's confirmation, remove entries, fsync).
Baseline, same run, same receiver: raw ``sendall`` of the same pre-framed
bytes on one plain socket (no spool, no confirmation) - the ceiling.
Also: time to queue N alerts (atomic 0600 file per alert, fsynced).

    PYTHONPATH=.build/collections:. .venv/bin/python bench/bench_mon.py [N]
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.harness.paths import ensure_collection_link  # noqa: E402

sys.path.insert(0, ensure_collection_link())

from ansible_collections.ransomeye.ops.plugins.module_utils._spool import Spool, deliver  # noqa: E402
from ansible_collections.ransomeye.ops.plugins.module_utils._syslog import (  # noqa: E402
    Alert, Sender, Target, frame, render,
)
from tests.harness.rsyslog import Rsyslog  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    receiver = Rsyslog().start()
    work = tempfile.mkdtemp(prefix="bench-mon-")
    try:
        messages = [render(Alert(message="bench alert %d ü" % i, msgid="BENCH", metadata={"i": i, "q": 'a"b]'}),
                           "rfc5424") for i in range(count)]
        size = sum(len(m.encode("utf-8")) for m in messages)
        print("alerts: %d, %.1f KiB rendered" % (count, size / 1024.0))

        # Baseline: raw sendall of pre-framed bytes on one socket.
        payload = b"".join(frame(m, "tcp") for m in messages)
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", receiver.ports["tcp"])) as sock:
            sock.sendall(payload)
        raw = time.perf_counter() - start
        print("baseline raw socket sendall (no spool, no confirmation): %.0f alerts/s (%.3fs)" % (count / raw, raw))

        for protocol in ("tcp", "tls"):
            spool = Spool(os.path.join(work, protocol), max_messages=count + 1, max_bytes=1 << 30)
            start = time.perf_counter()
            deliver(messages, None, spool)
            queue_time = time.perf_counter() - start
            target = Target.build("127.0.0.1", receiver.ports[protocol], protocol, ca_cert=receiver.pki["ca"],
                                  tls_server_name="localhost")
            start = time.perf_counter()
            result = deliver([], lambda: Sender(target), spool)
            drain = time.perf_counter() - start
            assert len(result.sent) == count and result.queued_total == 0, result.error
            print("queue %d alerts (atomic fsynced files): %.0f alerts/s (%.3fs)" % (count, count / queue_time, queue_time))
            print("drain spool over %s to rsyslog (confirmed session): %.0f alerts/s (%.3fs)"
                  % (protocol, count / drain, drain))

        start = time.perf_counter()
        for i in range(20):
            deliver([messages[i]], lambda: Sender(Target.build("127.0.0.1", receiver.ports["tls"], "tls",
                                                               ca_cert=receiver.pki["ca"],
                                                               tls_server_name="localhost")), None)
        print("one alert per TLS session (connect, handshake, send, confirm): %.1f ms each"
              % ((time.perf_counter() - start) / 20 * 1000))
        receiver.wait_for(lambda r: r["msgid"] == "BENCH", count=3 * count + 20, timeout=120)
        print("rsyslog wrote all %d records" % (3 * count + 20))
    finally:
        receiver.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
