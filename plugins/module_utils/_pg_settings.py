# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: server settings, their pending values, ALTER SYSTEM and config include files.

Idempotency compares the wanted value with the *pending* configuration: the
last entry for the name in ``pg_file_settings`` (postgresql.conf, its includes
and postgresql.auto.conf, in the order the server reads them), falling back to
the running value only when no file sets it. So a restart-only parameter
already written by ALTER SYSTEM is not reported as changed again before the
restart. Values are compared after normalising units (``256MB`` equals
``262144kB``) and booleans (``on`` equals ``true``).
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import re
import shutil
import subprocess
import tempfile
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_MEMORY_UNITS = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}
_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0, "d": 86400000.0}
_NUM_UNIT_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*$")
_TRUE = ("on", "true", "yes", "1", "t", "y", "tr", "tru", "ye")
_FALSE = ("off", "false", "no", "0", "f", "n", "fa", "fal", "fals", "of")

# Settings that only take effect at server start, for ``apply: file`` without a server to ask.
STATIC_RESTART_SETTINGS = frozenset((
    "max_connections", "shared_buffers", "huge_pages", "wal_buffers", "max_worker_processes",
    "wal_level", "max_wal_senders", "io_method", "io_workers_max", "autovacuum_max_workers",
    "shared_preload_libraries", "listen_addresses", "port", "max_prepared_transactions",
    "max_locks_per_transaction", "max_replication_slots", "cluster_name",
))


class Setting(t.NamedTuple):
    """One row of pg_settings plus its pending value from the configuration files."""

    name: str
    setting: str
    unit: t.Optional[str]
    vartype: str
    context: str
    enumvals: t.Optional[t.List[str]]
    pending: t.Optional[str]          # last value in the config files, None when no file sets it
    pending_file: t.Optional[str]
    pending_restart: bool
    source: str = "default"           # where the running value comes from (pg_settings.source)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RansomeyeError("%r is not a valid PostgreSQL parameter name" % (name,))
    return name


# -- value normalisation ---------------------------------------------------------
def _scaled(value: str, unit: t.Optional[str], units: t.Dict[str, float], base_factor: float) -> t.Optional[float]:
    match = _NUM_UNIT_RE.match(value)
    if not match:
        return None
    number = float(match.group(1))
    suffix = match.group(2).lower()
    if suffix:
        if suffix not in units:
            return None
        return number * units[suffix]
    return number * base_factor


def normalise(value: t.Any, vartype: str, unit: t.Optional[str] = None) -> t.Any:
    """A comparable form of a setting value as PostgreSQL would parse it for this parameter."""
    text = str(value).strip()
    if vartype == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return low
    if vartype == "enum":
        return text.lower()
    if vartype in ("integer", "real"):
        unit = unit or ""
        unit_match = re.match(r"^(\d*)\s*([A-Za-z]+)$", unit)
        if unit_match:
            multiplier = float(unit_match.group(1) or 1)
            base = unit_match.group(2).lower()
            if base in _MEMORY_UNITS:
                scaled = _scaled(text, unit, _MEMORY_UNITS, multiplier * _MEMORY_UNITS[base])
                return round(scaled) if scaled is not None else text
            if base in _TIME_UNITS:
                scaled = _scaled(text, unit, _TIME_UNITS, multiplier * _TIME_UNITS[base])
                return round(scaled, 3) if scaled is not None else text
        try:
            return float(text)
        except ValueError:
            return text
    return text


def same_value(setting: Setting, wanted: str, current: t.Optional[str]) -> bool:
    if current is None:
        return False
    return normalise(wanted, setting.vartype, setting.unit) == normalise(current, setting.vartype, setting.unit)


# -- reading the server ------------------------------------------------------------
def read_settings(conn: t.Any, names: t.Iterable[str]) -> t.Dict[str, Setting]:
    """pg_settings for ``names`` with the pending value from pg_file_settings."""
    wanted = sorted(set(check_name(n) for n in names))
    rows = _postgres.query(
        conn,
        "SELECT name, setting, unit, vartype, context, enumvals, pending_restart, source "
        "FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
        [wanted],
    )
    # The server reads the files in seqno order; the last good entry for a name wins.
    # An entry whose error is "setting could not be applied" is the pending value of a
    # restart-only parameter, so it counts; entries with other errors do not.
    file_rows = _postgres.query(
        conn,
        "SELECT name, setting, sourcefile FROM pg_catalog.pg_file_settings "
        "WHERE name = ANY(%s) AND (error IS NULL OR error = 'setting could not be applied') "
        "ORDER BY seqno",
        [wanted],
    )
    pending: t.Dict[str, t.Tuple[str, str]] = {}
    for name, value, sourcefile in file_rows:
        pending[name] = (value, sourcefile)
    result = {}
    for name, setting, unit, vartype, context, enumvals, pending_restart, source in rows:
        file_value = pending.get(name)
        result[name] = Setting(
            name=name, setting=setting, unit=unit, vartype=vartype, context=context,
            enumvals=list(enumvals) if enumvals else None,
            pending=file_value[0] if file_value else None,
            pending_file=file_value[1] if file_value else None,
            pending_restart=bool(pending_restart),
            source=source or "default",
        )
    for name, (value, sourcefile) in pending.items():
        if name not in result:
            # A custom (extension.name) parameter the server has not loaded: only the files know it.
            result[name] = Setting(name=name, setting=None, unit=None, vartype="string", context="unknown",
                                   enumvals=None, pending=value, pending_file=sourcefile, pending_restart=False,
                                   source="configuration file")
    return result


