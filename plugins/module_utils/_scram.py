# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: client-side SCRAM-SHA-256 verifiers, as PostgreSQL stores them.

Sending ``ALTER ROLE ... PASSWORD '<verifier>'`` means the plaintext never
reaches the server, its log, or pg_stat_statements.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import base64
import hashlib
import hmac
import os
import stringprep
import typing as t
import unicodedata

DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default


def _prohibited(char: str) -> bool:
    return any(in_table(char) for in_table in (
        stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
        stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9, stringprep.in_table_a1,
    ))


def saslprep(value: str) -> t.Optional[str]:
    """RFC 4013 SASLprep of a stored string; None when the string is not allowed.

    PostgreSQL (src/common/saslprep.c) treats prohibited output, unassigned
    code points and bidi violations as "use the raw bytes", so callers fall
    back to the UTF-8 bytes of the original on None, exactly as the server and
    libpq do.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c
        for c in value
        if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return normalized
    if any(_prohibited(c) for c in normalized):
        return None
    has_randal = any(stringprep.in_table_d1(c) for c in normalized)
    if has_randal:
        if any(stringprep.in_table_d2(c) for c in normalized):
            return None
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return None
    return normalized


def password_bytes(password: str) -> bytes:
    """The bytes PostgreSQL hashes for ``password``: SASLprep'd when allowed, raw UTF-8 otherwise."""
    prepared = saslprep(password)
    return (prepared if prepared is not None else password).encode("utf-8")


def scram_sha256_verifier(
    password: str,
    salt: t.Optional[bytes] = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> str:
    """``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`` for ``password``."""
    if salt is None:
        salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password_bytes(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (
        iterations,
        b64(salt).decode("ascii"),
        b64(stored_key).decode("ascii"),
        b64(server_key).decode("ascii"),
    )


def verifier_matches(verifier: str, password: str) -> bool:
    """True when ``verifier`` (from pg_authid) was computed from ``password``."""
    try:
        scheme, rest = verifier.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations_text, salt_b64 = params.split(":", 1)
        if scheme != "SCRAM-SHA-256":
            return False
        salt = base64.b64decode(salt_b64)
        expected = scram_sha256_verifier(password, salt=salt, iterations=int(iterations_text))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected.split("$", 2)[2], keys)
