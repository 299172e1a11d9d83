# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the database credential rotation state machine.

The steps, in order (their names are the values of the test hook below):

``check``
    the password in the ``.env`` files logs in as the role they name;
``stage``
    a new password is drawn from ``secrets`` and every ``.env`` file is written
    to a temp file next to it (mode and owner copied, fsynced, not renamed);
``alter``
    the old verifier of the target role is read from ``pg_authid`` and the role
    gets a SCRAM-SHA-256 verifier computed here (``ALTER ROLE .. PASSWORD
    '<verifier>'``): the plaintext never reaches the server or its log;
``verify``
    a login as the target role with the new password is proven;
``swap``
    each staged file is renamed over its ``.env`` file (optional backup first);
``record``
    the rotation time (never the secret) is written to the state file.

Any failure after ``check`` rolls back: staged files are removed, swapped
files get their old bytes back, and the role gets its old verifier back (read
from pg_authid, which needs no plaintext; for ``in_place`` when pg_authid is
not readable, a verifier recomputed from the old password in the files). So
the database and the files always agree: the password in the files logs in.

Strategy ``in_place`` rotates the one role the files use. Strategy
``alternating`` rotates the role the files do *not* use and switches the files
to it, so services still running with the other role keep working until
they restart: no downtime.

Should the old verifier not go back (the server went away mid-rotation), the
files are made to agree with the password that logs in now: they roll
forward to the new password when it works, else back to the old one.

Test hooks (for the fault-injection tests only, never set in production): when
the environment variable ``RANSOMEYE_TEST_FAIL_AT`` names a step, the rotation
raises right after that step has done its work, exactly as a real failure at
that point would (for ``swap``: after the first file was swapped);
``RANSOMEYE_TEST_FAIL_RESTORE=1`` also makes restoring the old verifier fail.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import json
import os
import re
import secrets
import stat
import string
import tempfile
import time
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import (
    EnvFile, build_db_url, parse_db_url, url_database)
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import (
    atomic_write, fsync_dir, file_lock, unlink_on_error, unlink_quietly)
from ansible_collections.ransomeye.ops.plugins.module_utils._env_backups import backup_env
from ansible_collections.ransomeye.ops.plugins.module_utils._scram import scram_sha256_verifier

STEPS = ("check", "stage", "alter", "verify", "swap", "record")
TEST_HOOK_ENV = "RANSOMEYE_TEST_FAIL_AT"
TEST_RESTORE_HOOK_ENV = "RANSOMEYE_TEST_FAIL_RESTORE"
# Letters, digits, "-" and "_": unreserved in URLs (RFC 3986) and inert in .env
# files and shells, so the password needs no quoting anywhere.
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_"
MIN_PASSWORD_LENGTH = 16
MAX_PASSWORD_LENGTH = 256


class InjectedFailure(RansomeyeError):
    """Raised by the test hook."""


def _fail_point(step: str) -> None:
    if os.environ.get(TEST_HOOK_ENV) == step:
        raise InjectedFailure("injected failure after step %r (%s test hook)" % (step, TEST_HOOK_ENV))


def new_password(length: int) -> str:
    if not MIN_PASSWORD_LENGTH <= length <= MAX_PASSWORD_LENGTH:
        raise RansomeyeError("password_length must be between %d and %d, not %d"
                             % (MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH, length))
    return "".join(secrets.choice(PASSWORD_ALPHABET) for dummy in range(length))


class Request(t.NamedTuple):
    admin: pgu.ConnInfo
    role: str
    alternate_role: t.Optional[str]
    strategy: str
    env_files: t.List[str]
    env_vars: t.List[str]
    user_vars: t.List[str]
    db: t.Optional[str]
    password_length: int
    max_age: float
    force: bool
    backup: bool
    state_file: t.Optional[str]
    backup_dir: t.Optional[str] = None   # default <env dir>/.env-backups (0700)
    backup_keep: int = 5


class Plan(t.NamedTuple):
    due: bool
    reason: str
    active_role: str       # the role the files use now
    target_role: str       # the role that gets the new password (and that the files use afterwards)
    db: str
    current_password: str
    env: t.Dict[str, EnvFile]
    state_file: str
    state: dict


# -- reading the current state ---------------------------------------------------------------------------------------

