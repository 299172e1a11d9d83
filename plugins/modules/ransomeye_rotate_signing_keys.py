#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_rotate_signing_keys
short_description: Rotate (or roll back) the key that signs RansomEye updates and backup manifests, keeping a verifiable key chain
version_added: "0.1.0"
description:
  - Generates a new signing key (RSA-4096 by default, or Ed25519) in O(key_dir), written atomically with mode 0600.
  - "Writes a key-update bundle C(chain/<seq>.json): the new public key, its key id, the previous key id, a sequence number
    and a creation time, signed by the old key and by the new key. A verifier that trusts any earlier key walks the chain
    to the current one (as TUF does for root keys); M(ransomeye.ops.ransomeye_backup_verify) uses it to verify manifests
    signed before a rotation."
  - Retired private keys are kept in C(archive/). O(state=rolled_back) makes the previous key active again through a new
    bundle that re-introduces it, signed by the key being rolled back and by the previous key, so everything the
    rolled-back key signed meanwhile still verifies.
  - Rotates only when the active key is older than O(max_age), or with O(force).
  - "The first key (a self-signed genesis bundle, a new root of trust) is created only with O(state=initialized).
    O(state=rotated) and O(state=rolled_back) refuse a O(key_dir) that holds no key (a typo must not create one), and
    a key chain whose C(active.key) is missing is reported as such; nothing is written."
  - A rotation interrupted by a crash after its bundle reached the chain is completed by the next run.
  - An existing O(key_dir) with an C(active.key) but no chain (made by an older tool) is adopted first; that key becomes
    the genesis key (bundle 1) and its age is taken from the file's modification time.
author:
  - ransomeye.ops contributors (@ransomeye)
attributes:
  check_mode:
    details: Reports whether a rotation or rollback would happen and the bundle it would write.
  diff_mode:
    details: The active key id before and after (key ids are public-key fingerprints).
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
requirements:
  - cryptography on the managed host
options:
  key_dir:
    description:
      - The signing-key directory (C(active.key), C(active.pub), C(keys/), C(archive/), C(chain/), C(state.json)).
    type: path
    required: true
  key_type:
    description:
      - Type of a new key. Default is the type of the chain's current key (rotation keeps it), and V(rsa4096) for the
        first key.
    type: str
    choices: [rsa4096, ed25519]
  passphrase:
    description:
      - Passphrase of the private keys of O(key_dir) (C(active.key) and the archive). New keys are written encrypted
        with it. Without it the keys are stored unencrypted (mode 0600).
    type: str
    version_added: "0.2.0"
  max_age:
    description:
      - Rotate only when the active key is older than this (C(90d), C(12h), or a number of days).
    type: str
    default: 90d
  force:
    description:
      - Rotate even when the active key is younger than O(max_age).
    type: bool
    default: false
  state:
    description:
      - V(rotated) makes a new key active (when due). V(rolled_back) makes the key that preceded the active one active
        again; asking for the same rollback again changes nothing.
      - V(initialized) creates the first key of an empty or missing O(key_dir); on a O(key_dir) that has its key it
        changes nothing (it never rotates).
    type: str
    choices: [initialized, rotated, rolled_back]
    default: rotated
notes:
  - Two runs on one O(key_dir) never interleave (flock on C(<key_dir>/.rotation.lock)).
  - For testing only, the environment variable C(RANSOMEYE_TEST_KILL_AT) (C(pending), C(bundle), C(active_key)) kills
    the module with SIGKILL right after that step.
seealso:
  - module: ransomeye.ops.ransomeye_backup_verify
  - module: ransomeye.ops.ransomeye_rotate_db_creds
'''

EXAMPLES = r'''
- name: Create the first signing key (a new root of trust, on purpose)
  ransomeye.ops.ransomeye_rotate_signing_keys:
    key_dir: /etc/ransomeye/keys/signing
    key_type: ed25519
    state: initialized

- name: Rotate the signing key every quarter
  ransomeye.ops.ransomeye_rotate_signing_keys:
    key_dir: /etc/ransomeye/keys/signing
    max_age: 90d
  register: signing

- name: Undo the last rotation
  ransomeye.ops.ransomeye_rotate_signing_keys:
    key_dir: /etc/ransomeye/keys/signing
    state: rolled_back
'''

RETURN = r'''
old_key_id:
  description: Id of the key that was active before (null when the first key was created).
  returned: always
  type: str
  sample: 3f1c0a9e5b7d2c4e6f8091a2b3c4d5e6
new_key_id:
  description: Id of the key active afterwards (null in check mode when a new key would be generated).
  returned: always
  type: str
bundle:
  description: Path of the key-update bundle written (or that would be written, or the chain head when nothing changed).
  returned: always
  type: str
  sample: /etc/ransomeye/keys/signing/chain/000003.json
seq:
  description: Sequence number of that bundle.
  returned: always
  type: int
key_type:
  description: Type of the key the bundle introduces.
  returned: always
  type: str
reason:
  description: Why the module rotated, rolled back or did nothing.
  returned: always
  type: str
recovered:
  description: What was done to finish a rotation interrupted by a crash.
  returned: when an interrupted rotation was found
  type: str
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.ransomeye.ops.plugins.module_utils import _signing
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._signing_rotation import Request, run
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration


def _action(module):
    params = module.params
    max_age = parse_duration(params["max_age"], "max_age")
    if max_age is None:
        raise RansomeyeError("max_age must be a duration such as 90d")
    request = Request(key_dir=params["key_dir"], key_type=params["key_type"], max_age=max_age,
                      force=params["force"], state=params["state"], passphrase=params.get("passphrase"))
    return run(request, module.check_mode)


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            key_dir=dict(type="path", required=True, no_log=False),
            key_type=dict(type="str", choices=["rsa4096", "ed25519"], no_log=False),
            passphrase=dict(type="str", no_log=True),
            max_age=dict(type="str", default="90d"),
            force=dict(type="bool", default=False),
            state=dict(type="str", default="rotated", choices=["initialized", "rotated", "rolled_back"]),
        ),
        shared_specs=[ignored_connection_spec()],
        supports_check_mode=True,
    )
    if not _signing.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=_signing.CRYPTOGRAPHY_IMPORT_ERROR)
    module.run(_action)


if __name__ == "__main__":
    main()
