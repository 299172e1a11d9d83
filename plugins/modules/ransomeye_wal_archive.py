#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ransomeye_wal_archive
short_description: Continuous, encrypted, signed WAL archiving into the backup repository
version_added: "0.2.0"
description:
  - Enables (or disables) PostgreSQL WAL archiving into the C(wal/) area of a backup repository written by
    M(ransomeye.ops.ransomeye_backup), for point-in-time recovery (docs/BACKUP_FORMAT.md, section 4).
  - Installs the collection's WAL program in O(program_dir). The program is the collection's own module_utils code
    (the encrypted container and signing code the modules use) installed beside a small launcher, not a copy of it.
  - Sets C(archive_mode), C(archive_command) and C(archive_timeout) through C(ALTER SYSTEM) and reloads; a changed
    C(archive_mode) needs a server restart, reported as RV(restart_required). C(wal_level=minimal) is raised to
    C(replica).
  - Before C(archive_command) is changed, the installed program runs its own check as O(os_user) (it must read its
    config and keys and write into the repository); when it cannot, the module fails and the server is untouched.
  - The archive command compresses (zstd, or zlib without the C(zstandard) library, where it pays) and encrypts every WAL segment and timeline history file,
    fsyncs the file and its directory, appends an entry line to the append-only log of a hash chain (signed every
    O(sign_every) entries) and only then exits 0. It exits 0 for a
    segment already archived with identical content and fails loudly for different content. It gives up after
    O(command_timeout) seconds with one C(ransomeye-wal:) line in the server log; PostgreSQL keeps the WAL and
    retries.
  - No secret is ever on a command line; the program's config file names key files only.
author:
  - ransomeye.ops contributors (@ransomeye)
options:
  state:
    description:
      - V(enabled) installs the program and turns archiving on.
      - V(disabled) sets C(archive_mode=off) (effective after a restart; until then archiving continues, so no WAL
        is lost). The program and the archive are left in place.
    type: str
    choices: [enabled, disabled]
    default: enabled
  repo:
    description:
      - Directory of the backup repository (created when missing). The WAL goes to C(<repo>/wal/), owned by
        O(os_user); the repository root gets group O(os_user) and C(g+x) so that the server can reach it.
      - Every directory above it must be traversable by O(os_user).
    type: path
    required: true
  mode:
    description:
      - V(rsa) encrypts to O(recipients) (the host cannot read its own archive); V(aes) uses O(key_file).
    type: str
    choices: [rsa, aes]
    default: rsa
  recipients:
    description:
      - PEM public keys able to decrypt the archive. Required with O(mode=rsa) and O(state=enabled). Must be readable by O(os_user).
    type: list
    elements: path
  key_file:
    description:
      - 256-bit key file. Required with O(mode=aes) and O(state=enabled). Must be readable by O(os_user).
    type: path
  signing_key:
    description:
      - Unencrypted PEM private key that signs the WAL hash chain. Must be readable by O(os_user); a key dedicated
        to WAL signing is recommended (verifiers trust it like any other key in C(trusted_keys)).
      - Required with O(state=enabled).
    type: path
  archive_timeout:
    description:
      - Seconds after which the server switches to a new WAL segment when there was activity, bounding the
        recovery point objective. V(0) disables it.
    type: int
    default: 60
  sign_every:
    description:
      - Sign every Nth chain entry (history and backup-label files are always signed). V(1) signs every segment,
        so restore to the newest segment needs no trust in unsigned entries; higher values cut the signing cost
        with slow (RSA) keys, and the unsigned tail after the last signature is reported by verify and refused
        by restore.
    type: int
    default: 1
  command_timeout:
    description:
      - Seconds one run of the archive command may take before it gives up (exit 1, WAL kept by the server).
    type: int
    default: 60
  look_ahead:
    description:
      - When PostgreSQL has a backlog, one run of the archive command also archives up to this many later
        segments already marked C(.ready) (in order, each durable and entered in the chain like a run of its own,
        within a quarter of O(command_timeout)), and leaves a marker for each in C(<program_dir>/spool/). The
        server's own call for such a segment is then answered from the marker without starting the full program,
        after checking that the WAL file, the config and the stored file are the ones the marker names.
      - V(0) turns it off (one segment per run, as the server hands them over).
    type: int
    default: 8
    version_added: "0.2.0"
  resident_idle:
    description:
      - The first run of the archive command that does the whole push also starts a resident archiver, one
        process as O(os_user) that runs later pushes in full for the server's calls, which then only connect to it
        over a Unix socket in C(<program_dir>/run/) and wait for its answer. This saves the interpreter's start-up
        and the loading of C(cryptography), most of the CPU time of a push.
      - The answer comes only after the segment and its chain entry are durable; a call whose archiver dies or
        asks it to run the push itself (the program or config changed) runs the whole push itself, and a call
        whose archiver does not answer within O(command_timeout) plus 10 seconds stops it and fails (the server
        keeps the segment and retries).
      - The archiver exits after this many seconds without a segment, after a failed push, when its config is
        removed, when the cluster that started it is stopped (no C(postmaster.pid)), and when this module changes
        the program or turns archiving off. V(0) turns it off (every call runs the whole push).
    type: int
    default: 300
    version_added: "0.2.0"
  program_dir:
    description:
      - Where the program, the module_utils it runs and its C(archive.json) config are installed.
    type: path
    default: /usr/local/lib/ransomeye-ops/wal
  python:
    description:
      - Interpreter for the program (needs the C(cryptography) library; with C(zstandard) too, WAL is stored in
        zstd frames, else in zlib frames). Default is the interpreter running this module.
    type: path
  os_user:
    description:
      - OS user the PostgreSQL server runs as.
    type: str
    default: postgres
