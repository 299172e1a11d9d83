# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the signing-key directory and its key-update chain (TUF-like).

Key directory layout::

    <key_dir>/active.key            PEM private key in use (0600)
    <key_dir>/active.pub            its public key
    <key_dir>/keys/<key_id>.pub     every public key that was ever active
    <key_dir>/archive/<key_id>.key  retired private keys (0600)
    <key_dir>/chain/<seq:06d>.json  key-update bundles
    <key_dir>/state.json            {"active_key_id", "active_since" (advisory), "seq"}

A bundle introduces one key. Bundle ``n > 1`` is signed by the key of bundle
``n - 1`` (named by ``prev_key_id``) and by its own new key; bundle 1 is
self-signed only. Trust rules are in docs/BACKUP_FORMAT.md ("The key-update
chain"): trust flows forward from an anchor (TUF), and backward along links
that both keys signed, so a verifier pinned to today's key still verifies
what a retired key signed, but only through a proven chain.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import json
import os
import re
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory
from ansible_collections.ransomeye.ops.plugins.module_utils._signing import (
    SignatureError,
    canonical_json,
    key_id,
    key_type_of,
    load_signing_public_key,
    public_key_from_pem,
    public_key_pem,
    sign,
    verify,
)

BUNDLE_TYPE = "ransomeye-key-update"
ACTIVE_KEY = "active.key"
ACTIVE_PUB = "active.pub"
KEYS_DIR = "keys"
ARCHIVE_DIR = "archive"
CHAIN_DIR = "chain"
STATE_FILE = "state.json"
MAX_BUNDLE_BYTES = 1 << 20
_KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_BUNDLE_NAME_RE = re.compile(r"^([0-9]{6,})\.json$")


class KeychainError(RansomeyeError):
    """A key directory or trust path is missing, unreadable or inconsistent."""


class KeyDir(t.NamedTuple):
    """A loaded key directory. ``problems`` lists files that were skipped and why."""

    path: str
    active_key_path: str
    active_pub_path: str
    active_key_id: t.Optional[str]
    state: dict
    bundles: t.List[dict]
    keys: t.Dict[str, t.Any]
    problems: t.List[str]


class ChainResult(t.NamedTuple):
    """Outcome of walking a chain: trusted keys, accepted and rejected bundles."""

    trusted: t.Dict[str, t.Any]
    accepted: t.List[dict]
    rejected: t.List[dict]  # {"seq", "key_id", "reason"}
    head_key_id: t.Optional[str]  # key of the highest accepted seq
    positions: t.Dict[str, t.List[int]]  # key id -> chain seqs that introduced it


class TrustReport(t.NamedTuple):
    """What trusted_keys_report found: the keys, every rejected bundle or skipped file, and chain positions."""

    trusted: t.Dict[str, t.Any]
    rejected: t.List[dict]
    problems: t.List[str]
    positions: t.Dict[str, t.List[int]] = {}  # key id -> chain seqs that introduced it (keys of walked chains)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle_body(bundle: dict) -> dict:
    """The signed part of a bundle: everything except ``signatures``."""
    return {k: v for k, v in bundle.items() if k != "signatures"}


def make_bundle(new_private_key: t.Any, seq: int, old_private_key: t.Any = None, created: t.Optional[str] = None) -> dict:
    """A key-update bundle introducing ``new_private_key``'s public key at ``seq``.

    Seq 1 is self-signed (``old_private_key`` must be None); later bundles are
    signed by the old key first, then by the new key.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise KeychainError("bundle seq must be an integer >= 1, got %r" % (seq,))
    if seq == 1 and old_private_key is not None:
        raise KeychainError("bundle 1 introduces the first key and is self-signed only; no old key may sign it")
    if seq > 1 and old_private_key is None:
        raise KeychainError("bundle %d must be signed by the previous key: old_private_key is required" % seq)
    body = {
        "type": BUNDLE_TYPE,
        "seq": seq,
        "key_id": key_id(new_private_key),
        "public_key": public_key_pem(new_private_key).decode("ascii"),
        "key_type": key_type_of(new_private_key),
        "prev_key_id": key_id(old_private_key) if old_private_key is not None else None,
        "created": created or _utc_now(),
    }
    data = canonical_json(body)
    signatures = []
    if old_private_key is not None:
        signatures.append(sign(old_private_key, data))
    signatures.append(sign(new_private_key, data))
    bundle = dict(body)
    bundle["signatures"] = signatures
    return bundle


# ---------------------------------------------------------------- walking


class _Entry(t.NamedTuple):
    bundle: dict
    seq: int
    key_id: str
    prev_key_id: t.Optional[str]
    public_key: t.Any
    data: bytes  # canonical body


def _check_bundle(bundle: t.Any) -> _Entry:
    """Validate one bundle on its own (shape, key id, self-signature); SignatureError with the reason otherwise."""
    if not isinstance(bundle, dict):
        raise SignatureError("bundle is not a JSON object")
    if bundle.get("type") != BUNDLE_TYPE:
        raise SignatureError("bundle type is %r, not %r" % (bundle.get("type"), BUNDLE_TYPE))
    seq = bundle.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise SignatureError("bundle seq %r is not an integer >= 1" % (seq,))
    kid = bundle.get("key_id")
    if not isinstance(kid, str) or not _KEY_ID_RE.match(kid):
        raise SignatureError("bundle %d has an invalid key_id" % seq)
    prev = bundle.get("prev_key_id")
    if seq == 1 and prev is not None:
        raise SignatureError("bundle 1 must not name a previous key")
    if seq > 1 and (not isinstance(prev, str) or not _KEY_ID_RE.match(prev)):
        raise SignatureError("bundle %d has no valid prev_key_id" % seq)
    pem = bundle.get("public_key")
    if not isinstance(pem, str):
        raise SignatureError("bundle %d has no public_key" % seq)
    pub = public_key_from_pem(pem, "public key of bundle %d" % seq)
    if key_id(pub) != kid:
        raise SignatureError("bundle %d: key_id %s is not the id of its public key (%s)" % (seq, kid, key_id(pub)))
    if bundle.get("key_type") != key_type_of(pub):
        raise SignatureError("bundle %d: key_type %r does not match its public key" % (seq, bundle.get("key_type")))
    sigs = bundle.get("signatures")
    if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
        raise SignatureError("bundle %d has no signatures list" % seq)
    data = canonical_json(bundle_body(bundle))
    entry = _Entry(bundle, seq, kid, prev, pub, data)
    if not _signed_by(entry, pub):
        raise SignatureError("bundle %d is not validly signed by its own new key %s" % (seq, kid))
    return entry


def _signed_by(entry: _Entry, public_key: t.Any) -> bool:
    kid = key_id(public_key)
    for sig in entry.bundle.get("signatures") or []:
        if isinstance(sig, dict) and sig.get("key_id") == kid:
            try:
                verify(public_key, entry.data, sig)
                return True
            except SignatureError:
                continue
    return False


def walk_chain_report(anchors: t.Mapping[str, t.Any], bundles: t.Iterable[t.Any], backward: bool = True) -> ChainResult:
    """Walk ``bundles`` from the trusted ``anchors`` (key id -> public key); see walk_chain."""
    trusted: t.Dict[str, t.Any] = dict(anchors)
    rejected: t.List[dict] = []
    by_seq: t.Dict[int, t.List[_Entry]] = {}
    seen: t.Dict[bytes, _Entry] = {}
    for bundle in bundles:
        try:
            entry = _check_bundle(bundle)
        except (SignatureError, ValueError, RecursionError) as exc:
            seq = bundle.get("seq") if isinstance(bundle, dict) else None
            kid = bundle.get("key_id") if isinstance(bundle, dict) else None
            rejected.append({"seq": seq, "key_id": kid, "reason": str(exc)})
            continue
        known = seen.get(entry.data)
        if known is not None:
            # The same bundle twice (two copies of one chain, or a copy with
            # fewer signatures): merge the signatures, each is checked on use.
            known.bundle["signatures"].extend(s for s in entry.bundle["signatures"] if s not in known.bundle["signatures"])
            continue
        entry = entry._replace(bundle=dict(entry.bundle, signatures=list(entry.bundle["signatures"])))
        seen[entry.data] = entry
        by_seq.setdefault(entry.seq, []).append(entry)

    accepted: t.Set[int] = set()  # id() of accepted entries

    def accepted_at(seq: int) -> t.List[_Entry]:
        return [e for e in by_seq.get(seq, []) if id(e) in accepted]

    changed = True
    while changed:
        changed = False
        for seq in sorted(by_seq):
            for entry in by_seq[seq]:
                if id(entry) in accepted:
                    continue
                ok = entry.key_id in anchors
                if not ok and seq > 1:
                    # Forward (TUF): the previous bundle is trusted and its key signed this one.
                    ok = any(p.key_id == entry.prev_key_id and _signed_by(entry, p.public_key) for p in accepted_at(seq - 1))
                if not ok and backward:
                    # Backward: a trusted next bundle names this key as its predecessor and this key signed it.
                    ok = any(n.prev_key_id == entry.key_id and _signed_by(n, entry.public_key) for n in accepted_at(seq + 1))
                if ok:
                    accepted.add(id(entry))
                    changed = True

    fork_seq = None
    for seq in sorted(by_seq):
        if len(accepted_at(seq)) > 1:
            fork_seq = seq
            break

    result: t.List[_Entry] = []
    for seq in sorted(by_seq):
        for entry in by_seq[seq]:
            reason = None
            if id(entry) in accepted:
                if fork_seq is not None and seq >= fork_seq:
                    reason = "chain forks at seq %d (two bundles both signed by the previous key); nothing from there on is trusted" % fork_seq
                else:
                    result.append(entry)
                    continue
            if reason is None:
                reason = _why_rejected(entry, accepted_at(seq - 1), seq)
            rejected.append({"seq": seq, "key_id": entry.key_id, "reason": reason})

    positions: t.Dict[str, t.List[int]] = {}
    for entry in result:
        trusted[entry.key_id] = entry.public_key
        positions.setdefault(entry.key_id, []).append(entry.seq)
    head = result[-1].key_id if result else None
    return ChainResult(trusted, [e.bundle for e in result], rejected, head, positions)


def _why_rejected(entry: _Entry, prev_accepted: t.List[_Entry], seq: int) -> str:
    if seq == 1:
        return "bundle 1 (key %s) is self-signed and no trusted key vouches for it" % entry.key_id
    prev = [p for p in prev_accepted if p.key_id == entry.prev_key_id]
    if not prev:
        return (
            "bundle %d names previous key %s, which no trusted bundle %d introduced "
            "(a key outside the chain, or a gap in the chain)" % (seq, entry.prev_key_id, seq - 1)
        )
    return "bundle %d is not signed by the previous key %s (forged: signed by the new key only or by another key)" % (
        seq,
        entry.prev_key_id,
    )


def walk_chain(anchors: t.Mapping[str, t.Any], bundles: t.Iterable[t.Any], backward: bool = True) -> t.Dict[str, t.Any]:
    """Every key reachable from ``anchors`` through properly double-signed bundles (key id -> public key).

    Bundle n is accepted when it is signed by its own key and either (forward)
    the bundle n-1 introducing ``prev_key_id`` is accepted and that key signed
    bundle n, or (backward, unless ``backward=False``) an accepted bundle n+1
    names this key as its predecessor and this key signed it. A bundle whose
    key is an anchor is accepted when it is self-signed. Forks (two accepted
    bundles with one seq) cut the chain there. Forged, gapped and outside
    bundles are never trusted; ``walk_chain_report`` says why.
    """
    return walk_chain_report(anchors, bundles, backward=backward).trusted


# ---------------------------------------------------------------- key directories


def bundle_path(key_dir: str, seq: int) -> str:
    """``<key_dir>/chain/<seq:06d>.json``."""
    return os.path.join(key_dir, CHAIN_DIR, "%06d.json" % seq)


def _load_json(path: str) -> t.Any:
    with open(path, "rb") as handle:
        data = handle.read(MAX_BUNDLE_BYTES + 1)
    if len(data) > MAX_BUNDLE_BYTES:
        raise ValueError("file is larger than %d bytes" % MAX_BUNDLE_BYTES)
    return json.loads(data.decode("utf-8"))


def is_key_dir(path: str) -> bool:
    """True when ``path`` looks like a signing-key directory (state, active key or chain)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in (STATE_FILE, ACTIVE_PUB, ACTIVE_KEY, CHAIN_DIR)
    )


