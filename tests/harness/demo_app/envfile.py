"""Read a RansomEye ``.env`` file (KEY=VALUE lines, ``#`` comments, optional quotes)."""
from __future__ import annotations

import typing as t
from urllib.parse import unquote, urlsplit


def read_env(path: str) -> t.Dict[str, str]:
    values: t.Dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            if line.startswith("export "):
                line = line[len("export "):]
            key, _sep, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def db_params(env: t.Dict[str, str]) -> t.Dict[str, t.Any]:
    """psycopg2 connection parameters: DATABASE_URL, with DB_PASSWORD taking precedence."""
    params: t.Dict[str, t.Any] = {}
    url = env.get("DATABASE_URL")
    if url:
        parts = urlsplit(url)
        params.update(host=parts.hostname, port=parts.port or 5432, dbname=parts.path.lstrip("/"),
                      user=unquote(parts.username or ""), password=unquote(parts.password or ""))
    for key, name in (("DB_HOST", "host"), ("DB_PORT", "port"), ("DB_NAME", "dbname"), ("DB_USER", "user"),
                      ("DB_PASSWORD", "password")):
        if env.get(key):
            params[name] = env[key]
    params["sslmode"] = env.get("DB_SSLMODE", "disable")
    return params
