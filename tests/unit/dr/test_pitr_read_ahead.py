"""The WAL read-ahead of a point-in-time restore: only checked segments reach the spool, the spool stays bounded,
and the shell restore_command (run by the real sh, as PostgreSQL runs it) takes a spooled segment or falls back."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_prefetch as prefetch
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf

KEY = os.urandom(32)


def _names(count):
    return ["0000000100000000000000%02X" % (i + 1) for i in range(count)]


def _archive(repo, name, data):
    """Encrypt ``data`` where the WAL archive stores ``name``; return its chain-entry fields."""
    path = wf.WalLayout(repo).stored_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as dst:
        writer = container.encryptor(dst, key=KEY, object_id="wal/" + name, chunk_size=4096)
        writer.write(data)
        writer.close()
    return {"plaintext_sha256": hashlib.sha256(data).hexdigest(), "plaintext_size": len(data)}


def _drain(reader, spool, expected, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sorted(n for n in os.listdir(spool) if len(n) == 24) == expected and \
                not [n for n in os.listdir(spool) if len(n) != 24]:
            break
        time.sleep(0.02)
    return reader.stop()


def test_only_checked_segments_are_spooled(tmp_path):
    repo, spool = str(tmp_path / "repo"), str(tmp_path / "spool")
    os.makedirs(spool)
    names = _names(4)
    data = {n: os.urandom(10000 + i) for i, n in enumerate(names)}
    entries = {n: _archive(repo, n, data[n]) for n in names}
    entries[names[1]]["plaintext_sha256"] = "0" * 64  # the chain says otherwise: never spooled
    stored = wf.WalLayout(repo).stored_path(names[2])
    blob = bytearray(open(stored, "rb").read())
    blob[-40] ^= 1  # a flipped ciphertext byte: authentication fails
    open(stored, "wb").write(bytes(blob))
    history = "00000002.history"
    reader = prefetch.Prefetcher(repo, [(n, entries[n]) for n in names] + [(history, {})], {"key": KEY}, spool,
                                 None, None)
    reader.start()
    stats = _drain(reader, spool, [names[0], names[3]])
    assert sorted(os.listdir(spool)) == [names[0], names[3]]  # no .tmp or .wip left behind
    for name in (names[0], names[3]):
        assert open(os.path.join(spool, name), "rb").read() == data[name]
    assert stats["wal_read_ahead"] == 2
    assert names[2] in stats["wal_read_ahead_error"]


def test_spool_is_bounded_and_refills_as_segments_are_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "AHEAD", 2)
    repo, spool = str(tmp_path / "repo"), str(tmp_path / "spool")
    os.makedirs(spool)
    names = _names(5)
    items = [(n, _archive(repo, n, os.urandom(5000))) for n in names]
    reader = prefetch.Prefetcher(repo, items, {"key": KEY}, spool, None, None)
    reader.start()
    taken = []
    deadline = time.monotonic() + 20
    while len(taken) < 5 and time.monotonic() < deadline:
        waiting = sorted(n for n in os.listdir(spool) if len(n) == 24)
        assert len(waiting) <= 2
        if len(waiting) == 2 or (waiting and len(taken) + len(waiting) == 5):
            os.unlink(os.path.join(spool, waiting[0]))  # what restore_command's mv does
            taken.append(waiting[0])
        time.sleep(0.02)
    reader.stop()
    assert taken == names


def _run_restore_command(command, name, dest):
    # PostgreSQL substitutes %f and %p and runs the line with sh -c (system()).
    line = command.replace("%f", name).replace("%p", dest)
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("spool_name", ["spool", "spool with 'quote' and space"])
def test_restore_command_takes_spooled_segment_else_runs_the_program(tmp_path, spool_name):
    spool = tmp_path / spool_name
    spool.mkdir()
    marker = tmp_path / "fallback-ran"
    fallback = "sh -c 'echo program > \"$0\"; echo $1 >> %s' %%p %%f" % marker
    command = prefetch.restore_command(str(spool), fallback)
    dest = str(tmp_path / "RECOVERYXLOG")
    name = _names(1)[0]
    (spool / name).write_bytes(b"segment")
    done = _run_restore_command(command, name, dest)
    assert done.returncode == 0, done.stderr
    assert open(dest, "rb").read() == b"segment" and not (spool / name).exists() and not marker.exists()
    os.unlink(dest)
    # not spooled (taken already, outside the plan, or refused by the read-ahead): the WAL program runs
    done = _run_restore_command(command, name, dest)
    assert done.returncode == 0, done.stderr
    assert open(dest).read() == "program\n" and marker.read_text() == name + "\n"
    os.unlink(dest)
    # being written: it waits for the read-ahead instead of decrypting the segment twice
    later = _names(2)[1]
    (spool / (later + ".wip")).write_bytes(b"")

    def finish():
        time.sleep(0.4)
        (spool / later).write_bytes(b"later")
        os.unlink(str(spool / (later + ".wip")))

    writer = threading.Thread(target=finish)
    writer.start()
    done = _run_restore_command(command, later, dest)
    writer.join()
    assert done.returncode == 0, done.stderr
    assert open(dest, "rb").read() == b"later" and marker.read_text() == name + "\n"
