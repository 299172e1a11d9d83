# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the argument specs shared by the modules that read a backup repository.

ransomeye_backup_info, ransomeye_backup_verify and ransomeye_restore take the
same repository, trust, decryption and incident-mark options. Each function
here is the argument spec of one part of doc_fragments/backup_keys.py, so the
options and their documentation are written once. A module passes them as
``shared_specs``; its own ``argument_spec`` wins for an option it also names.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type


def reader_spec(trusted_keys_required: bool = True) -> dict:
    """repo, trusted_keys, anchor and lock_timeout (the fragment's DOCUMENTATION)."""
    trusted_keys = dict(type="list", elements="path", no_log=False)
    if trusted_keys_required:
        trusted_keys["required"] = True
    return dict(
        repo=dict(type="path", required=True),
        trusted_keys=trusted_keys,
        anchor=dict(type="path"),
        lock_timeout=dict(type="int", default=300),
    )


def decryption_spec() -> dict:
    """private_key, private_key_passphrase and key_file (the fragment's DECRYPTION)."""
    return dict(
        private_key=dict(type="path", no_log=False),
        private_key_passphrase=dict(type="str", no_log=True),
        key_file=dict(type="path", no_log=False),
    )


def incident_spec() -> dict:
    """refuse_after_seq and revoked_keys, the incident mark (the fragment's INCIDENT)."""
    return dict(
        refuse_after_seq=dict(type="int"),
        revoked_keys=dict(type="list", elements="str", default=[], no_log=False),
    )