def default_state_file(env_file: str, role: str) -> str:
    directory = os.path.dirname(os.path.abspath(env_file))
    return os.path.join(directory, ".ransomeye-db-creds-%s.json" % "".join(
        c if c.isalnum() or c in "-_" else "_" for c in role))


def read_state(path: str) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RansomeyeError("cannot read rotation state file %s: %s" % (path, exc))
    return data if isinstance(data, dict) else {}


def _credentials_in(files: t.Dict[str, EnvFile], env_vars: t.Sequence[str], user_vars: t.Sequence[str]
                    ) -> t.Tuple[t.Optional[str], str, t.Optional[str]]:
    """(user, password, database) the files hold; they must all agree."""
    passwords: t.Dict[str, t.Set[str]] = {}
    users: t.Dict[str, t.Set[str]] = {}
    database = None
    for path, env in files.items():
        found = False
        for var in env_vars:
            value = env.get(var)
            if value is None:
                continue
            parsed = parse_db_url(value)
            if parsed is not None:
                if parsed.password is None:
                    raise RansomeyeError("%s in %s is a URL without a password part" % (var, path))
                found = True
                passwords.setdefault(parsed.password, set()).add("%s:%s" % (path, var))
                if parsed.user:
                    users.setdefault(parsed.user, set()).add("%s:%s" % (path, var))
                database = database or url_database(value)
            else:
                found = True
                passwords.setdefault(value, set()).add("%s:%s" % (path, var))
        for var in user_vars:
            value = env.get(var)
            if value:
                users.setdefault(value, set()).add("%s:%s" % (path, var))
        if not found:
            raise RansomeyeError("env file %s sets none of %s" % (path, ", ".join(env_vars)))
    if len(passwords) > 1:
        raise RansomeyeError("the env files hold different passwords (in %s); fix them before rotating"
                             % "; ".join(sorted(", ".join(sorted(v)) for v in passwords.values())))
    if len(users) > 1:
        raise RansomeyeError("the env files name different users: %s"
                             % "; ".join("%s in %s" % (u, ", ".join(sorted(v))) for u, v in sorted(users.items())))
    user = next(iter(users)) if users else None
    return user, next(iter(passwords)), database


def _role_info(conn: t.Any, role: str) -> t.Optional[bool]:
    """None when ``role`` does not exist, else whether it can log in."""
    rows = pgu.query(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role])
    return bool(rows[0][0]) if rows else None


def plan(req: Request, now: t.Optional[float] = None) -> Plan:
    """Decide what a rotation would do; reads files and the catalog, changes nothing."""
    now = time.time() if now is None else now
    if not req.env_files:
        raise RansomeyeError("env_files must name at least one .env file")
    if not req.env_vars:
        raise RansomeyeError("env_vars must name at least one variable")
    files: t.Dict[str, EnvFile] = {}
    for path in req.env_files:
        real = os.path.realpath(path)
        if real in files:
            continue
        files[real] = EnvFile.read(real)
    user, password, url_db = _credentials_in(files, req.env_vars, req.user_vars)
    state_file = req.state_file or default_state_file(req.env_files[0], req.role)
    state = read_state(state_file)

    alternate = None
    if req.strategy == "alternating":
        alternate = req.alternate_role or req.role + "_b"
        if alternate == req.role:
            raise RansomeyeError("alternate_role must differ from role")
    roles = [req.role] + ([alternate] if alternate else [])
    with pgu.connection(req.admin) as conn:
        for name in roles:
            can_login = _role_info(conn, name)
            if can_login is None:
                raise RansomeyeError("role %r does not exist on %s:%s" % (name, req.admin.host, req.admin.port))
            if not can_login:
                raise RansomeyeError("role %r cannot log in (NOLOGIN)" % name)

    if alternate:
        active = user or state.get("active_role") or req.role
        if active not in (req.role, alternate):
            raise RansomeyeError("the env files log in as %r, which is neither role %r nor alternate_role %r"
                                 % (active, req.role, alternate))
        target = alternate if active == req.role else req.role
    else:
        active = user or req.role
        if active != req.role:
            raise RansomeyeError("the env files log in as %r, not as role %r (use strategy alternating with "
                                 "alternate_role=%s, or fix role)" % (active, req.role, active))
        target = req.role

    last = state.get("rotated_epoch")
    if req.force:
        due, reason = True, "forced"
    elif not isinstance(last, (int, float)) or state.get("role") != req.role:
        due, reason = True, "no record of an earlier rotation"
    elif now - last >= req.max_age:
        due, reason = True, "last rotation is %.1f days old" % ((now - last) / 86400.0)
    else:
        due, reason = False, "last rotation is %.1f days old, max_age not reached" % ((now - last) / 86400.0)
    return Plan(due, reason, active, target, req.db or url_db or req.admin.dbname, password, files, state_file, state)


