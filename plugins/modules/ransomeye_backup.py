#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_backup
short_description: Encrypted, signed, deduplicated backup of the RansomEye database, config and artifacts
version_added: "0.1.0"
description:
  - Backs up any subset of three components into a backup repository (format in C(docs/BACKUP_FORMAT.md)).
  - V(database) runs C(pg_dump -Fc) and streams its output straight into an encrypted container; no plaintext dump
    ever touches the disk. The dump and the per-table row counts come from one exported snapshot, so the counts
    recorded in the manifest are exactly those of the dump. A failed or killed C(pg_dump) (non-zero exit status or an
    error on its stderr) fails the task and never becomes a backup.
  - V(config) stores a deterministic tar of O(config_paths) (modes, owners, symlinks kept as links).
  - V(artifacts) is incremental and deduplicated across all backups of the repository. Files are identified by a keyed
    hash of their content, so identical content is stored once. Unchanged files are skipped by a stat cache
    (size, mtime, ctime, inode) with a small random forced rehash each run and a full rehash when timestamps look wrong.
  - Every object is encrypted (AES-256-GCM in 1 MiB authenticated chunks). With O(mode=rsa) the file key is wrapped for
    each public key in O(recipients), so the backup host holds no secret able to decrypt. With O(mode=aes) it is
    wrapped with the 256-bit key in O(key_file).
  - One manifest per backup is written last and atomically, signed with O(signing_key). It carries a monotonic C(seq),
    the SHA-256 of the previous manifest, the signer key id, advisory wall-clock times, tool and PostgreSQL versions,
    the plaintext and ciphertext SHA-256 and size of every object, per-file hashes and per-table row counts.
  - A repository lock serialises concurrent runs. Retention (O(keep_last), O(keep_within), O(keep_daily),
    O(keep_weekly), O(keep_monthly)) and a crash-safe mark-and-sweep prune run after the new manifest is durable.
  - Only manifests that verify count - for the next C(seq) (the highest verified seq plus one, stepping over files
    that do not verify), for the previous-manifest hash, for reuse of stored artifacts and for retention.
    The manifest also records which seqs retention keeps and a signed copy of C(repo.json).
  - "Test hook: when the environment variable C(RANSOMEYE_BACKUP_TEST_HOOK) is set to C(<point>:kill) the module sends
    itself SIGKILL at that point (C(during_dump), C(during_artifacts), C(before_manifest), C(after_manifest));
    C(dump_started:kill_pg_dump) or C(during_dump:kill_pg_dump) kills the C(pg_dump) child instead. Used by the
    crash tests only."
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  repo:
    description:
      - Directory of the backup repository. Created (mode 0700) when missing.
      - It must not be inside O(config_paths) or O(artifact_paths), nor hold one of them; the backup refuses
        before it writes anything.
    type: path
    required: true
  components:
    description:
      - Which components to back up.
      - V(physical) is a base backup of the whole cluster for point-in-time recovery (C(pg_basebackup) streamed
        into an encrypted container; needs M(ransomeye.ops.ransomeye_wal_archive) into the same repository).
    type: list
    elements: str
    choices: [database, config, artifacts, physical]
    default: [database, config, artifacts]
  db:
    description:
      - Name of the database to dump. Required when O(components) contains V(database).
    type: str
  config_paths:
    description:
      - Files and directories of the configuration tree. Required when O(components) contains V(config).
      - Symlinks are stored as links, never followed; the walk stays on one filesystem.
    type: list
    elements: path
    default: []
  artifact_paths:
    description:
      - Directories (or files) of forensic artifacts. Required when O(components) contains V(artifacts).
    type: list
    elements: path
    default: []
  mode:
    description:
      - V(rsa) encrypts to the public keys in O(recipients) (RSA-OAEP-SHA256 wraps each object's file key).
      - V(aes) wraps the file keys with the 256-bit key in O(key_file).
    type: str
    choices: [rsa, aes]
    default: rsa
  recipients:
    description:
      - PEM public keys (RSA) able to decrypt the backup. Required with O(mode=rsa).
    type: list
    elements: path
  key_file:
    description:
      - A 256-bit key file (32 raw bytes, 64 hex characters or base64). Required with O(mode=aes).
    type: path
  signing_key:
    description:
      - PEM private key that signs the manifest, or a signing key directory (its C(active.key) is used),
        as maintained by M(ransomeye.ops.ransomeye_rotate_signing_keys).
    type: path
    required: true
  signing_key_passphrase:
    description:
      - Passphrase of O(signing_key), when it is encrypted.
    type: str
  keep_last:
    description:
      - Retention, like restic's C(forget) policies - a backup is removed only when no C(keep_*) rule keeps it; with no
        C(keep_*) option everything is kept. After the new manifest is durable, the manifests of removed backups are
        deleted, then every object that no remaining manifest references.
      - Only manifests that verify (signed by O(signing_key), its key chain or O(trusted_keys)) are counted and ever
        removed. Planted, foreign or damaged manifest files are reported in a warning and left in place.
      - O(keep_last) keeps the newest N backups by C(seq), never by wall-clock time.
      - The new backup is always kept. RV(retention) reports what each rule kept, and in check mode what would be
        removed.
    type: int
  keep_within:
    description:
      - Keep every backup whose advisory time is within this duration (V(30d), V(12h), ...) of the newest backup.
      - Time rules are decided in seq order and never trust a clock that can lie - a backup whose time is later than
        that of a backup with a higher seq (the clock went backwards, or it is dated in the future) cannot be judged
        by time and is kept.
    type: str
    version_added: "0.2.0"
  keep_daily:
    description:
      - Keep the newest backup of each of the last N UTC days that have backups (see O(keep_within) for the clock).
    type: int
    version_added: "0.2.0"
  keep_weekly:
    description:
      - Keep the newest backup of each of the last N ISO weeks that have backups.
    type: int
    version_added: "0.2.0"
  keep_monthly:
    description:
      - Keep the newest backup of each of the last N months that have backups.
    type: int
    version_added: "0.2.0"
  trusted_keys:
    description:
      - More public keys (PEM files, directories of C(.pub) files or signing key directories) whose manifests count
        as this repository's backups, besides O(signing_key) and, when O(signing_key) is a key directory, its key
        chain. Use it after replacing a bare PEM signing key, so that older backups keep counting for retention.
    type: list
    elements: path
    version_added: "0.2.0"
  anchor:
    description:
      - Path of the rollback anchor, a small state file kept outside the repository (on the controller or the vault)
        recording the highest seq and its manifest SHA-256. Created on first use, raised atomically after each
        backup.
      - A repository behind it (newest manifests deleted, or an older copy put in place) makes the backup fail with
        C(rolled back) instead of writing over the evidence; move the anchor away to accept such a state on purpose.
      - Give the same path to M(ransomeye.ops.ransomeye_backup_verify) and M(ransomeye.ops.ransomeye_restore).
    type: path
    version_added: "0.2.0"
  max_age:
    description:
      - Skip the backup (C(changed=false)) when the newest complete backup, whose signature verifies with
        O(signing_key), is younger than this (V(30d), V(12h), V(15m), V(45s) or a number of days).
      - A newest backup dated in the future (the clock went backwards) never counts as fresh.
    type: str
  lock_timeout:
    description:
      - Seconds to wait for the repository lock held by another run before failing.
    type: int
    default: 300
  rehash_percent:
    description:
      - Percentage of the artifacts skipped by the stat cache that are re-read and re-hashed anyway each run.
    type: float
    default: 2.0
  wal_wait_timeout:
    description:
      - Seconds the V(physical) component waits for the WAL segment holding the base backup's end to reach the
        archive; the backup is recorded only then.
    type: int
    default: 120
    version_added: "0.2.0"
  format:
    description:
      - Repository format of the C(database), C(config) and C(artifacts) components.
      - V(v2) stores them as per-directory trees of deduplicated, compressed blobs in packs, reads each
        unchanged file not at all and each changed file once, and stores nothing new when nothing changed
        (docs/BACKUP_FORMAT.md section 5). V(v1) writes the version 1 layout (a config tar, one object per artifact).
      - Both can live in one repository; running with V(v2) on a repository written by V(v1) is the migration
        step, and every earlier v1 backup stays verifiable and restorable.
      - With V(v2) the C(database) dump (C(pg_dump --compress=0), streamed) is cut into keyed content-defined
        chunks stored in the same packs and compressed there, so a nightly dump of a mostly unchanged database
        adds only its changed chunks (docs/BACKUP_FORMAT.md sections 5.11 and 5.12). V(v1) stores each dump as
        one compressed object.
    type: str
    choices: [v1, v2]
    default: v2
    version_added: "0.2.0"
  cache_dir:
    description:
      - Host-local directory of the v2 cache (the trees of the last backup, authenticated with a MAC) and of the
        host secret that keys blob ids in rsa mode. It must not be inside the repository, nor inside
        O(config_paths) or O(artifact_paths).
      - Defaults to C(~/.cache/ransomeye.ops/backup) of the user running the module. Losing it only makes the next
        backup read every file once.
    type: path
    version_added: "0.2.0"
attributes:
  check_mode:
    details: In check mode nothing is written; the result says whether a backup would be taken (see O(max_age)).
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
notes:
  - The manifest records plaintext SHA-256 digests and the paths of backed-up files (needed by the restore drill);
    protect the repository against reading like any other inventory of the host.
seealso:
  - module: ransomeye.ops.ransomeye_backup_verify
  - module: ransomeye.ops.ransomeye_restore
'''

EXAMPLES = r'''
- name: Nightly backup of everything, encrypted to the DR team's public key
  ransomeye.ops.ransomeye_backup:
    repo: /srv/backup/ransomeye
    components: [database, config, artifacts]
    db: ransomeye
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
    config_paths: [/etc/ransomeye]
    artifact_paths: [/var/lib/ransomeye/artifacts]
    mode: rsa
    recipients: [/etc/ransomeye/backup/recipient.pub]
    signing_key: /etc/ransomeye/keys/signing
    keep_last: 3
    keep_daily: 14
    keep_monthly: 6
    anchor: /var/lib/ransomeye/backup-anchor.json
    max_age: 20h

- name: Config only, with a symmetric key file
  ransomeye.ops.ransomeye_backup:
    repo: /srv/backup/ransomeye
    components: [config]
    config_paths: [/etc/ransomeye]
    mode: aes
    key_file: /etc/ransomeye/backup/backup.key
    signing_key: /etc/ransomeye/keys/signing/active.key
'''

RETURN = r'''
backup_id:
  description: Id of the new backup (C(<seq 8 digits>-<UTC time>)); the newest existing one when skipped.
  returned: always
  type: str
  sample: 00000003-20261127T180102Z
seq:
  description: Monotonic sequence number of the backup in this repository.
  returned: always
  type: int
  sample: 3
manifest:
  description: Path of the signed manifest.
  returned: always
  type: str
  sample: /srv/backup/ransomeye/manifests/00000003.json
manifest_sha256:
  description: SHA-256 of the manifest file (the next manifest records it as C(prev_manifest_sha256)).
  returned: when a backup was taken or found fresh
  type: str
up_to_date:
  description: True when O(max_age) found a fresh complete backup and nothing was done (C(changed=false)).
  returned: always
  type: bool
reason:
  description: Why the backup was taken or skipped.
  returned: always
  type: str
tables:
  description: Row count of every table in the dump, C(schema.table) to rows, counted in the dump's snapshot.
  returned: when the database component was backed up
  type: dict
  sample: {"public.alerts": 5000, "public.hosts": 40}
stats:
  description:
    - Per component (C(database), C(config), C(artifacts)) and C(total).
    - Keys C(bytes_read) (plaintext read), C(bytes_stored) (ciphertext written), C(bytes_deduplicated)
      (plaintext not stored again because identical content already was), C(files_new), C(files_changed),
      C(files_unchanged), C(files_rehashed), C(cache_mismatches), C(objects_new), C(objects_reused), C(duration)
      (seconds).
    - C(cache_mismatches) counts files picked for rehashing (O(rehash_percent)) whose content was not what the
      cache recorded although their size, times and inode were unchanged; none of the cache was trusted for
      their directories (v2) or for the rest of the run (v1), and the run warns.
    - A C(database) stored with O(format=v2) also has C(chunks) (content-defined chunks of the dump) and
      C(segments); its C(objects_new) counts the chunks stored by this run, C(bytes_deduplicated) the dump bytes
      already in the repository.
  returned: always
  type: dict
  sample:
    artifacts: {bytes_read: 2097152, bytes_stored: 1048700, bytes_deduplicated: 1048576, files_new: 1,
                files_changed: 0, files_unchanged: 300, files_rehashed: 6, cache_mismatches: 0, objects_new: 1,
                objects_reused: 301,
                duration: 0.41}
pruned:
  description:
    - What retention removed (in check mode, would remove), C(manifests) (backup ids), C(objects) and C(bytes).
    - C(wal) (C(segments), C(bytes)) when the repository has a WAL archive; WAL that the oldest retained base
      backup needs is never removed.
  returned: always
  type: dict
  sample: {manifests: ["00000001-20261120T010000Z"], objects: 12, bytes: 48213}
retention:
  description:
    - The retention decision, C(policy) (the C(keep_*) options given), C(kept) (each kept backup with C(backup_id),
      C(seq) and the C(reasons) that kept it), C(removed) (C(backup_id), C(seq)) and C(notes) (for example backups
      whose time cannot be judged).
  returned: when a backup was taken or would be taken
  type: dict
  sample: {policy: {keep_daily: 7}, kept: [{backup_id: "00000009-20261203T010000Z", seq: 9, reasons: ["newest",
           "daily 2026-12-03"]}], removed: [{backup_id: "00000001-20261120T010000Z", seq: 1}], notes: []}
clock_went_backwards:
  description: True when the wall clock is earlier than the previous backup's advisory time (ordering uses C(seq)).
  returned: when a backup was taken
  type: bool
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._pg_spec import postgres_argument_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            repo=dict(type="path", required=True),
            components=dict(type="list", elements="str", choices=["database", "config", "artifacts", "physical"],
                            default=["database", "config", "artifacts"]),
            db=dict(type="str"),
            config_paths=dict(type="list", elements="path", default=[]),
            artifact_paths=dict(type="list", elements="path", default=[]),
            mode=dict(type="str", choices=["rsa", "aes"], default="rsa"),
            recipients=dict(type="list", elements="path"),
            key_file=dict(type="path", no_log=False),
            signing_key=dict(type="path", required=True, no_log=False),
            signing_key_passphrase=dict(type="str", no_log=True),
            keep_last=dict(type="int"),
            keep_within=dict(type="str"),
            keep_daily=dict(type="int"),
            keep_weekly=dict(type="int"),
            keep_monthly=dict(type="int"),
            trusted_keys=dict(type="list", elements="path", no_log=False),
            anchor=dict(type="path"),
            max_age=dict(type="str"),
            lock_timeout=dict(type="int", default=300),
            rehash_percent=dict(type="float", default=2.0),
            wal_wait_timeout=dict(type="int", default=120),
            format=dict(type="str", choices=["v1", "v2"], default="v2"),
            cache_dir=dict(type="path"),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
        required_if=[("mode", "rsa", ["recipients"]), ("mode", "aes", ["key_file"])],
    )
    module.run(run_backup)


if __name__ == "__main__":
    main()
