# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: retention of the ``<db>_pre_restore_<seq>`` databases a restore keeps.

Each one is a full copy of the database as it was before a restore (the
rollback target, and evidence after an incident), so they pile up. The newest
``keep`` are kept, ordered by the restore's backup seq and then by the
suffix a repeated restore of the same seq adds; the database the live one's
restore marker names (the rollback target) is never dropped.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import re
import typing as t


def pre_restore_databases(pgu: t.Any, conn: t.Any, db: str) -> t.List[t.Tuple[str, int]]:
    """``[(name, bytes)]`` of ``db``'s pre-restore copies, oldest first."""
    pattern = re.compile(r"^%s_pre_restore_(\d+)(?:_(\d+))?$" % re.escape(db))
    found = []
    for name, size in pgu.query(conn, "SELECT datname, pg_database_size(oid) FROM pg_database"):
        match = pattern.match(name)
        if match:
            found.append(((int(match.group(1)), int(match.group(2) or 1)), name, int(size)))
    return [(name, size) for _key, name, size in sorted(found)]


def prune(pgu: t.Any, conn: t.Any, db: str, keep: int, protect: t.Optional[str], check_mode: bool) -> t.List[str]:
    """Drop all but the newest ``keep`` copies (never ``protect``); returns the names dropped (or to drop)."""
    if keep < 1:
        return []
    copies = [name for name, _size in pre_restore_databases(pgu, conn, db)]
    doomed = [name for name in copies[:-keep] if name != protect]
    if not check_mode:
        for name in doomed:
            pgu.query(conn, pgu.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgu.ident(name)))
    return doomed
