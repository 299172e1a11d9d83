# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: WAL read-ahead for a point-in-time restore, and the only reader of the key.

PostgreSQL's startup process runs restore_command once per segment, one after
the other, and each run of the WAL program would pay for an interpreter, the
cryptography import and the private-key load before it decrypts anything
(about 0.3 s, more than replaying the segment). The restore module already
holds the key and has verified the chain, so a thread decrypts the planned
segments in replay order while the base backup is extracted and replayed,
checks each against its chain entry, and leaves it in a spool directory. The
restore_command moves a spooled segment into place (one rename). For anything
else it runs the WAL program's ``get``, which never decrypts: it asks this
thread for the file (``<name>.want`` in the spool) and waits for the checked
plaintext or for ``<name>.bad`` (why it was refused, which the program writes
to the server log). So the private key (or the aes key file) stays in the
module's process: nothing the server's OS user can read ever holds it, and a
passphrase-protected key works. ``owner.pid`` names the module's process, so
``get`` fails at once instead of waiting when the restore is gone.

At most ``AHEAD`` segments wait in the spool, so its disk use is bounded; the
spool lives in the restore's work directory and goes with it.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import hashlib
import os
import shlex
import threading
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils._files import unlink_on_error

AHEAD = 8
WAIT_TICKS = 1200  # x 0.05 s: how long restore_command waits for a segment the read-ahead is writing
REQUEST = ".want"    # <name>.want: the WAL program asks for a file of the plan
REFUSED = ".bad"     # <name>.bad: the file was refused; its text says why
OWNER = "owner.pid"  # the pid of the process that serves the spool


def restore_command(spool: str, fallback: str) -> str:
    """A shell restore_command: take ``%f`` from the spool when it is there (waiting while it is being written),
    otherwise run ``fallback`` (the WAL program's get, which asks the read-ahead for it)."""
    return ('s=%s; n=0; while [ -e "$s/%%f.wip" ] && [ $n -lt %d ]; do sleep 0.05; n=$((n+1)); done; '
            'if [ -f "$s/%%f" ]; then exec mv -f "$s/%%f" "%%p"; fi; exec %s'
            % (shlex.quote(spool), WAIT_TICKS, fallback))


class Prefetcher:
    """Decrypts ``items`` ((name, chain entry) in replay order) into ``spool``, owned by ``uid``/``gid``: the
    segments ahead of replay, and any file of ``items`` (a history file too) on request."""

    def __init__(self, repo_path: str, items: t.List[t.Tuple[str, dict]], decrypt: dict, spool: str,
                 uid: t.Optional[int], gid: t.Optional[int]) -> None:
        self.layout = wf.WalLayout(repo_path)
        self.plan = dict(items)
        self.items = [(name, entry) for name, entry in items if wf.wal_kind(name) == "segment"]
        self.position = {name: i for i, (name, _entry) in enumerate(self.items)}
        self.cursor = 0
        self.decrypt = decrypt
        self.spool = spool
        self.uid, self.gid = uid, gid
        self.spooled = 0
        self.served = 0
        self.error: t.Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-read-ahead", daemon=True)

    def start(self) -> None:
        self._put(os.path.join(self.spool, OWNER), b"%d\n" % os.getpid())
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=60)
        return {"wal_read_ahead": self.spooled, "wal_served_on_request": self.served,
                "wal_read_ahead_error": self.error}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                names = os.listdir(self.spool)
            except OSError:
                names = []
            wanted = sorted(name[:-len(REQUEST)] for name in names if name.endswith(REQUEST))
            if wanted:
                for name in wanted:
                    self._serve(name)
                continue
            waiting = sum(1 for name in names if len(name) == 24)
            if self.cursor < len(self.items) and waiting < AHEAD:
                name, entry = self.items[self.cursor]
                self.cursor += 1
                if name in names:
                    continue
                try:
                    reason = self._one(name, entry)
                except Exception as exc:  # pylint: disable=broad-except
                    reason = "%s" % (getattr(exc, "msg", None) or exc)
                if reason:
                    # asked for later, it is tried once more and then refused with this reason
                    self.error = "%s: %s" % (name, reason)
                continue
            self._stop.wait(0.02)

    def _serve(self, name: str) -> None:
        """Answer ``<name>.want``: the checked file in the spool, or ``<name>.bad`` saying why not."""
        entry = self.plan.get(name)
        if not os.path.exists(os.path.join(self.spool, name)):
            if entry is None:
                reason: t.Optional[str] = "not in the restore plan (only verified files are served)"
            else:
                try:
                    reason = self._one(name, entry)
                except Exception as exc:  # pylint: disable=broad-except
                    reason = "%s" % (getattr(exc, "msg", None) or exc)
            if reason:
                self._put(os.path.join(self.spool, name + REFUSED), reason.encode("utf-8", "replace")[:4000])
            else:
                self.served += 1
        if name in self.position:
            self.cursor = max(self.cursor, self.position[name] + 1)   # replay is past it: read ahead from there
        try:
            os.unlink(os.path.join(self.spool, name + REQUEST))
        except OSError:
            pass

    def _put(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        with unlink_on_error(tmp):
            with os.fdopen(os.open(tmp, flags, 0o600), "wb") as handle:
                handle.write(data)
            if self.uid is not None:
                os.chown(tmp, self.uid, self.gid if self.gid is not None else -1)
            os.rename(tmp, path)

    def _one(self, name: str, entry: dict) -> t.Optional[str]:
        """Decrypt and check ``name`` into the spool; None when it is there, else why it was refused."""
        final = os.path.join(self.spool, name)
        wip = final + ".wip"
        tmp = final + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(wip, flags, 0o600))
        try:
            with unlink_on_error(tmp):
                digest = hashlib.sha256()
                size = 0
                with open(self.layout.stored_path(name), "rb") as src, os.fdopen(os.open(tmp, flags, 0o600), "wb") as dst:
                    chunks = container.decrypt_chunks(src, expected_object_id="wal/" + name, **self.decrypt)
                    chunks = wf.plaintext(chunks, entry.get("compression"))  # version-2 entries: frames (4.3.1)
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != entry.get("plaintext_sha256") or size != entry.get("plaintext_size"):
                    os.unlink(tmp)
                    return "decrypted to content that differs from the verified chain entry"
                if self.uid is not None:
                    os.chown(tmp, self.uid, self.gid if self.gid is not None else -1)
                os.rename(tmp, final)
                self.spooled += 1
        finally:
            os.unlink(wip)
        return None
