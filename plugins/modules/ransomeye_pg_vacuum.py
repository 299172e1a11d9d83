#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_pg_vacuum
short_description: VACUUM (ANALYZE) the RansomEye tables that need it, most urgent first, within a time budget
version_added: "0.1.0"
description:
  - Runs C(VACUUM (ANALYZE)) (or C(ANALYZE), C(VACUUM (FREEZE, ANALYZE)), C(VACUUM (FULL, ANALYZE)), see O(mode)) on
    the tables listed in O(tables), or else on the user tables over a threshold, most urgent first.
  - "A table is over a threshold when its transaction-ID age (C(age(relfrozenxid)) of the table or of its TOAST table,
    whichever is older) reaches O(min_xid_age), or when it has at least O(min_dead_tuples) dead tuples that make at
    least O(min_dead_ratio) of its tuples (for O(mode=analyze): rows modified since the last analyze, against live
    rows). Urgency is the larger of xid age / O(min_xid_age) + 1 and dead ratio / O(min_dead_ratio)."
  - The connection is in autocommit (VACUUM cannot run in a transaction) and every name is quoted with
    C(psycopg2.sql.Identifier). C(lock_timeout) is set so that a table that cannot be locked within O(lock_timeout)
    is skipped (reported) instead of queueing; each statement is also limited to what is left of O(time_budget),
    and tables not reached within it are reported as skipped.
  - C(VACUUM FULL) runs only with O(allow_full=true), B(and) inside O(maintenance_window) (local time of the managed
    host, may cross midnight), B(and) when the filesystem of the table's tablespace, seen from the managed host, has at
    least O(full_space_factor) times the table's total size (with indexes and TOAST, from C(relpages) as of the last
    VACUUM or ANALYZE) free. Otherwise the table is
    reported in RV(skipped_tables) with the reason. Run the module on the database host for the space check.
  - Statistics before and after come from C(pg_stat_user_tables) (after C(pg_stat_clear_snapshot())); they are
    updated by the server asynchronously, so a table just written to may show its dead tuples a moment later.
  - C(changed) is true only when a VACUUM or ANALYZE ran.
author:
  - ransomeye.ops maintainers (@ransomeye)
attributes:
  check_mode:
    details: Reports the tables that would be processed (RV(planned)) and the statistics before; runs nothing.
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
requirements:
  - psycopg2 (or psycopg2-binary)
options:
  db:
    description:
      - Database whose tables are vacuumed. Default is O(login_db).
    type: str
  tables:
    description:
      - Tables (C(table) found on the search path, or C(schema.table)) to process whatever their statistics. When
        empty, the tables over a threshold are chosen.
    type: list
    elements: str
    default: []
  mode:
    description:
      - C(vacuum) runs C(VACUUM (ANALYZE)), C(analyze) C(ANALYZE), C(freeze) C(VACUUM (FREEZE, ANALYZE)),
        C(full) C(VACUUM (FULL, ANALYZE)) (see O(allow_full)).
    type: str
    choices: [analyze, vacuum, full, freeze]
    default: vacuum
  min_dead_ratio:
    description:
      - Dead tuples (or, for C(analyze), rows modified since analyze) as a fraction of all tuples, from 0 to 1.
    type: float
    default: 0.1
  min_dead_tuples:
    description:
      - Minimum number of dead tuples (or modified rows for C(analyze)).
    type: int
    default: 1000
  min_xid_age:
    description:
      - Transaction-ID age (table or TOAST) from which a table is vacuumed whatever its dead tuples; 0 disables.
    type: int
    default: 150000000
  maintenance_window:
    description:
      - Daily window C(HH:MM-HH:MM) in the managed host's local time, which may cross midnight (C(23:00-02:00)).
        C(VACUUM FULL) runs only inside it.
    type: str
  allow_full:
    description:
      - Allow O(mode=full). Even then it runs only inside O(maintenance_window) with enough free disk.
    type: bool
    default: false
  full_space_factor:
    description:
      - Free space required for C(VACUUM FULL), as a multiple of the table's total size.
    type: float
    default: 1.2
  lock_timeout:
    description:
      - How long to wait for a table's lock before skipping it (a duration such as C(500ms), C(5s), C(1m)).
    type: str
    default: 5s
  time_budget:
    description:
      - Stop starting new tables after this long, and cancel a table's VACUUM that would overrun it (a duration such
        as C(1h), C(30m)). Empty means no budget.
    type: str
seealso:
  - module: ransomeye.ops.ransomeye_health_info
'''

EXAMPLES = r'''
- name: Nightly VACUUM (ANALYZE) of the tables that need it
  ransomeye.ops.ransomeye_pg_vacuum:
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
    db: ransomeye
    min_dead_ratio: 0.05
    min_dead_tuples: 100
    time_budget: 1h
    lock_timeout: 5s

- name: VACUUM FULL two bloated tables, only between 02:00 and 04:00
  ransomeye.ops.ransomeye_pg_vacuum:
    login_password: "{{ ransomeye_db_admin_password }}"
    db: ransomeye
    tables: [public.events, public.alerts]
    mode: full
    allow_full: true
    maintenance_window: "02:00-04:00"
'''

RETURN = r'''
vacuumed:
  description: Tables processed, in order, with the reason they were chosen, the mode and the seconds taken.
  returned: always
  type: list
  elements: dict
  sample: [{table: public.events, reason: "5000 dead tuples (50.0%)", mode: vacuum, seconds: 0.21}]
skipped_tables:
  description: Tables chosen but not processed, with the reason (outside the window, lock timeout, time budget, disk).
  returned: always
  type: list
  elements: dict
planned:
  description: Tables chosen, most urgent first, with the reason.
  returned: always
  type: list
  elements: dict
table_stats:
  description:
    - Per chosen table, C(before) and C(after) statistics (C(after) is null in check mode) - C(n_live_tup),
      C(n_dead_tup), C(dead_ratio), C(n_mod_since_analyze), C(total_bytes), C(last_vacuum), C(last_autovacuum),
      C(last_analyze), C(last_autoanalyze), C(xid_age), C(toast_xid_age), C(max_xid_age), C(tablespace).
  returned: always
  type: dict
database_age:
  description: Wraparound age of the database - C(datfrozenxid_age) and C(datminmxid_age).
  returned: always
  type: dict
  sample: {datfrozenxid_age: 1234, datminmxid_age: 1}
in_window:
  description: Whether now is inside O(maintenance_window).
  returned: always
  type: bool
maintenance_window:
  description: The window as given, or null.
  returned: always
  type: str
db:
  description: The database processed.
  returned: always
  type: str
mode:
  description: The mode used.
  returned: always
  type: str
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec, require_psycopg2
from ansible_collections.ransomeye.ops.plugins.module_utils._vacuum import run


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            db=dict(type="str"),
            tables=dict(type="list", elements="str", default=[]),
            mode=dict(type="str", default="vacuum", choices=["analyze", "vacuum", "full", "freeze"]),
            min_dead_ratio=dict(type="float", default=0.1),
            min_dead_tuples=dict(type="int", default=1000),
            min_xid_age=dict(type="int", default=150000000),
            maintenance_window=dict(type="str"),
            allow_full=dict(type="bool", default=False),
            full_space_factor=dict(type="float", default=1.2),
            lock_timeout=dict(type="str", default="5s"),
            time_budget=dict(type="str"),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
    )
    require_psycopg2(module)
    module.run(lambda m: run(m.params, m.check_mode))


if __name__ == "__main__":
    main()