def overriding_sources(settings: t.Dict[str, Setting], wanted: t.Dict[str, str]) -> t.List[str]:
    """Wanted settings that ALTER SYSTEM cannot make effective: the server command line or environment sets them."""
    pinned = [n for n in wanted if n in settings and settings[n].source in ("command line", "environment variable")]
    return sorted(n for n in pinned if not same_value(settings[n], wanted[n], settings[n].setting))


def validate_wanted(settings: t.Dict[str, Setting], wanted: t.Dict[str, str], server_major: int = 17) -> None:
    """Fail before changing anything when a name is unknown or an enum value is not offered."""
    unknown = sorted(n for n in wanted if n not in settings and "." not in n)
    if unknown:
        raise RansomeyeError("unknown PostgreSQL parameter(s) on this server: %s" % ", ".join(unknown))
    if server_major < 17:
        # Only PostgreSQL 17+ lets ALTER SYSTEM set a custom parameter that no loaded library defines.
        undefined = sorted(n for n in wanted if n not in settings or settings[n].setting is None)
        if undefined:
            raise RansomeyeError(
                "unrecognized configuration parameter(s) %s: PostgreSQL %d accepts ALTER SYSTEM only for custom "
                "parameters a loaded library defines (PostgreSQL 17+ accepts any)" % (", ".join(undefined), server_major),
                parameter=undefined[0],
            )
    for name, value in wanted.items():
        setting = settings.get(name)
        if setting and setting.vartype == "enum" and setting.enumvals:
            if str(value).lower() not in [v.lower() for v in setting.enumvals]:
                raise RansomeyeError(
                    "%s = %s is not supported by this server (it accepts %s)"
                    % (name, value, ", ".join(setting.enumvals)),
                    parameter=name,
                )


class Plan(t.NamedTuple):
    changes: t.Dict[str, t.Dict[str, t.Any]]   # name -> {before, after, context}
    restart_required: bool                      # a wanted restart-only value is not running yet
    reload_required: bool                       # a reloadable value changes


def plan_alter_system(settings: t.Dict[str, Setting], wanted: t.Dict[str, str]) -> Plan:
    """What ALTER SYSTEM must change, compared with the pending configuration."""
    changes: t.Dict[str, t.Dict[str, t.Any]] = {}
    restart = False
    reload_ = False
    for name, value in wanted.items():
        setting = settings.get(name)
        if setting is None:  # a custom (dotted) parameter that neither the server nor a file knows yet
            changes[name] = dict(before=None, after=value, context="unknown")
            reload_ = True
            continue
        if setting.setting is None:  # custom parameter known only from the files
            if setting.pending != value:
                changes[name] = dict(before=setting.pending, after=value, context="unknown")
                reload_ = True
            continue
        current = setting.pending if setting.pending is not None else setting.setting
        differs_pending = not same_value(setting, value, current)
        differs_running = not same_value(setting, value, setting.setting)
        if differs_pending:
            changes[name] = dict(before=current, after=value, context=setting.context)
        if setting.context == "postmaster":
            if differs_running:
                restart = True
        elif differs_pending or differs_running:
            reload_ = True
    return Plan(changes, restart, reload_)


def _alter(conn: t.Any, name: str, value: t.Optional[str]) -> None:
    sql = _postgres.sql
    if value is None:
        statement = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(check_name(name)))
    else:
        statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(check_name(name)), sql.Literal(str(value)))
    _postgres.query(conn, statement)


def alter_system(conn: t.Any, changes: t.Dict[str, t.Any], settings: t.Optional[t.Dict[str, Setting]] = None) -> None:
    """ALTER SYSTEM SET each name to its value, quoted by psycopg2 (ALTER SYSTEM takes no bind parameters).

    ALTER SYSTEM cannot run in a transaction, so when the server refuses one value the
    ones already written are put back (their previous postgresql.auto.conf value, or RESET)
    before failing: a refused run leaves the pending configuration as it found it.
    """
    settings = settings or {}
    done: t.List[str] = []
    for name, change in changes.items():
        try:
            _alter(conn, name, str(change["after"]))
        except _postgres.psycopg2.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            rollback_failed = []
            for previous in reversed(done):
                setting = settings.get(previous)
                in_auto = bool(setting and setting.pending_file and setting.pending_file.endswith("postgresql.auto.conf"))
                try:
                    _alter(conn, previous, setting.pending if in_auto and setting else None)
                except _postgres.psycopg2.Error:
                    rollback_failed.append(previous)
            raise RansomeyeError(
                "ALTER SYSTEM SET %s failed: %s; %s" % (
                    name, reason,
                    "the settings written before it were put back" if not rollback_failed else
                    "could not put back %s" % ", ".join(rollback_failed)),
                parameter=name,
            )
        done.append(name)


