# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: rotation and rollback of the signing key, on top of ``_keychain``.

The key directory layout and the bundle format belong to ``_keychain``. This
file decides when to rotate and writes the files in a crash-safe order:

1. ``pending.key``: the key about to become active (0600);
2. ``archive/<old id>.key``: the retiring key (0600);
3. ``keys/<new id>.pub``;
4. ``chain/<seq>.json``: the bundle, signed by the old and the new key.
   This is the commit point: from here on the rotation is finished, even
   after a crash, by the next run;
5. ``active.key`` (0600), ``active.pub``, ``state.json``; ``pending.key`` removed.

Test hook: ``RANSOMEYE_TEST_KILL_AT`` = ``pending``, ``bundle`` or
``active_key`` kills the process (SIGKILL) right after that step.

``finish_interrupted()`` (run first by every run that may write) completes
steps 5 when the chain head is not the active key, and drops a
``pending.key`` that never reached the chain.

A key directory with an ``active.key`` but no chain (an older tool's) is
adopted: that key becomes the genesis bundle, aged by the file's mtime.

A rollback is itself a bundle: bundle ``n + 1`` re-introduces the previous
key (from ``archive/``), signed by the key being rolled back and by the
previous key. So the chain still leads through the rolled-back key, and
everything it signed meanwhile keeps verifying; a verifier pinned to any
earlier key reaches the reactivated one. ``state.json`` records
``rolled_back_from`` and ``rollback_seq`` so that asking for the rollback
again changes nothing.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import os
import signal
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _keychain as kc
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory, file_lock
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    generate_signing_key, key_id, key_type_of, load_signing_private_key, private_key_pem, public_key_pem)

