# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The repository a reader opens, the keys it trusts, and the rollback anchor; shared by
    # ransomeye_backup_verify, ransomeye_restore and ransomeye_backup_info. The argument specs of this
    # fragment and of its parts below are in module_utils/_backup_options.py. Each module words
    # trusted_keys for itself (and says whether it is required); its own text overrides this one.
    DOCUMENTATION = r'''
options:
  repo:
    description:
      - Directory of the backup repository.
    type: path
    required: true
  trusted_keys:
    description:
      - Public keys trusted to sign manifests. Each item is a PEM public key file, a directory of C(.pub) files, or a
        signing key directory (its key-update chain is walked, so manifests signed by since-rotated keys still
        verify).
      - With a key directory, the key-chain position rule applies (C(docs/BACKUP_FORMAT.md) section 2.5) - a manifest
        signed by a retired key after a newer key of the chain signed an earlier backup is refused. Bare PEM keys carry
        no chain position, so the rule cannot apply to them.
      - Manifests that do not verify (planted, foreign, damaged) are reported and never count as backups; the others
        still verify and restore.
    type: list
    elements: path
  anchor:
    description:
      - Path of the rollback anchor written by M(ransomeye.ops.ransomeye_backup) (its O(ransomeye.ops.ransomeye_backup#module:anchor)
        option), a small file kept outside the repository that records the highest seq seen and its manifest
        SHA-256.
      - When given, the file must exist, and a repository behind it (newest manifests deleted, or an older copy of the
        repository or of a manifest put in place) is reported with C(reason=rolled back).
      - Must not be inside the repository.
    type: path
    version_added: "0.2.0"
  lock_timeout:
    description:
      - Seconds to wait for a backup or prune in progress before failing.
    type: int
    default: 300
'''

    # The incident mark (docs/THREAT_MODEL.md, "H and the vault"); ransomeye_backup_verify and ransomeye_restore.
    INCIDENT = r'''
options:
  refuse_after_seq:
    description:
      - The incident mark - the last backup seq known to be good. A manifest with a higher seq is refused (reported as a
        problem, never restored), however validly it is signed, because after a compromise the host's signing key is
        the attacker's.
      - Set it on the restoring side (the vault group's variables), never in the repository.
    type: int
    version_added: "0.2.0"
  revoked_keys:
    description:
      - Key ids (as C(signer) in M(ransomeye.ops.ransomeye_backup_info)) whose signatures are no longer accepted; a
        manifest they signed is refused as under O(refuse_after_seq).
    type: list
    elements: str
    default: []
    version_added: "0.2.0"
'''

    DECRYPTION = r'''
options:
  private_key:
    description:
      - PEM private key of a recipient (rsa-mode backups).
    type: path
  private_key_passphrase:
    description:
      - Passphrase of O(private_key), when it is encrypted.
    type: str
  key_file:
    description:
      - The 256-bit key file (aes-mode backups).
    type: path
'''
