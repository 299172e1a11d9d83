#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_backup_verify
short_description: Verify RansomEye backups (signatures, hash chain, objects) at three depths
version_added: "0.1.0"
description:
  - Checks backups written by M(ransomeye.ops.ransomeye_backup). It never changes anything (it takes the repository
    lock shared, so it never sees a half-written backup or a half-done prune).
  - V(quick) checks every manifest's signature against O(trusted_keys) (following the key-update chain of a key
    directory, so manifests signed by since-rotated keys still verify), the C(seq) and previous-manifest hash chain,
    the repository id, and that every object is present with the right size.
  - V(ciphertext) also computes the SHA-256 of every stored object. It needs no private key.
  - V(full) does the V(quick) checks, then decrypts and authenticates every chunk of every object and compares the
    plaintext SHA-256 and size with the manifest (a modified ciphertext cannot authenticate, so its hash is not
    recomputed). In a v2 repository it then reads every file (and the database stream) as a restore does and
    compares its SHA-256 with the one its entry records, so a backup that passes V(full) restores. It needs
    O(private_key) (rsa mode) or O(key_file) (aes mode).
  - Objects shared by several backups are read once per run.
  - Manifests that do not verify (planted, foreign, unparseable, with an out-of-range seq) are reported as problems,
    and never stop the other backups from verifying. With O(anchor), a repository behind the rollback anchor is
    reported with C(reason=rolled back), and nothing counts as verified.
  - C(repo.json) is compared with the copy signed in the newest manifest that holds one; a difference is a problem.
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  backup:
    description:
      - Which backup to verify, a backup id, V(latest) or V(all).
      - The hash chain is always checked across every manifest present.
    type: str
    default: latest
  level:
    description:
      - How deep to verify, see the description.
    type: str
    choices: [quick, ciphertext, full]
    default: quick
  trusted_keys:
    description:
      - Public keys trusted to sign manifests. Each item is a PEM public key file, a directory of C(.pub) files, or a
        signing key directory (its key-update chain is walked from the keys it holds as trust anchors).
      - With a key directory, the key-chain position rule applies (C(docs/BACKUP_FORMAT.md) section 2.5) - a manifest
        signed by a retired key after a newer key of the chain signed an earlier backup is refused.
      - O(level=full) also needs O(private_key) (rsa mode) or O(key_file) (aes mode).
    required: true
  fail_on_problems:
    description:
      - Fail the task when any problem is found. With V(false) the problems are only returned.
    type: bool
    default: true
attributes:
  check_mode:
    details: Verification reads only, so it runs the same in check mode.
extends_documentation_fragment:
  - ransomeye.ops.backup_keys
  - ransomeye.ops.backup_keys.decryption
  - ransomeye.ops.backup_keys.incident
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
seealso:
  - module: ransomeye.ops.ransomeye_backup
  - module: ransomeye.ops.ransomeye_restore
'''

EXAMPLES = r'''
- name: Weekly full verification of every backup
  ransomeye.ops.ransomeye_backup_verify:
    repo: /srv/backup/ransomeye
    backup: all
    level: full
    trusted_keys: [/etc/ransomeye/keys/signing]
    private_key: /root/dr/recipient.key

- name: Quick check of the newest backup, report only
  ransomeye.ops.ransomeye_backup_verify:
    repo: /srv/backup/ransomeye
    trusted_keys: [/etc/ransomeye/keys/signing/active.pub]
    fail_on_problems: false
  register: verify
'''

RETURN = r'''
verified:
  description: Ids of the backups that passed every check at the requested level.
  returned: always
  type: list
  elements: str
  sample: ["00000002-20261126T010000Z", "00000003-20261127T010000Z"]
problems:
  description:
    - Every problem found. C(backup) is the backup id (or the manifest file name when the manifest is unreadable),
      C(object) names the object id or C(manifest:<file>), C(reason) says what is wrong.
  returned: always
  type: list
  elements: dict
  sample: [{backup: "00000003-20261127T010000Z", object: "9f2c...e1", reason: "ciphertext SHA-256 mismatch"},
           {backup: "00000007-20261130T010000Z", object: "anchor:/srv/anchors/ransomeye.json", reason: "rolled back",
            detail: "the anchor records backup seq 7 but the newest manifest that verifies is seq 5: ..."}]
backups:
  description:
    - The backups looked at, with C(backup_id), C(seq), C(created) (advisory), C(signer), C(components) and
      C(authentic) (the manifest itself verified).
  returned: always
  type: list
  elements: dict
level:
  description: The level used.
  returned: always
  type: str
objects_checked:
  description: Number of distinct objects checked.
  returned: always
  type: int
bytes_checked:
  description: Ciphertext bytes read (levels V(ciphertext) and V(full)).
  returned: always
  type: int
duration:
  description: Seconds the verification took.
  returned: always
  type: float
  version_added: "0.2.0"
bytes_per_second:
  description: RV(bytes_checked) over RV(duration) (0 at level V(quick), or when too fast to measure).
  returned: always
  type: int
  version_added: "0.2.0"
wal:
  description:
    - The WAL archive (docs/BACKUP_FORMAT.md section 4), checked at the same O(level) as the objects. C(entries)
      and C(authentic) count chain entries; C(unsigned_tail) lists segments after the last signature;
      C(base_backups) gives, per selected base backup, C(consistent), C(replay_to_lsn) and C(last_segment)
      (how far replay from it can go). Problems name the first missing or bad segment as C(wal:<name>).
  returned: when the repository has a WAL archive
  type: dict
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_options import decryption_spec, incident_spec, reader_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import run_verify_module


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            backup=dict(type="str", default="latest"),
            level=dict(type="str", choices=["quick", "ciphertext", "full"], default="quick"),
            fail_on_problems=dict(type="bool", default=True),
        ),
        shared_specs=[ignored_connection_spec(), reader_spec(), decryption_spec(), incident_spec()],
        supports_check_mode=True,
        mutually_exclusive=[("private_key", "key_file")],
    )
    module.run(run_verify_module)


if __name__ == "__main__":
    main()
