# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: point-in-time restore (ransomeye_restore with a target).

Order, so that a failure never touches the live cluster: verify the base
backup's manifest and the WAL chain, decide whether the target is reachable
(refuse with how far replay can go when it is not), extract the base backup
into the new ``data_dir``, recover it on a side port with restore_command =
the collection's WAL program (which hands PostgreSQL only files this module
decrypted, authenticated and checked against the verified plan: the key never
leaves this process, _pitr_prefetch.py), check it, and
only then (with ``live_data_dir``) stop the live cluster and swap the
directories by rename, keeping ``<live>.pre_pitr_<stamp>`` for a one-step
rollback (``state: rolled_back``).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import hashlib
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_prefetch as prefetch
from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_server as server
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_install as inst
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import decryption_from_params, load_trust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import ChunkReader, object_chunks
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, fsync_dir

TARGETS = ("target_time", "target_lsn", "target_xid", "target_name", "target")
BLOCK_BEGIN = "# ransomeye.ops point-in-time recovery: begin (removed when the restore finishes)"
BLOCK_END = "# ransomeye.ops point-in-time recovery: end"
PRE_RE = re.compile(r"\.pre_pitr_(\d{8}T\d{6}Z)$")


def pitr_argument_spec() -> dict:
    """Options of ransomeye_restore for a point-in-time restore (documented in doc_fragments/pitr_restore.py)."""
    return dict(
        target_time=dict(type="str"), target_lsn=dict(type="str"), target_xid=dict(type="str"),
        target_name=dict(type="str"), target=dict(type="str", choices=["latest"]),
        target_exclusive=dict(type="bool", default=False),
        target_timeline=dict(type="str", choices=["current", "latest"]),
        data_dir=dict(type="path"), live_data_dir=dict(type="path"), side_port=dict(type="int"),
        recovery_timeout=dict(type="int", default=600), os_user=dict(type="str", default="postgres"),
        python=dict(type="path"), server_log=dict(type="path"), stop_at_gap=dict(type="bool", default=False),
        pg_config_file=dict(type="path"), pg_service=dict(type="str"),
    )


def wants_pitr(params: dict) -> bool:
    return any(params.get(name) for name in TARGETS) or bool(params.get("data_dir") or params.get("live_data_dir"))


def _target(params: dict) -> t.Tuple[str, str]:
    given = [(name, params[name]) for name in TARGETS if params.get(name)]
    if len(given) != 1:
        raise RansomeyeError("give exactly one of target_time, target_lsn, target_xid, target_name or "
                             "target: latest (got %s)" % (", ".join(n for n, _v in given) or "none"))
    name, value = given[0]
    value = str(value)
    if name == "target" and value != "latest":
        raise RansomeyeError("target accepts only latest; use target_time, target_lsn, target_xid or target_name")
    if name == "target_lsn":
        wf.parse_lsn(value)
    if name == "target_xid" and not value.isdigit():
        raise RansomeyeError("target_xid must be a transaction id (digits), not %r" % value)
    if name == "target_time":
        _parse_time(value)
    if name == "target_name" and ("'" in value or "\n" in value or len(value) > 63):
        raise RansomeyeError("target_name must be a restore point name (up to 63 characters, no quote)")
    return name, value


