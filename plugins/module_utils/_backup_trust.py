# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: which manifests of a repository are genuine (manifest trust).

Attacker R (docs/THREAT_MODEL.md) can write any file of the repository but
holds no signing key. Every decision that matters (the next seq, retention,
``latest``, what verify calls verified, what restore accepts) is taken over
the manifests this module calls *authentic*: parseable, canonical, signed by
a trusted key that is not retired at that point of the key chain, of this
repository, with a seq in range. Everything else is reported, never counted,
never deleted, and never blocks the others. Format-agnostic: it reads only
the manifest envelope (seq, backup_id, repo_id, signer, prev_seq,
prev_manifest_sha256, retained, repository, time), so it serves v1 and v2
manifests alike. See docs/BACKUP_FORMAT.md section 3.12.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import json
import os
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import signing

MAX_SEQ = 99999999          # eight digits: the manifest file name
MAX_SEQ_SKIP = 1024         # a writer steps over at most this many occupied (unverifiable) seqs


class Trust(t.NamedTuple):
    """Trusted signing keys (key id -> public key) and their key-chain positions (key id -> chain seqs)."""

    keys: t.Dict[str, t.Any]
    positions: t.Dict[str, t.List[int]]


class Entry:
    """One file under manifests/: parsed or not, and why it is not authentic."""

    def __init__(self, seq: int, path: str) -> None:
        self.seq = seq
        self.path = path
        self.name = os.path.basename(path)
        self.item: t.Optional[brepo.LoadedManifest] = None
        self.reasons: t.List[str] = []
        self.signer: t.Optional[str] = None

    @property
    def authentic(self) -> bool:
        return self.item is not None and not self.reasons

    @property
    def label(self) -> str:
        return self.item.backup_id if self.item is not None else self.name


class RepoView(t.NamedTuple):
    entries: t.Dict[int, Entry]                 # every manifest file, by the seq in its name
    authentic: t.List[brepo.LoadedManifest]     # seq order
    chain: t.Dict[int, str]                     # authentic seq -> hash-chain problem
    repo_problems: t.List[dict]                 # repo.json (and, in verify, the anchor)
    repo_config: dict                           # the signed copy of repo.json when one exists

    @property
    def highest(self) -> int:
        return self.authentic[-1].body["seq"] if self.authentic else 0

    @property
    def newest(self) -> t.Optional[brepo.LoadedManifest]:
        return self.authentic[-1] if self.authentic else None

    def rejected(self) -> t.List[Entry]:
        return [e for _s, e in sorted(self.entries.items()) if not e.authentic]

    def next_seq(self, repo: brepo.Repo) -> int:
        """The lowest free seq above the highest authentic one (files R planted there are stepped over)."""
        seq = self.highest + 1
        while seq in self.entries or os.path.lexists(repo.manifest_path(seq)):
            seq += 1
            if seq - self.highest > MAX_SEQ_SKIP or seq > MAX_SEQ:
                raise RansomeyeError(
                    "manifests %08d.json..%08d.json are all taken by files that do not verify; remove the planted "
                    "files (see ransomeye_backup_verify) before the next backup" % (self.highest + 1, seq - 1))
        return seq


def _envelope_reasons(item: brepo.LoadedManifest) -> t.List[str]:
    body = item.body
    reasons: t.List[str] = []
    if body["seq"] != item.seq_in_name:
        reasons.append("manifest file %08d.json holds seq %d (replayed or moved manifest)"
                       % (item.seq_in_name, body["seq"]))
    if brepo.seq_of_backup_id(body["backup_id"]) != body["seq"]:
        reasons.append("backup id %s does not match seq %d" % (body["backup_id"], body["seq"]))
    if set(item.document) != {"manifest", "signatures"}:
        reasons.append("manifest file has fields other than manifest and signatures")
    if signing.canonical_json(item.document) != item.raw:
        reasons.append("manifest file is not in canonical form (modified after signing)")
    prev_seq = body.get("prev_seq", body["seq"] - 1)
    if prev_seq is None:
        prev_seq = 0
    if isinstance(prev_seq, bool) or not isinstance(prev_seq, int) or not 0 <= prev_seq < body["seq"]:
        reasons.append("prev_seq %r is not a seq below %d" % (body.get("prev_seq"), body["seq"]))
    elif body["seq"] - prev_seq > MAX_SEQ_SKIP:
        reasons.append("seq %d is out of range: more than %d above its previous backup %d"
                       % (body["seq"], MAX_SEQ_SKIP, prev_seq))
    return reasons


