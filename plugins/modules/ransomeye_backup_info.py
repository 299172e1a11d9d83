#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_backup_info
short_description: List the backups of a RansomEye backup repository (cheap, never decrypts)
version_added: "0.2.0"
description:
  - Lists the backups written by M(ransomeye.ops.ransomeye_backup) - id, seq, advisory time, components, sizes, row
    totals, signer, and whether the manifest verifies.
  - It reads the manifests only. It never opens an object and needs no secret; C(verified) covers the manifest
    (canonical form, signature by O(trusted_keys) with the key-chain position rule, seq range, hash chain and
    O(anchor)). Use M(ransomeye.ops.ransomeye_backup_verify) to check the stored objects too.
  - Manifest files that do not verify (planted, foreign, damaged) are listed with C(verified=false) and reported in
    RV(problems); they never hide the real backups.
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  backup:
    description:
      - Which backups to list, a backup id (or its 8-digit seq), V(latest) (the newest backup whose manifest
        verifies) or V(all).
    type: str
    default: all
  trusted_keys:
    description:
      - Public keys trusted to sign manifests (PEM files, directories of C(.pub) files, or signing key directories
        whose key-update chain is walked, with the key-chain position rule).
    required: true
attributes:
  check_mode:
    details: It only reads, so it runs the same in check mode.
extends_documentation_fragment:
  - ransomeye.ops.backup_keys
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
seealso:
  - module: ransomeye.ops.ransomeye_backup
  - module: ransomeye.ops.ransomeye_backup_verify
  - module: ransomeye.ops.ransomeye_restore
'''

EXAMPLES = r'''
- name: List the backups
  ransomeye.ops.ransomeye_backup_info:
    repo: /srv/backup/ransomeye
    trusted_keys: [/etc/ransomeye/keys/signing]
    anchor: /var/lib/ransomeye/backup-anchor.json
  register: listing

- name: Show them
  ansible.builtin.debug:
    msg: "{{ listing.backups | map(attribute='backup_id') | list }}"
'''

RETURN = r'''
backups:
  description:
    - One entry per manifest file, oldest first. C(backup_id), C(seq), C(time) (advisory end time), C(components),
      C(size) (plaintext bytes of everything the backup needs), C(stored_size) (bytes stored for it, shared objects
      included), C(rows) (total rows of the database component, null without one), C(tables) (number of tables),
      C(signer) (key id), C(verified) (the manifest verifies), C(problem) (why not) and C(manifest) (its path).
  returned: always
  type: list
  elements: dict
  sample: [{backup_id: "00000003-20261127T010000Z", seq: 3, time: "2026-11-27T01:02:11Z",
            components: [artifacts, config, database], size: 104857600, stored_size: 104901120, rows: 5040,
            tables: 4, signer: "9f2c41d0e5b7a8c3d2e1f0a9b8c7d6e5", verified: true, problem: null,
            manifest: /srv/backup/ransomeye/manifests/00000003.json}]
problems:
  description: Manifest-level problems (C(backup), C(object), C(reason), and C(detail) for C(rolled back)).
  returned: always
  type: list
  elements: dict
latest:
  description: Id of the newest backup whose manifest verifies (null when none does, or the repository is behind
    O(anchor)).
  returned: always
  type: str
count:
  description: Number of listed backups whose manifest verifies.
  returned: always
  type: int
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_options import reader_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_info import run_info_module


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            backup=dict(type="str", default="all"),
        ),
        shared_specs=[ignored_connection_spec(), reader_spec()],
        supports_check_mode=True,
    )
    module.run(run_info_module)


if __name__ == "__main__":
    main()
