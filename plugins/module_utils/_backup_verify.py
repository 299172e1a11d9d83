# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: verification of backups (quick, ciphertext, full).

Every problem names the backup and the object (or ``manifest:<file>``). The
verifier reads only; it holds the repository lock shared so that it never sees
a backup or a prune half done.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import concurrent.futures
import hashlib
import os
import threading
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._units import throughput
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_incident import from_params as incident_from_params
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_anchor as banchor
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_trust as btrust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_refs import component_object_refs, content_reasons
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import reader as v2reader
from ansible_collections.ransomeye.ops.plugins.module_utils._backup import stream as v2stream
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import (
    container, decryption_from_params, load_trust)
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_objects import open_object

LEVELS = ("quick", "ciphertext", "full")
READ_CHUNK = 1 << 20


class VerifyResult(t.NamedTuple):
    verified: t.List[str]
    problems: t.List[dict]
    backups: t.List[dict]
    objects_checked: int
    bytes_checked: int
    selected: t.List[brepo.LoadedManifest]
    blocking: t.List[dict] = []          # problems of the repository as a whole that must stop a restore
    view: t.Any = None                   # the _backup_trust.RepoView the verdicts came from


def _problem(backup: t.Any, obj: str, reason: str) -> dict:
    return {"backup": backup, "object": obj, "reason": reason}


class _ObjectChecker:
    """Checks each object once per run, whatever number of backups share it."""

    def __init__(self, repo: brepo.Repo, level: str, decrypt_kwargs: dict) -> None:
        self.repo = repo
        self.level = level
        self.decrypt_kwargs = decrypt_kwargs
        self.cache: t.Dict[t.Tuple[str, str], t.Optional[str]] = {}
        self.bytes_checked = 0
        self.pack_level = level
        self._lock = threading.Lock()

    def _count(self, size: int) -> None:
        with self._lock:
            self.bytes_checked += size

    def prefetch(self, items: t.List[t.Tuple[str, dict]]) -> None:
        """Check many objects on all cores (hashing and AES-GCM release the GIL); results land in the cache.

        The first object is checked alone so that the run's unwrapped file key is
        cached before the workers start.
        """
        todo = []
        seen: t.Set[t.Tuple[str, str]] = set()
        for object_id, record in items:
            key = (object_id, repr(sorted(record.items())))
            if key not in self.cache and key not in seen:
                seen.add(key)
                todo.append((key, object_id, record))
        if self.level == "quick" or not todo:
            return
        first_key, first_id, first_record = todo[0]
        self.cache[first_key] = self._check(first_id, first_record)
        workers = max(1, min(4, os.cpu_count() or 1))
        if workers == 1 or len(todo) < 3:
            for key, object_id, record in todo[1:]:
                self.cache[key] = self._check(object_id, record)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._check, object_id, record): key for key, object_id, record in todo[1:]}
            for future, key in futures.items():
                self.cache[key] = future.result()

    def check(self, object_id: str, record: dict) -> t.Optional[str]:
        key = (object_id, repr(sorted(record.items())))
        if key not in self.cache:
            self.cache[key] = self._check(object_id, record)
        return self.cache[key]

    def _check(self, object_id: str, record: dict) -> t.Optional[str]:
        size = self.repo.object_size(object_id)
        if size is None:
            return "object is missing"
        if size != record.get("ciphertext_size"):
            return "object size %d differs from the manifest's %s (truncated or extended)" % (
                size, record.get("ciphertext_size"))
        level = self.level
        if record.get("kind") == "pack" and self.pack_level == "quick":
            return None  # the restore authenticates each pack's plaintext against the manifest before using it
        if level == "quick":
            return None
        if record.get("kind") == "index":
            level = "ciphertext"  # a v2 index is stored in clear: its SHA-256 is the whole check
        with open_object(self.repo, object_id) as src:
            if level == "ciphertext":
                digest = hashlib.sha256()
                for block in iter(lambda: src.read(READ_CHUNK), b""):
                    digest.update(block)
                    self._count(len(block))
                if digest.hexdigest() != record.get("ciphertext_sha256"):
                    return "ciphertext SHA-256 differs from the manifest (object modified)"
                return None
            # full: every chunk is authenticated (AES-GCM tags, header MAC, bound object id) and the plaintext
            # is compared with the signed manifest. That proves the content; hashing the ciphertext as well
            # would add a second SHA-256 pass and prove nothing more.
            digest = hashlib.sha256()
            size = 0
            try:
                for chunk in container.decrypt_chunks(src, expected_object_id=object_id, **self.decrypt_kwargs):
                    digest.update(chunk)
                    size += len(chunk)
            except RansomeyeError as exc:
                return "decryption failed: %s" % exc.msg
            self._count(int(record.get("ciphertext_size") or 0))
        if digest.hexdigest() != record.get("plaintext_sha256") or size != record.get("plaintext_size"):
            return "plaintext SHA-256 or size differs from the manifest"
        return None


