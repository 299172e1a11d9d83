"""The attacker-R suite: seeded mutations of a small real repository, and what each verify level and restore do.

R (docs/THREAT_MODEL.md) writes the repository but holds no key. Against a repository of three backups (config and
artifacts, rsa mode, with a rollback anchor kept outside), every mutation kind (bit flip, truncation, appended
bytes, deletion, rename, planted file, older copy swapped in) is applied to every kind of file the repository holds
(its top-level entries: manifests, objects or packs, indexes, trees, keys, caches, repo.json, ...), on a fresh copy
each time. For each case: does quick / ciphertext / full verify report a problem, do the genuine backups still
verify when the mutation only planted something, and what does restore of `latest` do.

The guarantees asserted for every case: restore never writes wrong bytes (it refuses, or restores exactly the newest
backup, never an older one behind the anchor), a refused restore writes nothing, a deeper level catches at least
what quick catches, and planted files never stop the genuine backups from verifying. The outcome table is written to
docs/THREAT_MODEL.md between its attacker-R markers; the test fails when the committed table differs from the one it
generates (set RANSOMEYE_UPDATE_THREAT_TABLE=1 to rewrite it).

Randomness of the repository (ids, salts, file keys, the repository id) is seeded in-process so that the same
mutation hits the same kind of byte on every run and the table is reproducible.
"""
from __future__ import annotations

import collections
import functools
import os
import random
import shutil
import tempfile
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.paths import REPO
from tests.harness.trees import tree_digest
from tests.integration.dr.trust_helpers import backup, make_site, resign, restore, verify

SEED = 15015
PER_CELL = 15                      # cases per (target, mutation) cell
KINDS = ("bit flip", "truncate", "append", "delete", "rename", "plant", "older copy")
BEGIN = "<!-- BEGIN attacker-R table -->"
END = "<!-- END attacker-R table -->"
T0 = 1796083200.0


