# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: ransomeye_backup_info, a cheap listing of the backups of a repository.

It reads the manifests only (never an object, never a secret): each backup
with its seq, advisory time, components, sizes, row totals, signer and
whether its manifest verifies (signature, key-chain position, hash chain,
anchor). Checking the objects themselves is ransomeye_backup_verify's job.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_anchor as banchor
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_trust as btrust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_trust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_verify import anchor_param
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_refs import content_reasons
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def sizes(body: dict) -> t.Tuple[t.Optional[int], t.Optional[int]]:
    """(plaintext bytes, stored bytes) of everything the backup needs, from what its manifest records."""
    totals = body.get("totals")
    if isinstance(totals, dict) and isinstance(totals.get("size"), int):
        return totals.get("size"), totals.get("stored_size")
    objects = brepo.referenced_objects(body)
    if not objects:
        return None, None
    plain = sum(int(r.get("plaintext_size") or 0) for r in objects.values())
    stored = sum(int(r.get("ciphertext_size") or 0) for r in objects.values())
    return plain, stored


def summary(entry: t.Any, verified: bool, problem: t.Optional[str]) -> dict:
    body = entry.item.body
    size, stored = sizes(body)
    components = body.get("components") or {}
    tables = (components.get("database") or {}).get("tables") if isinstance(components.get("database"), dict) else None
    rows = sum(v for v in tables.values() if isinstance(v, int)) if isinstance(tables, dict) else None
    when = body.get("time") if isinstance(body.get("time"), dict) else {}
    return {"backup_id": entry.item.backup_id, "seq": body["seq"], "time": when.get("end") or when.get("start"),
            "components": sorted(components), "size": size, "stored_size": stored, "rows": rows,
            "tables": len(tables) if isinstance(tables, dict) else None, "signer": body.get("signer"),
            "verified": verified, "problem": problem, "manifest": entry.path}


def run_info_module(module: t.Any) -> dict:
    params = module.params
    repo = btrust.open_repo(params["repo"])
    trust = load_trust(params["trusted_keys"])
    anchor = anchor_param(params, repo)
    with repo.lock(exclusive=False, timeout=params.get("lock_timeout") or 0):
        view = btrust.scan(repo, trust, content_check=content_reasons)
    problems: t.List[dict] = list(view.repo_problems)
    behind = banchor.check(view, anchor[1], anchor[0]) if anchor else []
    problems = behind + problems
    rows = []
    for seq in sorted(view.entries):
        entry = view.entries[seq]
        why = "; ".join(entry.reasons) or view.chain.get(seq)
        if entry.item is None:
            problems.append({"backup": entry.name, "object": "manifest:%s" % entry.name, "reason": why})
            continue
        ok = entry.authentic and seq not in view.chain and not behind
        if why:
            problems.append({"backup": entry.item.backup_id, "object": "manifest:%s" % entry.name, "reason": why})
        rows.append(summary(entry, ok, why or (behind[0]["reason"] if behind else None)))
    wanted = params.get("backup") or "all"
    newest = view.newest
    if wanted == "latest":
        rows = [r for r in rows if newest is not None and r["seq"] == newest.body["seq"]]
    elif wanted != "all":
        rows = [r for r in rows if r["backup_id"] == wanted or (wanted.isdigit() and r["seq"] == int(wanted))]
        if not rows:
            raise RansomeyeError("backup %s not found in the repository; available: %s"
                                 % (wanted, ", ".join(m.backup_id for m in view.authentic) or "none"))
    return {"changed": False, "backups": rows, "problems": problems,
            "latest": newest.backup_id if newest is not None and not behind else None,
            "count": sum(1 for r in rows if r["verified"])}