def _parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with a zone (``2026-12-03T15:04:05Z``, ``...+01:00``)."""
    value = text.strip().replace(" ", "T")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise RansomeyeError("target_time %r is not an ISO 8601 time such as 2026-12-03T15:04:05Z" % text)
    if parsed.tzinfo is None:
        raise RansomeyeError("target_time %r has no time zone; add Z or +hh:mm (a restore must not guess)" % text)
    return parsed.timestamp()


def _iso_epoch(text: t.Any) -> t.Optional[float]:
    try:
        return _parse_time(str(text))
    except RansomeyeError:
        return None


class Plan(t.NamedTuple):
    item: t.Any
    comp: dict
    coverage: t.Any
    report: t.Any
    names: t.List[str]
    reachable: dict


def _reachable(report: t.Any, cov: t.Any) -> dict:
    last = report.good.get(cov.last_segment) if cov.last_segment else None
    return {"lsn": wf.format_lsn(cov.end_lsn), "last_segment": cov.last_segment,
            "last_segment_archived_at": last.entry.get("time") if last else None,
            "first_missing": cov.first_missing}


def plan_restore(params: dict, repo: brepo.Repo, trusted: t.Any, decrypt: dict) -> Plan:
    """Choose the base backup and the WAL, refuse an unreachable target. Reads only."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import verify_repo
    kind, value = _target(params)
    checked = verify_repo(repo, trusted, "all", params.get("verify_level") or "ciphertext", None,
                          only_components=["physical"])
    bases = [m for m in checked.selected if isinstance((m.body.get("components") or {}).get("physical"), dict)]
    bad_objects = {p.get("backup") for p in checked.problems if str(p.get("object", "")) != "manifests"}
    bases = [m for m in bases if m.backup_id not in bad_objects]
    if params.get("backup") not in (None, "", "latest"):
        bases = [m for m in bases if m.backup_id == params["backup"]]
    if not bases:
        raise RansomeyeError("no verified base backup (component physical) in %s%s" % (
            repo.path, "" if params.get("backup") in (None, "", "latest") else " with id %s" % params["backup"]),
            problems=checked.problems)
    report = pchain.check_chain(repo.path, trusted, "ciphertext")
    switches = pchain.history_switches(report, repo.path, decrypt) if \
        (params.get("target_timeline") or "current") == "latest" else []
    candidates = list(reversed(bases))  # newest first
    if kind == "target_lsn":
        target = wf.parse_lsn(value)
        candidates = [m for m in candidates if wf.parse_lsn(m.body["components"]["physical"]["end_lsn"]) <= target]
    elif kind == "target_time":
        target_epoch = _parse_time(value)
        candidates = [m for m in candidates
                      if (_iso_epoch(m.body["components"]["physical"]["server_time"]["end"]) or 0) <= target_epoch]
    if not candidates:
        raise RansomeyeError("no base backup ended before %s %s; the oldest verified one (%s) ended at %s"
                             % (kind, value, bases[0].backup_id,
                                bases[0].body["components"]["physical"]["server_time"]["end"]
                                if kind == "target_time" else bases[0].body["components"]["physical"]["end_lsn"]))
    chosen = None
    for item in candidates:
        comp = item.body["components"]["physical"]
        cov = pchain.coverage(report, int(comp["timeline"]), wf.parse_lsn(comp["start_lsn"]),
                              wf.parse_lsn(comp["end_lsn"]), switches)
        if cov.ok:
            chosen = (item, comp, cov)
            break
    if chosen is None:
        item = candidates[0]
        comp = item.body["components"]["physical"]
        cov = pchain.coverage(report, int(comp["timeline"]), wf.parse_lsn(comp["start_lsn"]),
                              wf.parse_lsn(comp["end_lsn"]), switches)
        raise RansomeyeError("no base backup can be made consistent from the archived WAL; %s needs %s, which is "
                             "missing or failed verification" % (item.backup_id, cov.first_missing),
                             problems=report.problems)
    item, comp, cov = chosen
    reach = _reachable(report, cov)
    if kind == "target_lsn" and wf.parse_lsn(value) > cov.end_lsn:
        raise RansomeyeError(
            "target_lsn %s is not reachable with the archived WAL: replay from backup %s can go up to LSN %s "
            "(segment %s, archived at %s)%s; nothing was changed"
            % (value, item.backup_id, reach["lsn"], reach["last_segment"], reach["last_segment_archived_at"],
               "; segment %s is missing or failed verification" % cov.first_missing if cov.first_missing else ""),
            reachable=reach, problems=report.problems)
    if kind == "target" and cov.first_missing and not params.get("stop_at_gap"):
        raise RansomeyeError(
            "target latest is not reachable: WAL segment %s is missing or failed verification while later WAL is "
            "archived; replay from backup %s can go up to LSN %s (segment %s, archived at %s). Nothing was changed. "
            "Restore to a target before it, or set stop_at_gap to stop there on purpose"
            % (cov.first_missing, item.backup_id, reach["lsn"], reach["last_segment"],
               reach["last_segment_archived_at"]), reachable=reach, problems=report.problems)
    if kind == "target_time":
        archived = _iso_epoch(reach["last_segment_archived_at"])
        if archived is None or _parse_time(value) > archived:
            raise RansomeyeError(
                "target_time %s is not reachable with the archived WAL: the last segment replay from backup %s can "
                "use (%s) was archived at %s, LSN %s%s; nothing was changed"
                % (value, item.backup_id, reach["last_segment"], reach["last_segment_archived_at"], reach["lsn"],
                   "; segment %s is missing or failed verification" % cov.first_missing if cov.first_missing else ""),
                reachable=reach, problems=report.problems)
    names = list(cov.names) + sorted(n for n in report.good if wf.wal_kind(n) == "history" and n not in cov.names)
    return Plan(item, comp, cov, report, names, reach)


