"""SCRAM-SHA-256 verifiers computed on the client, checked against a real PostgreSQL."""
from __future__ import annotations

import psycopg2
import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _scram


def _set_verifier(pg, role: str, verifier: str) -> None:
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute('DROP ROLE IF EXISTS "%s"' % role)
            # The verifier is a literal; the plaintext is never sent.
            cur.execute('CREATE ROLE "%s" LOGIN PASSWORD %%s' % role, [verifier])
    finally:
        conn.close()


def _stored(pg, role: str) -> str:
    return pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])[0][0]


def _can_login(pg, role: str, password: str) -> bool:
    try:
        pg.connect(user=role, password=password).close()
        return True
    except psycopg2.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False


@pytest.mark.parametrize("password", [
    "correct horse battery staple",
    "pässwörd-ünïcode",                # Latin-1 range, NFKC-stable
    "\u2163secret\u00a0with\u3000spaces",  # Roman numeral IV and non-ASCII spaces: SASLprep maps them
    "soft\u00adhyphen",               # mapped to nothing by table B.1
    "\u0627\u0031",                   # bidi violation: SASLprep fails, raw bytes are used
])
def test_server_stores_the_client_verifier_and_plaintext_login_works(pg, password):
    verifier = _scram.scram_sha256_verifier(password)
    _set_verifier(pg, "scram_probe", verifier)
    assert _stored(pg, "scram_probe") == verifier
    assert _can_login(pg, "scram_probe", password)
    assert not _can_login(pg, "scram_probe", password + "x")


def test_saslprep_equivalent_passwords_log_in_interchangeably(pg):
    # U+2163 (ROMAN NUMERAL FOUR) normalises to "IV" under NFKC, as libpq does it.
    _set_verifier(pg, "scram_equiv", _scram.scram_sha256_verifier("\u2163"))
    assert _can_login(pg, "scram_equiv", "IV")


def test_verifier_matches_detects_the_right_password_only():
    verifier = _scram.scram_sha256_verifier("s3cret", salt=b"\x01" * 16, iterations=4096)
    assert _scram.verifier_matches(verifier, "s3cret")
    assert not _scram.verifier_matches(verifier, "s3cret ")
    assert not _scram.verifier_matches("md5abcdef", "s3cret")


def test_verifier_format_is_what_postgres_expects():
    verifier = _scram.scram_sha256_verifier("x", salt=b"\x00" * 16, iterations=4096)
    scheme, params, keys = verifier.split("$")
    assert scheme == "SCRAM-SHA-256"
    assert params == "4096:AAAAAAAAAAAAAAAAAAAAAA=="
    stored, server = keys.split(":")
    assert len(stored) == len(server) == 44


def test_saslprep_rejects_prohibited_output():
    assert _scram.saslprep("abc\u0007") is None       # control character (C.2.1)
    assert _scram.saslprep("a\u00a0b") == "a b"        # non-ASCII space mapped to SPACE
    assert _scram.saslprep("\u00aa") == "a"            # NFKC
