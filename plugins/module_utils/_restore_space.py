# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: is there room for a side-by-side database restore?

The restore keeps the current database (renamed ``<db>_pre_restore_<seq>``)
while it loads the backup into a new one, so the data directory needs about
one more copy of the database. Running out of space halfway through a restore
during an incident would leave the server full; this check runs before any
service stops.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

# The restored copy is rebuilt from a dump: it is about the size of the live database (fresh indexes, no bloat),
# and WAL written while loading it needs room too.
MARGIN = 1.2


def data_directory(pgu: t.Any, conn: t.Any) -> t.Optional[str]:
    """The server's data directory when this role may read it (superuser or pg_read_all_settings), else None."""
    try:
        return pgu.query_one(conn, "SELECT setting FROM pg_settings WHERE name = 'data_directory'") or None
    except Exception:  # a role without the right to read it: the check reports unknown instead of failing
        return None


def free_bytes(path: t.Optional[str]) -> t.Optional[int]:
    """Free bytes for an unprivileged writer at ``path``; None when the path is not on this host."""
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_space(needed: int, free: t.Optional[int], path: t.Optional[str]) -> dict:
    """Decide; raise when the side-by-side restore cannot fit. Unknown free space is reported, not refused."""
    want = int(needed * MARGIN)
    figures = {"needed_bytes": want, "free_bytes": free, "data_directory": path,
               "checked": free is not None}
    if free is not None and want > free:
        raise RansomeyeError(
            "not enough free space for a side-by-side restore in %s: %d MiB needed (the database and a margin), "
            "%d MiB free; free space (see the runbook's full-disk section: old <db>_pre_restore_* databases) "
            "and run again. Nothing was changed." % (path, want // 1048576, free // 1048576), space=figures)
    return figures
