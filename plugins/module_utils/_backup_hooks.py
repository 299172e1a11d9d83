# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the crash-test hook of ransomeye_backup and ransomeye_restore (test use only).

``RANSOMEYE_BACKUP_TEST_HOOK=<point>:<action>`` makes the backup send itself
SIGKILL (action ``kill``) or kill its pg_dump child (``kill_pg_dump``) when it
reaches ``point``: ``dump_started`` (pg_dump just started), ``during_dump``
(first chunk of the dump read), ``during_artifacts``, ``pack_sealed`` (a v2
pack was renamed into objects/), ``index_written`` (the v2 run's index is in
place), ``before_manifest``, ``after_manifest`` (manifest durable, v2 host-local
cache not yet rewritten); and in a restore, ``file_restored`` (right after each
config/artifact file it wrote is in place). Unset (always, in production) it
does nothing.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import signal
import time
import typing as t

HOOK_ENV = "RANSOMEYE_BACKUP_TEST_HOOK"


def hook(point: str, child: t.Any = None) -> None:
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    wanted, _sep, action = spec.partition(":")
    if wanted != point:
        return
    if action == "kill_pg_dump" and child is not None:
        child.send_signal(signal.SIGKILL)
        child.wait()
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # never reached: SIGKILL cannot be caught
