#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_rotate_db_creds
short_description: Rotate the database password of RansomEye's services without ever leaving the database and the .env files disagreeing
version_added: "0.1.0"
description:
  - Draws a new random password from Python's C(secrets) module and sets it on the role through a SCRAM-SHA-256 verifier
    computed on the managed host, so the plaintext never reaches the PostgreSQL server, its log or C(pg_stat_statements).
  - "Updates every given C(.env) file: the variables in O(env_vars) (a plain password variable such as C(DB_PASSWORD), or
    the password part of a URL such as C(DATABASE_URL), URL-encoded). Comments, ordering, quoting, mode and owner and every
    other variable are preserved; each file is replaced atomically."
  - "The steps are: check that the current credentials in the files work; stage the new files (temp files next to them);
    change the role's password; prove a login with the new password; swap the files in (atomic renames). Any failure rolls
    back: the role gets its old verifier back (read from C(pg_authid), no plaintext needed) and the files their old content,
    so a login with the password in the files always works."
  - With O(strategy=alternating) two login roles take turns. The module rotates the role the files do not use and switches
    the files to it, so services still running with the other role keep working until they are restarted (zero downtime).
  - The time of the last rotation (never the secret) is kept in O(state_file); the module rotates only when that is older
    than O(max_age), or with O(force).
  - The password is never returned, logged or put on a command line; the module starts no child process.
author:
  - ransomeye.ops contributors (@ransomeye)
