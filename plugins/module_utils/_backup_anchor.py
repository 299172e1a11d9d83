# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the rollback anchor, a small state file kept outside the backup repository.

It records the highest seq seen in one repository and the SHA-256 of that
manifest. Attacker R can delete the newest manifests or swap an older copy of
the repository in; every remaining manifest still verifies, so only state
kept where R cannot write shows it. ``ransomeye_backup`` raises the anchor
after each backup; verify and restore refuse a repository behind it with
``reason: rolled back``. See docs/BACKUP_FORMAT.md section 3.13.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import json
import os
import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import canonical_json

ANCHOR_FORMAT = "ransomeye-backup-anchor"
ROLLED_BACK = "rolled back"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def check_location(anchor: str, repo_path: str) -> str:
    """The anchor's absolute path; refused inside the repository (R could then rewrite it with the rest)."""
    path = os.path.abspath(anchor)
    real_dir = os.path.realpath(os.path.dirname(path))
    real_repo = os.path.realpath(repo_path)
    if real_dir == real_repo or real_dir.startswith(real_repo.rstrip("/") + "/"):
        raise RansomeyeError("anchor %s must be kept outside the repository %s (on the controller or the vault): "
                             "whoever can write the repository could rewrite it too" % (anchor, repo_path))
    if os.path.isdir(path):
        raise RansomeyeError("anchor %s is a directory; give the path of the anchor file" % anchor)
    if not os.path.isdir(os.path.dirname(path)):
        # Checked before the backup starts: a backup must not be written and then fail on its anchor.
        raise RansomeyeError("the directory of anchor %s does not exist" % anchor)
    return path


def read_anchor(path: str, repo_id: t.Optional[str], required: bool) -> t.Optional[dict]:
    """The anchor's state, None when it does not exist (an error when ``required``)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(65537)
    except FileNotFoundError:
        if required:
            raise RansomeyeError("anchor %s does not exist; ransomeye_backup creates it (give the same path there), "
                                 "or leave anchor unset" % path)
        return None
    except OSError as exc:
        raise RansomeyeError("anchor %s cannot be read: %s" % (path, exc.strerror or exc))
    try:
        state = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict) or state.get("format") != ANCHOR_FORMAT \
            or isinstance(state.get("seq"), bool) or not isinstance(state.get("seq"), int) or state["seq"] < 1 \
            or not _SHA_RE.match(str(state.get("manifest_sha256"))) or not isinstance(state.get("repo_id"), str):
        raise RansomeyeError("anchor %s is not a ransomeye.ops anchor file (damaged?); compare it with a copy "
                             "before replacing it" % path)
    if repo_id is not None and state["repo_id"] != repo_id:
        raise RansomeyeError("anchor %s belongs to repository %s, not to this repository %s; give each repository "
                             "its own anchor" % (path, state["repo_id"], repo_id))
    return state


def check(view: t.Any, state: t.Optional[dict], path: str) -> t.List[dict]:
    """Problems (``reason: rolled back``) when the repository is behind the anchor, else []."""
    if state is None:
        return []
    seq, sha = state["seq"], state["manifest_sha256"]
    detail = None
    entry = view.entries.get(seq)
    if view.highest < seq:
        detail = ("the anchor records backup seq %d but the newest manifest that verifies is seq %d: newer backups "
                  "were deleted or an older copy of the repository was put in place" % (seq, view.highest))
    elif entry is not None and (not entry.authentic or entry.item.sha256 != sha):
        detail = ("manifest %08d.json is not the one the anchor recorded (SHA-256 %s): it was replaced by another "
                  "copy" % (seq, sha))
    if detail is None:
        return []
    return [{"backup": state.get("backup_id"), "object": "anchor:%s" % path, "reason": ROLLED_BACK,
             "detail": detail}]


def write_anchor(path: str, repo_id: str, seq: int, manifest_sha256: str, backup_id: str) -> None:
    """Raise the anchor atomically (temp file in the same directory, fsync, rename, fsync directory)."""
    state = {"format": ANCHOR_FORMAT, "version": 1, "repo_id": repo_id, "seq": seq,
             "manifest_sha256": manifest_sha256, "backup_id": backup_id}
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise RansomeyeError("the directory of anchor %s does not exist" % path)
    atomic_write(path, canonical_json(state) + b"\n", mode=0o600)
