# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the incident mark, the point after which a restore refuses what a host signed.

After a RansomEye host is compromised, its signing key is the attacker's: a
manifest signed with it after the compromise is authentic and still must not
be restored. The operator marks the point on the restoring side (the vault):
``refuse_after_seq`` (the last sequence number known good) and/or
``revoked_keys`` (key ids whose signatures are no longer accepted). The mark
is given as module options, so it lives with the operator's inventory, never
in the repository the attacker could write.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

_KEY_ID = re.compile(r"^[0-9A-Za-z:_.+/=-]{1,200}$")


class IncidentMark(t.NamedTuple):
    refuse_after_seq: t.Optional[int]
    revoked_keys: t.FrozenSet[str]

    @property
    def active(self) -> bool:
        return self.refuse_after_seq is not None or bool(self.revoked_keys)

    def refusal(self, seq: t.Any, signer: t.Optional[str]) -> t.Optional[str]:
        """Why a manifest (its seq, the key id that verifiably signed it) is refused, or None."""
        if signer is not None and signer in self.revoked_keys:
            return "signed by revoked key %s (incident mark)" % signer
        if self.refuse_after_seq is not None and isinstance(seq, int) and seq > self.refuse_after_seq:
            return "seq %d is after the incident mark (refuse_after_seq %d)" % (seq, self.refuse_after_seq)
        return None


def from_params(params: dict) -> IncidentMark:
    seq = params.get("refuse_after_seq")
    if seq is not None and not 0 <= int(seq) <= 99999999:
        raise RansomeyeError("refuse_after_seq must be between 0 and 99999999, not %s" % seq)
    keys = []
    for key in params.get("revoked_keys") or []:
        if not isinstance(key, str) or not _KEY_ID.match(key):
            raise RansomeyeError("revoked_keys: %r is not a key id (as ransomeye_backup_info reports signer)" % (key,))
        keys.append(key)
    return IncidentMark(None if seq is None else int(seq), frozenset(keys))
