"""The side-by-side space check of the restore preflight (issue 12, 1.2): refuse before anything stops."""
from __future__ import annotations

import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _restore_space as space
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def test_refuses_when_the_restored_copy_cannot_fit_and_says_nothing_changed():
    with pytest.raises(RansomeyeError) as exc:
        space.check_space(needed=100 * 1048576, free=110 * 1048576, path="/var/lib/pgsql/data")
    assert "not enough free space" in exc.value.msg and "Nothing was changed" in exc.value.msg
    assert "_pre_restore_" in exc.value.msg  # points at what to free
    assert exc.value.details["space"]["needed_bytes"] > exc.value.details["space"]["free_bytes"]


def test_enough_space_and_unknown_space_pass_with_figures():
    ok = space.check_space(needed=100, free=10 ** 9, path="/x")
    assert ok["checked"] and ok["needed_bytes"] >= 100
    unknown = space.check_space(needed=10 ** 12, free=None, path=None)
    assert unknown["checked"] is False and unknown["free_bytes"] is None


def test_free_bytes_of_a_real_directory_and_of_a_remote_path(tmp_path):
    # Other processes write to this filesystem meanwhile: the figure lies between two readings taken around it.
    before = os.statvfs(str(tmp_path))
    free = space.free_bytes(str(tmp_path))
    after = os.statvfs(str(tmp_path))
    readings = [before.f_bavail * before.f_frsize, after.f_bavail * after.f_frsize]
    assert min(readings) - (64 << 20) <= free <= max(readings) + (64 << 20)
    assert space.free_bytes(str(tmp_path / "not-on-this-host")) is None
    assert space.free_bytes(None) is None