# -- acting ------------------------------------------------------------------------------------------------------------

def _edited(env: EnvFile, req: Request, user: t.Optional[str], password: str) -> EnvFile:
    copy = EnvFile("".join(env.lines), env.path)
    for var in req.env_vars:
        value = copy.get(var)
        if value is None:
            continue
        parsed = parse_db_url(value)
        if parsed is not None:
            copy.set(var, build_db_url(parsed, user if (user and parsed.user) else parsed.user, password))
        else:
            copy.set(var, password)
    if user:
        for var in req.user_vars:
            if copy.get(var):
                copy.set(var, user)
    return copy


CURRENT_PLACEHOLDER = "CURRENT-PASSWORD-REDACTED"
NEW_PLACEHOLDER = "NEW-PASSWORD-REDACTED"


OTHER_SECRET_PLACEHOLDER = "SECRET-REDACTED"
# Variable names whose values are secrets by convention (Django SECRET_KEY, *_PASSWORD, *_TOKEN, AWS keys...).
_SECRET_NAME = re.compile(r"(?i)(pass(word|wd|phrase)?$|passw|pwd|secret|token|api_?key|private_?key|access_?key|"
                          r"signing_?key|_key$|^key$|credential|auth|salt|cookie|session|dsn)")
# scheme://user:password@host: the password part of a URL in any variable.
_URL_PASSWORD = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://[^/@:\s]*:)([^@\s]+)(@)")


def redact_other_secrets(env: EnvFile, keep: t.Sequence[str]) -> EnvFile:
    """A copy of ``env`` with every secret-looking value other than the ``keep`` variables redacted."""
    copy = EnvFile("".join(env.lines), env.path)
    for key in list(copy.values):
        if key in keep:
            continue
        value = copy.get(key)
        if not value:
            continue
        if _SECRET_NAME.search(key):
            copy.set(key, OTHER_SECRET_PLACEHOLDER)
            continue
        url = _URL_PASSWORD.match(value)
        if url:
            copy.set(key, url.group(1) + OTHER_SECRET_PLACEHOLDER + url.group(3) + value[url.end():])
    return copy


def redacted_diff(req: Request, the_plan: Plan) -> t.List[dict]:
    """What each env file would look like, with both passwords and every other secret replaced by placeholders.

    The diff shows which lines (and, with alternating, which user) change
    without either password, nor any other secret the files hold (SECRET_KEY,
    REDIS_PASSWORD, URLs with a password...), ever reaching the output.
    """
    switch_user = the_plan.target_role if the_plan.target_role != the_plan.active_role else None
    diffs = []
    for path, env in sorted(the_plan.env.items()):
        before = redact_other_secrets(_edited(env, req, None, CURRENT_PLACEHOLDER), req.env_vars)
        after = redact_other_secrets(_edited(env, req, switch_user, NEW_PLACEHOLDER), req.env_vars)
        diffs.append(dict(before_header=path, after_header=path,
                          before=before.render().decode("utf-8", "replace"),
                          after=after.render().decode("utf-8", "replace")))
    return diffs


def _stage(path: str, data: bytes) -> str:
    """A fsynced temp file next to ``path`` with its mode and owner; not renamed yet."""
    current = os.stat(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".rotate.tmp",
                               dir=os.path.dirname(path))
    with unlink_on_error(tmp):
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(current.st_mode))
        try:
            os.chown(tmp, current.st_uid, current.st_gid)
        except PermissionError:
            pass
    return tmp


def _can_login(info: pgu.ConnInfo) -> t.Optional[str]:
    """None when the login works, else the (password-free) error."""
    try:
        with pgu.connection(info) as conn:
            pgu.query_one(conn, "SELECT 1")
    except RansomeyeError as exc:
        return exc.msg
    return None


