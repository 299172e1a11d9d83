#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_cert_renew
short_description: Renew an mTLS certificate and its key before they expire, swapping the pair in atomically
version_added: "0.1.0"
description:
  - Reads the certificate at O(path) and renews it, with a new private key, when it expires within O(renew_before) days,
    when it does not match the key at O(key_path), or with O(force).
  - The new certificate is signed by an internal CA (O(ca_cert), O(ca_key)) or is self-signed. Subject, subject alternative
    names, key type and size, validity, key usage and extended key usage default to those of the certificate being renewed.
  - "The pair is swapped as a pair: the key and the certificate live in a versioned directory
    C(.ransomeye-pairs/<name>/v.../) next to the certificate, O(path) and O(key_path) become symlinks through one
    C(current) symlink, and renaming a new C(current) over the old one swaps both at once. A crash at any point leaves
    the old pair or the new pair, never a certificate next to a key that does not match it. Leftovers of an interrupted
    run are cleaned up by the next run."
  - The old pair can be backed up first (O(backup)), and stays available for O(state=rolled_back) until the next
    renewal.
author:
  - ransomeye.ops contributors (@ransomeye)
attributes:
  check_mode:
    details: Reports whether and why the certificate would be renewed; writes nothing.
  diff_mode:
    details: Subject, serial, SHA-256 fingerprint and expiry of the certificate before and after (never key material).
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
requirements:
  - cryptography >= 3.4 on the managed host
options:
  path:
    description:
      - The certificate (PEM) to renew. It must exist.
    type: path
    required: true
  key_path:
    description:
      - The private key (PEM, unencrypted) that belongs to O(path). A missing or non-matching key triggers a renewal.
    type: path
    required: true
  renew_before:
    description:
      - Renew when the certificate expires within this many days.
    type: int
    default: 30
  force:
    description:
      - Renew even when the certificate is valid for longer than O(renew_before) days.
    type: bool
    default: false
  backup:
    description:
      - Copy the old certificate and key to timestamped files (C(<path>.<pid>.<time>~)) before the swap.
    type: bool
    default: true
  ca_cert:
    description:
      - Certificate of the internal CA that signs the new certificate. Omit O(ca_cert) and O(ca_key) for a self-signed one.
      - An expired CA, or a CA key that does not match it, fails the task and changes nothing.
    type: path
  ca_key:
    description:
      - Private key of the CA (PEM).
    type: path
  ca_key_passphrase:
    description:
      - Passphrase of O(ca_key), when it is encrypted.
    type: str
  state:
    description:
      - V(renewed) renews the pair when needed.
      - V(rolled_back) swaps the pair replaced by the last renewal back in (atomically, as a pair) and removes the
        renewed one; without a previous pair it changes nothing.
    type: str
    choices: [renewed, rolled_back]
    default: renewed
  subject:
    description:
      - "Subject of the new certificate as a dictionary, for example C({CN: web.ransomeye.local, O: RansomEye})."
      - Defaults to the current certificate's subject.
    type: dict
  subject_alt_names:
    description:
      - Subject alternative names such as C(DNS:web.local), C(IP:127.0.0.1), C(URI:...), C(email:...); a bare name is a
        DNS name or an IP address. Defaults to the current certificate's.
    type: list
    elements: str
  key_type:
    description:
      - Type of the new key. Defaults to the current key's type.
    type: str
    choices: [rsa, ec, ed25519]
  key_size:
    description:
      - RSA modulus size in bits, or EC curve size (256, 384, 521). Defaults to the current key's size.
    type: int
  valid_days:
    description:
      - Validity of the new certificate in days. Defaults to the validity period of the current certificate, or 365 when
        that is not longer than O(renew_before) (it would be renewed on every run).
      - Capped at the CA's own expiry. Must be longer than O(renew_before).
    type: int
  key_usage:
    description:
      - Key usage bits (C(digitalSignature), C(keyEncipherment), C(keyAgreement), ...). Defaults to the current certificate's.
    type: list
    elements: str
  extended_key_usage:
    description:
      - Extended key usages, for mTLS C(serverAuth) and/or C(clientAuth) (or dotted OIDs). Defaults to the current
        certificate's, or both when it has none.
    type: list
    elements: str
notes:
  - Two runs renewing the same pair never interleave (flock on C(.ransomeye-pairs/.<name>.lock)); the decision is made
    again under the lock.
  - For testing only, the environment variable C(RANSOMEYE_TEST_KILL_AT) (C(adopt), C(stage), C(swap)) kills the module
    with SIGKILL right after that step.