@pytest.fixture
def repo_under_attack(tmp_path, monkeypatch):
    rng = random.Random(SEED)
    monkeypatch.setattr(os, "urandom", rng.randbytes)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=rng.getrandbits(128), version=4))
    clock = {"now": T0}
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    site = make_site(str(tmp_path), seed=7, files=10)
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = os.path.join(site["base"], "keys", "recipient.key")
    pub_path = os.path.join(site["base"], "keys", "recipient.pub")
    with open(key_path, "wb") as handle:
        handle.write(recipient.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    with open(pub_path, "wb") as handle:
        handle.write(recipient.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    anchor = os.path.join(site["base"], "anchor.json")
    common = dict(mode="rsa", recipients=[pub_path], key_file=None, anchor=anchor)
    trees = []
    snapshot = os.path.join(site["base"], "older")
    for round_ in range(3):
        clock["now"] = T0 + round_ * 3600
        for name in sorted(os.listdir(os.path.join(site["artifacts"], "case")))[:round_ + 1]:
            path = os.path.join(site["artifacts"], "case", name)
            with open(path, "ab") as handle:
                handle.write(b"round %d\n" % round_)
            os.utime(path, ns=(int(clock["now"] * 1e9), int(clock["now"] * 1e9)))
        result = backup(site, **common)
        assert not result.get("failed"), result
        trees.append(tree_digest(site["artifacts"]))
        if round_ == 0:
            shutil.copytree(site["repo"], snapshot)
    monkeypatch.undo()
    return dict(site=site, anchor=anchor, private_key=key_path, trees=trees, snapshot=snapshot)


def _roles(repo):
    """relative path -> (seqs of the manifests that name the file, size): what a file IS in the repository.

    Object names are keyed hashes that change from run to run (the recipient key is generated per run), so files are
    ordered by role, not by name: the n-th file picked by a seeded choice then plays the same part on every run, and
    the outcome table is reproducible.
    """
    manifests = {}
    mdir = os.path.join(repo, "manifests")
    for name in sorted(os.listdir(mdir)) if os.path.isdir(mdir) else []:
        with open(os.path.join(mdir, name), "rb") as handle:
            manifests[name] = handle.read()
    roles = {}
    for dirpath, _dirs, files in os.walk(repo):
        for name in files:
            path = os.path.join(dirpath, name)
            refs = tuple(m for m, raw in manifests.items() if name.encode() in raw)
            roles[os.path.relpath(path, repo)] = (refs, os.path.getsize(path))
    return roles


def _targets(repo, roles=None):
    """Top-level entry -> files below it (the repository's own kinds of file, whatever the format version)."""
    out = {}
    for name in sorted(os.listdir(repo)):
        path = os.path.join(repo, name)
        if name in ("lock", "tmp"):
            continue
        if os.path.isdir(path):
            files = [os.path.join(d, f) for d, _s, fs in os.walk(path) for f in fs]
        else:
            files = [path]
        out[name] = sorted(files, key=lambda f: ((roles or {}).get(os.path.relpath(f, repo), ((), 0)),
                                                 os.path.relpath(f, repo)))
    return out


def _mutate(kind, target, files, repo, older, rng, rogue):
    """Apply one mutation inside ``repo``; return a short description (for failure messages)."""
    if kind == "plant":
        directory = os.path.join(repo, target) if os.path.isdir(os.path.join(repo, target)) else repo
        if target == "manifests":
            choice = rng.randrange(4)
            if choice == 0:
                name = "%08d.json" % rng.choice([4, 5, 99999999])
                with open(os.path.join(directory, name), "wb") as handle:
                    handle.write(rng.randbytes(rng.randrange(1, 200)))
            elif choice == 1:  # a copy of a real manifest under a newer seq
                shutil.copy(files[-1], os.path.join(directory, "%08d.json" % rng.choice([4, 7, 5000])))
            elif choice == 2:  # a manifest signed by a key nobody trusts, far ahead
                seq = rng.choice([4, 9, 99999999])
                resign(files[-1], rogue, edit=lambda b: b.update(seq=seq, backup_id="%08d-20991231T000000Z" % seq),
                       seq_name=seq)
            else:
                with open(os.path.join(directory, "%08d.json" % 4), "w") as handle:
                    handle.write('{"manifest": {"seq": 4}, "signatures": []}')
            return "planted manifest"
        sub = directory
        if files and rng.random() < 0.5:
            sub = os.path.dirname(rng.choice(files))
        name = rng.choice(["x", "%064x" % rng.getrandbits(256), "00000004.json", ".hidden"])
        with open(os.path.join(sub, name), "wb") as handle:
            handle.write(rng.randbytes(rng.randrange(0, 3000)))
        return "planted %s" % os.path.relpath(os.path.join(sub, name), repo)
    if kind == "older copy":
        old = os.path.join(older, target)
        here = os.path.join(repo, target)
        if os.path.isdir(here):
            shutil.rmtree(here)
            if os.path.isdir(old):
                shutil.copytree(old, here)
        elif os.path.exists(old):
            shutil.copy(old, here)
        return "older copy of %s" % target
    path = rng.choice(files)
    rel = os.path.relpath(path, repo)
    size = os.path.getsize(path)
    if kind == "bit flip" and size:
        with open(path, "r+b") as handle:
            offset = rng.randrange(size)
            handle.seek(offset)
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ (1 << rng.randrange(8))]))
        return "flip %s@%d" % (rel, offset)
    if kind == "truncate" and size:
        os.truncate(path, rng.randrange(size))
        return "truncate %s" % rel
    if kind == "append":
        with open(path, "ab") as handle:
            handle.write(rng.randbytes(rng.randrange(1, 64)))
        return "append %s" % rel
    if kind == "rename" and len(files) > 1:
        other = rng.choice([f for f in files if f != path])
        tmp = path + ".swap"
        os.rename(path, tmp)
        os.rename(other, path)
        os.rename(tmp, other)
        return "swap %s <-> %s" % (rel, os.path.relpath(other, repo))
    if kind == "rename":
        os.rename(path, path + ".renamed")
        return "rename %s" % rel
    os.unlink(path)
    return "delete %s" % rel