def _signature(item: brepo.LoadedManifest, trust: Trust) -> t.Tuple[t.Optional[str], t.List[str]]:
    signatures = item.document.get("signatures") or []
    if len(signatures) != 1:
        return None, ["a manifest carries exactly one signature, this one has %d" % len(signatures)]
    data = signing.canonical_json(item.body)
    try:
        good = signing.verify_trusted(trust.keys, data, signatures[0])
    except RansomeyeError as exc:
        return None, ["no valid signature by a trusted key: %s" % exc.msg]
    if item.body.get("signer") != good:
        return good, ["signed by %s but the manifest names signer %s" % (good, item.body.get("signer"))]
    return good, []


def predecessor(body: dict) -> int:
    """The seq this manifest chains to (0: it is the first). ``prev_seq`` when recorded, else seq - 1."""
    prev = body.get("prev_seq", body["seq"] - 1)
    return prev if isinstance(prev, int) and not isinstance(prev, bool) and prev > 0 else 0


def retained_seqs(body: dict) -> t.Optional[t.Set[int]]:
    """The seqs the writer of ``body`` meant to keep after its retention (None when not recorded)."""
    ranges = body.get("retained")
    if not isinstance(ranges, list):
        return None
    out: t.Set[int] = set()
    for pair in ranges:
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair) \
                and 0 < pair[0] <= pair[1] <= body["seq"]:
            out.update(range(pair[0], pair[1] + 1))
    return out