def load_key_dir(key_dir: str) -> KeyDir:
    """Read a key directory without trusting it: bundles (chain order), public keys, state. Secrets are not read."""
    if not os.path.isdir(key_dir):
        raise KeychainError("key directory %s does not exist" % key_dir, key_dir=key_dir)
    problems: t.List[str] = []
    state: dict = {}
    state_path = os.path.join(key_dir, STATE_FILE)
    if os.path.exists(state_path):
        try:
            loaded = _load_json(state_path)
            if isinstance(loaded, dict):
                state = loaded
            else:
                problems.append("%s is not a JSON object" % state_path)
        except (OSError, ValueError, RecursionError) as exc:
            problems.append("%s is unreadable: %s" % (state_path, exc))

    keys: t.Dict[str, t.Any] = {}
    keys_dir = os.path.join(key_dir, KEYS_DIR)
    if os.path.isdir(keys_dir):
        for name in sorted(os.listdir(keys_dir)):
            if not name.endswith(".pub"):
                continue
            path = os.path.join(keys_dir, name)
            try:
                pub = load_signing_public_key(path)
            except SignatureError as exc:
                problems.append(exc.msg)
                continue
            if key_id(pub) != name[: -len(".pub")]:
                problems.append("%s: file name does not match its key id %s" % (path, key_id(pub)))
                continue
            keys[key_id(pub)] = pub

    active_pub_path = os.path.join(key_dir, ACTIVE_PUB)
    active_id = state.get("active_key_id") if isinstance(state.get("active_key_id"), str) else None
    if os.path.exists(active_pub_path):
        try:
            pub = load_signing_public_key(active_pub_path)
            if active_id is None:
                active_id = key_id(pub)
            elif key_id(pub) != active_id:
                problems.append("%s is key %s but state.json says %s" % (active_pub_path, key_id(pub), active_id))
        except SignatureError as exc:
            problems.append(exc.msg)

    bundles: t.List[dict] = []
    chain_dir = os.path.join(key_dir, CHAIN_DIR)
    if os.path.isdir(chain_dir):
        for name in sorted(os.listdir(chain_dir)):
            match = _BUNDLE_NAME_RE.match(name)
            if not match:
                continue
            path = os.path.join(chain_dir, name)
            try:
                bundle = _load_json(path)
            except (OSError, ValueError, RecursionError) as exc:
                problems.append("%s is unreadable: %s" % (path, exc))
                continue
            seq = bundle.get("seq") if isinstance(bundle, dict) else None
            if seq != int(match.group(1)):
                problems.append("%s holds bundle seq %r, not %d (misplaced or replayed); ignored" % (path, seq, int(match.group(1))))
                continue
            bundles.append(bundle)
    return KeyDir(
        path=key_dir,
        active_key_path=os.path.join(key_dir, ACTIVE_KEY),
        active_pub_path=active_pub_path,
        active_key_id=active_id,
        state=state,
        bundles=bundles,
        keys=keys,
        problems=problems,
    )


