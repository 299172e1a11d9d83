"""Attacker B (a validly signed, crafted manifest) and H's planted links against a restore under ``dest``.

Each case hands the manifest straight to the restore helpers (the signature
is not the point: B has a key the restoring side trusts) and asserts that no
byte lands outside ``dest``. The helpers are checked at two layers: the
manifest check refuses the entry, and even with the check bypassed the
writer (openat with O_NOFOLLOW on every component) cannot be steered out.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_files import (
    EntryRefused, Restorer, check_entries, restore_tree_entries)
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _files

CONTENT = b"attacker bytes\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


def _dir(mode=0o755):
    return {"type": "dir", "mode": mode, "uid": os.getuid(), "gid": os.getgid()}


def _file():
    return {"type": "file", "mode": 0o644, "uid": os.getuid(), "gid": os.getgid(), "size": len(CONTENT),
            "sha256": SHA, "mtime_ns": 0}


def _link(target):
    return {"type": "symlink", "target": target, "mode": 0o777, "uid": os.getuid(), "gid": os.getgid()}


def _restore(roots, files, dest, check=True):
    if check:
        check_entries("artifacts", roots, files)
    restorer = Restorer(roots, dest, check_mode=False)
    restore_tree_entries(restorer, files, lambda original, record: iter([CONTENT]))
    return restorer


def _everything_under(path):
    found = []
    for top, dirs, names in os.walk(path):
        found += [os.path.join(top, n) for n in dirs + names]
    return found


@pytest.fixture
def site(tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    return str(dest), str(outside)


@pytest.mark.parametrize("chain", [
    {"/srv/app/b1": ".", "/srv/app/b2": "b1/.."},
    {"/srv/app/b1": ".", "/srv/app/b2": "b1/..", "/srv/app/b3": "b2/app/../../etc"},
    {"/srv/app/b1": "d", "/srv/app/d": "b1"},  # a loop
    {"/srv/app/b1": "../evil/../app/x"},       # leaves the tree through a path nobody recorded
    {"/srv/app/b1": "/srv/app/b1/../../.."},
])
def test_symlink_chains_resolving_outside_the_roots_are_refused(chain):
    files = {"/srv/app": _dir()}
    files.update({path: _link(target) for path, target in chain.items()})
    with pytest.raises(EntryRefused):
        check_entries("artifacts", ["/srv/app"], files)


def test_links_that_stay_inside_are_still_accepted():
    files = {"/srv/app": _dir(), "/srv/app/d": _dir(), "/srv/app/d/f": _file(),
             "/srv/app/l1": _link("d/f"), "/srv/app/l2": _link("l1"), "/srv/app/l3": _link("/srv/app/d"),
             "/srv/app/d/up": _link("../l3/f"), "/srv/app/dangling": _link("missing"), "/srv/app/self": _link(".")}
    check_entries("artifacts", ["/srv/app"], files)


def test_an_entry_below_a_recorded_symlink_is_refused():
    files = {"/srv/app": _dir(), "/srv/app/l": _link("d"), "/srv/app/d": _dir(), "/srv/app/l/f": _file()}
    with pytest.raises(EntryRefused):
        check_entries("artifacts", ["/srv/app"], files)


@pytest.mark.parametrize("root", ["//", "///", "//srv", "/srv//app", "/srv/x/../app", "/srv/./app", "/srv/app/",
                                  "/", "srv/app", "/srv/app/.."])
def test_non_canonical_roots_are_refused(root):
    files = {"/srv/app/f": _file()}
    with pytest.raises(EntryRefused):
        check_entries("artifacts", [root], files)


@pytest.mark.parametrize("entry", ["//srv/app/f", "/srv/app//f", "/srv/app/./f", "/srv/app/x/../f", "/srv/app/f/"])
def test_non_canonical_entries_are_refused(entry):
    with pytest.raises(EntryRefused):
        check_entries("artifacts", ["/srv/app"], {entry: _file()})


def test_chain_written_through_is_never_outside_dest_even_without_the_check(site):
    dest, outside = site
    files = {"/srv/app": _dir(), "/srv/app/b1": _link("."), "/srv/app/b2": _link("b1/.."),
             "/srv/app/b2/pwned": _file()}
    with pytest.raises(RansomeyeError):
        _restore(["/srv/app"], files, dest, check=False)
    assert not os.path.exists(os.path.join(dest, "srv", "pwned"))
    assert _everything_under(outside) == []


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_entry_equal_to_its_root_never_writes_through_a_planted_parent_link(site, kind):
    dest, outside = site
    os.symlink(outside, os.path.join(dest, "srv"))  # planted by H in the restore target
    root = "/srv/app"
    files = {root: _file() if kind == "file" else _dir()}
    if kind == "dir":
        files[root + "/f"] = _file()
    check_entries("artifacts", [root], files)
    with pytest.raises(RansomeyeError) as err:
        _restore([root], files, dest)
    assert "symlink" in err.value.msg
    assert _everything_under(outside) == []


def test_planted_link_deep_in_the_target_is_never_followed(site):
    dest, outside = site
    os.makedirs(os.path.join(dest, "srv", "app"))
    os.symlink(outside, os.path.join(dest, "srv", "app", "d"))
    files = {"/srv/app": _dir(), "/srv/app/d": _dir(), "/srv/app/d/f": _file()}
    with pytest.raises(RansomeyeError):
        _restore(["/srv/app"], files, dest)
    assert _everything_under(outside) == []


def test_a_planted_link_named_like_a_file_is_replaced_not_written_through(site):
    dest, outside = site
    os.makedirs(os.path.join(dest, "srv", "app"))
    victim = os.path.join(outside, "victim")
    with open(victim, "wb") as handle:
        handle.write(b"keep")
    os.symlink(victim, os.path.join(dest, "srv", "app", "f"))
    files = {"/srv/app": _dir(), "/srv/app/f": _file()}
    _restore(["/srv/app"], files, dest)
    with open(victim, "rb") as handle:
        assert handle.read() == b"keep"
    path = os.path.join(dest, "srv", "app", "f")
    assert not os.path.islink(path)
    with open(path, "rb") as handle:
        assert handle.read() == CONTENT


def test_the_whole_restore_lands_under_dest_and_is_idempotent(site):
    dest, outside = site
    files = {"/srv/app": _dir(), "/srv/app/d": _dir(0o500), "/srv/app/d/f": _file(), "/srv/app/l": _link("d/f"),
             "/srv/app/abs": _link("/srv/app/d")}
    first = _restore(["/srv/app"], files, dest)
    second = _restore(["/srv/app"], files, dest)
    assert first.changed_paths and second.changed_paths == []
    assert os.readlink(os.path.join(dest, "srv/app/abs")) == dest + "/srv/app/d"
    assert os.stat(os.path.join(dest, "srv/app/d")).st_mode & 0o777 == 0o500
    with open(os.path.join(dest, "srv/app/l"), "rb") as handle:
        assert handle.read() == CONTENT


# ----------------------------------------------------------------------------- the reusable helper


def test_write_beneath_creates_parents_and_writes_atomically(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    size = _files.write_beneath(root, "a/b/c.txt", iter([b"one", b"two"]), mode=0o640)
    assert size == 6
    path = os.path.join(root, "a/b/c.txt")
    with open(path, "rb") as handle:
        assert handle.read() == b"onetwo"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [n for n in os.listdir(os.path.dirname(path)) if n != "c.txt"] == []  # no temp file left


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/x", "a//b", "", ".", "a/./b"])
def test_write_beneath_refuses_paths_that_are_not_plain_relative(tmp_path, rel):
    root = str(tmp_path)
    with pytest.raises(RansomeyeError):
        _files.write_beneath(root, rel, iter([b"x"]))


def test_write_beneath_never_follows_a_link_at_any_component(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), str(root / "a"))
    os.mkdir(str(root / "b"))
    os.symlink(str(outside), str(root / "b" / "c"))
    for rel in ("a/x", "b/c/x"):
        with pytest.raises(RansomeyeError) as err:
            _files.write_beneath(str(root), rel, iter([b"x"]))
        assert "symlink" in err.value.msg
    assert os.listdir(str(outside)) == []


def test_write_beneath_fails_cleanly_when_the_content_source_fails(tmp_path):
    def broken():
        yield b"partial"
        raise RansomeyeError("source broke")
    with pytest.raises(RansomeyeError):
        _files.write_beneath(str(tmp_path), "d/f", broken())
    assert os.listdir(str(tmp_path / "d")) == []
