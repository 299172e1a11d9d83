"""ransomeye_rotate_signing_keys never creates a new root of trust by accident (issue 12, 1.6)."""
from __future__ import annotations

import os

from ansible_collections.ransomeye.ops.plugins.module_utils._signing import key_type_of, load_signing_private_key
from tests.integration.keys.conftest import failed

MODULE = "ransomeye_rotate_signing_keys"


def _tree(key_dir):
    out = {}
    for root, dummy, files in os.walk(key_dir):
        for name in files:
            if name != ".rotation.lock":
                path = os.path.join(root, name)
                out[path] = open(path, "rb").read()
    return out


def test_rotated_refuses_a_key_dir_without_a_key_and_creates_nothing(tmp_path, run_module_direct):
    typo = str(tmp_path / "sigining")
    for check in (True, False):
        result = run_module_direct(MODULE, dict(key_dir=typo, key_type="ed25519"), check=check)
        assert failed(result) and "state=initialized" in result["msg"] and "no signing key" in result["msg"], result
    assert not os.path.exists(typo)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_module_direct(MODULE, dict(key_dir=str(empty), force=True))
    assert failed(result) and "state=initialized" in result["msg"], result
    assert _tree(str(empty)) == {}


def test_initialized_creates_the_genesis_key_once_and_never_rotates(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    check = run_module_direct(MODULE, dict(key_dir=key_dir, key_type="ed25519", state="initialized"), check=True)
    assert check["changed"] is True and not os.path.exists(key_dir), check
    made = run_module_direct(MODULE, dict(key_dir=key_dir, key_type="ed25519", state="initialized"))
    assert made["changed"] is True and made["seq"] == 1 and made["old_key_id"] is None, made
    again = run_module_direct(MODULE, dict(key_dir=key_dir, state="initialized", force=True, max_age="0s"))
    assert again["changed"] is False and again["new_key_id"] == made["new_key_id"] and again["seq"] == 1, again


def test_a_missing_active_key_fails_clearly_and_leaves_no_pending_key(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    run_module_direct(MODULE, dict(key_dir=key_dir, key_type="ed25519", state="initialized"))
    os.unlink(os.path.join(key_dir, "active.key"))
    before = _tree(key_dir)
    for check in (True, False):
        result = run_module_direct(MODULE, dict(key_dir=key_dir, force=True), check=check)
        assert failed(result), result
        assert "active.key" in result["msg"] and "missing" in result["msg"] and "bundle 1" in result["msg"], result
        assert "Traceback" not in result["_stderr"]
    assert _tree(key_dir) == before
    assert not os.path.exists(os.path.join(key_dir, "pending.key"))


def test_rotation_keeps_the_key_type_of_the_chain_unless_told(tmp_path, run_module_direct):
    key_dir = str(tmp_path / "signing")
    run_module_direct(MODULE, dict(key_dir=key_dir, key_type="ed25519", state="initialized"))
    rotated = run_module_direct(MODULE, dict(key_dir=key_dir, force=True))
    assert rotated["changed"] is True and rotated["key_type"] == "ed25519", rotated
    assert key_type_of(load_signing_private_key(os.path.join(key_dir, "active.key"))) == "ed25519"
    check = run_module_direct(MODULE, dict(key_dir=key_dir, force=True), check=True)
    assert check["key_type"] == "ed25519", check
    switched = run_module_direct(MODULE, dict(key_dir=key_dir, force=True, key_type="rsa4096"))
    assert switched["changed"] is True and switched["key_type"] == "rsa4096", switched