attributes:
  check_mode:
    details: Reports the files and settings that would change; writes nothing and changes no setting.
  diff_mode:
    details: The settings before and after.
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
notes:
  - The server must be restarted once after the first enable (C(archive_mode) is a start-up setting).
seealso:
  - module: ransomeye.ops.ransomeye_backup
  - module: ransomeye.ops.ransomeye_restore
'''

EXAMPLES = r'''
- name: Archive WAL continuously, encrypted to the DR team's key
  ransomeye.ops.ransomeye_wal_archive:
    repo: /srv/backup/ransomeye
    mode: rsa
    recipients: [/etc/ransomeye/backup/recipient.pub]
    signing_key: /etc/ransomeye/keys/wal-signing.key
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
  register: wal
  notify: restart postgresql

- name: Turn archiving off (after the next restart)
  ransomeye.ops.ransomeye_wal_archive:
    state: disabled
    repo: /srv/backup/ransomeye
    login_host: 127.0.0.1
'''

RETURN = r'''
settings:
  description: Settings changed (or that would change), name to C(before) and C(after) (pending configuration).
  returned: always
  type: dict
  sample: {"archive_mode": {"before": "off", "after": "on"}}
restart_required:
  description: True when a changed start-up setting (C(archive_mode), C(wal_level)) is not running yet.
  returned: always
  type: bool
reload_required:
  description: True when a reloadable setting changed (the module reloads the server itself).
  returned: always
  type: bool
archive_mode_running:
  description: The C(archive_mode) the server runs with now.
  returned: always
  type: str
program:
  description: Path of the installed program.
  returned: when O(state=enabled)
  type: str
config:
  description: Path of the program's config file (names the repository and key files; no secret).
  returned: when O(state=enabled)
  type: str
installed:
  description: Files of the program (relative to O(program_dir)) written or that would be written.
  returned: when O(state=enabled)
  type: list
  elements: str
system_identifier:
  description: The database system identifier this repository's WAL archive is bound to.
  returned: when O(state=enabled)
  type: str
resident_archiver:
  description:
    - The resident archiver of this O(program_dir) as the run leaves it (see O(resident_idle)); stopping it or
      finding none is never an error, as every call of the archive command can run the whole push itself.
    - After a run that changed the program or config, or with O(state=disabled), it is not running; the
      server's next archive call starts a new one. In check mode, the one running now (nothing is stopped).
  returned: always
  type: dict
  contains:
    running:
      description: Whether an archiver answers on C(<program_dir>/run/archiver.sock).
      type: bool
      returned: always
    pid:
      description: Its process id, from the socket's peer credentials; null when none runs.
      type: int
      returned: always
  sample: {"running": true, "pid": 4242}
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import postgres_argument_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._wal_archive import run_wal_archive


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            state=dict(type="str", choices=["enabled", "disabled"], default="enabled"),
            repo=dict(type="path", required=True),
            mode=dict(type="str", choices=["rsa", "aes"], default="rsa"),
            recipients=dict(type="list", elements="path"),
            key_file=dict(type="path", no_log=False),
            signing_key=dict(type="path", no_log=False),
            archive_timeout=dict(type="int", default=60),
            sign_every=dict(type="int", default=1),
            command_timeout=dict(type="int", default=60),
            look_ahead=dict(type="int", default=8),
            resident_idle=dict(type="int", default=300),
            program_dir=dict(type="path", default="/usr/local/lib/ransomeye-ops/wal"),
            python=dict(type="path"),
            os_user=dict(type="str", default="postgres"),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
        required_if=[("state", "enabled", ["signing_key"])],
    )
    module.run(run_wal_archive)


if __name__ == "__main__":
    main()
