"""ransomeye_wal_archive and the archive command against a real cluster: install, idempotency, durability rules."""
from __future__ import annotations

import json
import os
import struct
import time

import pytest

from tests.harness.ansible_runner import run_module_direct

from tests.harness.pitrsite import Site

SEG = 16 * 1024 * 1024


def synthetic_segment(path: str, name: str, sysid: str, seed: bytes = b"") -> str:
    """A 16 MiB file with a valid long page header for ``name`` (the program checks it), random body."""
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, (log * 256 + seg) * SEG, 0, int(sysid), SEG, 8192)
    body = (seed or os.urandom(32)) * ((SEG - len(header)) // 32 + 1)
    with open(path, "wb") as handle:
        handle.write(header + body[:SEG - len(header)])
    os.chmod(path, 0o644)
    return path


def test_enable_check_mode_idempotent_and_archiving(pitr_site):
    site = pitr_site
    check = run_module_direct("ransomeye_wal_archive", site.wal_args, check=True, diff=True)
    assert check["_rc"] == 0 and check["changed"] is True, check
    assert not os.path.exists(os.path.join(site.program_dir, "ransomeye-wal"))
    assert site.pg.execute("SHOW archive_mode")[0][0] == "off"
    assert "archive_mode = on" in check["diff"]["after"]

    first = site.enable()
    assert first["changed"] is True and first["restart_required"] is True
    assert first["settings"]["archive_mode"] == {"before": "off", "after": "on"}
    command = site.pg.execute("SHOW archive_command")[0][0]
    assert command.startswith(os.path.join(site.program_dir, "ransomeye-wal") + " push --config ")
    with open(os.path.join(site.keys["dir"], "wal-signing.key"), "rb") as handle:
        assert handle.read()[40:80].decode(errors="replace") not in command  # no key material on argv

    second = run_module_direct("ransomeye_wal_archive", site.wal_args)
    assert second["_rc"] == 0 and second["changed"] is False, second
    assert second["installed"] == [] and second["settings"] == {}

    site.pg.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g")
    name = site.switch_and_wait()
    assert name in site.chain_names()
    stored = os.path.join(site.repo, "wal", "segments", name[:16], name)
    with open(stored, "rb") as handle:
        assert handle.read(8) == b"RYECNTR\n"  # encrypted, never plaintext WAL
    logs = os.path.join(site.repo, "wal", "log")
    with open(os.path.join(logs, sorted(os.listdir(logs))[-1]), "rb") as handle:
        entry = json.loads(handle.read().splitlines()[-1])
    assert entry["signatures"] and entry["entry"]["name"] == name
    assert entry["entry"]["compression"] == "zstd-frames" and entry["entry"]["plaintext_size"] == 16 * 1024 * 1024
    assert not os.path.exists(os.path.join(site.repo, "wal", "chain"))  # one log, not a file per segment


def test_unusable_program_never_reaches_the_server(pitr_site, tmp_path):
    site = pitr_site
    hidden = str(tmp_path / "signing.key")  # under pytest's 0700 tmp dir: postgres cannot read it
    with open(site.keys["signing_key"], "rb") as src, open(hidden, "wb") as dst:
        dst.write(src.read())
    result = run_module_direct("ransomeye_wal_archive", dict(site.wal_args, signing_key=hidden))
    assert result["_rc"] != 0 and "cannot work as OS user postgres" in result["msg"], result
    assert "archive_command was not changed" in result["msg"]
    assert site.pg.execute("SHOW archive_command")[0][0] in ("", "(disabled)")
    assert "BEGIN" not in result["msg"]


@pytest.fixture(scope="module")
def enabled(pitr_keys):
    """One archiving cluster shared by the tests below (each uses its own WAL file names).

    Every call runs the whole push (no resident archiver): these tests kill or stall that push at each step.
    test_wal_resident.py does the same to the resident archiver."""
    site = Site(pitr_keys)
    try:
        site.enable(resident_idle=0)
        conf = json.load(open(os.path.join(site.program_dir, "archive.json")))
        site.sysid = conf["system_identifier"]
        site.config = os.path.join(site.program_dir, "archive.json")
        yield site
    finally:
        site.destroy()


def test_duplicate_same_content_ok_different_content_refused(enabled):
    site = enabled
    src = synthetic_segment(os.path.join(site.base, "seg"), "0000000100000000000000F0", site.sysid, b"a" * 32)
    first = site.program(["push", "--config", site.config, src, "0000000100000000000000F0"])
    assert first.returncode == 0, first.stderr
    chain = list(site.chain_names())
    again = site.program(["push", "--config", site.config, src, "0000000100000000000000F0"])
    assert again.returncode == 0, again.stderr
    assert site.chain_names() == chain
    other = synthetic_segment(os.path.join(site.base, "seg2"), "0000000100000000000000F0", site.sysid, b"b" * 32)
    refused = site.program(["push", "--config", site.config, other, "0000000100000000000000F0"])
    assert refused.returncode == 1
    assert "already archived with different content" in refused.stderr
    assert refused.stderr.startswith("ransomeye-wal: ERROR:")
    assert site.chain_names() == chain
    foreign = synthetic_segment(os.path.join(site.base, "seg3"), "0000000100000000000000F1", "12345", b"c" * 32)
    mixed = site.program(["push", "--config", site.config, foreign, "0000000100000000000000F1"])
    assert mixed.returncode == 1 and "refusing to mix clusters" in mixed.stderr
    bad_name = site.program(["push", "--config", site.config, src, "../../etc/passwd"])
    assert bad_name.returncode == 1 and "not a WAL file name" in bad_name.stderr


POINTS = ["during_encrypt", "before_rename", "after_rename", "before_chain_sync", "after_chain"]


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_each_step_never_acknowledges_early(enabled, point):
    site = enabled
    name = "0000000100000000000000%02X" % (0xE0 + POINTS.index(point))
    src = synthetic_segment(os.path.join(site.base, "seg-" + point), name, site.sysid)
    killed = site.program(["push", "--config", site.config, src, name], env={"RANSOMEYE_WAL_TEST_HOOK": point + ":kill"})
    assert killed.returncode != 0  # PostgreSQL would retry: the segment was not acknowledged
    if point in ("before_chain_sync", "after_chain"):
        # written (durable only after_chain); the retry fsyncs it before it acknowledges
        assert name in site.chain_names()
    else:
        assert name not in site.chain_names()
    retry = site.program(["push", "--config", site.config, src, name])
    assert retry.returncode == 0, retry.stderr
    assert site.chain_names().count(name) == 1
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as chain
    report = chain.check_chain(site.repo, _trusted(site), level="full", decrypt=site.decrypt_kwargs())
    assert report.problems == [], report.problems
    assert name in report.good
    assert [f for f in os.listdir(os.path.join(site.repo, "wal", "tmp")) if f.endswith(".tmp")] == []


def _trusted(site):
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trusted
    return load_trusted(site.trusted)


def test_timeout_is_bounded_and_logged(enabled):
    site = enabled
    conf = json.load(open(site.config))
    conf["timeout"] = 2
    short = os.path.join(site.base, "short.json")
    with open(short, "w") as handle:
        json.dump(conf, handle)
    os.chmod(short, 0o644)
    name = "0000000100000000000000D0"
    src = synthetic_segment(os.path.join(site.base, "seg-t"), name, site.sysid)
    started = time.monotonic()
    hung = site.program(["push", "--config", short, src, name], env={"RANSOMEYE_WAL_TEST_HOOK": "during_encrypt:sleep"})
    assert time.monotonic() - started < 20
    assert hung.returncode == 1 and "gave up after the configured timeout" in hung.stderr
    assert name not in site.chain_names()


def _backlog(site):
    """(status, value) of the health check on WAL waiting for the archive (thresholds 1 and 3 segments)."""
    result = run_module_direct("ransomeye_health_info", dict(
        site.pg.conn_params(), checks=["postgres"], fail_on="never", pg_samples=1,
        thresholds={"pg_wal_archive_ready": [1, 3]}))
    check = [c for c in result["checks"] if c["name"] == "pg_wal_archive_ready"][0]
    return check["status"], check["value"]


def test_unreachable_repository_keeps_wal_and_catches_up(enabled):
    site = enabled
    segments = os.path.join(site.repo, "wal", "tmp")
    site.switch_and_wait()
    os.chmod(segments, 0o500)  # permission denied for the server's user: nothing can be written
    try:
        site.pg.execute("CREATE TABLE lost_if_dropped AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        expected = site.pg.execute("SELECT md5(string_agg(md5, ',' ORDER BY g)) FROM lost_if_dropped")[0][0]
        failed_name = site.pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            failed = site.pg.execute("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")[0]
            if failed[0] >= 2:
                break
            time.sleep(0.2)
        assert failed[0] >= 2 and failed[1] == failed_name
        assert os.path.exists(os.path.join(site.pg.data, "pg_wal", "archive_status", failed_name + ".ready"))
        assert "ransomeye-wal: ERROR: push %s failed" % failed_name in site.pg.log_text()
        assert failed_name not in site.chain_names()
        assert _backlog(site) == ("warning", 1.0)
        for i in range(2):
            site.pg.execute("CREATE TABLE filler_%d AS SELECT 1 AS x" % i)
            last_name = site.pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        assert _backlog(site) == ("critical", 3.0)
    finally:
        os.chmod(segments, 0o700)
    site.wait_archived(last_name, timeout=90)
    assert _backlog(site) == ("ok", 0.0)
    assert failed_name in site.chain_names()
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as chain
    report = chain.check_chain(site.repo, _trusted(site), level="ciphertext")
    assert report.problems == []
    assert site.pg.execute("SELECT md5(string_agg(md5, ',' ORDER BY g)) FROM lost_if_dropped")[0][0] == expected


# ----------------------------------------------------------------------------- look-ahead (BACKUP_FORMAT 4.3.2)


def _pg_wal(site, tag: str, count: int, log: int) -> tuple:
    """A pg_wal directory as PostgreSQL leaves it with a backlog: ``count`` segments, each with its .ready file."""
    wal = os.path.join(site.base, "sim-" + tag, "pg_wal")
    os.makedirs(os.path.join(wal, "archive_status"))
    names = ["00000001%08X%08X" % (log, i) for i in range(count)]
    for name in names:
        synthetic_segment(os.path.join(wal, name), name, site.sysid)
        open(os.path.join(wal, "archive_status", name + ".ready"), "w").close()
    os.system("chown -R postgres: %s" % os.path.dirname(wal))
    return wal, names


def _spool(site) -> list:
    return sorted(os.listdir(os.path.join(site.program_dir, "spool")))


def _archiver(site, wal: str, env: dict = None, calls: int = 100) -> list:
    """PostgreSQL's archiver: the oldest .ready file first, renamed to .done only after exit 0; [(name, rc)]."""
    status = os.path.join(wal, "archive_status")
    seen = []
    for _call in range(calls):
        ready = sorted(f[:-6] for f in os.listdir(status) if f.endswith(".ready"))
        if not ready:
            break
        name = ready[0]
        proc = site.program(["push", "--config", site.config, os.path.join(wal, name), name], env=env)
        seen.append((name, proc.returncode))
        if proc.returncode != 0:
            return seen
        # acknowledged: the entry must be in the chain (and durable, which the kill tests below check)
        assert name in site.chain_names(), (name, proc.stderr)
        os.rename(os.path.join(status, name + ".ready"), os.path.join(status, name + ".done"))
    return seen


def _markers_vouch_for_the_chain(site) -> None:
    """Every marker left in the spool names a segment whose entry is in the chain and whose stored file exists."""
    chain = site.chain_names()
    for marker in _spool(site):
        assert marker.endswith(".ok"), marker
        name = marker[:-3]
        assert name in chain, "marker for %s, which is not in the chain" % name
        assert os.path.exists(os.path.join(site.repo, "wal", "segments", name[:16], name))


def test_look_ahead_archives_the_backlog_and_answers_from_the_spool(enabled):
    site = enabled
    spool = os.path.join(site.program_dir, "spool")
    st = os.stat(spool)
    import pwd
    assert st.st_uid == pwd.getpwnam("postgres").pw_uid and st.st_mode & 0o777 == 0o700
    wal, names = _pg_wal(site, "backlog", 4, 0xA0)
    first = site.program(["push", "--config", site.config, os.path.join(wal, names[0]), names[0]])
    assert first.returncode == 0, first.stderr
    chain = site.chain_names()
    assert chain[-4:] == names  # the three .ready segments after it too, in PostgreSQL's order
    assert _spool(site) == [n + ".ok" for n in names[1:]]
    os.rename(os.path.join(wal, "archive_status", names[0] + ".ready"),
              os.path.join(wal, "archive_status", names[0] + ".done"))
    for index, name in enumerate(names[1:], 2):
        assert _archiver(site, wal, calls=1) == [(name, 0)]
        # its marker answered the call (only the launcher's check consumes one), the later ones wait
        assert _spool(site) == [n + ".ok" for n in names[index:]]
    assert site.chain_names() == chain  # nothing archived twice
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
    report = pchain.check_chain(site.repo, _trusted(site), level="full", decrypt=site.decrypt_kwargs())
    assert report.problems == [] and all(n in report.good for n in names)


AHEAD_POINTS = ["ahead_during_encrypt", "ahead_before_rename", "ahead_after_rename", "ahead_before_chain_sync",
                "ahead_after_chain", "ahead_after_marker"]


@pytest.mark.parametrize("point", AHEAD_POINTS)
def test_look_ahead_killed_at_each_step_never_acknowledges_early(enabled, point):
    site = enabled
    wal, names = _pg_wal(site, point, 3, 0xB0 + AHEAD_POINTS.index(point))
    killed = _archiver(site, wal, env={"RANSOMEYE_WAL_TEST_HOOK": point + ":kill"})
    # killed while archiving ahead of the first segment: that call is not acknowledged, whatever it finished
    assert len(killed) == 1 and killed[0][0] == names[0] and killed[0][1] in (-9, 137), killed  # SIGKILL
    _markers_vouch_for_the_chain(site)
    done = _archiver(site, wal)  # PostgreSQL retries the first segment, then calls for the others
    assert done == [(n, 0) for n in names], done
    assert not [f for f in os.listdir(os.path.join(wal, "archive_status")) if f.endswith(".ready")]
    chain = site.chain_names()
    assert all(chain.count(n) == 1 for n in names), chain
    assert _spool(site) == []
    assert [f for f in os.listdir(os.path.join(site.repo, "wal", "tmp")) if f.endswith(".tmp")] == []
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
    report = pchain.check_chain(site.repo, _trusted(site), level="full", decrypt=site.decrypt_kwargs())
    assert report.problems == [] and all(n in report.good for n in names), report.problems


def test_look_ahead_marker_is_not_trusted_for_another_file(enabled):
    site = enabled
    wal, names = _pg_wal(site, "attack", 4, 0xC0)
    assert _archiver(site, wal, calls=1) == [(names[0], 0)]
    assert _spool(site) == [n + ".ok" for n in names[1:]]
    # a different file under an archived name (same size): the marker no longer matches, the full push refuses it
    synthetic_segment(os.path.join(wal, names[1]), names[1], site.sysid, b"x" * 32)
    changed = site.program(["push", "--config", site.config, os.path.join(wal, names[1]), names[1]])
    assert changed.returncode == 1 and "already archived with different content" in changed.stderr
    # the stored file is gone: the marker is not enough, the full push reports the damage
    stored = os.path.join(site.repo, "wal", "segments", names[2][:16], names[2])
    os.rename(stored, stored + ".away")
    try:
        gone = site.program(["push", "--config", site.config, os.path.join(wal, names[2]), names[2]])
        assert gone.returncode == 1 and "stored file is missing" in gone.stderr
    finally:
        os.rename(stored + ".away", stored)
    # a marker naming a copy of the stored file outside the configured repository (true stats): not taken
    from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_spool as spool
    assert spool.configured_repo(site.config) == site.repo
    elsewhere = os.path.join(site.base, "elsewhere", "wal", "segments", names[3][:16], names[3])
    os.makedirs(os.path.dirname(elsewhere))
    with open(os.path.join(site.repo, "wal", "segments", names[3][:16], names[3]), "rb") as src, \
            open(elsewhere, "wb") as dst:
        dst.write(src.read())
    marker = os.path.join(site.program_dir, "spool", names[3] + ".ok")
    with open(marker, "w") as handle:
        handle.write(spool.marker_text(site.config, os.path.join(wal, names[3]), elsewhere))
    outside = site.program(["push", "--config", site.config, os.path.join(wal, names[3]), names[3]])
    assert outside.returncode == 0, outside.stderr  # the full push found its entry ...
    assert os.path.exists(marker)  # ... and the marker was not what answered (the fast path consumes its marker)
    os.unlink(marker)
    # a planted marker for a segment that was never archived (copied from a real one, edited): archived for real
    fresh = "00000001%08X%08X" % (0xC1, 0)
    synthetic_segment(os.path.join(wal, fresh), fresh, site.sysid)
    text = spool.marker_text(site.config, os.path.join(wal, names[1]),
                             os.path.join(site.repo, "wal", "segments", names[1][:16], names[1])).replace(names[1], fresh)
    planted = os.path.join(site.program_dir, "spool", fresh + ".ok")
    with open(planted, "w") as handle:
        handle.write(text)
    os.system("chown postgres: %s" % planted)
    assert fresh not in site.chain_names()
    pushed = site.program(["push", "--config", site.config, os.path.join(wal, fresh), fresh])
    assert pushed.returncode == 0, pushed.stderr
    assert fresh in site.chain_names()
    assert not os.path.exists(planted)  # no .ready file names it: the full run removed it as stale


def test_look_ahead_stops_at_a_segment_it_cannot_read(enabled):
    """Segments are stored two at a time: when the second of a pair fails, the first is still chained (in order),
    nothing after it is, and the failing segment's own call reports the error; once fixed, everything follows."""
    site = enabled
    wal, names = _pg_wal(site, "unreadable", 4, 0xD0)
    os.chmod(os.path.join(wal, names[2]), 0)
    try:
        assert _archiver(site, wal, calls=1) == [(names[0], 0)]
        chain = site.chain_names()
        assert names[1] in chain and names[2] not in chain and names[3] not in chain
        assert _spool(site) == [names[1] + ".ok"]
        assert _archiver(site, wal)[-1] == (names[2], 1)
    finally:
        os.chmod(os.path.join(wal, names[2]), 0o644)
    assert _archiver(site, wal) == [(names[2], 0), (names[3], 0)]
    assert all(site.chain_names().count(n) == 1 for n in names) and _spool(site) == []
