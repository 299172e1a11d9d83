"""ransomeye_rotate_db_creds against a real PostgreSQL: idempotence, faults at every step, strategies, bad input."""
from __future__ import annotations

import os

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._db_creds import STEPS
from tests.integration.keys.conftest import failed


def test_rotate_db_creds_four_step_idempotence(creds, run_module):
    user, old_password = creds.file_credentials()
    before = creds.snapshot()

    check = run_module("ransomeye_rotate_db_creds", creds.module_args(), check=True)
    assert check["changed"] is True and check["rotated"] is False, check
    assert sorted(check["env_files_changed"]) == sorted(creds.env_files)
    assert creds.snapshot() == before, "check mode changed something"

    applied = run_module("ransomeye_rotate_db_creds", creds.module_args())
    assert applied["changed"] is True and applied["rotated"] is True, applied
    assert applied["role"] == creds.role
    new_user, new_password = creds.file_credentials()
    assert new_user == user and new_password != old_password
    assert creds.login_works()
    assert not creds.login_works(user, old_password)

    again_check = run_module("ransomeye_rotate_db_creds", creds.module_args(), check=True)
    assert again_check["changed"] is False, again_check
    again = run_module("ransomeye_rotate_db_creds", creds.module_args())
    assert again["changed"] is False and again["rotated"] is False, again
    assert creds.file_credentials() == (new_user, new_password)
    for result in (check, applied, again_check, again):
        assert new_password not in result["_stdout"] and old_password not in result["_stdout"]


def test_rotation_preserves_comments_quoting_mode_owner_and_other_variables(creds, run_module_direct):
    before = {p: open(p).read() for p in creds.env_files}
    if os.geteuid() == 0:
        os.chown(creds.env_files[0], 65534, 65534)
    old_password = creds.file_credentials()[1]
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(backup=True))
    assert result["changed"] is True, result
    new_password = creds.file_credentials()[1]
    for path, text in before.items():
        assert open(path).read() == text.replace(old_password, new_password)
    assert oct(os.stat(creds.env_files[0]).st_mode & 0o777) == "0o640"
    assert oct(os.stat(creds.env_files[1]).st_mode & 0o777) == "0o600"
    if os.geteuid() == 0:
        assert (os.stat(creds.env_files[0]).st_uid, os.stat(creds.env_files[0]).st_gid) == (65534, 65534)
    assert len(result["backup_files"]) == 2
    assert sorted(open(b).read() for b in result["backup_files"]) == sorted(before.values())
    state = open(creds.state_file).read()
    assert new_password not in state and "rotated_epoch" in state
    leftovers = [n for n in os.listdir(os.path.dirname(creds.env_files[0])) if n.endswith(".tmp")]
    assert leftovers == []


def test_max_age_and_force(creds, run_module_direct):
    first = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(max_age="30d"))
    assert first["changed"] is True
    password = creds.file_credentials()[1]
    young = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(max_age="30d"))
    assert young["changed"] is False and "max_age not reached" in young["reason"]
    zero = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(max_age="0s"))
    assert zero["changed"] is True
    forced = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(force=True))
    assert forced["changed"] is True and forced["reason"] == "forced"
    assert creds.file_credentials()[1] != password
    assert creds.login_works()


@pytest.mark.parametrize("step", STEPS)
def test_failure_at_every_step_leaves_db_and_files_agreeing(creds, run_module_direct, step):
    before = creds.snapshot()
    assert creds.login_works()
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(),
                               env={"RANSOMEYE_TEST_FAIL_AT": step})
    assert failed(result), result
    assert "injected failure after step %r" % step in result["msg"]
    assert "Traceback" not in result["msg"] and "Traceback" not in result["_stderr"]
    if step != "check":
        assert "rolled back" in result["msg"] and "INCOMPLETE" not in result["msg"]
    # The database and the files agree: the password in the files logs in.
    assert creds.login_works()
    after = creds.snapshot()
    assert after["files"] == before["files"]
    assert after["state"] is False
    etc = os.path.dirname(creds.env_files[0])
    assert [n for n in os.listdir(etc) if n.endswith(".tmp")] == []
    # And a rotation without the fault then works.
    ok = run_module_direct("ransomeye_rotate_db_creds", creds.module_args())
    assert ok["changed"] is True, ok
    assert creds.login_works()


