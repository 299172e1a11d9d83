# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: one run of ransomeye_backup (decide, write objects, sign, write manifest, prune)."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import concurrent.futures
import os
import platform
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_anchor as banchor
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_retention as bretention
from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_trust as btrust
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import (
    load_encryption, load_signer, signing, require_crypto, writer_trust)
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_refs import content_reasons
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_hooks import hook
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_duration

TOOL_NAME = "ransomeye.ops"
TOOL_VERSION = "1.0.0"
COMPONENTS = ("database", "config", "artifacts")


def _validate(params: dict) -> t.List[str]:
    components = list(dict.fromkeys(params.get("components") or COMPONENTS))
    if not components:
        raise RansomeyeError("components must name at least one of database, config, artifacts")
    if "database" in components and not params.get("db"):
        raise RansomeyeError("db (the database to dump) is required when components contains database")
    if "config" in components and not params.get("config_paths"):
        raise RansomeyeError("config_paths is required when components contains config")
    if "artifacts" in components and not params.get("artifact_paths"):
        raise RansomeyeError("artifact_paths is required when components contains artifacts")
    return components


def _fresh(latest: t.Optional[brepo.LoadedManifest], repo: brepo.Repo, signer_public: t.Any, max_age: float,
           now: float) -> t.Tuple[bool, str]:
    if latest is None:
        return False, "no backup yet"
    body = latest.body
    try:
        signing.verify(signer_public, signing.canonical_json(body), (latest.document.get("signatures") or [None])[0])
    except RansomeyeError as exc:
        return False, "newest backup %s does not verify with the signing key (%s)" % (latest.backup_id, exc.msg)
    for object_id, record in brepo.referenced_objects(body).items():
        try:
            size = repo.object_size(object_id)
        except RansomeyeError:
            size = None
        if size is None or size != record.get("ciphertext_size"):
            return False, "newest backup %s is incomplete (object %s)" % (latest.backup_id, object_id)
    ended = brepo.parse_iso_time((body.get("time") or {}).get("end"))
    if ended is None:
        return False, "newest backup has no usable time"
    if ended > now + 300:
        return False, "newest backup is dated in the future (clock went backwards?); not trusting its age"
    age = now - ended
    if age < max_age:
        return True, "newest complete backup %s is %ds old, younger than max_age" % (latest.backup_id, int(age))
    return False, "newest backup %s is %ds old, older than max_age" % (latest.backup_id, int(age))


def _empty_stats() -> dict:
    return {"bytes_read": 0, "bytes_stored": 0, "bytes_deduplicated": 0, "files_new": 0, "files_changed": 0,
            "files_unchanged": 0, "files_rehashed": 0, "cache_mismatches": 0, "objects_new": 0, "objects_reused": 0,
            "duration": 0.0}


