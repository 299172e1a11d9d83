# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the ``physical`` component of ransomeye_backup, and WAL retention.

``pg_basebackup --format=tar --pgdata=-`` streams one tar to stdout, straight
into an encrypted container: no plaintext ever touches the disk. WAL is not
included (``--wal-method=none``): it comes from the WAL archive, and the run
waits until the segment holding the backup's end LSN is in the archive, so a
backup is only recorded once it can be made consistent.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import re
import subprocess
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_db import _StderrCollector
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import NewObject
from ansible_collections.ransomeye.ops.plugins.module_utils._files import file_lock
from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_chain import prune_chain

READ_CHUNK = 1 << 20
_START_RE = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.M)
_TLI_RE = re.compile(r"^START TIMELINE: (\d+)", re.M)
_END_RE = re.compile(r'"End-LSN"\s*:\s*"([0-9A-F]+/[0-9A-F]+)"')


class TarScanner:
    """Watches a tar stream go by and keeps ``backup_label`` and the tail of ``backup_manifest``.

    pg_basebackup writing to stdout prints no WAL positions; they are in those
    two members of the stream (the manifest's WAL-Ranges give the end LSN).
    Memory stays flat: only those small members (the manifest's last 64 KiB) are kept.
    """

    KEEP = {"backup_label": 1 << 16, "backup_manifest": 1 << 16}

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0          # payload bytes (with padding) still to pass
        self._member: t.Optional[str] = None
        self._left = 0          # payload bytes of the current member still to keep
        self.members: t.Dict[str, bytes] = {}

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            if self._skip:
                take = min(self._skip, len(view))
                if self._member is not None and self._left:
                    keep = min(take, self._left)
                    limit = self.KEEP[self._member]
                    value = self.members.get(self._member, b"") + bytes(view[:keep])
                    self.members[self._member] = value[-limit:]
                    self._left -= keep
                self._skip -= take
                view = view[take:]
                continue
            need = 512 - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) < 512:
                return
            header = bytes(self._buf)
            self._buf = bytearray()
            if header == b"\0" * 512:
                continue
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            try:
                size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                size = 0
            self._member = name if name in self.KEEP else None
            self._left = size
            self._skip = (size + 511) // 512 * 512