@pytest.mark.parametrize("step", ["alter", "swap"])
def test_failure_in_alternating_strategy_keeps_active_role(creds, run_module_direct, step):
    before_user, before_password = creds.file_credentials()
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(strategy="alternating"),
                               env={"RANSOMEYE_TEST_FAIL_AT": step})
    assert failed(result) and "rolled back" in result["msg"], result
    assert creds.file_credentials() == (before_user, before_password)
    assert creds.login_works()


def test_alternating_switches_roles_and_old_role_keeps_working(creds, run_module_direct):
    user0, password0 = creds.file_credentials()
    assert user0 == creds.role
    args = creds.module_args(strategy="alternating", alternate_role=creds.alt_role, force=True)
    first = run_module_direct("ransomeye_rotate_db_creds", args)
    assert first["changed"] is True, first
    assert (first["previous_role"], first["active_role"]) == (creds.role, creds.alt_role)
    user1, password1 = creds.file_credentials()
    assert user1 == creds.alt_role and creds.login_works()
    # Services not yet restarted still log in with the previous role and password.
    assert creds.login_works(user0, password0)
    second = run_module_direct("ransomeye_rotate_db_creds", args)
    assert second["active_role"] == creds.role
    user2, password2 = creds.file_credentials()
    assert user2 == creds.role and password2 != password0 and creds.login_works()
    assert creds.login_works(user1, password1)
    assert not creds.login_works(user0, password0)


def test_bad_input_nonexistent_role(creds, run_module):
    before = creds.snapshot()
    result = run_module("ransomeye_rotate_db_creds", creds.module_args(role="no_such_role_xyz"))
    assert failed(result) and "role 'no_such_role_xyz' does not exist" in result["msg"], result
    alt = run_module("ransomeye_rotate_db_creds", creds.module_args(strategy="alternating",
                                                                    alternate_role="no_such_role_xyz"))
    assert failed(alt) and "role 'no_such_role_xyz' does not exist" in alt["msg"], alt
    assert "Traceback" not in result["_stdout"] + alt["_stdout"]
    assert creds.snapshot() == before


def test_bad_input_unreadable_env_file(creds, run_module_direct, tmp_path):
    before = creds.snapshot()
    for bad in (str(tmp_path / "missing.env"), str(tmp_path)):
        result = run_module_direct("ransomeye_rotate_db_creds",
                                   creds.module_args(env_files=creds.env_files + [bad]))
        assert failed(result) and "cannot read env file %s" % bad in result["msg"], result
        assert "Traceback" not in result["_stderr"]
    assert creds.snapshot() == before


def test_bad_input_wrong_current_password_changes_nothing(creds, run_module_direct):
    password = creds.file_credentials()[1]
    for path in creds.env_files:
        text = open(path).read()
        with open(path, "w") as handle:
            handle.write(text.replace(password, "WrongPassword123"))
    before = creds.snapshot()
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args())
    assert failed(result) and "current credentials in the env files do not work" in result["msg"]
    assert "WrongPassword123" not in result["msg"]
    assert creds.snapshot() == before


def test_bad_input_files_disagree_and_short_password(creds, run_module_direct):
    with open(creds.env_files[1], "a") as handle:
        handle.write("DB_PASSWORD=something-else\n")
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args())
    assert failed(result) and "different passwords" in result["msg"]
    assert "something-else" not in result["msg"]
    short = run_module_direct("ransomeye_rotate_db_creds",
                              creds.module_args(env_files=creds.env_files[:1], password_length=8))
    assert failed(short) and "password_length must be between" in short["msg"]


@pytest.mark.parametrize("step", ["alter", "verify", "swap", "record"])
def test_when_old_password_cannot_be_restored_files_roll_forward(creds, run_module_direct, step):
    old_password = creds.file_credentials()[1]
    result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(),
                               env={"RANSOMEYE_TEST_FAIL_AT": step, "RANSOMEYE_TEST_FAIL_RESTORE": "1"})
    assert failed(result) and "ROLLED FORWARD" in result["msg"], result
    assert "INCOMPLETE" not in result["msg"]
    new_password = creds.file_credentials()[1]  # asserts the files agree with each other
    assert new_password != old_password
    assert creds.login_works() and not creds.login_works(creds.role, old_password)
    etc = os.path.dirname(creds.env_files[0])
    assert [n for n in os.listdir(etc) if n.endswith(".tmp")] == []