# ----------------------------------------------------------------------------- extraction


def _safe_member(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    parts = [p for p in name.split("/") if p]
    if name.startswith("/") or not parts or any(p in (".", "..") for p in parts):
        raise RansomeyeError("base backup member %r escapes the data directory; refusing it" % member.name)
    if not (member.isfile() or member.isdir()):
        raise RansomeyeError("base backup member %r is a link or device; this restore supports clusters without "
                             "tablespaces only" % member.name)
    return "/".join(parts)


def extract_base(repo: brepo.Repo, comp: dict, record: dict, decrypt: dict, data_dir: str,
                 user: inst.OsUser) -> int:
    """Stream-decrypt the base backup into the empty ``data_dir``; check its SHA-256 against the manifest."""
    digest = hashlib.sha256()
    total = [0]

    def hashed() -> t.Iterator[bytes]:
        for chunk in object_chunks(repo, comp["object"], decrypt):
            digest.update(chunk)
            total[0] += len(chunk)
            yield chunk

    reader = ChunkReader(hashed())
    as_root = os.geteuid() == 0
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            rel = _safe_member(member)
            path = os.path.join(data_dir, rel)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700)
                if as_root:
                    os.chown(parent, user.uid, user.gid)
            if member.isdir():
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                os.chmod(path, 0o700)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
                with os.fdopen(fd, "wb") as dst:
                    src = tar.extractfile(member)
                    if src is not None:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            dst.write(block)
                os.chmod(path, stat.S_IMODE(member.mode) & 0o700 or 0o600)
            if as_root:
                os.chown(path, user.uid, user.gid)
    while reader.read(1 << 20):
        pass
    if digest.hexdigest() != record.get("plaintext_sha256") or total[0] != record.get("plaintext_size"):
        raise RansomeyeError("the base backup decrypted to content that differs from its signed manifest")
    brepo._syncfs(data_dir)  # pylint: disable=protected-access
    return total[0]


# ----------------------------------------------------------------------------- running the server


def _conf_quote(value: str) -> str:
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "''")