def write_bundle(key_dir: str, bundle: dict) -> str:
    """Write ``bundle`` atomically to ``chain/<seq>.json``; never replace a different existing bundle. Returns the path."""
    entry = _check_bundle(bundle)
    path = bundle_path(key_dir, entry.seq)
    data = canonical_json(bundle) + b"\n"
    ensure_directory(os.path.dirname(path), 0o755)
    if os.path.exists(path):
        with open(path, "rb") as handle:
            if handle.read() == data:
                return path
        raise KeychainError("%s already holds a different bundle; refusing to replace it" % path, path=path)
    atomic_write(path, data, mode=0o644)
    return path


def write_state(key_dir: str, state: dict) -> None:
    """Write ``state.json`` atomically (0644; it holds no secret)."""
    atomic_write(os.path.join(key_dir, STATE_FILE), canonical_json(state) + b"\n", mode=0o644)


def _genesis_anchor(kd: KeyDir) -> t.Dict[str, t.Any]:
    for bundle in kd.bundles:
        if isinstance(bundle, dict) and bundle.get("seq") == 1:
            try:
                entry = _check_bundle(bundle)
            except (SignatureError, ValueError):
                return {}
            return {entry.key_id: entry.public_key}
    return {}


def trusted_keys_report(paths: t.Sequence[str]) -> TrustReport:
    """Resolve trust paths into keys: PEM public key files and directories of ``.pub`` files are anchors;
    key directories have their chain walked from those anchors.

    A key directory given with no anchor at all is trusted on first use from
    its genesis (seq 1) key; without a chain, its ``keys/*.pub`` and
    ``active.pub`` are taken as they are. Pin an anchor for real protection.
    """
    if isinstance(paths, str):
        paths = [paths]
    anchors: t.Dict[str, t.Any] = {}
    key_dirs: t.List[str] = []
    problems: t.List[str] = []
    for path in paths:
        path = os.fsdecode(path)
        if is_key_dir(path):
            key_dirs.append(path)
        elif os.path.isdir(path):
            found = False
            for name in sorted(os.listdir(path)):
                if name.endswith(".pub") or name.endswith(".pem"):
                    full = os.path.join(path, name)
                    if os.path.isfile(full):
                        pub = load_signing_public_key(full)
                        anchors[key_id(pub)] = pub
                        found = True
            if not found:
                raise KeychainError("trusted key directory %s holds no .pub or .pem public key" % path, path=path)
        elif os.path.isfile(path):
            pub = load_signing_public_key(path)
            anchors[key_id(pub)] = pub
        else:
            raise KeychainError("trusted key path %s does not exist" % path, path=path)
    trusted = dict(anchors)
    rejected: t.List[dict] = []
    positions: t.Dict[str, t.List[int]] = {}
    for path in key_dirs:
        kd = load_key_dir(path)
        problems.extend(kd.problems)
        start = anchors
        if not start:
            start = _genesis_anchor(kd)
            if not start and not kd.bundles:
                start = dict(kd.keys)
                if os.path.exists(kd.active_pub_path):
                    pub = load_signing_public_key(kd.active_pub_path)
                    start[key_id(pub)] = pub
        result = walk_chain_report(start, kd.bundles)
        trusted.update(result.trusted)
        for kid, seqs in result.positions.items():
            positions[kid] = sorted(set(positions.get(kid, [])) | set(seqs))
        for item in result.rejected:
            item = dict(item)
            item["key_dir"] = path
            rejected.append(item)
    if not trusted:
        raise KeychainError("no trusted key found in %s" % ", ".join(os.fsdecode(p) for p in paths))
    return TrustReport(trusted, rejected, problems, positions)


def trusted_keys_from(paths: t.Sequence[str]) -> t.Dict[str, t.Any]:
    """Key id -> public key for every key trusted through ``paths`` (see trusted_keys_report)."""
    return trusted_keys_report(paths).trusted
