# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: a bounded, ordered on-disk spool for alerts.

Each alert is one file ``<seq>.alert`` (JSON: sequence number, creation time,
rendered message), written atomically with mode 0600. Sequence numbers only
grow (the next one is kept in ``next_seq``), so delivery follows creation
order. An exclusive ``flock`` on ``.lock`` serialises writers and flushers, so
two concurrent runs never deliver the same entry twice.

Entries leave the spool only after the receiver confirmed the whole session
(``Sender.confirm``: over TCP/TLS the receiver read our entire stream and
closed its side), so a receiver that is down, resets or hangs loses nothing:
the session's messages stay queued in order. Delivery is exactly once when the
session completes; only a session that breaks after the receiver read some of
it can repeat those messages next time (at least once, never lost). UDP gives
no confirmation at all. When the spool is full, enqueueing fails loudly
instead of dropping anything.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import contextlib
import json
import os
import re
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory, fsync_dir, wait_flock

_ENTRY_RE = re.compile(r"^(\d{12})\.alert$")
DEFAULT_MAX_MESSAGES = 10000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class SpoolEntry(t.NamedTuple):
    seq: int
    path: str
    created: float
    message: str


class SpoolFull(RansomeyeError):
    """The spool holds its maximum; the alert was NOT queued."""