def _strip_block(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(True):
        if line.strip() == BLOCK_BEGIN:
            skipping = True
            continue
        if line.strip() == BLOCK_END:
            skipping = False
            continue
        if not skipping:
            out.append(line)
    return "".join(out)


def _write_auto_conf(data_dir: str, settings: t.Optional[t.Dict[str, str]], user: inst.OsUser) -> None:
    path = os.path.join(data_dir, "postgresql.auto.conf")
    try:
        with open(path, "r") as handle:
            text = _strip_block(handle.read())
    except FileNotFoundError:
        text = ""
    if settings:
        if text and not text.endswith("\n"):
            text += "\n"
        text += BLOCK_BEGIN + "\n" + "".join("%s = %s\n" % (k, _conf_quote(v)) for k, v in settings.items()) \
            + BLOCK_END + "\n"
    atomic_write(path, text.encode("utf-8"), mode=0o600, uid=user.uid if os.geteuid() == 0 else None,
                 gid=user.gid if os.geteuid() == 0 else None)


def _log_tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


_STOP_RE = re.compile(r"recovery stopping (?:before|after) (.*)")
_LAST_RE = re.compile(r"last completed transaction was at log time (.*)")
_REDO_RE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


def _recovery_facts(log: str) -> dict:
    facts: t.Dict[str, str] = {}
    for regex, key in ((_STOP_RE, "stopped"), (_LAST_RE, "last_transaction_time"), (_REDO_RE, "redo_done_at")):
        found = regex.findall(log)
        if found:
            facts[key] = found[-1].strip()
    return facts


def _ensure_new_dir(path: str, user: inst.OsUser) -> None:
    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isdir(path) or os.listdir(path):
            raise RansomeyeError("data_dir %s exists and is not an empty directory; give a new path" % path)
    else:
        os.makedirs(path, 0o700)
    os.chmod(path, 0o700)
    if os.geteuid() == 0:
        os.chown(path, user.uid, user.gid)


def _remove_tree(path: str) -> None:
    if path and os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)


