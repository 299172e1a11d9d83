#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_restore_point
short_description: Mark a named point in the WAL to restore to (before a risky change)
version_added: "0.2.0"
description:
  - Creates a named restore point with C(pg_create_restore_point) so that
    M(ransomeye.ops.ransomeye_restore) with O(ransomeye.ops.ransomeye_restore#module:target_name) can return the
    cluster to exactly this point.
  - With O(switch_wal) (default) the server then switches to a new WAL segment, so the segment holding the restore
    point reaches the archive now instead of after C(archive_timeout).
  - Every run creates a new restore point (PostgreSQL allows several with one name; recovery stops at the first one
    after the base backup).
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  name:
    description:
      - Name of the restore point (at most 63 characters).
    type: str
    required: true
  switch_wal:
    description:
      - Switch to a new WAL segment after creating the point.
    type: bool
    default: true
attributes:
  check_mode:
    details: Reports that a restore point would be created; creates none.
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
seealso:
  - module: ransomeye.ops.ransomeye_restore
  - module: ransomeye.ops.ransomeye_wal_archive
'''

EXAMPLES = r'''
- name: Mark the database before the schema migration
  ransomeye.ops.ransomeye_restore_point:
    name: before-migration-2026-12
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
'''

RETURN = r'''
name:
  description: The restore point's name.
  returned: always
  type: str
lsn:
  description: WAL location of the restore point.
  returned: unless in check mode
  type: str
  sample: 0/3000090
wal_file:
  description: WAL segment holding the restore point.
  returned: unless in check mode
  type: str
time:
  description: Server time when the point was created (UTC, ISO 8601).
  returned: unless in check mode
  type: str
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_point import run_restore_point


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            switch_wal=dict(type="bool", default=True),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
    )
    module.run(run_restore_point)


if __name__ == "__main__":
    main()
