"""The resident WAL archiver (BACKUP_FORMAT 4.3.3) against a real cluster: each of its promises, attacked.

The archiver is the program's own ``serve`` command, started by the first whole push; the calls are the installed
launcher run as the postgres OS user, as PostgreSQL runs it.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import pwd
import signal
import socket
import threading
import time

import pytest

from tests.harness.ansible_runner import run_module_direct
from tests.harness.pitrsite import Site
from tests.integration.pitr.test_wal_archive import POINTS, synthetic_segment


def _pid(site) -> int:
    """The pid of the live resident archiver of ``site`` (0: none)."""
    try:
        with open(os.path.join(site.program_dir, "run", "archiver.lock")) as handle:
            pid = int(handle.read().strip() or 0)
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except (OSError, ValueError):
        return 0
    return pid if b"serve" in argv else 0


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _dead(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _read_bytes(pid: int) -> int:
    """Bytes the process has read so far (0 once it is gone)."""
    try:
        with open("/proc/%d/io" % pid) as handle:
            return [int(line.split()[1]) for line in handle if line.startswith("rchar:")][0]
    except (OSError, IndexError):
        return 0


def _push(site, tag: str, name: str, env: dict = None):
    src = synthetic_segment(os.path.join(site.base, "seg-" + tag), name, site.sysid)
    os.chmod(src, 0o644)
    return src, site.program(["push", "--config", site.config, src, name], env=env)


_STARTERS = itertools.count(0x80)


def _running(site, tag: str) -> int:
    """Make sure an archiver runs (a whole push starts one); its pid."""
    if not _pid(site):
        _src, first = _push(site, tag, "00000001000000%02X00000000" % next(_STARTERS))
        assert first.returncode == 0, first.stderr
    assert _wait(lambda: _pid(site) and os.path.exists(os.path.join(site.program_dir, "run", "archiver.sock")))
    return _pid(site)


def _verify(site, names) -> None:
    from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trusted
    report = pchain.check_chain(site.repo, load_trusted(site.trusted), level="full", decrypt=site.decrypt_kwargs())
    assert report.problems == [], report.problems
    assert all(n in report.good for n in names)
    chain = site.chain_names()
    assert all(chain.count(n) == 1 for n in names), chain
    assert [f for f in os.listdir(os.path.join(site.repo, "wal", "tmp")) if f.endswith(".tmp")] == []


@pytest.fixture(scope="module")
def resident(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.enable()  # the defaults: resident_idle 300
        site.config = os.path.join(site.program_dir, "archive.json")
        site.sysid = json.load(open(site.config))["system_identifier"]
        yield site
    finally:
        site.destroy()


def test_the_servers_calls_start_an_archiver_that_does_the_later_pushes(resident):
    site = resident
    run = os.path.join(site.program_dir, "run")
    st = os.stat(run)
    assert st.st_uid == pwd.getpwnam("postgres").pw_uid and st.st_mode & 0o777 == 0o700
    names = [site.switch_and_wait() for _switch in range(2)]  # PostgreSQL's own calls
    assert _wait(lambda: _pid(site), 10), "no resident archiver after the server archived %s" % names
    pid = _pid(site)
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        assert site.pg.data.encode() in handle.read().split(b"\0")  # it watches the cluster that started it
    before = _read_bytes(pid)
    pushed = ["0000000100000000000000%02X" % n for n in (0x61, 0x62, 0x63)]
    for name in pushed:
        _src, proc = _push(site, name, name)
        assert proc.returncode == 0, proc.stderr
    assert _pid(site) == pid
    assert _read_bytes(pid) - before >= 3 * 16 * 1024 * 1024  # it, not the calls, read the three segments
    names.append(site.switch_and_wait())
    _verify(site, names + pushed)
    again = site.program(["push", "--config", site.config, os.path.join(site.base, "seg-" + pushed[0]), pushed[0]])
    assert again.returncode == 0, again.stderr  # same content again: acknowledged, not archived twice
    _verify(site, pushed)


@pytest.mark.parametrize("point", POINTS)
def test_an_archiver_killed_at_each_step_never_loses_or_doubles_a_segment(resident, point):
    site = resident
    pid = _running(site, "kill-" + point)
    name = "0000000100000001000000%02X" % (0x10 + POINTS.index(point))
    src, call = _push(site, point, name, env={"RANSOMEYE_WAL_TEST_RESIDENT_HOOK": point + ":kill"})
    assert _wait(lambda: _dead(pid), 5), "the archiver was not the one killed"
    # The call then ran the push itself, from whatever the archiver left: it exits 0 with the entry in the chain.
    assert call.returncode == 0, call.stderr
    assert site.chain_names().count(name) == 1
    again = site.program(["push", "--config", site.config, src, name])
    assert again.returncode == 0, again.stderr
    _verify(site, [name])


def test_a_crash_test_of_the_call_kills_the_calls_own_push_not_the_archiver(resident):
    site = resident
    pid = _running(site, "own")
    name = "000000010000000100000020"
    src, killed = _push(site, "own", name, env={"RANSOMEYE_WAL_TEST_HOOK": "before_chain_sync:kill"})
    assert killed.returncode in (-9, 137), killed  # the push ran in the call, as without an archiver
    assert _pid(site) == pid  # untouched
    retry = site.program(["push", "--config", site.config, src, name])
    assert retry.returncode == 0, retry.stderr
    _verify(site, [name])


def test_a_stuck_archiver_is_stopped_and_a_slow_push_fails_within_the_bound(resident):
    site = resident
    # The module stops the archiver (new config); the next whole push starts one
    assert run_module_direct("ransomeye_wal_archive", dict(site.wal_args, command_timeout=2))["_rc"] == 0
    try:
        pid = _running(site, "stuck")
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        src, stuck = _push(site, "stuck-1", "000000010000000200000001")
        took = time.monotonic() - started
        assert stuck.returncode == 1 and "did not answer within 12 s and was stopped" in stuck.stderr, stuck
        assert 11 < took < 20
        assert _wait(lambda: _dead(pid), 5)
        assert "000000010000000200000001" not in site.chain_names()
        retry = site.program(["push", "--config", site.config, src, "000000010000000200000001"])
        assert retry.returncode == 0, retry.stderr
        # a push that takes longer than command_timeout inside the archiver: its own alarm, then it exits
        pid = _running(site, "slow")
        started = time.monotonic()
        _src, slow = _push(site, "slow-1", "000000010000000200000002",
                           env={"RANSOMEYE_WAL_TEST_RESIDENT_HOOK": "during_encrypt:sleep"})
        assert slow.returncode == 1 and "gave up after the configured timeout" in slow.stderr, slow
        assert time.monotonic() - started < 10
        assert _wait(lambda: _dead(pid), 5)
        assert "000000010000000200000002" not in site.chain_names()
    finally:
        assert run_module_direct("ransomeye_wal_archive", site.wal_args)["_rc"] == 0


def test_an_answer_from_a_socket_of_another_user_is_never_believed(resident):
    site = resident
    _running(site, "liar")
    assert run_module_direct("ransomeye_wal_archive", dict(site.wal_args, resident_idle=0))["_rc"] == 0  # stops it
    assert run_module_direct("ransomeye_wal_archive", site.wal_args)["_rc"] == 0
    run = os.path.join(site.program_dir, "run")
    path = os.path.join(run, "archiver.sock")
    assert _wait(lambda: not os.path.exists(path), 5)
    # root's socket, which says "archived" to anyone; root also holds the lock, so no real archiver replaces it
    lock = os.open(os.path.join(run, "archiver.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(path)
    os.chmod(path, 0o777)
    fake.listen(4)
    asked = []

    def lie() -> None:
        while True:
            try:
                conn, _addr = fake.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                asked.append(conn.recv(4096))
                conn.sendall(b"0\n")
            except OSError:
                asked.append(b"")
            conn.close()

    thread = threading.Thread(target=lie, daemon=True)
    thread.start()
    try:
        name = "000000010000000300000001"
        _src, proc = _push(site, "liar", name)
        assert proc.returncode == 0, proc.stderr
        assert asked and asked[0] == b"", asked  # asked, and told nothing once it saw whose socket it was
        assert name in site.chain_names()  # archived for real, by the call itself
        _verify(site, [name])
    finally:
        fake.close()
        os.unlink(path)
        os.close(lock)


def test_an_archiver_never_serves_a_changed_program_or_config(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.enable()
        site.config = os.path.join(site.program_dir, "archive.json")
        site.sysid = json.load(open(site.config))["system_identifier"]
        pid = _running(site, "rekey")
        assert run_module_direct("ransomeye_wal_archive", dict(site.wal_args))["resident_archiver"] == {
            "running": True, "pid": pid}  # nothing changed: the archiver stays and is reported
        rekeyed = run_module_direct("ransomeye_wal_archive", dict(site.wal_args, signing_key=pitr_keys["rogue_key"]))
        assert rekeyed["_rc"] == 0 and rekeyed["changed"] is True, rekeyed
        assert rekeyed["resident_archiver"] == {"running": False, "pid": None}
        assert _wait(lambda: _dead(pid), 5), "the module did not stop the archiver after changing the config"
        from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
        from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trusted
        rogue = list(load_trusted([pitr_keys["rogue_pub"]]))
        name = "000000010000000400000001"
        pid = _running(site, "rekey-2")
        _src, proc = _push(site, "rekey", name)
        assert proc.returncode == 0, proc.stderr
        assert _pid(site) == pid
        assert [i.item.entry["signer"] for i in wf.read_chain(wf.WalLayout(site.repo)) if i.name == name] == rogue
        # Changed behind the module's back (a file replaced, as an upgrade does): it hands the push back and goes
        config = site.config
        with open(config, "rb") as handle:
            data = handle.read()
        st = os.stat(config)
        tmp = config + ".new"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.rename(tmp, config)
        before = _read_bytes(pid)
        name = "000000010000000400000002"
        _src, proc = _push(site, "swap", name)
        assert proc.returncode == 0, proc.stderr
        assert _wait(lambda: _dead(pid), 5)
        assert _read_bytes(pid) - before < 16 * 1024 * 1024  # it did not read the segment
        assert name in site.chain_names()
    finally:
        site.destroy()


def test_memory_of_the_archiver_stays_flat_as_segments_pass(resident):
    site = resident
    pid = _running(site, "flat")
    peaks = []
    for i in range(12):
        name = "0000000100000005000000%02X" % i
        _src, proc = _push(site, "flat", name)
        assert proc.returncode == 0, proc.stderr
        with open("/proc/%d/status" % pid) as handle:
            peaks.append([int(line.split()[1]) for line in handle if line.startswith("VmHWM:")][0])
    assert _pid(site) == pid
    assert peaks[-1] < 64 * 1024, peaks  # KiB
    assert peaks[-1] - peaks[2] < 4 * 1024, peaks


def test_the_archiver_goes_when_idle_when_disabled_and_with_its_cluster(pitr_keys):
    site = Site(pitr_keys)
    try:
        site.enable(resident_idle=3)
        site.config = os.path.join(site.program_dir, "archive.json")
        site.sysid = json.load(open(site.config))["system_identifier"]
        pid = _running(site, "idle")
        assert _wait(lambda: _dead(pid), 10), "still there after 3 s idle"
        assert not os.path.exists(os.path.join(site.program_dir, "run", "archiver.sock"))
        site.enable(resident_idle=300)
        site.switch_and_wait()
        pid = _running(site, "disable")
        result = run_module_direct("ransomeye_wal_archive", dict(site.wal_args, state="disabled"))
        assert result["_rc"] == 0 and result["resident_archiver"] == {"running": False, "pid": None}, result
        assert _wait(lambda: _dead(pid), 5), "archiving is off but the archiver still runs"
        site.enable()
        site.switch_and_wait()
        assert _wait(lambda: _pid(site), 10), "the server's call did not start one"  # it starts as the call ends
        pid = _pid(site)
        site.pg.stop()
        assert _wait(lambda: _dead(pid), 10), "the cluster stopped but its archiver still runs"
    finally:
        site.destroy()


def test_check_mode_neither_stops_the_archiver_nor_creates_its_directory(resident, tmp_path):
    site = resident
    pid = _running(site, "check")
    config = os.path.join(site.program_dir, "archive.json")
    before = os.stat(config)
    check = run_module_direct("ransomeye_wal_archive", dict(site.wal_args, command_timeout=7), check=True)
    assert check["_rc"] == 0 and check["changed"] is True and "archive.json" in check["installed"], check
    assert check["resident_archiver"] == {"running": True, "pid": pid}  # what runs now; check mode stops nothing
    time.sleep(1)
    assert _pid(site) == pid  # a would-be change stops nothing
    assert (os.stat(config).st_ino, os.stat(config).st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a program directory that does not exist yet: check mode says it would create run/, and creates nothing
    fresh = str(tmp_path / "prog")
    check = run_module_direct("ransomeye_wal_archive", dict(site.wal_args, program_dir=fresh), check=True)
    assert check["_rc"] == 0 and "run/" in check["installed"], check
    assert not os.path.exists(fresh)


@pytest.mark.parametrize("value", [-1, 86401])
def test_an_out_of_range_resident_idle_fails_clearly_before_anything(pitr_keys, tmp_path, value):
    result = run_module_direct("ransomeye_wal_archive", dict(
        login_host="127.0.0.1", login_port=1, repo=str(tmp_path / "repo"), mode="rsa",
        recipients=[pitr_keys["recipient_pub"]], signing_key=pitr_keys["signing_key"],
        program_dir=str(tmp_path / "prog"), resident_idle=value))
    assert result["_rc"] != 0 and result.get("failed") is True
    assert "resident_idle must be between 0 (no resident archiver) and 86400 seconds" in result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert not os.path.exists(str(tmp_path / "prog")) and not os.path.exists(str(tmp_path / "repo"))