def _select(view: btrust.RepoView, backup: str, require_components: t.Optional[t.Sequence[str]] = None) -> t.List[int]:
    """Seqs (file-name seqs) of the manifests to verify.

    ``latest`` is the newest authentic manifest (a planted file with a higher
    seq is not a backup); with ``require_components``, the newest one that
    holds all of them (a restore of the database after a config-only backup
    wants the newest backup that has a database).
    """
    seqs = sorted(view.entries)
    if not seqs:
        return []
    if backup in (None, "", "latest"):
        having = [m.seq_in_name for m in view.authentic
                  if not require_components or all(c in (m.body.get("components") or {}) for c in require_components)]
        if having:
            return [max(having)]
        return [seqs[-1]]
    if backup == "all":
        return seqs
    wanted = [s for s in seqs if view.entries[s].item is not None and view.entries[s].item.backup_id == backup]
    if not wanted:
        seq = brepo.seq_of_backup_id(backup)
        if seq is not None and seq in seqs and backup == "%08d" % seq:
            wanted = [seq]
    if len(wanted) > 1:  # R copied a manifest under other names: the authentic one is the backup
        wanted = [s for s in wanted if view.entries[s].authentic][:1] or wanted[:1]
    if not wanted:
        raise RansomeyeError("backup %s not found in the repository; available: %s"
                             % (backup, ", ".join(m.backup_id for m in view.authentic) or "none"))
    return wanted


def verify_repo(repo: brepo.Repo, trusted: t.Any, backup: str = "latest", level: str = "quick",
                decrypt_kwargs: t.Optional[dict] = None,
                only_components: t.Optional[t.Sequence[str]] = None,
                anchor: t.Optional[t.Tuple[str, t.Optional[dict]]] = None, packs_quick: bool = False,
                mark: t.Any = None) -> VerifyResult:
    """Verify with the lock already held.

    ``trusted`` is a ``Trust`` (keys and chain positions) or a plain key dict.
    ``only_components`` limits the object checks to the objects of those
    components (a restore of the database need not hash every artifact); the
    manifest itself is always checked in full. ``anchor`` is (path, state)
    of a rollback anchor. Problems about the repository as a whole (repo.json,
    the anchor) come first; ``blocking`` says which of them must stop a restore.
    ``mark`` (an _backup_incident.IncidentMark) refuses manifests signed after
    the incident mark or by a revoked key: they are problems, never chosen.
    """
    if level not in LEVELS:
        raise RansomeyeError("level must be one of %s" % ", ".join(LEVELS))
    decrypt_kwargs = decrypt_kwargs or {}
    if level == "full" and not decrypt_kwargs:
        raise RansomeyeError("level full decrypts every object: give private_key (rsa mode) or key_file (aes mode)")
    trust = trusted if isinstance(trusted, btrust.Trust) else btrust.Trust(dict(trusted), {})
    view = btrust.scan(repo, trust, content_check=content_reasons)
    entries = view.entries
    problems: t.List[dict] = list(view.repo_problems)
    blocking: t.List[dict] = []
    if anchor is not None:
        blocking = banchor.check(view, anchor[1], anchor[0])
        problems = blocking + problems
    selected = _select(view, backup, only_components)
    if not entries:
        problems.append(_problem(None, "manifests", "the repository holds no backup"))
    checker = _ObjectChecker(repo, level, decrypt_kwargs)
    if packs_quick:
        checker.pack_level = "quick"

    def needed_objects(item: brepo.LoadedManifest) -> t.List[t.Tuple[str, dict]]:
        refs = brepo.referenced_objects(item.body)
        if only_components is not None:
            wanted = {oid for oid, what in component_object_refs(item.body)
                      if what in only_components or (what.startswith("/") and "artifacts" in only_components)}
            refs = {oid: rec for oid, rec in refs.items() if oid in wanted}
        return sorted(refs.items())

    prefetch: t.List[t.Tuple[str, dict]] = []
    for seq in selected:
        if entries[seq].authentic:
            prefetch.extend(needed_objects(entries[seq].item))  # type: ignore[arg-type]
    checker.prefetch(prefetch)
    verified: t.List[str] = []
    backups: t.List[dict] = []
    marked: t.Set[t.Any] = set()
    proven: t.Set[str] = set()     # v2 trees and streams whose content this run proved (shared by backups)
    for seq in selected:
        entry = entries[seq]
        item = entry.item
        manifest_obj = "manifest:%s" % entry.name
        ok = True
        if entry.reasons:
            problems.append(_problem(entry.label, manifest_obj, "; ".join(entry.reasons)))
            ok = False
        if seq in view.chain:
            problems.append(_problem(entry.label, manifest_obj, view.chain[seq]))
            ok = False
        refused = mark.refusal(item.body.get("seq"), entry.signer) if mark is not None and item is not None \
            else None
        if refused:
            problems.append(_problem(entry.label, manifest_obj, refused))
            ok = False
            marked.add(seq)
        if item is not None:
            body = item.body
            backups.append({"backup_id": item.backup_id, "seq": body["seq"],
                            "created": (body.get("time") or {}).get("end"), "signer": body.get("signer"),
                            "components": sorted(body.get("components") or {}), "authentic": entry.authentic})
        if item is None or not entry.authentic:
            continue  # objects of an unauthenticated manifest prove nothing
        for object_id, record in needed_objects(item):
            reason = checker.check(object_id, record)
            if reason:
                problems.append(_problem(item.backup_id, object_id, reason))
                ok = False
        if level == "full" and ok:
            for name in ("config", "artifacts", "database"):
                comp = (item.body.get("components") or {}).get(name)
                if only_components is not None and name not in only_components:
                    continue
                reason = None
                if v2reader.is_v2(comp):
                    reason = v2reader.verify_component(repo, item.body, comp, decrypt_kwargs, proven)
                elif v2stream.is_v2_stream(comp):
                    reason = v2reader.verify_stream(repo, item.body, comp, decrypt_kwargs, proven)
                if reason:
                    problems.append(_problem(item.backup_id, "component:%s" % name, reason))
                    ok = False
        if ok and not blocking:
            verified.append(item.backup_id)
    objects_checked = len({key[0] for key in checker.cache})
    chosen = [entries[s].item for s in selected if entries[s].authentic and s not in view.chain and s not in marked]
    return VerifyResult(verified, problems, backups, objects_checked, checker.bytes_checked,
                        chosen, blocking, view)  # type: ignore[arg-type]