def seq_ranges(seqs: t.Iterable[int]) -> t.List[t.List[int]]:
    """[[lo, hi], ...] covering ``seqs`` (compact: one pair per run of consecutive seqs)."""
    out: t.List[t.List[int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def open_repo(path: str) -> brepo.Repo:
    """``Repo.open``; when repo.json is missing or damaged but the repository has manifests, the repository with an
    id still unknown: the signed copies of repo.json in the manifests supply it (``scan``), and verify reports the
    damage. A repo.json of another format version is not damage and still fails."""
    try:
        return brepo.Repo.open(path)
    except brepo.RepoError:
        if not os.path.isdir(os.path.join(path, "manifests")):
            raise
        config = read_repo_config(brepo.Repo(path, ""))
        if config is not None and config.get("format") == brepo.REPO_FORMAT and isinstance(config.get("repo_id"), str) \
                and config.get("repo_id"):
            raise
        return brepo.Repo(path, "")


def read_repo_config(repo: brepo.Repo) -> t.Optional[dict]:
    try:
        with open(os.path.join(repo.path, "repo.json"), "rb") as handle:
            data = json.loads(handle.read(65536).decode("utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def scan(repo: brepo.Repo, trust: Trust, content_check: t.Optional[t.Callable[[dict], t.List[str]]] = None) -> RepoView:
    """Classify every manifest file; judge the hash chain between authentic manifests.

    ``content_check(body)`` adds format-specific reasons (for example, a v1
    component that names an object the manifest does not list).
    """
    entries: t.Dict[int, Entry] = {}
    signed: t.List[Entry] = []
    for seq, path in repo.manifest_files():
        entry = Entry(seq, path)
        entries[seq] = entry
        try:
            entry.item = brepo.load_manifest(seq, path)
        except (brepo.ManifestError, OSError) as exc:
            entry.reasons.append(getattr(exc, "msg", None) or str(exc))
            continue
        entry.reasons.extend(_envelope_reasons(entry.item))
        entry.signer, why = _signature(entry.item, trust)
        entry.reasons.extend(why)
        if content_check is not None:
            entry.reasons.extend(content_check(entry.item.body))
        if entry.signer is not None and not why:
            signed.append(entry)

    # repo.json is authenticated through the signed manifests that carry a copy of it. Copies are grouped by
    # repo_id: the group matching repo.json wins (a manifest copied in from another repository signed by the same
    # key cannot take over), else the largest group; within it the newest copy is the reference.
    file_config = read_repo_config(repo)
    repo_config = file_config or {"repo_id": repo.repo_id}
    repo_problems: t.List[dict] = []
    groups: t.Dict[str, t.List[Entry]] = {}
    for entry in signed:
        copy = entry.item.body.get("repository") if entry.item is not None else None
        if isinstance(copy, dict) and isinstance(copy.get("repo_id"), str):
            groups.setdefault(copy["repo_id"], []).append(entry)
    if groups:
        own = (file_config or {}).get("repo_id")
        group = groups.get(own) if own in groups else max(groups.values(), key=len)  # type: ignore[arg-type]
        reference = group[-1]
        copy = reference.item.body["repository"]  # type: ignore[union-attr]
        if copy != file_config:
            repo_problems.append({"backup": None, "object": "repo.json",
                                  "reason": "repo.json differs from the copy signed in manifest %s (modified or "
                                            "unreadable); the signed copy is used" % reference.name})
        repo_config = copy
    repo_id = repo_config.get("repo_id")
    for entry in entries.values():
        if entry.item is not None and entry.item.body["repo_id"] != repo_id:
            entry.reasons.append("manifest belongs to repository %s, not %s" % (entry.item.body["repo_id"], repo_id))

    # Key-chain positions never go backwards in seq order (docs/BACKUP_FORMAT.md 2.5): once a newer key signed a
    # backup, a retired key cannot sign a later one, even though it still verifies what it signed before.
    position = 0
    holder: t.Optional[Entry] = None
    for seq in sorted(entries):
        entry = entries[seq]
        if not entry.authentic or entry.signer not in trust.positions:
            continue
        later = [p for p in trust.positions[entry.signer] if p >= position]
        if not later:
            entry.reasons.append(
                "signed by key %s, retired (key-chain position %d) before key %s (position %d) signed %s"
                % (entry.signer, max(trust.positions[entry.signer]), holder.signer if holder else "?", position,
                   holder.label if holder else "an earlier backup"))
            continue
        position = min(later)
        holder = entry

    authentic = [entries[s].item for s in sorted(entries) if entries[s].authentic]
    chain = _judge_chain(entries, authentic)
    return RepoView(entries, authentic, chain, repo_problems, repo_config)  # type: ignore[arg-type]


def _judge_chain(entries: t.Dict[int, Entry], authentic: t.List[t.Any]) -> t.Dict[int, str]:
    """Hash-chain problems by authentic seq: a broken link, or missing manifests below it (deleted backups).

    A missing seq is legitimate when retention removed it: below the lowest
    manifest for manifests without a record, or left out of the ``retained``
    ranges of the newest manifest that records them. A missing seq is charged
    to the next authentic manifest above it.
    """
    chain: t.Dict[int, str] = {}
    if not authentic:
        return chain
    lowest = authentic[0].body["seq"]
    kept: t.Optional[t.Set[int]] = None
    newest_with_record = 0
    for item in reversed(authentic):
        kept = retained_seqs(item.body)
        if kept is not None:
            newest_with_record = item.body["seq"]
            break
    missing: t.Set[int] = set()
    for item in authentic:
        body = item.body
        seq = body["seq"]
        prev = predecessor(body)
        prev_sha = body.get("prev_manifest_sha256")
        if prev == 0:
            if prev_sha is not None:
                chain[seq] = "first backup names a previous manifest"
            continue
        entry = entries.get(prev)
        if entry is not None:
            if entry.authentic and prev_sha != entry.item.sha256:
                chain[seq] = "prev_manifest_sha256 does not match manifest %08d.json (chain broken)" % prev
            continue  # a damaged predecessor is reported by itself
        if kept is not None and prev <= newest_with_record:
            if prev in kept:
                missing.add(prev)
        elif prev >= lowest:
            missing.update(s for s in range(prev, seq) if s not in entries)
    if kept is not None:
        missing.update(s for s in kept if s not in entries)
    by_successor: t.Dict[int, t.List[int]] = {}
    for seq in missing:
        successor = next((i.body["seq"] for i in authentic if i.body["seq"] > seq), None)
        if successor is not None:
            by_successor.setdefault(successor, []).append(seq)
    for successor, seqs in by_successor.items():
        text = ", ".join("%08d" % lo if lo == hi else "%08d..%08d" % (lo, hi) for lo, hi in seq_ranges(seqs))
        reason = "manifests %s are missing (deleted backups)" % text
        chain[successor] = "%s; %s" % (chain[successor], reason) if successor in chain else reason
    return chain


def describe_rejected(view: RepoView) -> t.List[str]:
    return ["%s (%s)" % (e.name, "; ".join(e.reasons)) for e in view.rejected()]
