# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: health checks of what the operator actually cares about.

The application itself (its health URL, and a database login with the app
role's credentials as its ``.env`` file holds them, which is what breaks after
a restore of an old ``.env`` or a half-done credential rotation), the age of
the newest backup and of the last passing DR drill, and the backlog of alerts
spooled for a SIEM that is not receiving them. All read-only; no secret is put
in a result.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import json
import os
import re
import typing as t
import urllib.error

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import (
    CRITICAL, OK, UNKNOWN, WARNING, Threshold, make_check,
)

Thresholds = t.Mapping[str, Threshold]
_MANIFEST_RE = re.compile(r"^(\d{8})\.json$")
_DRILL_RE = re.compile(r"^dr-drill-.*\.json$")
_SPOOL_RE = re.compile(r"^\d{12}\.alert$")  # _spool._ENTRY_RE


def _age(moment: t.Optional[str], now: datetime.datetime) -> t.Optional[float]:
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return max(0.0, (now - parsed).total_seconds())


def app_url_check(url: str, thresholds: Thresholds, timeout: float) -> dict:
    """The app's health URL: 200 is ok; any other answer (503 when its database is gone) or none is critical."""
    from ansible.module_utils.urls import open_url
    try:
        resp = open_url(url, timeout=timeout, follow_redirects="safe")
        code = resp.getcode()
        resp.close()
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return make_check("app_http_status", None, thresholds, target=url, status=CRITICAL,
                          message="no answer: %s" % reason)
    return make_check("app_http_status", code, thresholds, target=url, status=OK if code == 200 else CRITICAL,
                      message="" if code == 200 else "HTTP %d" % code)


def app_login_check(env_file: str, params: t.Mapping[str, t.Any], thresholds: Thresholds) -> dict:
    """Log in as the app does, with the credentials its .env file holds now."""
    from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import EnvFile, parse_db_url
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    try:
        env = EnvFile.read(env_file)
    except (OSError, RansomeyeError) as exc:
        return make_check("app_db_login", None, thresholds, target=env_file, status=CRITICAL,
                          message="cannot read the env file: %s" % getattr(exc, "msg", exc))
    url = parse_db_url(env.get("DATABASE_URL") or "")
    user = env.get("DB_USER") or (url.user if url else None)
    password = env.get("DB_PASSWORD") or (url.password if url else None)
    dbname = env.get("DB_NAME") or _url_db(env.get("DATABASE_URL") or "") or params.get("login_db")
    if not user or password is None:
        return make_check("app_db_login", None, thresholds, target=env_file, status=CRITICAL,
                          message="no DB_USER/DB_PASSWORD or DATABASE_URL credentials in the env file")
    info = pgu.ConnInfo.from_params(params, dbname=dbname).with_login(user, password)
    try:
        conn = pgu.connect(info)
    except RansomeyeError as exc:
        # The message names user, host and database, never the password (see _postgres._clean_error).
        return make_check("app_db_login", 0, thresholds, target=env_file, status=CRITICAL,
                          message="the app's credentials do not log in: %s" % exc.msg)
    conn.close()
    return make_check("app_db_login", 1, thresholds, target=env_file, status=OK, message="as %s" % user)


def _url_db(url: str) -> t.Optional[str]:
    from ansible_collections.ransomeye.ops.plugins.module_utils._envfile import url_database
    return url_database(url) if url else None


def backup_age_check(repo: str, thresholds: Thresholds, now: datetime.datetime) -> dict:
    """Hours since the newest complete backup ended (its manifest; no decryption, no verification)."""
    mdir = os.path.join(repo, "manifests")
    try:
        names = sorted(n for n in os.listdir(mdir) if _MANIFEST_RE.match(n))
    except OSError as exc:
        return make_check("backup_age_hours", None, thresholds, target=repo, status=CRITICAL,
                          message="no backup repository here: %s" % exc.strerror)
    if not names:
        return make_check("backup_age_hours", None, thresholds, target=repo, status=CRITICAL, message="no backup yet")
    # The manifest is written last, once the backup is complete: its mtime is the backup's end, without reading
    # a manifest that can be large.
    try:
        ended = os.stat(os.path.join(mdir, names[-1])).st_mtime
    except OSError as exc:
        return make_check("backup_age_hours", None, thresholds, target=repo, status=UNKNOWN,
                          message="newest manifest %s: %s" % (names[-1], exc.strerror))
    age = max(0.0, now.timestamp() - ended)
    return make_check("backup_age_hours", round(age / 3600.0, 2), thresholds, target=repo, seq=int(names[-1][:8]))


