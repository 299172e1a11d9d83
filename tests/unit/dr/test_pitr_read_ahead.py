"""The WAL read-ahead of a point-in-time restore: only checked segments reach the spool, the spool stays bounded,
and the shell restore_command (run by the real sh, as PostgreSQL runs it) takes a spooled segment or falls back."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
                not [n for n in os.listdir(spool) if len(n) != 24 and n != prefetch.OWNER]:
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
    assert sorted(os.listdir(spool)) == [names[0], names[3], prefetch.OWNER]  # no .tmp or .wip left behind
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


# ---------------------------------------------------------------- get asks the read-ahead; it never decrypts

def _program_get(config_path, name, dest, timeout=30):
    """The real WAL program's get, in its own process, as PostgreSQL runs it (exit status, stderr)."""
    from tests.harness.paths import ensure_collection_link
    env = dict(os.environ, PYTHONPATH=ensure_collection_link())
    code = ("import sys; from ansible_collections.ransomeye.ops.plugins.module_utils._wal_program import main; "
            "sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", code, "get", "--config", config_path, name, dest], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.returncode, done.stderr


def _spool_site(tmp_path, count=3, history=True):
    repo, spool = str(tmp_path / "repo"), str(tmp_path / "spool")
    os.makedirs(spool)
    names = _names(count)
    data = {n: os.urandom(7000 + i) for i, n in enumerate(names)}
    if history:
        names.append("00000002.history")
        data[names[-1]] = b"1\t0/3000000\tbefore 2026-12-04 10:00:00+00\n"
    entries = {n: _archive(repo, n, data[n]) for n in names}
    config = str(tmp_path / "restore.json")
    with open(config, "w") as handle:
        json.dump({"format": "ransomeye-wal-program", "version": 1, "repo": repo, "timeout": 60, "spool": spool,
                   "files": {n: dict(entries[n], compression="none") for n in names}}, handle)
    return repo, spool, names, data, entries, config


def test_get_is_served_by_the_read_ahead_and_never_holds_a_key(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "AHEAD", 1)   # the read-ahead stays one segment ahead: the rest is asked for
    repo, spool, names, data, entries, config = _spool_site(tmp_path)
    assert "key" not in open(config).read()     # the program's config names no key and no key file
    reader = prefetch.Prefetcher(repo, [(n, entries[n]) for n in names], {"key": KEY}, spool, None, None)
    reader.start()
    try:
        # the history file is never read ahead: asked for, it is decrypted and checked on request
        dest = str(tmp_path / "RECOVERYHISTORY")
        code, err = _program_get(config, names[-1], dest)
        assert code == 0, err
        assert open(dest, "rb").read() == data[names[-1]]
        # the third segment, while the read-ahead holds the first: served out of order, and replay goes on from it
        dest = str(tmp_path / "RECOVERYXLOG")
        code, err = _program_get(config, names[2], dest)
        assert code == 0, err
        assert open(dest, "rb").read() == data[names[2]]
        # a name outside the plan: "not found" for PostgreSQL, without asking anybody
        code, err = _program_get(config, "0000000100000000000000F0", str(tmp_path / "X"))
        assert code == 1 and not os.path.exists(str(tmp_path / "X"))
        assert not [n for n in os.listdir(spool) if n.endswith(prefetch.REQUEST)]
    finally:
        stats = reader.stop()
    assert stats["wal_served_on_request"] == 2


def test_a_file_refused_by_the_read_ahead_fails_get_with_the_reason(tmp_path):
    repo, spool, names, _data, entries, config = _spool_site(tmp_path, history=False)
    stored = wf.WalLayout(repo).stored_path(names[1])
    blob = bytearray(open(stored, "rb").read())
    blob[-40] ^= 1   # replaced in the repository after the plan was verified
    open(stored, "wb").write(bytes(blob))
    reader = prefetch.Prefetcher(repo, [(n, entries[n]) for n in names], {"key": KEY}, spool, None, None)
    reader.start()
    try:
        dest = str(tmp_path / "RECOVERYXLOG")
        code, err = _program_get(config, names[1], dest)
        assert code == 1 and not os.path.exists(dest)
        assert names[1] in err and "refused by the restore" in err
        # the refusal is consumed: a later ask is answered again, not from a stale answer
        assert not os.path.exists(os.path.join(spool, names[1] + prefetch.REFUSED))
        code, err = _program_get(config, names[1], dest)
        assert code == 1 and "refused by the restore" in err
    finally:
        reader.stop()


def test_get_fails_at_once_when_the_restore_is_gone(tmp_path):
    _repo, spool, names, _data, _entries, config = _spool_site(tmp_path, history=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(spool, prefetch.OWNER), "w") as handle:
        handle.write("%d\n" % dead.pid)
    started = time.monotonic()
    code, err = _program_get(config, names[0], str(tmp_path / "RECOVERYXLOG"))
    assert code == 1 and "is gone" in err, err
    assert time.monotonic() - started < 10   # not the 60 s timeout
    os.unlink(os.path.join(spool, prefetch.OWNER))
    code, err = _program_get(config, names[0], str(tmp_path / "RECOVERYXLOG"))
    assert code == 1 and "owner.pid" in err, err