attributes:
  check_mode:
    details: Reports which files and roles would change; connects read-only and changes nothing.
  diff_mode:
    details: The env files before and after, with both passwords replaced by C(CURRENT-PASSWORD-REDACTED) and
      C(NEW-PASSWORD-REDACTED), and every other secret-looking value (names with PASSWORD, SECRET, TOKEN, KEY,
      AUTH...; the password of any URL) replaced by C(SECRET-REDACTED); no secret ever appears in the diff. Without
      diff mode no diff is returned.
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
options:
  role:
    description:
      - The login role of the services whose password is rotated.
      - With O(strategy=alternating), the first of the two roles.
    type: str
    required: true
  alternate_role:
    description:
      - The second login role for O(strategy=alternating). Defaults to O(role) with C(_b) appended.
    type: str
  strategy:
    description:
      - V(in_place) changes the password of O(role). Running services keep their connections but new connections with the old
        password fail until the services are restarted with the new files.
      - V(alternating) changes the password of whichever of O(role) and O(alternate_role) the files do not use, and switches
        the files (user and password) to it.
    type: str
    choices: [in_place, alternating]
    default: in_place
  env_files:
    description:
      - The C(.env) files that hold the credentials. All of them must agree on the current password and user.
    type: list
    elements: path
    required: true
  env_vars:
    description:
      - The variables that hold the password. A variable whose value is a URL (C(scheme://user:password@host/db)) gets its
        password part replaced (URL-encoded); any other variable is replaced by the password.
      - Variables missing from a file are skipped, but each file must set at least one of them.
    type: list
    elements: str
    default: [DB_PASSWORD, DATABASE_URL]
  user_vars:
    description:
      - Variables that hold the user name; updated (with the user part of URLs) when O(strategy=alternating) switches roles.
    type: list
    elements: str
    default: [DB_USER]
  db:
    description:
      - Database used to check the current and the new credentials. Defaults to the database in the first URL found in
        O(env_vars), else O(login_db).
    type: str
  password_length:
    description:
      - Length of the new password. Its alphabet is letters, digits, C(-) and C(_) (safe in URLs and C(.env) files
        without quoting).
    type: int
    default: 32
  max_age:
    description:
      - Rotate only when the last recorded rotation is older than this (C(90d), C(12h), or a number of days).
    type: str
    default: 90d
  force:
    description:
      - Rotate even when the last rotation is younger than O(max_age).
    type: bool
    default: false
  backup:
    description:
      - Keep a timestamped copy of each C(.env) file before replacing it, in O(backup_dir).
    type: bool
    default: false
  backup_dir:
    description:
      - Directory of the backup copies (created 0700; a symlink is refused). Default is C(.env-backups) next to each
        C(.env) file. The copies hold passwords, so they never stay next to the files.
    type: path
    version_added: "0.2.0"
  backup_keep:
    description:
      - Keep only the newest this many copies of each C(.env) file (0 keeps all).
    type: int
    default: 5
    version_added: "0.2.0"
  state_file:
    description:
      - JSON file recording the last rotation (time, active role; no secret).
      - Defaults to C(.ransomeye-db-creds-<role>.json) in the directory of the first of O(env_files).
    type: path
notes:
  - Two runs never interleave; a run holds an flock on O(state_file) with C(.lock) appended, and a second one fails
    clearly after waiting 10 seconds.
  - The admin login (O(login_user)) needs C(CREATEROLE) (or superuser). Reading the old verifier for the rollback uses
    C(pg_authid) (superuser); without it, an O(strategy=in_place) rollback recomputes a verifier from the old password in
    the files.
  - For testing only, the environment variable C(RANSOMEYE_TEST_FAIL_AT) set to a step name (C(check), C(stage), C(alter),
    C(verify), C(swap), C(record)) makes the rotation fail right after that step, and C(RANSOMEYE_TEST_FAIL_RESTORE=1)
    makes restoring the old password fail too.
  - Should the old password not go back (the server went away mid-rotation), the files are made to agree with the
    password that logs in now (the new one, so the rotation rolls forward), and the task fails saying so.
seealso:
  - module: ransomeye.ops.ransomeye_rotate_signing_keys
  - module: ransomeye.ops.ransomeye_cert_renew
'''

EXAMPLES = r'''
- name: Rotate the app password when older than 90 days
  ransomeye.ops.ransomeye_rotate_db_creds:
    login_host: 127.0.0.1
    login_user: postgres
    login_password: "{{ ransomeye_db_admin_password }}"
    role: ransomeye_app
    env_files:
      - /etc/ransomeye/app.env
      - /etc/ransomeye/worker.env
    max_age: 90d
  notify: Restart RansomEye services

- name: Zero-downtime rotation between ransomeye_app and ransomeye_app_b
  ransomeye.ops.ransomeye_rotate_db_creds:
    login_password: "{{ ransomeye_db_admin_password }}"
    role: ransomeye_app
    alternate_role: ransomeye_app_b
    strategy: alternating
    env_files: "{{ ransomeye_env_files }}"
    force: true
'''

RETURN = r'''
rotated:
  description: Whether a password was changed (false in check mode).
  returned: always
  type: bool
reason:
  description: Why the module rotated or not.
  returned: always
  type: str
  sample: last rotation is 91.2 days old
role:
  description: The role whose password is (or would be) rotated.
  returned: always
  type: str
  sample: ransomeye_app
active_role:
  description: The role the files use after the run.
  returned: always
  type: str
previous_role:
  description: The role the files used before the run.
  returned: always
  type: str
env_files_changed:
  description: The C(.env) files that were (or would be) rewritten.
  returned: always
  type: list
  elements: str
backup_files:
  description: Backup copies of the C(.env) files, when O(backup=true).
  returned: always
  type: list
  elements: str
state_file:
  description: The file recording the last rotation.
  returned: always
  type: str
rotated_at:
  description: UTC time of the last rotation, if any is recorded.
  returned: always
  type: str
  sample: "2026-11-27T18:00:00Z"
'''

from ansible_collections.ransomeye.ops.plugins.module_utils import _db_creds
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import (
    ConnInfo, postgres_argument_spec, require_psycopg2)
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration


def _action(module):
    params = module.params
    max_age = parse_duration(params["max_age"], "max_age")
    if max_age is None:
        raise RansomeyeError("max_age must be a duration such as 90d")
    request = _db_creds.Request(
        admin=ConnInfo.from_params(params),
        role=params["role"],
        alternate_role=params["alternate_role"],
        strategy=params["strategy"],
        env_files=params["env_files"],
        env_vars=params["env_vars"],
        user_vars=params["user_vars"] or [],
        db=params["db"],
        password_length=params["password_length"],
        max_age=max_age,
        force=params["force"],
        backup=params["backup"],
        state_file=params["state_file"],
        backup_dir=params["backup_dir"],
        backup_keep=params["backup_keep"],
    )
    return _db_creds.run(request, module.check_mode, module._diff)


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            role=dict(type="str", required=True),
            alternate_role=dict(type="str"),
            strategy=dict(type="str", default="in_place", choices=["in_place", "alternating"]),
            env_files=dict(type="list", elements="path", required=True),
            env_vars=dict(type="list", elements="str", default=["DB_PASSWORD", "DATABASE_URL"], no_log=False),
            user_vars=dict(type="list", elements="str", default=["DB_USER"]),
            db=dict(type="str"),
            password_length=dict(type="int", default=32, no_log=False),
            max_age=dict(type="str", default="90d"),
            force=dict(type="bool", default=False),
            backup=dict(type="bool", default=False),
            backup_dir=dict(type="path"),
            backup_keep=dict(type="int", default=5),
            state_file=dict(type="path"),
        ),
        shared_specs=[postgres_argument_spec()],
        supports_check_mode=True,
    )
    require_psycopg2(module)
    module.run(_action)


if __name__ == "__main__":
    main()