def run_backup(module: t.Any) -> dict:
    params = module.params
    components = _validate(params)
    max_age = parse_duration(params.get("max_age"), "max_age")
    policy = bretention.policy_from(params)
    require_crypto()
    if (params.get("format") or "v2") == "v2":
        # before the repository is touched: a v2 backup compresses every blob with zstd
        from ansible_collections.ransomeye.ops.plugins.module_utils._compress import require_zstd
        require_zstd()
    if "database" in components or "physical" in components:
        from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import require_psycopg2
        require_psycopg2(module)
    # Fail on bad paths before touching the repository.
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup_roots import normalize_roots, refuse_overlaps
    config_roots = normalize_roots(params.get("config_paths") or [], "config") if "config" in components else []
    artifact_roots = normalize_roots(params.get("artifact_paths") or [], "artifact") if "artifacts" in components else []
    refuse_overlaps(config_roots + artifact_roots, params["repo"],
                    _cache_dir(params) if _uses_v2_engine(params, components) else None)
    signer, signer_id = load_signer(params["signing_key"], params.get("signing_key_passphrase"))
    trust = writer_trust(signer, params["signing_key"], params.get("trusted_keys"))
    repo_path = params["repo"]
    anchor_path = banchor.check_location(params["anchor"], repo_path) if params.get("anchor") else None
    if module.check_mode:
        if not os.path.exists(os.path.join(repo_path, "repo.json")) \
                and not os.path.isdir(os.path.join(repo_path, "manifests")):
            # Only to fail on unusable keys in check mode too; the loaded keys are not needed.
            load_encryption(params, "", create_id_key=False)
            return {"changed": True, "up_to_date": False, "backup_id": "", "seq": 1, "manifest": "",
                    "reason": "repository %s would be created and a first backup taken" % repo_path,
                    "stats": {}, "pruned": {"manifests": [], "objects": 0, "bytes": 0}}
        repo = btrust.open_repo(repo_path)
    else:
        repo = btrust.open_repo(repo_path) if os.path.isdir(os.path.join(repo_path, "manifests")) \
            else brepo.Repo.create(repo_path)
        repo.ensure_layout()
    # v2 keys blob ids with a host-local secret; only a v1 artifacts run still needs keys/dedup.key.
    v1_artifacts = (params.get("format") or "v2") == "v1" and "artifacts" in components
    enc = load_encryption(params, repo.keys_dir, create_id_key=v1_artifacts and not module.check_mode)
    with repo.lock(exclusive=True, timeout=params.get("lock_timeout") or 0):
        # Only authentic manifests count: for the next seq, the previous hash, reuse, freshness and retention.
        view = btrust.scan(repo, trust, content_check=content_reasons)
        anchor_state = None
        if anchor_path:
            anchor_state = banchor.read_anchor(anchor_path, view.repo_config.get("repo_id"), required=False)
            behind = banchor.check(view, anchor_state, anchor_path)
            if behind:
                raise RansomeyeError("repository %s is rolled back: %s; refusing to back up over it (investigate; "
                                     "to accept this state on purpose, move the anchor file away)"
                                     % (repo.path, behind[0]["detail"]), problems=behind)
        for problem in view.repo_problems:
            module.warn("%s: %s" % (problem["object"], problem["reason"]))
        if not (view.repo_config.get("repo_id") or repo.repo_id):
            raise RansomeyeError("repo.json of %s is missing or damaged and no manifest holds a signed copy of it; "
                                 "restore repo.json from a copy" % repo.path)
        rejected = btrust.describe_rejected(view)
        if rejected:
            module.warn("manifests that do not verify with this run's keys were left in place and not counted "
                        "(planted, foreign or damaged; run ransomeye_backup_verify): %s" % ", ".join(rejected)[:2000])
        latest = view.newest
        now = time.time()
        if max_age is not None:
            fresh, why = _fresh(latest, repo, signer.public_key(), max_age, now)
            if fresh and latest is not None:
                return {"changed": False, "up_to_date": True, "reason": why, "backup_id": latest.backup_id,
                        "seq": latest.body["seq"], "manifest": latest.path, "manifest_sha256": latest.sha256,
                        "stats": {}, "pruned": {"manifests": [], "objects": 0, "bytes": 0}}
            reason = why
        else:
            reason = "no max_age given"
        seq = view.next_seq(repo)
        backup_id = brepo.backup_id_for(seq, now)
        retention = _retention(view, policy, seq, backup_id, now)
        if module.check_mode:
            pruned = brepo.prune(repo, None, check_mode=True, remove_seqs=retention["remove_seqs"])
            return {"changed": True, "up_to_date": False, "reason": reason + "; a backup would be taken",
                    "backup_id": backup_id, "seq": seq, "manifest": repo.manifest_path(seq),
                    "stats": {}, "pruned": pruned, "retention": retention["report"]}
        return _take_backup(module, repo, enc, signer, signer_id, components, config_roots, artifact_roots,
                            view, seq, now, reason, retention, anchor_path)