def _read_verifier(conn: t.Any, role: str) -> t.Tuple[bool, t.Optional[str]]:
    """(readable, verifier) of ``role`` from pg_authid; not readable without superuser rights."""
    try:
        rows = pgu.query(conn, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])
    except Exception:  # permission denied for table pg_authid
        return False, None
    return True, rows[0][0] if rows else None


def _set_verifier(conn: t.Any, role: str, verifier: t.Optional[str]) -> None:
    # Only a verifier (or NULL) is ever sent as the password literal, never a plaintext.
    statement = pgu.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        pgu.ident(role), pgu.sql.SQL("NULL") if verifier is None else pgu.literal(verifier))
    pgu.query(conn, statement)


def rotate(req: Request, the_plan: Plan, now: t.Optional[float] = None) -> dict:
    """Run the steps; on any failure put everything back and raise."""
    db_info = req.admin.with_db(the_plan.db)
    problem = _can_login(db_info.with_login(the_plan.active_role, the_plan.current_password))
    if problem:
        raise RansomeyeError("the current credentials in the env files do not work for role %r, so nothing was "
                             "rotated: %s" % (the_plan.active_role, problem))
    _fail_point("check")

    switch_user = the_plan.target_role if the_plan.target_role != the_plan.active_role else None
    staged: t.Dict[str, str] = {}
    swapped: t.Dict[str, bytes] = {}
    new_bytes: t.Dict[str, bytes] = {}
    password = ""
    backups: t.List[str] = []
    altered = False
    old_verifier: t.Optional[str] = None
    step = "stage"
    try:
        password = new_password(req.password_length)
        for path, env in the_plan.env.items():
            new_bytes[path] = _edited(env, req, switch_user, password).render()
            staged[path] = _stage(path, new_bytes[path])
        _fail_point("stage")

        step = "alter"
        with pgu.connection(req.admin) as conn:
            readable, old_verifier = _read_verifier(conn, the_plan.target_role)
            if not readable:
                if the_plan.target_role != the_plan.active_role:
                    old_verifier = None  # unused password of the inactive role: nothing to protect
                else:
                    old_verifier = scram_sha256_verifier(the_plan.current_password)
            altered = True
            _set_verifier(conn, the_plan.target_role, scram_sha256_verifier(password))
        _fail_point("alter")

        step = "verify"
        problem = _can_login(db_info.with_login(the_plan.target_role, password))
        if problem:
            raise RansomeyeError("a login as %r with the new password failed: %s" % (the_plan.target_role, problem))
        _fail_point("verify")

        step = "swap"
        for index, (path, tmp) in enumerate(list(staged.items())):
            if req.backup:
                backups.append(backup_env(path, req.backup_dir, req.backup_keep))
            old = the_plan.env[path].render()
            os.rename(tmp, path)
            del staged[path]
            swapped[path] = old
            fsync_dir(os.path.dirname(path))
            if index == 0:
                _fail_point("swap")

        step = "record"
        _fail_point("record")
        rotated_at = time.time() if now is None else now
        state = dict(
            role=req.role, strategy=req.strategy, active_role=the_plan.target_role,
            previous_role=the_plan.active_role, rotated_epoch=int(rotated_at),
            rotated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rotated_at)),
            env_files=sorted(the_plan.env),
        )
        atomic_write(the_plan.state_file, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                     mode=0o600)
    except BaseException as exc:
        undone = _roll_back(req, the_plan, _Undo(staged, swapped, new_bytes, altered, old_verifier, password))
        message = exc.msg if isinstance(exc, RansomeyeError) else "%s: %s" % (type(exc).__name__, exc)
        raise RansomeyeError("credential rotation failed at step %r: %s; %s" % (step, message, undone),
                             failed_step=step, role=the_plan.target_role, rolled_back=True)
    return dict(
        changed=True, rotated=True, reason=the_plan.reason, role=the_plan.target_role,
        previous_role=the_plan.active_role, active_role=the_plan.target_role,
        env_files_changed=sorted(the_plan.env), backup_files=backups, state_file=the_plan.state_file,
        rotated_at=state["rotated_at"],
    )


class _Undo(t.NamedTuple):
    staged: t.Dict[str, str]        # path -> temp file not yet renamed
    swapped: t.Dict[str, bytes]     # path -> old content, for files already renamed
    new_bytes: t.Dict[str, bytes]   # path -> new content
    altered: bool                   # ALTER ROLE was attempted
    old_verifier: t.Optional[str]
    password: str