def _case(world, target, kind, rng, rogue, workdir):
    site = world["site"]
    repo = os.path.join(workdir, "repo")
    shutil.copytree(world["pristine"], repo)
    files = _targets(repo, world["roles"]).get(target, [])
    what = _mutate(kind, target, files, repo, world["snapshot"], rng, rogue)
    attacked = dict(site, repo=repo)
    caught = {}
    for level in ("quick", "ciphertext", "full"):
        result = verify(attacked, level=level, anchor=world["anchor"], private_key=world["private_key"],
                        key_file=None)
        caught[level] = bool(result.get("failed") or result.get("problems"))
        if level == "quick":
            genuine = sorted(result.get("verified") or [])
    dest = os.path.join(workdir, "dest")
    outcome = restore(attacked, dest, anchor=world["anchor"], private_key=world["private_key"], key_file=None)
    restored_tree = os.path.join(dest, site["artifacts"].lstrip("/"))
    if outcome.get("failed"):
        written = [f for _d, _s, fs in os.walk(dest) for f in fs] if os.path.isdir(dest) else []
        assert not written, "refused restore wrote files (%s): %s" % (what, written[:5])
        verdict = "refused"
    else:
        got = tree_digest(restored_tree)
        assert got in world["trees"], "restore wrote wrong bytes after %s" % what
        assert got == world["trees"][-1], "restore silently restored an older backup after %s" % what
        verdict = "restored newest"
    shutil.rmtree(workdir)
    os.makedirs(workdir)
    for deeper in ("ciphertext", "full"):
        assert caught[deeper] or not caught["quick"], "%s caught by quick but not %s" % (what, deeper)
    return caught, genuine, verdict, what


def _table(rows):
    lines = ["| target | mutation | cases | caught: quick | ciphertext | full | genuine backups still verify | "
             "restore of latest |", "|---|---|---|---|---|---|---|---|"]
    for (target, kind), cell in rows.items():
        restore_text = ", ".join("%s %d" % (k, v) for k, v in sorted(cell["restore"].items()))
        genuine = "%d/%d" % (cell["genuine"], cell["cases"]) if kind == "plant" else "n/a"
        lines.append("| `%s` | %s | %d | %d | %d | %d | %s | %s |" % (
            target, kind, cell["cases"], cell["quick"], cell["ciphertext"], cell["full"], genuine, restore_text))
    total = sum(c["cases"] for c in rows.values())
    lines.append("")
    lines.append("%d mutations (seed %d) against a repository of three backups, made by `%s`. \"caught\" counts the "
                 "cases in which `ransomeye_backup_verify backup=all` with the anchor reported a problem; a restore "
                 "never wrote a wrong byte or silently fell back to an older backup in any case." % (
                     total, SEED, "tests/integration/dr/test_dr_attacker_r.py"))
    return "\n".join(lines)


@pytest.fixture
def scratch(tmp_path):
    """Where the mutated copies live: tmpfs when there is one (restore fsyncs every file it writes, and 525
    restores of fsynced files would measure the disk, not the checks)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)
    path = tempfile.mkdtemp(prefix="attacker-r-", dir=base)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def keys_loaded_once(monkeypatch):
    """The same public and private keys are loaded for every case: parse them once (RSA private key loading checks
    the key, ~20 ms each time), so the cases measure verify and restore."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import (
        _backup_info, _backup_keys, _backup_restore, _backup_verify)
    # verify and restore reach load_decryption through _backup_keys.decryption_from_params
    monkeypatch.setattr(_backup_keys, "load_decryption", functools.lru_cache(maxsize=None)(_backup_keys.load_decryption))
    original = _backup_verify.load_trust
    cached_trust = functools.lru_cache(maxsize=None)(lambda paths: original(list(paths)))
    for module in (_backup_verify, _backup_restore, _backup_info):
        monkeypatch.setattr(module, "load_trust", lambda paths: cached_trust(tuple(paths)))