class Spool:
    """``with Spool(dir).locked() as spool: spool.append(msg); spool.entries()...``"""

    def __init__(self, directory: str, max_messages: int = DEFAULT_MAX_MESSAGES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not directory:
            raise RansomeyeError("spool_dir is required")
        if max_messages < 1 or max_bytes < 1:
            raise RansomeyeError("spool limits must be positive")
        self.directory = os.path.abspath(directory)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock_fd: t.Optional[int] = None
        self._usage: t.Optional[t.List[int]] = None  # [entries, bytes], valid while locked

    # -- locking -------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, create: bool = True, timeout: float = 30.0) -> t.Iterator["Spool"]:
        if not os.path.isdir(self.directory):
            if not create:
                yield self
                return
            ensure_directory(self.directory, 0o700)
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            wait_flock(fd, True, timeout, lambda: RansomeyeError(
                "spool %s is locked by another run for more than %ds" % (self.directory, timeout)), poll=0.05)
            self._lock_fd = fd
            self._usage = None
            yield self
        finally:
            self._lock_fd = None
            self._usage = None
            os.close(fd)

    # -- reading -------------------------------------------------------------
    def _names(self) -> t.List[t.Tuple[int, str]]:
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = _ENTRY_RE.match(name)
            if match:
                found.append((int(match.group(1)), name))
        found.sort()
        return found

    def entries(self) -> t.List[SpoolEntry]:
        """Entries in delivery order. Unreadable entries are reported, never skipped silently."""
        result = []
        for seq, name in self._names():
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as handle:
                    record = json.loads(handle.read().decode("utf-8"))
                result.append(SpoolEntry(seq, path, float(record["created"]), str(record["message"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise RansomeyeError("spool entry %s is unreadable (%s); move it away to continue" % (path, exc))
        return result

    def count(self) -> int:
        return len(self._names())

    def size(self) -> int:
        total = 0
        for _seq, name in self._names():
            try:
                total += os.lstat(os.path.join(self.directory, name)).st_size
            except FileNotFoundError:
                continue
        return total

    # -- writing (call inside ``locked()``) ------------------------------------
    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("spool used without its lock")

    def _stored_next_seq(self) -> int:
        try:
            with open(os.path.join(self.directory, "next_seq"), "rb") as handle:
                return int(handle.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _next_seq(self) -> int:
        names = self._names()
        highest = names[-1][0] + 1 if names else 0
        return max(self._stored_next_seq(), highest, 1)

    def coalesce(self, key: t.Optional[str]) -> bool:
        """When the newest entry carries ``key``, count one more repeat on it instead of queueing a copy."""
        self._require_lock()
        names = self._names()
        if not key or not names:
            return False
        path = os.path.join(self.directory, names[-1][1])
        try:
            with open(path, "rb") as handle:
                record = json.loads(handle.read().decode("utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("key") != key:
            return False
        record["repeats"] = int(record.get("repeats") or 0) + 1
        record["last"] = time.time()
        atomic_write(path, json.dumps(record, ensure_ascii=False).encode("utf-8"), mode=0o600)
        self._usage = None
        return True

    def _dropped_path(self) -> str:
        return os.path.join(self.directory, "dropped")

    def dropped(self) -> int:
        """Alerts dropped because the spool was full, since the spool was last delivered."""
        try:
            with open(self._dropped_path(), "rb") as handle:
                return int(handle.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def note_dropped(self) -> int:
        self._require_lock()
        count = self.dropped() + 1
        atomic_write(self._dropped_path(), b"%d\n" % count, mode=0o600)
        return count

    def reset_dropped(self) -> None:
        self._require_lock()
        if os.path.exists(self._dropped_path()):
            os.unlink(self._dropped_path())

    def append(self, message: str, key: t.Optional[str] = None) -> SpoolEntry:
        """Queue ``message`` after everything already queued; ``SpoolFull`` when over a limit."""
        self._require_lock()
        record = {"created": time.time(), "message": message}
        if key:
            record["key"] = key
        data = json.dumps(dict(record, seq=0), ensure_ascii=False).encode("utf-8")
        if self._usage is None:
            self._usage = [self.count(), self.size()]
        count, used = self._usage
        if count + 1 > self.max_messages:
            raise SpoolFull("spool %s is full (%d messages, limit %d): the alert was not queued"
                            % (self.directory, count, self.max_messages), queued=count)
        if used + len(data) > self.max_bytes:
            raise SpoolFull("spool %s is full (limit %d bytes): the alert was not queued"
                            % (self.directory, self.max_bytes), queued=count)
        seq = self._next_seq()
        record["seq"] = seq
        path = os.path.join(self.directory, "%012d.alert" % seq)
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        atomic_write(path, data, mode=0o600)
        self._usage = [count + 1, used + len(data)]
        return SpoolEntry(seq, path, float(record["created"]), message)

    def remove(self, entries: t.Sequence[SpoolEntry]) -> None:
        """Forget delivered entries (durably: the directory is fsynced once afterwards)."""
        self._require_lock()
        if not entries:
            return
        # Remember where numbering goes on, so an emptied spool never reuses a number
        # (the highest existing entry covers every other case, see _next_seq).
        highest = max(entry.seq for entry in entries)
        if highest + 1 > self._stored_next_seq():
            atomic_write(os.path.join(self.directory, "next_seq"), b"%d\n" % (highest + 1), mode=0o600)
        self._usage = None
        for entry in entries:
            os.unlink(entry.path)
        fsync_dir(self.directory)


class Delivery(t.NamedTuple):
    """What happened to the messages of one run (returned by ``deliver``)."""

    sent: t.List[str]
    sent_from_spool: int
    queued_now: t.List[str]
    queued_total: int
    error: t.Optional[str]
    coalesced: int = 0
    dropped: int = 0


def deliver(
    messages: t.Sequence[str],
    open_sender: t.Optional[t.Callable[[], t.Any]],
    spool: t.Optional[Spool],
    coalesce_key: t.Optional[str] = None,
    when_full: str = "fail",
) -> Delivery:
    """Send the spool's backlog, then ``messages``, in order; queue what cannot be sent.

    ``open_sender()`` returns a context manager whose value has ``send(str)``
    and raises RansomeyeError when the receiver is unreachable; None means "no
    receiver configured": everything is queued. Without a spool an unsendable
    message is an error (nothing is dropped silently).
    """
    sent: t.List[str] = []
    error: t.Optional[RansomeyeError] = None
    from_spool = 0
    pending = list(messages)
    lock = spool.locked() if spool is not None else contextlib.nullcontext(None)
    with lock:
        if open_sender is not None:
            backlog = spool.entries() if spool is not None else []
            try:
                # One session: the backlog, then the new messages; nothing counts as delivered
                # until the receiver confirmed the whole session.
                with open_sender() as sender:
                    for entry in backlog:
                        sender.send(entry.message)
                    for message in pending:
                        sender.send(message)
                    sender.confirm()
            except RansomeyeError as exc:
                error = exc
            else:
                if spool is not None:
                    spool.remove(backlog)
                    spool.reset_dropped()
                sent = [entry.message for entry in backlog] + pending
                from_spool = len(backlog)
                pending = []
        queued_now: t.List[str] = []
        if pending:
            if spool is None:
                raise RansomeyeError(
                    "the alert could not be sent (%s) and no spool_dir is set to queue it"
                    % (error.msg if error else "no receiver"),
                    sent=len(sent), queued=0)
        coalesced = 0
        for message in pending:
            # Repeats of the newest queued alert are counted on it: a host that stays critical for a week without
            # a SIEM fills no spool.
            if spool is not None and spool.coalesce(coalesce_key):
                coalesced += 1
                continue
            try:
                spool.append(message, coalesce_key)  # type: ignore[union-attr]
            except SpoolFull as exc:
                if when_full == "drop":
                    spool.note_dropped()  # type: ignore[union-attr]
                    continue
                exc.details.update(sent=len(sent), queued=spool.count(),  # type: ignore[union-attr]
                                   receiver_error=error.msg if error else None)
                raise
            queued_now.append(message)
        total = spool.count() if spool is not None else 0
        dropped = spool.dropped() if spool is not None else 0
    return Delivery(sent, from_spool, queued_now, total, error.msg if error else None, coalesced, dropped)