seealso:
  - module: ransomeye.ops.ransomeye_rotate_db_creds
'''

EXAMPLES = r'''
- name: Renew the server certificate 30 days before it expires
  ransomeye.ops.ransomeye_cert_renew:
    path: /etc/ransomeye/tls/server.crt
    key_path: /etc/ransomeye/tls/server.key
    ca_cert: /etc/ransomeye/tls/ca.crt
    ca_key: /etc/ransomeye/tls/ca.key
  notify: Restart RansomEye services

- name: Put the pair replaced by the last renewal back
  ransomeye.ops.ransomeye_cert_renew:
    path: /etc/ransomeye/tls/server.crt
    key_path: /etc/ransomeye/tls/server.key
    state: rolled_back

- name: Renew a client certificate now, with a new SAN list and an EC key
  ransomeye.ops.ransomeye_cert_renew:
    path: /etc/ransomeye/tls/client.crt
    key_path: /etc/ransomeye/tls/client.key
    ca_cert: /etc/ransomeye/tls/ca.crt
    ca_key: /etc/ransomeye/tls/ca.key
    key_type: ec
    key_size: 256
    extended_key_usage: [clientAuth]
    subject_alt_names: [DNS:worker.ransomeye.local]
    force: true
'''

RETURN = r'''
reason:
  description: Why the certificate was (or would be) renewed (V(expiring), V(expired), V(key_mismatch), V(forced)),
    V(valid) when not, or V(rolled_back).
  returned: always
  type: str
  sample: expiring
renewed:
  description: Whether a new pair was swapped in (false in check mode).
  returned: always
  type: bool
not_after:
  description: Expiry (UTC) of the certificate now at O(path).
  returned: always
  type: str
  sample: "2027-11-27T18:00:00Z"
serial:
  description: Serial number of the certificate now at O(path).
  returned: always
  type: int
fingerprint:
  description: SHA-256 fingerprint of the certificate now at O(path), as C(openssl x509 -fingerprint -sha256) prints it.
  returned: always
  type: str
valid_days:
  description: Validity in days of a certificate issued by this run (or that would be issued).
  returned: when the certificate was inspected for renewal
  type: int
subject:
  description: Subject of the certificate now at O(path) (RFC 4514).
  returned: always
  type: str
backup_files:
  description: Backup copies of the old certificate and key.
  returned: always
  type: list
  elements: str
previous_serial:
  description: Serial number of the replaced (or rolled-back) certificate.
  returned: when renewed or rolled back
  type: int
previous_not_after:
  description: Expiry of the replaced certificate.
  returned: when renewed
  type: str
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.ransomeye.ops.plugins.module_utils import _certs
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule

OPTION_NAMES = ("subject", "subject_alt_names", "key_type", "key_size", "valid_days", "key_usage", "extended_key_usage")


def _action(module):
    params = module.params
    request = _certs.Request(
        path=params["path"],
        key_path=params["key_path"],
        renew_before=params["renew_before"],
        force=params["force"],
        backup=params["backup"],
        ca_cert=params["ca_cert"],
        ca_key=params["ca_key"],
        ca_key_passphrase=params["ca_key_passphrase"],
        options=dict((name, params[name]) for name in OPTION_NAMES),
        state=params["state"],
    )
    return _certs.run(request, module.check_mode)


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key_path=dict(type="path", required=True, no_log=False),
            renew_before=dict(type="int", default=30),
            force=dict(type="bool", default=False),
            backup=dict(type="bool", default=True),
            ca_cert=dict(type="path"),
            ca_key=dict(type="path", no_log=False),
            ca_key_passphrase=dict(type="str", no_log=True),
            state=dict(type="str", default="renewed", choices=["renewed", "rolled_back"]),
            subject=dict(type="dict"),
            subject_alt_names=dict(type="list", elements="str"),
            key_type=dict(type="str", choices=["rsa", "ec", "ed25519"]),
            key_size=dict(type="int", no_log=False),
            valid_days=dict(type="int"),
            key_usage=dict(type="list", elements="str", no_log=False),
            extended_key_usage=dict(type="list", elements="str", no_log=False),
        ),
        required_together=[["ca_cert", "ca_key"]],
        shared_specs=[ignored_connection_spec(exclude=("ca_cert",))],
        supports_check_mode=True,
    )
    if not _certs.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(_certs.CRYPTOGRAPHY_IMPORT_ERROR))
    module.run(_action)


if __name__ == "__main__":
    main()
