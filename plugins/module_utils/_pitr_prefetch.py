# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: WAL read-ahead for a point-in-time restore.

PostgreSQL's startup process runs restore_command once per segment, one after
the other, and each run of the WAL program pays for an interpreter, the
cryptography import and the private-key load before it decrypts anything
(about 0.3 s, more than replaying the segment). The restore module already
holds the key and has verified the chain, so a thread decrypts the planned
segments in replay order while the base backup is extracted and replayed,
checks each against its chain entry, and leaves it in a spool directory. The
restore_command moves a spooled segment into place (one rename) and runs the
WAL program only for what is not spooled: a file outside the plan, a history
file, or a segment the read-ahead could not check (the program then decrypts
and checks it itself, and fails loudly when it is bad). At most ``AHEAD``
segments wait in the spool, so its disk use is bounded; the spool lives in
the restore's work directory and goes with it.
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


def restore_command(spool: str, fallback: str) -> str:
    """A shell restore_command: take ``%f`` from the spool when it is there (waiting while it is being written),
    otherwise run ``fallback`` (the WAL program's get)."""
    return ('s=%s; n=0; while [ -e "$s/%%f.wip" ] && [ $n -lt %d ]; do sleep 0.05; n=$((n+1)); done; '
            'if [ -f "$s/%%f" ]; then exec mv -f "$s/%%f" "%%p"; fi; exec %s'
            % (shlex.quote(spool), WAIT_TICKS, fallback))


class Prefetcher:
    """Decrypts ``items`` ((name, chain entry) in replay order) into ``spool``, owned by ``uid``/``gid``."""

    def __init__(self, repo_path: str, items: t.List[t.Tuple[str, dict]], decrypt: dict, spool: str,
                 uid: t.Optional[int], gid: t.Optional[int]) -> None:
        self.layout = wf.WalLayout(repo_path)
        self.items = [(name, entry) for name, entry in items if wf.wal_kind(name) == "segment"]
        self.decrypt = decrypt
        self.spool = spool
        self.uid, self.gid = uid, gid
        self.spooled = 0
        self.error: t.Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-read-ahead", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=60)
        return {"wal_read_ahead": self.spooled, "wal_read_ahead_error": self.error}

    def _waiting(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.spool) if len(name) == 24)
        except OSError:
            return 0

    def _run(self) -> None:
        for name, entry in self.items:
            while self._waiting() >= AHEAD and not self._stop.wait(0.05):
                pass
            if self._stop.is_set():
                return
            try:
                self._one(name, entry)
            except Exception as exc:  # pylint: disable=broad-except
                # The WAL program decrypts whatever is not spooled (and refuses what is bad, in the server
                # log), so a segment the read-ahead could not take only costs speed.
                self.error = "%s: %s" % (name, getattr(exc, "msg", None) or exc)

    def _one(self, name: str, entry: dict) -> None:
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
                    os.unlink(tmp)  # left to the WAL program, which refuses it in the server log
                    return
                if self.uid is not None:
                    os.chown(tmp, self.uid, self.gid if self.gid is not None else -1)
                os.rename(tmp, final)
                self.spooled += 1
        finally:
            os.unlink(wip)