def _retention(view: t.Any, policy: t.Any, seq: int, backup_id: str, now: float) -> dict:
    """Decide retention before anything is written: the new manifest records what it keeps (``retained``)."""
    candidates = [bretention.Candidate(m.body["seq"], m.backup_id, brepo.parse_iso_time(
        (m.body.get("time") or {}).get("end") or (m.body.get("time") or {}).get("start"))) for m in view.authentic]
    candidates.append(bretention.Candidate(seq, backup_id, now))
    kept, removed, notes = bretention.plan(candidates, policy)
    ids = {c.seq: c.backup_id for c in candidates}
    report = {"policy": policy.describe() if policy else {},
              "kept": [{"backup_id": ids[s], "seq": s, "reasons": kept[s]} for s in sorted(kept)],
              "removed": [{"backup_id": c.backup_id, "seq": c.seq} for c in removed], "notes": notes}
    return {"kept": sorted(kept), "remove_seqs": [c.seq for c in removed], "report": report}


def _take_backup(module: t.Any, repo: brepo.Repo, enc: t.Any, signer: t.Any, signer_id: str,
                 components: t.List[str], config_roots: t.List[str], artifact_roots: t.List[str],
                 view: t.Any, seq: int, now: float, reason: str, retention: dict,
                 anchor_path: t.Optional[str]) -> dict:
    params = module.params
    started_mono = time.monotonic()
    repo.clean_tmp()
    manifests = view.authentic
    previous = view.newest
    prev_sha = previous.sha256 if previous is not None else None
    previous_times = [brepo.parse_iso_time((m.body.get("time") or {}).get("start")) for m in manifests]
    previous_start = max([x for x in previous_times if x is not None] or [0.0])
    clock_backwards = bool(previous_start and now < previous_start)
    backup_id = brepo.backup_id_for(seq, now)
    body: t.Dict[str, t.Any] = {
        "format": brepo.MANIFEST_FORMAT,
        "version": brepo.FORMAT_VERSION,
        "repo_id": view.repo_config.get("repo_id") or repo.repo_id,
        "seq": seq,
        "backup_id": backup_id,
        "prev_manifest_sha256": prev_sha,
        "prev_seq": previous.body["seq"] if previous is not None else None,
        "retained": btrust.seq_ranges(retention["kept"]),
        "repository": view.repo_config,
        "signer": signer_id,
        "encryption": enc.describe(),
        "tool": {"name": TOOL_NAME, "version": TOOL_VERSION, "python": platform.python_version(),
                 "host": platform.node()},
        "components": {},
        "objects": {},
    }
    stats: t.Dict[str, dict] = {}
    result: t.Dict[str, t.Any] = {}
    objects: t.Dict[str, dict] = {}
    # The dump runs in a worker thread while config and artifacts are read in
    # this one: pg_dump, our chunking/hashing and zstd/AES (which release the
    # GIL) then use both cores instead of running one after the other. In v2
    # the dump goes into the same run's packs (content-defined chunks, dedup
    # against the previous dump); in v1 it is one object of its own.
    enc.prepare()
    v2 = (params.get("format") or "v2") == "v2"
    executor = None
    dump_future = None
    db_object_id = ""
    dump = None
    engine = None
    cache = None
    try:
        if _uses_v2_engine(params, components):
            engine = _v2_engine(module, repo, enc, signer, manifests, clock_backwards, now)
        if "database" in components:
            from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ConnInfo
            from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_db as bdb
            executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            if engine is not None:
                dump_future = executor.submit(bdb.dump_database_v2, engine, ConnInfo.from_params(params),
                                              params["db"])
            else:
                db_object_id = brepo.new_object_id()
                dump_future = executor.submit(bdb.dump_database, repo, enc, ConnInfo.from_params(params),
                                              params["db"], db_object_id)
        if engine is not None:
            _v2_components(engine, components, config_roots, artifact_roots, body, stats)
        elif not v2:
            cache = _files_components(params, repo, enc, components, config_roots, artifact_roots, manifests,
                                      clock_backwards, now, body, stats, objects)
        dump = dump_future.result() if dump_future is not None else None
        if engine is not None:
            before = set(objects)
            objects.update(engine.finish())
            stored = sum(rec["ciphertext_size"] for oid, rec in objects.items()
                         if oid not in before and oid in engine.new_packs)
            db_stored = int(dump.record["stats"]["bytes_stored"]) if dump is not None else 0
            files_last = [c for c in ("config", "artifacts") if c in stats]
            if files_last:
                stats[files_last[-1]]["bytes_stored"] = max(0, stored - db_stored)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=True)   # the dump thread may still write into the engine
        if engine is not None:
            engine.abort()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
    if dump is not None:
        common = {"db": params["db"], "format": "pg_dump-custom", "tables": dump.tables,
                  "server_version": dump.server_version, "pg_dump_version": dump.pg_dump_version,
                  "row_counts_snapshot": "same exported snapshot as the dump"}
        if engine is not None:
            dstats = dump.record.pop("stats")
            body["components"]["database"] = dict(common, compression="none", **dump.record)
            stats["database"] = dict(_empty_stats(), bytes_read=dump.record["size"],
                                     bytes_stored=dstats["bytes_stored"],
                                     bytes_deduplicated=dstats["bytes_reused"],
                                     objects_new=dstats["blobs_new"], objects_reused=dstats["blobs_reused"],
                                     chunks=dstats["chunks"], segments=dstats["segments"],
                                     duration=round(dump.duration, 3))
        else:
            objects[db_object_id] = dump.record
            body["components"]["database"] = dict(common, object=db_object_id)
            stats["database"] = dict(_empty_stats(), bytes_read=dump.record["plaintext_size"],
                                     bytes_stored=dump.record["ciphertext_size"], objects_new=1,
                                     duration=round(dump.duration, 3))
        result["tables"] = dump.tables
    if "physical" in components:
        from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_base import backup_physical
        phys_id = brepo.new_object_id()
        body["components"]["physical"], objects[phys_id], pstats = backup_physical(params, repo, enc, phys_id)
        stats["physical"] = dict(_empty_stats(), **pstats)
    body["objects"] = objects
    ended = time.time()
    body["time"] = {"start": brepo.iso_time(now), "end": brepo.iso_time(ended), "advisory": True,
                    "clock_went_backwards": clock_backwards}
    data = signing.canonical_json({"manifest": body, "signatures": [signing.sign(signer, signing.canonical_json(body))]})
    hook("before_manifest")
    # Objects this run wrote must be durable before the manifest names them; a v2 run that stored nothing new
    # (nothing changed) has nothing to flush, and the manifest's own write is fsynced (atomic_write).
    if engine is None or engine.new_packs or cache is not None or "physical" in components \
            or (dump is not None and db_object_id):
        repo.sync()
    manifest_path = repo.write_manifest(seq, data)
    hook("after_manifest")
    manifest_sha = brepo.load_manifest_digest(manifest_path)
    if anchor_path:
        banchor.write_anchor(anchor_path, view.repo_config.get("repo_id") or repo.repo_id, seq, manifest_sha,
                             backup_id)
    if cache is not None:
        cache.save(now)
    if engine is not None:
        engine.commit_caches(seq, manifest_sha)
    pruned = brepo.prune(repo, None, remove_seqs=retention["remove_seqs"])
    if os.path.isdir(os.path.join(repo.path, "wal")):
        from ansible_collections.ransomeye.ops.plugins.module_utils._pitr_base import prune_wal
        pruned["wal"] = prune_wal(repo)
    total = _empty_stats()
    for values in stats.values():
        for key in total:
            total[key] += values.get(key, 0)
    total["duration"] = round(time.monotonic() - started_mono, 3)
    stats["total"] = total
    if total["cache_mismatches"]:
        module.warn("%d file(s) picked for rehashing had content other than the cache recorded although their "
                    "size, times and inode had not changed: their directories were read again in full and this "
                    "backup holds what is on disk now. Content that changes behind an unchanged stat is disk "
                    "corruption or deliberate tampering; check the host" % total["cache_mismatches"])
    result.update({
        "changed": True, "up_to_date": False, "reason": reason, "backup_id": backup_id, "seq": seq,
        "manifest": manifest_path, "manifest_sha256": manifest_sha,
        "stats": stats, "pruned": pruned, "clock_went_backwards": clock_backwards,
        "retention": retention["report"],
    })
    return result