def run_pitr(module: t.Any) -> dict:
    params = module.params
    if params.get("state") == "rolled_back":
        return rollback(params, module.check_mode)
    kind, value = _target(params)
    if not params.get("data_dir"):
        raise RansomeyeError("a point-in-time restore needs data_dir (a new directory for the restored cluster)")
    if not params.get("private_key") and not params.get("key_file"):
        raise RansomeyeError("restore decrypts the backup: give private_key (rsa mode) or key_file (aes mode)")
    data_dir = os.path.abspath(params["data_dir"])
    live = os.path.abspath(params["live_data_dir"]) if params.get("live_data_dir") else None
    if live and (live == data_dir or data_dir.startswith(live.rstrip("/") + "/")):
        raise RansomeyeError("data_dir must be a new directory beside live_data_dir, not %s" % data_dir)
    if live and not os.path.isfile(os.path.join(live, "PG_VERSION")):
        raise RansomeyeError("live_data_dir %s is not a PostgreSQL data directory" % live)
    if live and os.stat(os.path.dirname(live)).st_dev != os.stat(os.path.dirname(data_dir) or "/").st_dev:
        raise RansomeyeError("data_dir must be on the same filesystem as live_data_dir (the swap is a rename)")
    if os.path.lexists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise RansomeyeError("data_dir %s exists and is not an empty directory; give a new path" % data_dir)
    config_file = os.path.abspath(params["pg_config_file"]) if params.get("pg_config_file") else None
    server.check_options(config_file, params.get("pg_service"), live)
    if live:
        server.needs_config(live, config_file, "live_data_dir")
    user = inst.os_user(params.get("os_user") or "postgres")
    repo = brepo.Repo.open(params["repo"])
    trusted = load_trust(params.get("trusted_keys") or [])
    decrypt = decryption_from_params(params)
    with repo.lock(exclusive=False, timeout=params.get("lock_timeout") or 0):
        plan = plan_restore(params, repo, trusted, decrypt)
        result: t.Dict[str, t.Any] = {
            "changed": True, "backup_id": plan.item.backup_id, "seq": plan.item.body["seq"],
            "manifest": plan.item.path, "target": {kind: value}, "reachable": plan.reachable,
            "wal_files": len(plan.names), "data_dir": data_dir, "previous_data_dir": None, "stats": {},
            "unsigned_tail": plan.report.unsigned_tail,
        }
        if module.check_mode:
            return result
        started = time.monotonic()
        work = data_dir.rstrip("/") + ".ransomeye-pitr"
        _remove_tree(work)
        os.makedirs(work, 0o700)
        if os.geteuid() == 0:
            os.chown(work, user.uid, user.gid)
        os.chmod(work, 0o711)
        created_data = not os.path.exists(data_dir)
        _ensure_new_dir(data_dir, user)
        major = int(plan.comp.get("server_version") or 150000) // 10000
        control = server.Control(user, major, config_file, params.get("pg_service"))
        side_port = int(params.get("side_port") or _free_port())
        side_running = False
        spool = os.path.join(work, "spool")
        os.makedirs(spool, 0o700)
        if os.geteuid() == 0:
            os.chown(spool, user.uid, user.gid)
        owner = (user.uid, user.gid) if os.geteuid() == 0 else (None, None)
        ahead = prefetch.Prefetcher(repo.path, [(n, plan.report.good[n].entry) for n in plan.names], decrypt, spool,
                                    owner[0], owner[1])
        try:
            ahead.start()
            record = plan.item.body["objects"][plan.comp["object"]]
            size = extract_base(repo, plan.comp, record, decrypt, data_dir, user)
            server.needs_config(data_dir, config_file, "the restored base backup in")
            result["stats"]["base_backup_bytes"] = size
            result["stats"]["extract_seconds"] = round(time.monotonic() - started, 3)
            config_path = _restore_config(work, repo, plan, spool, user)
            prog = os.path.join(work, "prog")
            inst.install_files(prog, inst.program_files(params.get("python") or sys.executable), False)
            os.chmod(prog, 0o755)
            sock = os.path.join(work, "sock")
            os.makedirs(sock, 0o700)
            if os.geteuid() == 0:
                os.chown(sock, user.uid, user.gid)
            settings = {
                "restore_command": prefetch.restore_command(spool, inst.restore_command(prog, config_path)),
                "recovery_target_action": "promote",
                "recovery_target_timeline": params.get("target_timeline") or ("latest" if kind == "target"
                                                                              else "current"),
                "port": str(side_port), "listen_addresses": "127.0.0.1", "unix_socket_directories": sock,
                "hot_standby": "off",
                # Keep archive_mode as backed up, but hold the new timeline's WAL (.ready) until the swap:
                # the side instance never writes into the archive.
                "archive_command": "",
            }
            settings.update(server.side_settings(control))
            if kind == "target_time":
                # PostgreSQL refuses zone abbreviations (even Z) in recovery_target_time: a numeric UTC offset.
                value = datetime.datetime.fromtimestamp(_parse_time(value), datetime.timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S.%f+00")
            if kind != "target":
                settings[{"target_time": "recovery_target_time", "target_lsn": "recovery_target_lsn",
                          "target_xid": "recovery_target_xid", "target_name": "recovery_target_name"}[kind]] = value
                settings["recovery_target_inclusive"] = "off" if params.get("target_exclusive") else "on"
            _write_auto_conf(data_dir, settings, user)
            signal_file = os.path.join(data_dir, "recovery.signal")
            with open(signal_file, "w"):
                pass
            if os.geteuid() == 0:
                os.chown(signal_file, user.uid, user.gid)
            log = os.path.join(work, "recovery.log")
            timeout = int(params.get("recovery_timeout") or 600)
            side_running = True
            proc = server.start(control, data_dir, log, timeout)
            promoted = proc.returncode == 0 and _wait_promoted(params, side_port, data_dir, log, timeout)
            text = _log_tail(log, 20000)
            facts = _recovery_facts(text)
            result["recovery"] = facts
            if not promoted:
                side_running = _is_running(data_dir)
                reason = "the server stopped during recovery"
                if "recovery ended before configured recovery target was reached" in text:
                    reason = "the target was not reached with the archived WAL"
                raise RansomeyeError(
                    "point-in-time recovery on the side port failed: %s (replay reached %s; archive usable up to "
                    "LSN %s); the live cluster was not touched. Server log: %s"
                    % (reason, facts.get("redo_done_at") or facts.get("last_transaction_time") or "unknown",
                       plan.reachable["lsn"], text[-1500:]), reachable=plan.reachable, recovery=facts)
            result["stats"]["recovery_seconds"] = round(time.monotonic() - started, 3)
            result.update(_check_side(params, side_port, user, data_dir))
            stopped = server.stop(control, data_dir)
            if stopped.returncode != 0:
                raise RansomeyeError("could not stop the recovered cluster on port %d: %s"
                                     % (side_port, stopped.stderr.strip()))
            side_running = False
            _write_auto_conf(data_dir, None, user)
        except BaseException:
            if side_running:
                server.stop(control, data_dir, "immediate", 60)
            if created_data or os.path.isdir(data_dir):
                _remove_tree(data_dir)
            raise
        finally:
            result["stats"].update(ahead.stop())
            _remove_tree(work)
        if live:
            result.update(_swap(params, live, data_dir, control))
        result["stats"]["duration"] = round(time.monotonic() - started, 3)
    return result


# What a connection meets while the side instance starts, or stops after "recovery ended before configured
# recovery target was reached": a stopping postmaster may still accept a connection and drop it before its pid
# file goes.
_NOT_YET_OR_GOING = ("not accepting connections", "starting up", "Connection refused", "shutting down",
                     "server closed the connection unexpectedly")


def _wait_promoted(params: dict, port: int, data_dir: str, log: str, timeout: int) -> bool:
    """Wait until the side instance finished recovery and accepts connections; False when it died.

    pg_ctl -w returns as soon as a server without hot standby starts recovery,
    so the end of recovery is watched here: the server either accepts a
    connection out of recovery, or its postmaster goes away (target not reached).
    """
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    info = pgu.ConnInfo.from_params(dict(params, login_host="127.0.0.1", login_port=port, connect_timeout=5))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _postmaster_alive(data_dir):
            return False
        try:
            with pgu.connection(info) as conn:
                if not pgu.query_one(conn, "SELECT pg_is_in_recovery()"):
                    return True
        except RansomeyeError as exc:
            if not _postmaster_alive(data_dir):
                return False
            if not any(text in exc.msg for text in _NOT_YET_OR_GOING):
                raise
        time.sleep(0.2)
    raise RansomeyeError("recovery on the side port did not finish within %ds (recovery_timeout); the live cluster "
                         "was not touched. Server log: %s" % (timeout, _log_tail(log, 1500)))


def _free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postmaster_alive(data_dir: str) -> bool:
    """Whether the postmaster named in the side instance's pid file still runs. A postmaster killed outright
    (SIGKILL, the OOM killer) leaves its pid file behind: the file alone would keep the wait going until
    recovery_timeout."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as handle:
            pid = int(handle.readline().strip() or 0)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True   # being written as the server starts: not known dead
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass          # it runs, as another user
    return True


def _is_running(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, "postmaster.pid"))


def _restore_config(work: str, repo: brepo.Repo, plan: Plan, spool: str, user: inst.OsUser) -> str:
    """The get program's config: the verified plan and the spool it asks (no key: the read-ahead decrypts)."""
    files = {}
    for name in plan.names:
        entry = plan.report.good[name].entry
        files[name] = {"plaintext_sha256": entry["plaintext_sha256"], "plaintext_size": entry["plaintext_size"],
                       "compression": entry.get("compression") or "none"}
    config = {"format": "ransomeye-wal-program", "version": 1, "repo": repo.path, "files": files,
              "timeout": 300, "spool": spool}
    path = os.path.join(work, "restore.json")
    atomic_write(path, inst.config_bytes(config), mode=0o640,
                 gid=user.gid if os.geteuid() == 0 else None)
    return path


def _check_side(params: dict, port: int, user: inst.OsUser, data_dir: str) -> dict:
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    info = pgu.ConnInfo.from_params(dict(params, login_host="127.0.0.1", login_port=port))
    out: t.Dict[str, t.Any] = {}
    with pgu.connection(info) as conn:
        if pgu.query_one(conn, "SELECT pg_is_in_recovery()"):
            raise RansomeyeError("the recovered cluster is still in recovery; it was not promoted")
        out["timeline"] = int(pgu.query_one(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
        out["recovered_lsn"] = str(pgu.query_one(conn, "SELECT pg_current_wal_lsn()::text"))
        dbs = [r[0] for r in pgu.query(conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]
        out["databases"] = dbs
    if params.get("db"):
        from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import count_rows
        if params["db"] not in dbs:
            raise RansomeyeError("database %s does not exist in the recovered cluster (it has %s)"
                                 % (params["db"], ", ".join(dbs)))
        with pgu.connection(info.with_db(params["db"])) as conn:
            out["tables"] = count_rows(conn)
    return out


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _swap(params: dict, live: str, data_dir: str, control: server.Control) -> dict:
    """Stop the live cluster, rename it aside, rename the restored one into place, start it; undo on failure."""
    previous = "%s.pre_pitr_%s" % (live, _stamp())
    log = params.get("server_log") or os.path.join(os.path.dirname(live), "postgresql-pitr.log")
    _stop_live(control, live, "the recovered cluster is ready in %s and nothing was swapped" % data_dir)
    os.rename(live, previous)
    os.rename(data_dir, live)
    fsync_dir(os.path.dirname(live))
    started = server.start_live(control, live, log)
    if started.returncode != 0:
        server.kill_live(control, live)
        os.rename(live, data_dir)
        os.rename(previous, live)
        fsync_dir(os.path.dirname(live))
        again = server.start_live(control, live, log)
        state = "put back and started" if again.returncode == 0 else \
            "put back but did not start either (%s)" % _said(again)[-300:]
        raise RansomeyeError("the recovered cluster did not start in %s (%s); the previous cluster was %s; the "
                             "recovered one is in %s" % (live, _said(started)[-500:], state, data_dir))
    return {"previous_data_dir": previous, "live_data_dir": live, "data_dir": live, "server_log": log}


def _said(proc: t.Any) -> str:
    return (proc.stderr or proc.stdout or "").strip()


def _stop_live(control: server.Control, live: str, unchanged: str) -> None:
    """Stop the live cluster (through its unit with pg_service); refuse to go on while its postmaster runs."""
    if not control.service and not _is_running(live):
        return
    stopped = server.stop_live(control, live)
    if stopped.returncode != 0 or _is_running(live):
        raise RansomeyeError("could not stop the live cluster in %s (%s); %s"
                             % (live, _said(stopped) or "its postmaster.pid is still there", unchanged))


def rollback(params: dict, check_mode: bool) -> dict:
    """Put ``<live>.pre_pitr_<stamp>`` (the newest) back in place; the restored cluster is kept aside."""
    if not params.get("live_data_dir"):
        raise RansomeyeError("state rolled_back of a point-in-time restore needs live_data_dir")
    live = os.path.abspath(params["live_data_dir"])
    parent = os.path.dirname(live)
    base = os.path.basename(live)
    pres = sorted(n for n in os.listdir(parent) if n.startswith(base + ".pre_pitr_") and PRE_RE.search(n))
    if not pres:
        return {"changed": False, "msg": "no %s.pre_pitr_* directory; nothing to roll back" % live,
                "previous_data_dir": None}
    previous = os.path.join(parent, pres[-1])
    discarded = "%s.rolled_back_%s" % (live, _stamp())
    result = {"changed": True, "previous_data_dir": previous, "live_data_dir": live, "rolled_back_data_dir": discarded}
    config_file = os.path.abspath(params["pg_config_file"]) if params.get("pg_config_file") else None
    server.check_options(config_file, params.get("pg_service"), live)
    server.needs_config(previous, config_file, "the previous cluster in")
    if check_mode:
        return result
    user = inst.os_user(params.get("os_user") or "postgres")
    with open(os.path.join(previous, "PG_VERSION")) as handle:
        major = int(handle.read().strip().split(".")[0])
    control = server.Control(user, major, config_file, params.get("pg_service"))
    log = params.get("server_log") or os.path.join(parent, "postgresql-pitr.log")
    _stop_live(control, live, "nothing was changed")
    os.rename(live, discarded)
    os.rename(previous, live)
    fsync_dir(parent)
    started = server.start_live(control, live, log)
    if started.returncode != 0:
        raise RansomeyeError("the previous cluster is back in %s but did not start: %s; the restored one is in %s"
                             % (live, _said(started)[-500:], discarded))
    return result
