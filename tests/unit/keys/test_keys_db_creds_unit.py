"""The pure parts of the credential rotation: the password alphabet and the .env edits."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _db_creds
from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import EnvFile
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def test_new_password_is_url_and_env_safe_and_random():
    passwords = {_db_creds.new_password(32) for dummy in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 32
        assert quote(password, safe="") == password  # nothing to URL-encode
        assert EnvFile("P=%s\n" % password).get("P") == password  # no quoting needed
    with pytest.raises(RansomeyeError, match="password_length"):
        _db_creds.new_password(8)


def _request(**kw):
    base = dict(admin=None, role="app", alternate_role=None, strategy="in_place", env_files=[],
                env_vars=["DB_PASSWORD", "DATABASE_URL"], user_vars=["DB_USER"], db=None, password_length=32,
                max_age=90 * 86400, force=False, backup=False, state_file=None)
    base.update(kw)
    return _db_creds.Request(**base)


def test_credentials_in_files_must_agree():
    a = EnvFile("DB_USER=app\nDB_PASSWORD=pw\nDATABASE_URL=postgresql://app:pw@h:5432/db\n")
    b = EnvFile("DATABASE_URL=postgresql://app:pw@h/db\n")
    assert _db_creds._credentials_in({"a": a, "b": b}, ["DB_PASSWORD", "DATABASE_URL"], ["DB_USER"]) == ("app", "pw", "db")
    c = EnvFile("DATABASE_URL=postgresql://app_b:pw@h/db\n")
    with pytest.raises(RansomeyeError, match="different users"):
        _db_creds._credentials_in({"a": a, "c": c}, ["DB_PASSWORD", "DATABASE_URL"], ["DB_USER"])
    with pytest.raises(RansomeyeError, match="sets none of"):
        _db_creds._credentials_in({"x": EnvFile("OTHER=1\n")}, ["DB_PASSWORD"], [])


def test_edit_switches_user_and_password_only():
    env = EnvFile("# c\nDB_USER=app\nDB_PASSWORD='pw'\nDATABASE_URL=postgresql://app:pw@h:5432/db?x=1\nK=v\n")
    out = _db_creds._edited(env, _request(), "app_b", "NEWpw").render().decode()
    assert out == "# c\nDB_USER=app_b\nDB_PASSWORD='NEWpw'\nDATABASE_URL=postgresql://app_b:NEWpw@h:5432/db?x=1\nK=v\n"
    same_user = _db_creds._edited(env, _request(), None, "NEWpw").render().decode()
    assert "DB_USER=app\n" in same_user and "postgresql://app:NEWpw@" in same_user