def _cache_dir(params: dict) -> str:
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import cache as v2cache
    return os.path.abspath(params.get("cache_dir") or v2cache.default_cache_dir())


def _uses_v2_engine(params: dict, components: t.List[str]) -> bool:
    """Whether the run stores a component in packs (format v2 and a database, config or artifacts component)."""
    return (params.get("format") or "v2") == "v2" and any(c in components for c in COMPONENTS)


def _v2_engine(module: t.Any, repo: brepo.Repo, enc: t.Any, signer: t.Any,
               manifests: t.List[brepo.LoadedManifest], clock_backwards: bool, now: float) -> t.Any:
    """The run's v2 engine (plugins/module_utils/_backup/), for a run that ``_uses_v2_engine``.

    Its cache_dir was checked against the repository and the roots by refuse_overlaps, before anything was
    written."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._backup import engine as v2engine
    params = module.params
    rehash = params.get("rehash_percent") if params.get("rehash_percent") is not None else 2.0
    return v2engine.Engine(repo, enc, signer.public_key(), manifests, _cache_dir(params), now, rehash,
                           clock_backwards, module.warn)


def _v2_components(engine: t.Any, components: t.List[str], config_roots: t.List[str],
                   artifact_roots: t.List[str], body: dict, stats: dict) -> None:
    """Repository v2: config and artifacts as trees in packs (the caller finishes the engine)."""
    for component, roots in (("config", config_roots), ("artifacts", artifact_roots)):
        if component not in components:
            continue
        started = time.monotonic()
        record, cstats = engine.backup(component, roots)
        body["components"][component] = record
        if record.get("skipped_count"):
            sample = "; ".join(record.get("skipped") or [])[:1000]
            engine.warn("%s: %d entries are not in this backup (deleted or replaced while it ran, another filesystem, "
                        "or not a file, directory or symlink), e.g. %s" % (component, record["skipped_count"], sample))
        stats[component] = dict(_empty_stats(), files_new=cstats["files_read"],
                                files_unchanged=cstats["files_unchanged"], bytes_read=cstats["bytes_read"],
                                files_rehashed=cstats.get("files_rehashed", 0),
                                cache_mismatches=cstats.get("cache_mismatches", 0),
                                objects_new=cstats["blobs_new"] + cstats["trees_new"],
                                objects_reused=cstats["blobs_reused"] + cstats["trees_reused"],
                                duration=round(time.monotonic() - started, 3))


def _files_components(params: dict, repo: brepo.Repo, enc: t.Any, components: t.List[str],
                      config_roots: t.List[str], artifact_roots: t.List[str],
                      manifests: t.List[brepo.LoadedManifest], clock_backwards: bool, now: float,
                      body: dict, stats: dict, objects: dict) -> t.Any:
    """Back up config and artifacts into ``body``/``stats``/``objects``; return the stat cache to save (or None)."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_tree as tree
    if "config" in components:
        object_id = brepo.new_object_id()
        component, record, cstats = tree.backup_config(repo, enc, config_roots, object_id)
        objects[object_id] = record
        body["components"]["config"] = component
        stats["config"] = dict(_empty_stats(), **cstats)
    if "artifacts" in components:
        known: t.Dict[str, dict] = {}
        for item in manifests:
            for object_id, record in brepo.referenced_objects(item.body).items():
                if record.get("kind") == "artifact":
                    known[object_id] = record
        previous_files: t.Dict[str, dict] = {}
        for item in reversed(manifests):
            art = item.body["components"].get("artifacts")
            if isinstance(art, dict) and isinstance(art.get("files"), dict):
                previous_files = art["files"]
                break
        cache = tree.StatCache(os.path.join(repo.cache_dir, "stat-cache.json"), enc.context, now,
                               params.get("rehash_percent") if params.get("rehash_percent") is not None else 2.0)
        if clock_backwards:
            cache.disable("the clock went backwards since the previous backup")
        component, art_objects, astats = tree.backup_artifacts(repo, enc, artifact_roots, known, previous_files, cache)
        objects.update(art_objects)
        body["components"]["artifacts"] = component
        stats["artifacts"] = dict(_empty_stats(), **astats)
    else:
        cache = None
    return cache