def test_attacker_r_mutations(repo_under_attack, scratch, keys_loaded_once):
    world = repo_under_attack
    site = world["site"]
    tmp_path = scratch
    world["pristine"] = os.path.join(str(tmp_path), "pristine")
    shutil.copytree(site["repo"], world["pristine"])
    world["roles"] = _roles(world["pristine"])
    if os.environ.get("RANSOMEYE_ATTACKER_R_DUMP"):
        with open(os.environ["RANSOMEYE_ATTACKER_R_DUMP"], "w") as handle:
            for target, files in _targets(world["pristine"], world["roles"]).items():
                for path in files:
                    handle.write("%s %s\n" % (target, world["roles"][os.path.relpath(path, world["pristine"])]))
    rogue = site["rogue"]
    workdir = os.path.join(str(tmp_path), "work")
    os.makedirs(workdir)
    rows = collections.OrderedDict()
    genuine_ids = None
    pristine = _targets(world["pristine"])
    # an empty directory (keys/ and cache/ of a v2 repository in rsa mode) can only have files planted in it
    cells = [(target, kind) for target in sorted(pristine) for kind in KINDS if kind == "plant" or pristine[target]]
    per_cell = max(PER_CELL, -(-500 // len(cells)))
    for target, kind in cells:
        cell = {"cases": 0, "quick": 0, "ciphertext": 0, "full": 0, "genuine": 0,
                "restore": collections.Counter()}
        # one generator per cell: a cell's cases do not depend on the sizes of files other cells touched
        rng = random.Random("%d/%s/%s" % (SEED, target, kind))
        for _case_no in range(per_cell):
            caught, genuine, verdict, what = _case(world, target, kind, rng, rogue, workdir)
            cell["cases"] += 1
            for level in ("quick", "ciphertext", "full"):
                cell[level] += caught[level]
            cell["restore"][verdict] += 1
            if kind == "plant":
                if genuine_ids is None:
                    genuine_ids = sorted(verify(site, level="quick")["verified"])
                assert genuine == genuine_ids or target == "objects" and genuine, \
                    "planted file stopped genuine backups from verifying: %s" % what
                cell["genuine"] += genuine == genuine_ids
        rows[(target, kind)] = cell
    total = sum(c["cases"] for c in rows.values())
    assert total >= 500, total
    # the files that hold or name backup content are never changed unnoticed at the deepest level (repo.json is
    # judged by its JSON content: cutting its final newline changes nothing, and is rightly not reported)
    for (target, kind), cell in rows.items():
        if target in ("manifests", "objects", "packs", "index", "trees") \
                and kind not in ("plant", "older copy") and cell["full"] != cell["cases"]:
            pytest.fail("%s %s: full verify caught only %d of %d" % (target, kind, cell["full"], cell["cases"]))
    table = _table(rows)
    doc_path = os.path.join(REPO, "docs", "THREAT_MODEL.md")
    with open(doc_path, encoding="utf-8") as handle:
        doc = handle.read()
    assert BEGIN in doc and END in doc, "docs/THREAT_MODEL.md lacks the attacker-R markers"
    before, rest = doc.split(BEGIN, 1)
    _old, after = rest.split(END, 1)
    new_doc = before + BEGIN + "\n" + table + "\n" + END + after
    if os.environ.get("RANSOMEYE_UPDATE_THREAT_TABLE"):
        with open(doc_path, "w", encoding="utf-8") as handle:
            handle.write(new_doc)
        return
    assert new_doc == doc, ("the attacker-R table in docs/THREAT_MODEL.md differs from what the test generates; "
                            "rerun with RANSOMEYE_UPDATE_THREAT_TABLE=1 and review the change:\n" + table)
