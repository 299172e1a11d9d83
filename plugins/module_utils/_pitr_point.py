# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: a named restore point on demand (ransomeye_restore_point)."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu


def run_restore_point(module: t.Any) -> dict:
    params = module.params
    name = params["name"]
    if not name or len(name.encode("utf-8")) > 63 or "\n" in name:
        raise RansomeyeError("name must be 1 to 63 bytes on one line")
    pgu.require_psycopg2(module)
    if module.check_mode:
        return {"changed": True, "name": name}
    with pgu.connection(pgu.ConnInfo.from_params(params)) as conn:
        if pgu.query_one(conn, "SELECT setting FROM pg_settings WHERE name = 'wal_level'") == "minimal":
            raise RansomeyeError("wal_level is minimal: restore points need replica or logical")
        lsn = str(pgu.query_one(conn, "SELECT pg_create_restore_point(%s)::text", [name]))
        wal_file = str(pgu.query_one(conn, "SELECT pg_walfile_name(%s::pg_lsn)", [lsn]))
        when = str(pgu.query_one(conn, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"))
        if params.get("switch_wal"):
            pgu.query(conn, "SELECT pg_switch_wal()")
    return {"changed": True, "name": name, "lsn": lsn, "wal_file": wal_file, "time": when}