PENDING_KEY = "pending.key"
LOCK_FILE = ".rotation.lock"
TEST_HOOK_ENV = "RANSOMEYE_TEST_KILL_AT"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _kill_point(step: str) -> None:
    """Test hook (tests only, never in production): SIGKILL right after ``step``, as a power loss would."""
    if os.environ.get(TEST_HOOK_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _fmt(moment: datetime.datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def _parse_time(value: t.Any) -> t.Optional[datetime.datetime]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


class Status(t.NamedTuple):
    """What the key directory holds now."""

    initialized: bool
    active_key_id: t.Optional[str]
    active_since: t.Optional[datetime.datetime]
    head_seq: int
    head: t.Optional[dict]           # the bundle with the highest seq
    bundles: t.Dict[int, dict]
    state: dict
    interrupted: bool                # a rotation reached the chain but not active.key/state.json
    legacy: bool = False             # an active.key without any chain: adopted as the genesis key


def status(key_dir: str) -> Status:
    if not os.path.exists(key_dir):
        return Status(False, None, None, 0, None, {}, {}, False)
    if not os.path.isdir(key_dir):
        raise RansomeyeError("key_dir %s is not a directory" % key_dir)
    kd = kc.load_key_dir(key_dir)
    bundles = {b["seq"]: b for b in kd.bundles if isinstance(b, dict) and isinstance(b.get("seq"), int)}
    head_seq = max(bundles) if bundles else 0
    head = bundles.get(head_seq)
    active_id = kd.state.get("active_key_id") if isinstance(kd.state.get("active_key_id"), str) else kd.active_key_id
    initialized = head is not None and os.path.exists(kd.active_key_path)
    interrupted = head is not None and (head.get("key_id") != active_id or kd.state.get("seq") != head_seq)
    if head is None and os.path.exists(kd.active_key_path):
        since = datetime.datetime.fromtimestamp(os.stat(kd.active_key_path).st_mtime, datetime.timezone.utc)
        return Status(True, None, since, 0, None, {}, kd.state, False, legacy=True)
    return Status(initialized or interrupted, active_id, _parse_time(kd.state.get("active_since")), head_seq, head,
                  bundles, kd.state, interrupted)


def adopt_legacy(key_dir: str, passphrase: t.Optional[str] = None) -> str:
    """Make an existing ``active.key`` (a key dir without chain) the genesis key: bundle 1, self-signed.

    Its age is taken from the file's mtime, so ``max_age`` applies to it as to any key.
    """
    path = os.path.join(key_dir, kc.ACTIVE_KEY)
    key = load_signing_private_key(path, passphrase)
    since = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc).replace(microsecond=0)
    _write_public(key_dir, key)
    kc.write_bundle(key_dir, kc.make_bundle(key, 1))
    atomic_write(os.path.join(key_dir, kc.ACTIVE_PUB), public_key_pem(key), mode=0o644)
    kc.write_state(key_dir, {"active_key_id": key_id(key), "active_since": _fmt(since), "seq": 1})
    return key_id(key)


def _write_private(path: str, key: t.Any, passphrase: t.Optional[str] = None) -> None:
    # Every private key of the directory is stored as the active one is: encrypted when a passphrase is in use.
    atomic_write(path, private_key_pem(key, passphrase or None), mode=0o600)


def _write_public(key_dir: str, key: t.Any) -> None:
    ensure_directory(os.path.join(key_dir, kc.KEYS_DIR), 0o755)
    path = os.path.join(key_dir, kc.KEYS_DIR, "%s.pub" % key_id(key))
    if not os.path.exists(path):
        atomic_write(path, public_key_pem(key), mode=0o644)


def _archive(key_dir: str, key: t.Any, passphrase: t.Optional[str] = None) -> None:
    ensure_directory(os.path.join(key_dir, kc.ARCHIVE_DIR), 0o700)
    path = os.path.join(key_dir, kc.ARCHIVE_DIR, "%s.key" % key_id(key))
    if not os.path.exists(path):
        _write_private(path, key, passphrase)


def _load_archived(key_dir: str, kid: str, passphrase: t.Optional[str] = None) -> t.Any:
    path = os.path.join(key_dir, kc.ARCHIVE_DIR, "%s.key" % kid)
    if not os.path.exists(path):
        raise RansomeyeError("the private key %s is not in %s; cannot reactivate it"
                             % (kid, os.path.join(key_dir, kc.ARCHIVE_DIR)))
    key = load_signing_private_key(path, passphrase)
    if key_id(key) != kid:
        raise RansomeyeError("%s holds key %s, not %s" % (path, key_id(key), kid))
    return key


def _activate(key_dir: str, key: t.Any, seq: int, extra_state: t.Optional[dict] = None,
              passphrase: t.Optional[str] = None) -> dict:
    """Steps 5: make ``key`` the active key (after its bundle is in the chain)."""
    _write_private(os.path.join(key_dir, kc.ACTIVE_KEY), key, passphrase)
    _kill_point("active_key")
    atomic_write(os.path.join(key_dir, kc.ACTIVE_PUB), public_key_pem(key), mode=0o644)
    state = {"active_key_id": key_id(key), "active_since": _fmt(_now()), "seq": seq}
    state.update(extra_state or {})
    kc.write_state(key_dir, state)
    pending = os.path.join(key_dir, PENDING_KEY)
    if os.path.exists(pending):
        os.unlink(pending)
    return state


def finish_interrupted(key_dir: str, passphrase: t.Optional[str] = None) -> t.Optional[str]:
    """Complete a rotation that reached the chain; drop a pending key that did not. Returns what was done."""
    st = status(key_dir)
    pending = os.path.join(key_dir, PENDING_KEY)
    if not st.interrupted:
        if os.path.exists(pending):
            os.unlink(pending)
            return "removed %s left by an interrupted rotation that had not reached the chain" % pending
        return None
    head_id = st.head["key_id"]
    key = None
    for candidate in (pending, os.path.join(key_dir, kc.ACTIVE_KEY)):
        if os.path.exists(candidate):
            loaded = load_signing_private_key(candidate, passphrase)
            if key_id(loaded) == head_id:
                key = loaded
                break
    if key is None:
        key = _load_archived(key_dir, head_id, passphrase)
    extra = {}
    previous = st.bundles.get(st.head_seq - 1)
    if previous is not None and st.state.get("pending_rollback") == st.head_seq:
        extra = {"rolled_back_from": previous["key_id"], "rollback_seq": st.head_seq}
    _activate(key_dir, key, st.head_seq, extra, passphrase)
    return "completed the interrupted rotation to key %s (bundle %d)" % (head_id, st.head_seq)


class Request(t.NamedTuple):
    key_dir: str
    key_type: t.Optional[str]   # None: keep the chain's current type (rsa4096 for a genesis key)
    max_age: float          # seconds
    force: bool
    state: str              # initialized | rotated | rolled_back
    passphrase: t.Optional[str] = None  # of active.key; new, pending and archived keys are written with it


GENESIS_KEY_TYPE = "rsa4096"


def _has_no_key(key_dir: str) -> bool:
    """No active key, no chain, no legacy key: a typo'd key_dir, or one never initialized."""
    if not os.path.isdir(key_dir):
        return True
    st = status(key_dir)
    return not st.initialized and not st.legacy and st.head is None


def _refuse_missing_active_key(key_dir: str) -> None:
    """A chain whose active.key is gone: say so, and never paper over it with a new genesis key."""
    st = status(key_dir)
    if st.head is None or st.legacy or os.path.exists(os.path.join(key_dir, kc.ACTIVE_KEY)):
        return
    if st.interrupted:
        return  # finish_interrupted completes it from pending.key or the archive
    raise RansomeyeError(
        "%s is missing from %s, whose chain has bundle %d (key %s) as its head; restore that file from your key "
        "backup (archive/ holds only retired keys). Nothing was changed; no new key was created."
        % (kc.ACTIVE_KEY, key_dir, st.head_seq, st.head.get("key_id")))


def _result(changed: bool, reason: str, old: t.Optional[str], new: t.Optional[str], bundle: t.Optional[str],
            seq: int, key_type: t.Optional[str], **extra: t.Any) -> dict:
    out = dict(changed=changed, reason=reason, old_key_id=old, new_key_id=new, bundle=bundle, seq=seq,
               key_type=key_type)
    out.update(extra)
    if changed:
        # Key ids only: they are fingerprints of public keys, never key material.
        out["diff"] = dict(before=dict(active_key_id=old),
                           after=dict(active_key_id=new or "(a new %s key)" % (key_type or "signing")))
    return out


def run(req: Request, check_mode: bool) -> dict:
    if req.key_type is not None and req.key_type not in ("rsa4096", "ed25519"):
        raise RansomeyeError("key_type must be rsa4096 or ed25519, not %r" % req.key_type)
    if os.path.exists(req.key_dir) and not os.path.isdir(req.key_dir):
        raise RansomeyeError("key_dir %s is not a directory" % req.key_dir)
    if req.state != "initialized" and _has_no_key(req.key_dir):
        # A mistyped key_dir must not quietly become a new root of trust.
        raise RansomeyeError("key_dir %s holds no signing key (no active.key, no key chain); check key_dir, or create "
                             "the first key on purpose with state=initialized. Nothing was changed." % req.key_dir)
    if os.path.isdir(req.key_dir):
        _refuse_missing_active_key(req.key_dir)
    if check_mode:
        return _run(req, check_mode)
    ensure_directory(req.key_dir, 0o755)
    with file_lock(os.path.join(req.key_dir, LOCK_FILE), "signing-key rotation in %s" % req.key_dir):
        return _run(req, check_mode)


def _run(req: Request, check_mode: bool) -> dict:
    recovered = None
    if not check_mode and os.path.isdir(req.key_dir):
        if status(req.key_dir).legacy:
            recovered = "adopted the existing active.key %s as the genesis key (bundle 1)" % adopt_legacy(req.key_dir, req.passphrase)
        else:
            recovered = finish_interrupted(req.key_dir, req.passphrase)
    st = status(req.key_dir)
    if st.legacy:  # check mode
        legacy_id = key_id(load_signing_private_key(os.path.join(req.key_dir, kc.ACTIVE_KEY),
                                                    req.passphrase))
        result = _result(True, "the existing active.key %s would become the genesis key (bundle 1), then be rotated "
                         "when older than max_age" % legacy_id, legacy_id, None, kc.bundle_path(req.key_dir, 1), 1,
                         None)
        result["recovered"] = "an existing active.key without chain would be adopted"
        return result
    if req.state == "rolled_back":
        result = _roll_back(req, st, check_mode)
    elif req.state == "initialized" and st.initialized:
        result = _result(False, "key_dir already has its signing key; state=initialized never rotates",
                         st.active_key_id, st.active_key_id, kc.bundle_path(req.key_dir, st.head_seq), st.head_seq,
                         st.head.get("key_type") if st.head else None)
    else:
        result = _rotate(req, st, check_mode)
    if recovered:
        result["recovered"] = recovered
        result["changed"] = True
    elif st.interrupted:
        result["changed"] = True
        result["recovered"] = "an interrupted rotation would be completed"
    return result


def _rotate(req: Request, st: Status, check_mode: bool) -> dict:
    now = _now()
    if not st.initialized:
        if req.state != "initialized":  # run() refuses this first; kept so no path can create a genesis key
            raise RansomeyeError("key_dir %s holds no signing key; use state=initialized" % req.key_dir)
        genesis_type = req.key_type or GENESIS_KEY_TYPE
        if check_mode:
            return _result(True, "key_dir has no signing key yet; the first key would be created", None, None,
                           kc.bundle_path(req.key_dir, 1), 1, genesis_type)
        ensure_directory(req.key_dir, 0o755)
        key = generate_signing_key(genesis_type)
        _write_private(os.path.join(req.key_dir, PENDING_KEY), key, req.passphrase)
        _write_public(req.key_dir, key)
        path = kc.write_bundle(req.key_dir, kc.make_bundle(key, 1))
        _activate(req.key_dir, key, 1, passphrase=req.passphrase)
        return _result(True, "created the first signing key", None, key_id(key), path, 1, genesis_type)

    age = (now - st.active_since).total_seconds() if st.active_since else None
    if not req.force and age is not None and age < req.max_age:
        return _result(False, "active key is %.1f days old, max_age not reached" % (age / 86400.0),
                       st.active_key_id, st.active_key_id, kc.bundle_path(req.key_dir, st.head_seq), st.head_seq,
                       st.head.get("key_type") if st.head else None)
    reason = "forced" if req.force else ("active key is %.1f days old" % (age / 86400.0) if age is not None
                                         else "the active key has no recorded age")
    seq = st.head_seq + 1
    # Keep the chain's key type unless told otherwise: a default must not switch an Ed25519 chain to RSA.
    new_type = req.key_type or (st.head.get("key_type") if st.head else None)
    if check_mode:
        if new_type is None:
            new_type = key_type_of(load_signing_private_key(os.path.join(req.key_dir, kc.ACTIVE_KEY),
                                                            req.passphrase))
        return _result(True, reason, st.active_key_id, None, kc.bundle_path(req.key_dir, seq), seq, new_type)
    old = load_signing_private_key(os.path.join(req.key_dir, kc.ACTIVE_KEY), req.passphrase)
    if key_id(old) != st.head["key_id"]:
        raise RansomeyeError("active.key is key %s but the chain head (bundle %d) is key %s; the key directory is "
                             "inconsistent" % (key_id(old), st.head_seq, st.head["key_id"]))
    new = generate_signing_key(new_type or key_type_of(old))
    _write_private(os.path.join(req.key_dir, PENDING_KEY), new, req.passphrase)
    _kill_point("pending")
    _archive(req.key_dir, old, req.passphrase)
    _write_public(req.key_dir, new)
    path = kc.write_bundle(req.key_dir, kc.make_bundle(new, seq, old_private_key=old))
    _kill_point("bundle")
    _activate(req.key_dir, new, seq, passphrase=req.passphrase)
    return _result(True, reason, key_id(old), key_id(new), path, seq, key_type_of(new))


def _roll_back(req: Request, st: Status, check_mode: bool) -> dict:
    if not st.initialized:
        raise RansomeyeError("key_dir %s has no signing key; nothing to roll back" % req.key_dir)
    if st.state.get("rollback_seq") == st.head_seq:
        return _result(False, "already rolled back from key %s" % st.state.get("rolled_back_from"),
                       st.state.get("rolled_back_from"), st.active_key_id, kc.bundle_path(req.key_dir, st.head_seq),
                       st.head_seq, st.head.get("key_type"))
    current_id = st.head["key_id"]
    target_id = st.head.get("prev_key_id")
    if not target_id:
        raise RansomeyeError("the active key %s is the first key of the chain; there is no previous key to roll "
                             "back to" % current_id)
    seq = st.head_seq + 1
    if check_mode:
        if not os.path.exists(os.path.join(req.key_dir, kc.ARCHIVE_DIR, "%s.key" % target_id)):
            raise RansomeyeError("the private key %s is not in the archive; cannot reactivate it" % target_id)
        return _result(True, "would reactivate the previous key %s" % target_id, current_id, target_id,
                       kc.bundle_path(req.key_dir, seq), seq, None)
    current = load_signing_private_key(os.path.join(req.key_dir, kc.ACTIVE_KEY), req.passphrase)
    if key_id(current) != current_id:
        raise RansomeyeError("active.key is key %s but the chain head is key %s; the key directory is inconsistent"
                             % (key_id(current), current_id))
    target = _load_archived(req.key_dir, target_id, req.passphrase)
    _archive(req.key_dir, current, req.passphrase)
    # Mark the rollback before the commit point, so that a crash after it is finished as a rollback.
    kc.write_state(req.key_dir, dict(st.state, pending_rollback=seq))
    path = kc.write_bundle(req.key_dir, kc.make_bundle(target, seq, old_private_key=current))
    _kill_point("bundle")
    _activate(req.key_dir, target, seq, {"rolled_back_from": current_id, "rollback_seq": seq}, req.passphrase)
    return _result(True, "reactivated the previous key %s" % target_id, current_id, target_id, path, seq,
                   key_type_of(target))
