#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_restore
short_description: Restore a verified RansomEye backup, with a one-rename database rollback
version_added: "0.1.0"
description:
  - Restores a backup written by M(ransomeye.ops.ransomeye_backup).
  - It verifies first (signature and key chain, hash chain, and the ciphertext SHA-256 of every object it needs, see
    O(verify_level)); a backup that fails verification is refused and no option overrides a bad signature. Every
    chunk is authenticated again while it is decrypted.
  - "V(database): restored with C(pg_restore) into a new database C(<db>_restoring_<seq>); the per-table row counts
    are compared with the manifest; connections to the current database are refused and terminated; the current
    database is renamed to C(<db>_pre_restore_<seq>) and the new one to O(db). O(state=rolled_back) renames them back
    (and drops the restored copy, which the backup can recreate)."
  - With O(jobs) > 1 the dump is staged for a parallel C(pg_restore -j) in a 0700 directory that is removed
    afterwards, even on failure. With O(jobs=1) nothing is staged, the decrypted stream goes straight to C(pg_restore).
  - V(config) and V(artifacts) are restored to their original paths, or under O(dest) (C(<dest>/<original path>)).
    No entry may escape its target; C(..), absolute member names, symlinks pointing outside the restored tree, and
    existing symlinks in the target path are refused. Every file is written atomically and its plaintext SHA-256 is
    compared with the manifest before it replaces anything.
  - Before anything changes it checks that the data directory has room for the restored copy next to the current
    database (when the login may read C(data_directory) and it is on this host); see RV(space).
  - Idempotent, a file that already has the backed-up content, mode and type is left alone; a database that already
    carries this backup's restore marker and the manifest's row counts is left alone.
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  backup:
    description:
      - Backup id to restore, or V(latest).
      - With O(state=rolled_back), a backup id here limits the rollback to the restore of that backup.
    type: str
    default: latest
  components:
    description:
      - Components to restore. Default is every component the backup holds.
    type: list
    elements: str
    choices: [database, config, artifacts]
  trusted_keys:
    description:
      - Public keys trusted to sign manifests (PEM files, directories of C(.pub) files, or signing key directories
        whose key-update chain is walked, with the key-chain position rule). Required with O(state=restored).
      - V(latest) is the newest backup whose manifest verifies; newer files that do not verify are ignored with a
        warning.
  db:
    description:
      - Name of the database to restore into (swap target). Default is the name recorded in the manifest.
    type: str
  dest:
    description:
      - Restore config and artifacts under this directory instead of their original paths. It must be absolute.
    type: path
  state:
    description:
      - V(restored) restores the backup. V(rolled_back) undoes the last database restore of O(db) by renaming
        C(<db>_pre_restore_<seq>) back (files are not rolled back).
      - With V(rolled_back) and O(backup) set to a backup id, the rollback happens only when the live database
        holds the restore of that backup; a rescue that names its own backup can never undo an earlier restore.
    type: str
    choices: [restored, rolled_back]
    default: restored
  verify_level:
    description:
      - Verification done before anything is restored. V(full) decrypts everything twice.
    type: str
    choices: [ciphertext, full]
    default: ciphertext
  jobs:
    description:
      - Parallel C(pg_restore) jobs. Above 1 the decrypted dump is staged in a 0700 temporary directory.
    type: int
    default: 1
  staging_dir:
    description:
      - Parent directory of the staging directory used with O(jobs) > 1. Default is the system temp directory.
    type: path
  certificates:
    description:
      - A certificate (C(.crt), C(.pem), C(.cer)) of the config backup that expires before the live one at the same
        path is older than it (the live one was renewed since). V(keep_newer) keeps the live certificate and its key
        (same name, C(.key)); decided before the first file is written, they are left out of the restore, so a
        restore that fails or is killed midway leaves them as they were. V(restore) brings the backup's back.
        Reported in RV(certificates) either way.
    type: str
    choices: [keep_newer, restore]
    default: keep_newer
    version_added: "0.2.0"
  keep_pre_restore:
    description:
      - After a database restore, keep only the newest this many C(<db>_pre_restore_*) databases (each is a full copy;
        the one just made, the rollback target, is always kept). V(0) keeps them all.
    type: int
    default: 3
    version_added: "0.2.0"
  credentials:
    description:
      - What to do when the C(.env) files of the backup (O(env_files)) hold other database credentials than the live
        ones, typically a backup taken before a credential rotation. This is decided before anything changes and
        reported in RV(credentials).
      - V(keep_current) restores the files and writes the live values of O(env_vars) back into them (the app keeps
        working with the role's current password).
      - V(resync_role) sets the password of the role the restored files name to theirs, as a SCRAM-SHA-256 verifier
        computed on the managed host (the plaintext never reaches the server), then proves the login.
    type: str
    choices: [keep_current, resync_role]
    default: keep_current
    version_added: "0.2.0"
  env_files:
    description:
      - The app's C(.env) files (inside the config component) whose credentials are checked; empty skips the check.
    type: list
    elements: path
    default: []
    version_added: "0.2.0"
  env_vars:
    description:
      - The variables of O(env_files) that hold the credentials (a password, or a URL with one).
    type: list
    elements: str
    default: [DB_PASSWORD, DATABASE_URL]
    version_added: "0.2.0"
attributes:
  check_mode:
    details: In check mode the backup is verified and the files and database that would change are reported.
extends_documentation_fragment:
  - ransomeye.ops.backup_keys
  - ransomeye.ops.backup_keys.decryption
  - ransomeye.ops.backup_keys.incident
  - ransomeye.ops.postgres
  - ransomeye.ops.pitr_restore
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
seealso:
  - module: ransomeye.ops.ransomeye_backup
  - module: ransomeye.ops.ransomeye_backup_verify
'''

EXAMPLES = r'''
- name: Restore the newest backup in place
  ransomeye.ops.ransomeye_restore:
    repo: /srv/backup/ransomeye
    backup: latest
    private_key: /root/dr/recipient.key
    trusted_keys: [/etc/ransomeye/keys/signing]
    db: ransomeye
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
  register: restore

- name: Roll the database back to what it was before the restore
  ransomeye.ops.ransomeye_restore:
    repo: /srv/backup/ransomeye
    db: ransomeye
    state: rolled_back
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"

- name: Restore only the artifacts under a scratch directory
  ransomeye.ops.ransomeye_restore:
    repo: /srv/backup/ransomeye
    components: [artifacts]
    dest: /srv/scratch
    key_file: /root/dr/backup.key
    trusted_keys: [/etc/ransomeye/keys/signing/active.pub]
'''

RETURN = r'''
backup_id:
  description: Id of the backup restored (or rolled back).
  returned: always
  type: str
  sample: 00000003-20261127T010000Z
seq:
  description: Sequence number of that backup.
  returned: when a backup was involved
  type: int
backup_time:
  description: When that backup was taken (end of the backup, UTC, ISO 8601; advisory, the order is RV(seq)).
  returned: with O(state=restored)
  type: str
  version_added: "0.2.0"
backup_size:
  description: Plaintext size of the backup restored, in bytes, from its manifest (also in check mode).
  returned: with O(state=restored)
  type: int
  version_added: "0.2.0"
bytes_restored:
  description: Bytes this run restored (the database dump read plus the config and artifact bytes written).
  returned: with O(state=restored)
  type: int
  version_added: "0.2.0"
duration:
  description: Seconds the whole run took (verification, key probe and restore).
  returned: with O(state=restored)
  type: float
  version_added: "0.2.0"
bytes_per_second:
  description: RV(bytes_restored) over RV(duration) (0 when too fast to measure).
  returned: with O(state=restored)
  type: int
  version_added: "0.2.0"
certificates:
  description:
    - The certificate check of the config restore. C(older_in_backup) (C(path), C(backup_not_after),
      C(live_not_after) of each certificate the backup holds in an older version), C(action) (V(none),
      V(keep_newer), V(restore)) and C(msg).
  returned: when the config component is restored in place
  type: dict
  version_added: "0.2.0"
pre_restore_dropped:
  description: The older C(<db>_pre_restore_*) databases this restore dropped (O(keep_pre_restore)).
  returned: when the database was restored
  type: list
  elements: str
  version_added: "0.2.0"
credentials:
  description:
    - The credential check of O(env_files). C(mismatch) (bool), C(env_files) (those whose credentials differ from the
      live ones), C(role), C(action) (V(none), V(keep_current), V(resync_role)) and C(msg). Never a password.
  returned: when O(env_files) is set and the config component is restored in place
  type: dict
  version_added: "0.2.0"
space:
  description:
    - The side-by-side space check of the database restore. C(needed_bytes) (the larger of the current database
      and the dump, plus a margin), C(free_bytes) and C(data_directory) (null when the login may not read it or it
      is not on this host, then C(checked) is false and nothing was refused).
  returned: when the database component is restored (also in check mode)
  type: dict
  version_added: "0.2.0"
database_swapped:
  description: On a failure, true when this run had already swapped the restored database in (roll it back).
  returned: on failure after the database step
  type: bool
  version_added: "0.2.0"
previous_db:
  description: Name the database had before the restore was moved to (C(<db>_pre_restore_<seq>)), or null when O(db)
    did not exist (or with O(state=rolled_back), the database name restored back).
  returned: always
  type: str
  sample: ransomeye_pre_restore_3
restored_db:
  description: The database that now holds the restored data (O(db)).
  returned: when the database component was restored
  type: str
tables:
  description: Row count of every table, C(schema.table) to rows, counted in the restored database.
  returned: when the database component was restored or found matching
  type: dict
  sample: {"public.alerts": 5000}
manifest_tables:
  description: The row counts the manifest recorded at backup time (compare with RV(tables)).
  returned: when the backup has a database component
  type: dict
files:
  description:
    - Every regular file of the restored config and artifacts, as the path it was restored to, mapped to the
      plaintext SHA-256 the manifest records. Hash the files and compare to prove the restore.
    - For a repository v2 component at most 10,000 paths are listed, so that a result stays small; RV(files_truncated)
      is then true and RV(stats) holds the counts.
  returned: when config or artifacts were restored
  type: dict
  sample: {"/etc/ransomeye/app.env": "5f1d...c2"}
links:
  description: Every restored symlink (restored path) mapped to its target as recorded in the manifest (bounded like RV(files)).
  returned: when config or artifacts were restored
  type: dict
files_truncated:
  description: True when RV(files) or RV(links) list only the first 10,000 paths of a large v2 component.
  returned: when a list was cut
  type: bool
  version_added: 0.2.0
manifest:
  description: Path of the manifest of the backup.
  returned: always
  type: str
stats:
  description:
    - Per component. C(database) has C(duration), C(bytes) (dump size), C(tables); C(config) and C(artifacts) have
      C(files_restored), C(files_unchanged), C(files_kept_live) (left as they are by O(certificates)),
      C(links_restored), C(dirs_created), C(bytes_written), C(duration). Each component also has
      C(bytes_per_second) (its bytes over its duration).
    - A point-in-time restore has C(base_backup_bytes), C(extract_seconds), C(recovery_seconds), C(duration),
      C(wal_read_ahead) (files decrypted and checked by the module for the server), C(wal_served_on_request) (of
      those, the ones the WAL program asked for because they were not read ahead, such as history files or a segment
      asked for again) and C(wal_read_ahead_error) (the last segment the read-ahead could not take; asked for, it is
      tried again and then refused in the server log; null). The key stays in the module, the WAL program never
      decrypts.
  returned: always
  type: dict
target:
  description: The point-in-time target, option name to value.
  returned: for a point-in-time restore
  type: dict
  sample: {"target_time": "2026-12-03T15:04:05Z"}
reachable:
  description: How far the verified archive lets replay go from the chosen base backup (C(lsn), C(last_segment),
    C(last_segment_archived_at), C(first_missing)); also returned when a target is refused.
  returned: for a point-in-time restore
  type: dict
recovery:
  description: What the server logged at the end of recovery (C(stopped), C(last_transaction_time), C(redo_done_at)).
  returned: for a point-in-time restore that ran
  type: dict
timeline:
  description: Timeline of the recovered cluster after promotion.
  returned: for a point-in-time restore that ran
  type: int
recovered_lsn:
  description: WAL position of the recovered cluster after promotion.
  returned: for a point-in-time restore that ran
  type: str
databases:
  description: Databases of the recovered cluster.
  returned: for a point-in-time restore that ran
  type: list
  elements: str
data_dir:
  description: Where the recovered cluster is (O(live_data_dir) after a swap).
  returned: for a point-in-time restore
  type: str
previous_data_dir:
  description: Where the replaced cluster was moved (C(<live_data_dir>.pre_pitr_<time>)); null without a swap.
  returned: for a point-in-time restore or its rollback
  type: str
wal_files:
  description: Number of verified WAL files handed to the recovery.
  returned: for a point-in-time restore
  type: int
unsigned_tail:
  description: Archived WAL files after the last chain signature (never handed to the recovery).
  returned: for a point-in-time restore
  type: list
  elements: str
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_options import decryption_spec, incident_spec, reader_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_restore import run_restore_module
from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_restore import pitr_argument_spec


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            backup=dict(type="str", default="latest"),
            components=dict(type="list", elements="str", choices=["database", "config", "artifacts"]),
            db=dict(type="str"),
            dest=dict(type="path"),
            state=dict(type="str", choices=["restored", "rolled_back"], default="restored"),
            verify_level=dict(type="str", choices=["ciphertext", "full"], default="ciphertext"),
            jobs=dict(type="int", default=1),
            staging_dir=dict(type="path"),
            credentials=dict(type="str", choices=["keep_current", "resync_role"], default="keep_current"),
            keep_pre_restore=dict(type="int", default=3),
            certificates=dict(type="str", choices=["keep_newer", "restore"], default="keep_newer"),
            env_files=dict(type="list", elements="path", default=[]),
            env_vars=dict(type="list", elements="str", default=["DB_PASSWORD", "DATABASE_URL"], no_log=False),
        ),
        shared_specs=[postgres_argument_spec(), pitr_argument_spec(), reader_spec(trusted_keys_required=False),
                      decryption_spec(), incident_spec()],
        supports_check_mode=True,
        mutually_exclusive=[("private_key", "key_file"),
                            ("target_time", "target_lsn", "target_xid", "target_name", "target")],
        required_if=[("state", "restored", ["trusted_keys"])],
    )
    module.run(run_restore_module)


if __name__ == "__main__":
    main()