def anchor_param(params: dict, repo: brepo.Repo) -> t.Optional[t.Tuple[str, t.Optional[dict]]]:
    """(path, state) of the ``anchor`` option for verify and restore (it must exist), or None."""
    if not params.get("anchor"):
        return None
    path = banchor.check_location(params["anchor"], repo.path)
    return path, banchor.read_anchor(path, None, required=True)


def run_verify_module(module: t.Any) -> dict:
    params = module.params
    started = time.monotonic()
    repo = btrust.open_repo(params["repo"])
    trusted = load_trust(params["trusted_keys"])
    anchor = anchor_param(params, repo)
    decrypt_kwargs: dict = {}
    if params["level"] == "full":
        if not params.get("private_key") and not params.get("key_file"):
            raise RansomeyeError("level full decrypts every object: give private_key (rsa mode) or key_file (aes mode)")
        decrypt_kwargs = decryption_from_params(params)
    with repo.lock(exclusive=False, timeout=params.get("lock_timeout") or 0):
        result = verify_repo(repo, trusted, params.get("backup") or "latest", params["level"], decrypt_kwargs,
                             anchor=anchor, mark=incident_from_params(params))
        if os.path.isdir(os.path.join(repo.path, "wal")):
            from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_chain import verify_hook
            result = verify_hook(repo.path, result, trusted, params["level"], decrypt_kwargs)
    out = {"changed": False, "verified": result.verified, "problems": result.problems, "backups": result.backups,
           "level": params["level"], "objects_checked": result.objects_checked, "bytes_checked": result.bytes_checked}
    out.update(throughput(result.bytes_checked, time.monotonic() - started))
    if getattr(result, "wal", None) is not None:
        out["wal"] = result.wal
    if result.problems and params["fail_on_problems"]:
        first = result.problems[0]
        out.pop("changed")
        raise RansomeyeError(
            "backup verification found %d problem(s); first: backup %s, %s: %s%s"
            % (len(result.problems), first["backup"], first["object"], first["reason"],
               (" (%s)" % first["detail"]) if first.get("detail") else ""), **out)
    return out