def drill_age_check(report_dir: str, thresholds: Thresholds, now: datetime.datetime) -> dict:
    """Days since the last DR drill that passed (newest passing dr-drill-*.json)."""
    try:
        names = sorted((n for n in os.listdir(report_dir) if _DRILL_RE.match(n)), reverse=True)
    except OSError as exc:
        return make_check("drill_age_days", None, thresholds, target=report_dir, status=UNKNOWN,
                          message="cannot list the report directory: %s" % exc.strerror)
    for name in names:
        try:
            with open(os.path.join(report_dir, name), "rb") as handle:
                report = json.loads(handle.read(16 * 1024 * 1024).decode("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and report.get("result") == "passed":
            age = _age(report.get("finished"), now)
            return make_check("drill_age_days", None if age is None else round(age / 86400.0, 2), thresholds,
                              target=report_dir, report=name)
    # A host that never passed a drill is not down: a warning, like an old drill.
    return make_check("drill_age_days", None, thresholds, target=report_dir, status=WARNING,
                      message="no passing DR drill report")


def spool_backlog_check(spool_dir: str, thresholds: Thresholds) -> dict:
    """Alerts waiting in the spool for a SIEM that has not taken them."""
    try:
        count = sum(1 for n in os.listdir(spool_dir) if _SPOOL_RE.match(n))
    except FileNotFoundError:
        count = 0
    except OSError as exc:
        return make_check("siem_spool_backlog", None, thresholds, target=spool_dir, status=UNKNOWN,
                          message=exc.strerror)
    return make_check("siem_spool_backlog", count, thresholds, target=spool_dir)


def app_checks(params: t.Mapping[str, t.Any], thresholds: Thresholds) -> t.List[dict]:
    out = []
    if params.get("app_health_url"):
        out.append(app_url_check(params["app_health_url"], thresholds, float(params.get("connect_timeout") or 5)))
    for env_file in params.get("app_env_files") or []:
        out.append(app_login_check(env_file, params, thresholds))
    return out


def backup_checks(params: t.Mapping[str, t.Any], thresholds: Thresholds) -> t.List[dict]:
    now = datetime.datetime.now(datetime.timezone.utc)
    out = []
    if params.get("backup_repo"):
        out.append(backup_age_check(params["backup_repo"], thresholds, now))
    if params.get("drill_report_dir"):
        out.append(drill_age_check(params["drill_report_dir"], thresholds, now))
    if params.get("pre_restore_db"):
        out.append(pre_restore_check(params, thresholds))
    return out


def pre_restore_check(params: t.Mapping[str, t.Any], thresholds: Thresholds) -> dict:
    """Disk held by the ``<db>_pre_restore_*`` copies restores keep (they count against the data directory)."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
    from ansible_collections.ransomeye.ops.plugins.module_utils._restore_retention import pre_restore_databases
    db = params["pre_restore_db"]
    info = pgu.ConnInfo.from_params(params)
    try:
        with pgu.connection(info) as conn:
            copies = pre_restore_databases(pgu, conn, db)
    except RansomeyeError as exc:
        return make_check("pg_pre_restore_bytes", None, thresholds, target=db, status=UNKNOWN, message=exc.msg)
    return make_check("pg_pre_restore_bytes", sum(size for _n, size in copies), thresholds, target=db,
                      copies=[name for name, _size in copies],
                      message="%d copies kept by restores" % len(copies) if copies else "")


def spool_checks(params: t.Mapping[str, t.Any], thresholds: Thresholds) -> t.List[dict]:
    return [spool_backlog_check(params["spool_dir"], thresholds)] if params.get("spool_dir") else []