def reload_conf(conn: t.Any) -> bool:
    return bool(_postgres.query_one(conn, "SELECT pg_catalog.pg_reload_conf()"))


# -- config include file -----------------------------------------------------------
_BARE_VALUE_RE = re.compile(r"^-?[A-Za-z0-9_.]+$")


def conf_quote(value: str) -> str:
    """A value as postgresql.conf accepts it: bare when simple, else single-quoted."""
    text = str(value)
    if _BARE_VALUE_RE.match(text):
        return text
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "''")


_CONF_LINE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(.*?)\s*$")


def parse_conf(text: str) -> t.Dict[str, str]:
    """name -> value of a simple postgresql.conf-style file (comments stripped, quotes removed)."""
    result: t.Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _CONF_LINE_RE.match(line)
        if not match:
            continue
        name, rest = match.groups()
        if rest.startswith("'"):
            value, i = [], 1
            while i < len(rest):
                char = rest[i]
                if char == "'" and i + 1 < len(rest) and rest[i + 1] == "'":
                    value.append("'")
                    i += 2
                    continue
                if char == "\\" and i + 1 < len(rest):
                    value.append(rest[i + 1])
                    i += 2
                    continue
                if char == "'":
                    break
                value.append(char)
                i += 1
            result[name] = "".join(value)
        else:
            result[name] = rest.split("#", 1)[0].strip()
    return result


def render_conf(
    settings: t.Dict[str, str],
    header: t.Sequence[str],
    comments: t.Optional[t.Dict[str, str]] = None,
) -> str:
    """A complete, commented include file for conf.d."""
    comments = comments or {}
    lines = ["# %s" % line if line else "#" for line in header]
    lines.append("")
    for name, value in settings.items():
        check_name(name)
        if name in comments:
            lines.append("# %s" % comments[name].replace("\n", " "))
        lines.append("%s = %s" % (name, conf_quote(value)))
    return "\n".join(lines) + "\n"


# -- the server's own check of a candidate file ------------------------------------------------------------------

def _as_user(uid: int, gid: int) -> t.Optional[t.Callable[[], None]]:
    """preexec_fn that drops to ``uid``/``gid`` (the postgres binary refuses to run as root)."""
    if os.geteuid() != 0 or uid == 0:
        return None

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def check_conf_with_server(content: str, data_dir: t.Optional[str], pg_version: t.Optional[int],
                           probe: str = "shared_buffers") -> None:
    """Have the server's own ``postgres`` binary read ``content`` as its configuration; RansomeyeError if it refuses.

    ``postgres --config-file=<candidate> -C <name> -D <dir>`` parses every
    setting exactly as the next start would (unknown names, bad values, bad
    units) and exits without starting anything. It runs as the data
    directory's owner; without ``data_dir``, against an empty directory, as
    the ``postgres`` user when this run is root.
    """
    import pwd
    if data_dir:
        try:
            st = os.stat(data_dir)
        except OSError as exc:
            raise RansomeyeError("data_dir %s: %s" % (data_dir, exc.strerror or exc))
        uid, gid = st.st_uid, st.st_gid
        try:
            with open(os.path.join(data_dir, "PG_VERSION")) as handle:
                pg_version = int(handle.read().strip().split(".")[0])
        except (OSError, ValueError):
            pass
    elif os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise RansomeyeError("apply=file checks the file with the server's postgres binary, which refuses to run "
                                 "as root and there is no postgres user: give data_dir")
        uid, gid = entry.pw_uid, entry.pw_gid
    else:
        uid, gid = os.geteuid(), os.getegid()
    try:
        binary = _postgres.find_pg_binary("postgres", pg_version)
    except RansomeyeError as exc:
        raise RansomeyeError("apply=file checks the file with the server's own postgres binary before putting it in "
                             "place, and none was found: %s" % exc.msg)
    work = tempfile.mkdtemp(prefix="ransomeye-pgconf-")
    try:
        os.chmod(work, 0o755)
        candidate = os.path.join(work, "candidate.conf")
        with open(candidate, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(candidate, 0o644)
        directory = data_dir
        if not directory:
            directory = os.path.join(work, "empty")
            os.mkdir(directory, 0o700)
            if os.geteuid() == 0:
                os.chown(directory, uid, gid)
        proc = subprocess.run([binary, "--config-file=" + candidate, "-C", probe, "-D", directory],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
                              preexec_fn=_as_user(uid, gid), cwd=work)
    except subprocess.TimeoutExpired:
        raise RansomeyeError("the postgres binary did not finish checking the candidate configuration within 60 s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        lines = [line.split(":  ", 1)[-1] for line in proc.stderr.decode("utf-8", "replace").splitlines()
                 if "LOG:" in line or "FATAL:" in line or "ERROR:" in line]
        lines = [line for line in lines if "skipping missing configuration file" not in line]
        raise RansomeyeError("the server would refuse this configuration (%s); nothing was written: %s"
                             % (os.path.basename(binary), "; ".join(lines[:5]) or "exit status %d" % proc.returncode))