def _restore_files(undo: _Undo, problems: t.List[str]) -> None:
    for tmp in undo.staged.values():
        try:
            unlink_quietly(tmp)
        except OSError as exc:
            problems.append("could not remove staged file %s: %s" % (tmp, exc))
    for path, old in undo.swapped.items():
        try:
            atomic_write(path, old)
        except (OSError, RansomeyeError) as exc:
            problems.append("could not restore %s: %s" % (path, exc))


def _roll_forward_files(undo: _Undo, problems: t.List[str]) -> None:
    for path, data in undo.new_bytes.items():
        try:
            if path in undo.staged:
                os.rename(undo.staged[path], path)
                fsync_dir(os.path.dirname(path))
            elif path not in undo.swapped:
                atomic_write(path, data)
        except (OSError, RansomeyeError) as exc:
            problems.append("could not write %s: %s" % (path, exc))


def _roll_back(req: Request, the_plan: Plan, undo: _Undo) -> str:
    """Undo what was done; return a sentence saying what was restored (or what could not be).

    The old verifier goes back first. Should that fail (the server went away
    mid-rotation), the files are made to agree with whatever password logs in
    now: the new one (the files roll forward) or the old one (they roll back).
    """
    problems: t.List[str] = []
    restore_error = None
    if undo.altered:
        try:
            if os.environ.get(TEST_RESTORE_HOOK_ENV) == "1":
                raise InjectedFailure("injected failure restoring the old password (%s test hook)"
                                      % TEST_RESTORE_HOOK_ENV)
            with pgu.connection(req.admin) as conn:
                _set_verifier(conn, the_plan.target_role, undo.old_verifier)
        except Exception as exc:  # the server may be the thing that failed
            restore_error = exc.msg if isinstance(exc, RansomeyeError) else str(exc).strip().splitlines()[0]
    if restore_error is None:
        _restore_files(undo, problems)
        if problems:
            return "ROLLBACK INCOMPLETE: " + "; ".join(problems)
        return "rolled back: the env files and the password of role %r are as before" % the_plan.target_role
    db_info = req.admin.with_db(the_plan.db)
    if _can_login(db_info.with_login(the_plan.target_role, undo.password)) is None:
        _roll_forward_files(undo, problems)
        if not problems:
            return ("could not restore the old password of role %r (%s), so the rotation was ROLLED FORWARD instead: "
                    "the env files hold the new password, which logs in" % (the_plan.target_role, restore_error))
    else:
        _restore_files(undo, problems)
        if not problems and _can_login(db_info.with_login(the_plan.active_role, the_plan.current_password)) is None:
            return ("rolled back: the old password of role %r still logs in and the env files are as before"
                    % the_plan.active_role)
    problems.insert(0, "could not restore the old password of role %r: %s" % (the_plan.target_role, restore_error))
    return "ROLLBACK INCOMPLETE: " + "; ".join(problems)


def run(req: Request, check_mode: bool, diff_mode: bool = False) -> dict:
    """Plan, and rotate unless in check mode or not due (under a lock next to the state file)."""
    state_file = req.state_file or (default_state_file(req.env_files[0], req.role) if req.env_files else None)
    if check_mode or not state_file or not os.path.isdir(os.path.dirname(os.path.abspath(state_file))):
        return _run(req, check_mode, diff_mode)
    with file_lock(state_file + ".lock", "credential rotation for role %s" % req.role):
        return _run(req, check_mode, diff_mode)


def _run(req: Request, check_mode: bool, diff_mode: bool) -> dict:
    the_plan = plan(req)
    result = dict(
        changed=the_plan.due, rotated=False, reason=the_plan.reason, role=the_plan.target_role,
        previous_role=the_plan.active_role, active_role=the_plan.active_role,
        env_files_changed=sorted(the_plan.env) if the_plan.due else [], backup_files=[],
        state_file=the_plan.state_file, rotated_at=the_plan.state.get("rotated_at"),
    )
    diff = redacted_diff(req, the_plan) if the_plan.due and diff_mode else None
    if diff is not None:
        result["diff"] = diff
    if not the_plan.due or check_mode:
        if check_mode and the_plan.due:
            result["active_role"] = the_plan.target_role
        return result
    result = rotate(req, the_plan)
    if diff is not None:
        result["diff"] = diff
    return result
