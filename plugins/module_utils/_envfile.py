# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: read and edit ``.env`` files without disturbing them.

Only the values of the variables asked for change: comments, blank lines,
ordering, ``export`` prefixes, spacing around ``=``, trailing comments, the
quoting style of each value and every other variable stay byte for byte.
A database URL (``postgresql://user:password@host/db``) has only its user and
password parts replaced; the password is URL-encoded there.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import re
import typing as t
from urllib.parse import quote, unquote

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import read_regular

_ASSIGN_RE = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_.]*)(?P<eq>\s*=[ \t]*)(?P<rest>.*)$")
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)(?P<tail>.*)$", re.DOTALL)
_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


class EnvValue(t.NamedTuple):
    """One assignment: where its value sits in the line and how it is quoted."""

    key: str
    value: str       # decoded value
    quote: str       # "", "'" or '"'
    line_no: int
    start: int       # span of the raw (quoted) value within the line
    end: int


def _parse_value(rest: str) -> t.Tuple[str, str, int]:
    """(decoded value, quote char, length of the raw value) of what follows ``=``."""
    if rest.startswith("'"):
        close = rest.find("'", 1)
        if close < 0:
            raise ValueError("unterminated single quote")
        return rest[1:close], "'", close + 1
    if rest.startswith('"'):
        out = []
        i = 1
        while i < len(rest):
            char = rest[i]
            if char == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if char == '"':
                return "".join(out), '"', i + 1
            out.append(char)
            i += 1
        raise ValueError("unterminated double quote")
    # Unquoted: up to an inline comment (" #") or the end, trailing blanks dropped.
    match = re.search(r"\s+#", rest)
    raw = rest[:match.start()] if match else rest
    raw = raw.rstrip()
    return raw, "", len(raw)


def _render_value(value: str, quote_char: str) -> str:
    if quote_char == "'":
        if "'" in value:
            raise ValueError("a single-quoted value cannot hold a single quote")
        return "'%s'" % value
    if quote_char == '"':
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
        return '"%s"' % escaped
    if re.search(r"[\s#'\"\\$`]", value):
        return _render_value(value, '"')
    return value


class EnvFile:
    """An ``.env`` file kept as lines; ``set()`` edits values in place, ``render()`` gives the bytes."""

    def __init__(self, text: str, path: str = "<env>") -> None:
        self.path = path
        self.lines = text.splitlines(True)
        self.values: t.Dict[str, EnvValue] = {}
        for number, line in enumerate(self.lines):
            body = line.rstrip("\r\n")
            if not body.strip() or body.lstrip().startswith("#"):
                continue
            match = _ASSIGN_RE.match(body)
            if not match:
                continue  # not an assignment; kept untouched
            try:
                value, quote_char, length = _parse_value(match.group("rest"))
            except ValueError as exc:
                raise RansomeyeError("%s line %d: %s" % (path, number + 1, exc))
            start = match.start("rest")
            # Later assignments win, as in every dotenv loader.
            self.values[match.group("key")] = EnvValue(
                match.group("key"), value, quote_char, number, start, start + length)

    @classmethod
    def read(cls, path: str) -> "EnvFile":
        try:
            data = read_regular(path, "env file")
        except OSError as exc:
            raise RansomeyeError("cannot read env file %s: %s" % (path, exc.strerror or exc))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RansomeyeError("env file %s is not UTF-8 text" % path)
        return cls(text, path)

    def get(self, key: str) -> t.Optional[str]:
        entry = self.values.get(key)
        return entry.value if entry else None

    def set(self, key: str, value: str) -> bool:
        """Replace the value of an existing ``key`` keeping its quoting; True when it changed."""
        entry = self.values.get(key)
        if entry is None:
            raise KeyError(key)
        if entry.value == value:
            return False
        line = self.lines[entry.line_no]
        rendered = _render_value(value, entry.quote)
        self.lines[entry.line_no] = line[:entry.start] + rendered + line[entry.end:]
        new_quote = rendered[0] if rendered[:1] in ("'", '"') else ""
        self.values[key] = entry._replace(value=value, quote=new_quote, end=entry.start + len(rendered))
        return True

    def render(self) -> bytes:
        return "".join(self.lines).encode("utf-8")


class DbUrl(t.NamedTuple):
    """The parts of a database URL that credential rotation touches."""

    scheme: str
    user: t.Optional[str]
    password: t.Optional[str]
    hostpart: str
    tail: str


def parse_db_url(url: str) -> t.Optional[DbUrl]:
    """Split ``scheme://user:password@host:port/db?opts``; None when ``url`` is not such a URL."""
    match = _URL_RE.match(url)
    if not match:
        return None
    authority = match.group("authority")
    user = password = None
    hostpart = authority
    if "@" in authority:
        userinfo, hostpart = authority.rsplit("@", 1)
        if ":" in userinfo:
            raw_user, raw_password = userinfo.split(":", 1)
            password = unquote(raw_password)
        else:
            raw_user = userinfo
        user = unquote(raw_user)
    return DbUrl(match.group("scheme"), user, password, hostpart, match.group("tail"))


def url_database(url: str) -> t.Optional[str]:
    """The database name in a URL's path, when there is one."""
    parsed = parse_db_url(url)
    if parsed is None:
        return None
    path = parsed.tail.split("?", 1)[0].split("#", 1)[0].lstrip("/")
    return unquote(path) or None


def build_db_url(parsed: DbUrl, user: t.Optional[str], password: t.Optional[str]) -> str:
    """The URL with its user and password replaced (both URL-encoded)."""
    userinfo = ""
    if user is not None:
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    return parsed.scheme + userinfo + parsed.hostpart + parsed.tail
