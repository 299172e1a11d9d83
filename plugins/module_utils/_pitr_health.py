# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the WAL archive backlog check of ransomeye_health_info.

Segments waiting for the archive command (``.ready`` files) are WAL that a
point-in-time restore cannot reach yet; while the repository is unreachable
(full disk, permission denied) the count grows, and the server keeps them.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import make_check
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import query


def archive_checks(conn: t.Any, info: t.Any, thresholds: t.Any) -> t.List[dict]:
    """``pg_wal_archive_ready``: WAL files waiting to be archived (only when archiving is on, on a primary)."""
    mode, in_recovery = query(conn, "SELECT current_setting('archive_mode'), pg_is_in_recovery()")[0]
    if mode == "off" or in_recovery:
        return []
    ready = query(conn, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%%.ready'")[0][0]
    stats = query(conn, """
        SELECT failed_count, last_failed_wal, last_archived_wal,
               extract(epoch FROM now() - last_archived_time)::float8,
               coalesce(last_failed_time > last_archived_time OR
                        (last_failed_time IS NOT NULL AND last_archived_time IS NULL), false)
        FROM pg_stat_archiver""")[0]
    failed_count, last_failed, last_archived, age, failing = stats
    return [make_check("pg_wal_archive_ready", float(ready), thresholds, target=info.describe(),
                       failing=bool(failing), failed_count=int(failed_count or 0), last_failed_wal=last_failed,
                       last_archived_wal=last_archived,
                       last_archived_age_seconds=round(float(age), 1) if age is not None else None)]