def backup_physical(params: dict, repo: t.Any, enc: t.Any, object_id: str) -> t.Tuple[dict, dict, dict]:
    """Take a base backup into ``object_id``; return (manifest component, object record, stats)."""
    started = time.monotonic()
    info = pgu.ConnInfo.from_params(params)
    layout = wf.WalLayout(repo.path)
    wal_config = wf.read_config(layout)
    with pgu.connection(info) as conn:
        sysid = str(pgu.query_one(conn, "SELECT system_identifier FROM pg_control_system()"))
        if str(wal_config.get("system_identifier")) != sysid:
            raise RansomeyeError("the WAL archive of %s belongs to database system %s, not to this server (%s)"
                                 % (repo.path, wal_config.get("system_identifier"), sysid))
        mode = pgu.query_one(conn, "SELECT setting FROM pg_settings WHERE name = 'archive_mode'")
        if mode not in ("on", "always"):
            raise RansomeyeError("archive_mode is %s: a base backup is only useful with WAL archiving; run "
                                 "ransomeye_wal_archive (and restart the server) first" % mode)
        spaces = int(pgu.query_one(conn, "SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN "
                                         "('pg_default', 'pg_global')") or 0)
        if spaces:
            raise RansomeyeError("the cluster has %d tablespace(s) outside the data directory; the physical "
                                 "component backs up clusters without extra tablespaces only" % spaces)
        major = pgu.server_major(conn)
        version = pgu.server_version(conn)
        server_start = str(pgu.query_one(conn, "SELECT to_char(now() AT TIME ZONE 'UTC', "
                                               "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))
    binary = pgu.find_pg_binary("pg_basebackup", major)
    argv = [binary, "--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=fast", "--no-password",
            "--verbose", "--label=ransomeye.ops %s" % object_id[:16]]
    with pgu.client_env(info) as env:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        err = _StderrCollector(proc.stderr)
        err.start()
        try:
            with NewObject(repo, enc, object_id, "physical") as obj:
                scanner = TarScanner()
                for block in iter(lambda: proc.stdout.read(READ_CHUNK), b""):
                    obj.write(block)
                    scanner.feed(block)
                rc = proc.wait()
                err.join(timeout=30)
                text = err.text(info.password)
                if rc != 0:
                    raise RansomeyeError("pg_basebackup failed (%s); no backup was recorded: %s"
                                         % ("killed by signal %d" % -rc if rc < 0 else "exit status %d" % rc,
                                            text[-2000:] or "no message"))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    label = scanner.members.get("backup_label", b"").decode("utf-8", "replace")
    manifest = scanner.members.get("backup_manifest", b"").decode("utf-8", "replace")
    start = _START_RE.search(label)
    start_tli = _TLI_RE.search(label)
    ends = _END_RE.findall(manifest)
    if not start or not start_tli or not ends:
        raise RansomeyeError("the base backup stream holds no backup_label or backup_manifest WAL range; "
                             "no backup was recorded")
    timeline = int(start_tli.group(1))
    start_lsn = wf.parse_lsn(start.group(1))
    end_lsn = wf.parse_lsn(ends[-1])
    size = int(wal_config.get("segment_size") or wf.DEFAULT_SEGMENT_SIZE)
    end_wal = wf.segment_of_lsn(timeline, max(start_lsn, end_lsn - 1) if end_lsn % size == 0 else end_lsn, size)
    _wait_archived(info, layout, end_wal, float(params.get("wal_wait_timeout") or 120))
    with pgu.connection(info) as conn:
        server_end = str(pgu.query_one(conn, "SELECT to_char(now() AT TIME ZONE 'UTC', "
                                             "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))
    component = {
        "format": "pg_basebackup-tar", "object": object_id, "timeline": timeline,
        "start_lsn": wf.format_lsn(start_lsn), "end_lsn": wf.format_lsn(end_lsn),
        "start_wal": wf.segment_of_lsn(timeline, start_lsn, size), "end_wal": end_wal,
        "system_identifier": sysid, "server_version": version, "segment_size": size,
        "server_time": {"start": server_start, "end": server_end},
    }
    record = obj.record or {}
    stats = {"bytes_read": record.get("plaintext_size", 0), "bytes_stored": record.get("ciphertext_size", 0),
             "objects_new": 1, "duration": round(time.monotonic() - started, 3)}
    return component, record, stats


def _wait_archived(info: pgu.ConnInfo, layout: wf.WalLayout, name: str, timeout: float) -> None:
    """Wait until ``name`` is in the archive's chain (switching segments once if the server still writes it)."""
    deadline = time.monotonic() + timeout
    switched = False
    while True:
        if name in wf.chain_names(layout):
            return
        if not switched:
            with pgu.connection(info) as conn:
                current = pgu.query_one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")
                if current == name:
                    pgu.query(conn, "SELECT pg_switch_wal()")
            switched = True
        if time.monotonic() >= deadline:
            raise RansomeyeError(
                "the base backup finished, but WAL segment %s that makes it consistent was not archived within %ds; "
                "no backup was recorded. Check the archive command in the server log" % (name, timeout))
        time.sleep(0.2)


# ----------------------------------------------------------------------------- WAL retention


def prune_wal(repo: t.Any, check_mode: bool = False) -> dict:
    """Delete archived WAL that no remaining base backup needs (the oldest one's start segment and later stay).

    Only a prefix of the chain is removed, oldest first, and only while every
    entry in it is older than what the oldest base backup still in the
    repository needs. Every manifest file counts, authentic or not: a planted
    one can only make us keep more. With no base backup, or any manifest that
    cannot be read, nothing is removed. Call with the repository's exclusive
    lock held; the archive's own lock is taken too.
    """
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
    layout = wf.WalLayout(repo.path)
    out = {"segments": 0, "bytes": 0}
    if not os.path.isdir(layout.chain) and not os.path.isdir(layout.log):
        return out
    bases = []
    for seq, path in repo.manifest_files():
        try:
            body = brepo.load_manifest(seq, path).body
        except (RansomeyeError, OSError):
            return out
        if isinstance(body.get("components", {}).get("physical"), dict):
            bases.append(body["components"]["physical"])
    starts = []
    for comp in bases:
        try:
            size = int(comp.get("segment_size") or wf.DEFAULT_SEGMENT_SIZE)
            starts.append((wf.parse_lsn(comp["start_lsn"]) // size, int(comp["timeline"]), size))
        except (KeyError, TypeError, ValueError, wf.WalError):
            return out  # a base backup we cannot read: keep everything
    if not starts:
        return out
    min_segno = min(s[0] for s in starts)
    min_tli = min(s[1] for s in starts)
    size = starts[0][2]

    def removable(name: str) -> bool:
        if wf.wal_kind(name) == "history":
            return int(name[:8], 16) <= min_tli
        return wf.segment_number(name, size) < min_segno

    with file_lock(layout.lock, "WAL archive run", timeout=60):
        out = prune_chain(layout, removable, check_mode)
    return out
