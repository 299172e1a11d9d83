"""The .env editor: only the values asked for change, byte for byte everything else stays."""
from __future__ import annotations

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import (
    EnvFile, build_db_url, parse_db_url, url_database)
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

SAMPLE = (
    "# RansomEye web app\n"
    "\n"
    "export DB_HOST=127.0.0.1\n"
    "DB_USER=ransomeye_app   # the login role\n"
    "DB_PASSWORD='old-secret'\n"
    'DATABASE_URL="postgresql://ransomeye_app:old-secret@127.0.0.1:5432/ransomeye?sslmode=disable"\n'
    "OTHER = keep me  # trailing comment\n"
    "not an assignment line\n"
    "LAST=x"
)


def test_reads_quoted_unquoted_and_commented_values():
    env = EnvFile(SAMPLE)
    assert env.get("DB_HOST") == "127.0.0.1"
    assert env.get("DB_USER") == "ransomeye_app"
    assert env.get("DB_PASSWORD") == "old-secret"
    assert env.get("OTHER") == "keep me"
    assert env.get("LAST") == "x"
    assert env.get("MISSING") is None


def test_set_keeps_everything_else_byte_for_byte():
    env = EnvFile(SAMPLE)
    assert env.set("DB_PASSWORD", "NEW_pw-123")
    url = parse_db_url(env.get("DATABASE_URL"))
    assert env.set("DATABASE_URL", build_db_url(url, url.user, "NEW_pw-123"))
    out = env.render().decode()
    expected = SAMPLE.replace("'old-secret'", "'NEW_pw-123'").replace(":old-secret@", ":NEW_pw-123@")
    assert out == expected
    assert not env.set("DB_PASSWORD", "NEW_pw-123")  # unchanged value: no change


def test_url_password_is_url_encoded_and_decoded():
    url = parse_db_url("postgresql://app:old@db.example:5432/ransomeye?sslmode=require")
    assert (url.user, url.password) == ("app", "old")
    new = build_db_url(url, "app_b", "p@ss:w/rd%")
    assert new == "postgresql://app_b:p%40ss%3Aw%2Frd%25@db.example:5432/ransomeye?sslmode=require"
    assert parse_db_url(new).password == "p@ss:w/rd%"
    assert url_database(new) == "ransomeye"
    assert parse_db_url("not a url") is None


def test_unquoted_value_needing_quotes_gets_double_quotes():
    env = EnvFile("A=plain\n")
    env.set("A", "has space")
    assert env.render() == b'A="has space"\n'
    assert EnvFile(env.render().decode()).get("A") == "has space"


def test_double_quoted_escapes_round_trip():
    env = EnvFile('A="x\\"y\\\\z"\n')
    assert env.get("A") == 'x"y\\z'
    env.set("A", 'q"r')
    assert EnvFile(env.render().decode()).get("A") == 'q"r'


def test_unterminated_quote_is_a_clear_error():
    with pytest.raises(RansomeyeError, match="line 2: unterminated"):
        EnvFile("A=1\nB='open\n", "/x/app.env")


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(RansomeyeError, match="cannot read env file"):
        EnvFile.read(str(tmp_path))  # a directory
    bad = tmp_path / "bad.env"
    bad.write_bytes(b"A=\xff\n")
    with pytest.raises(RansomeyeError, match="not UTF-8"):
        EnvFile.read(str(bad))
