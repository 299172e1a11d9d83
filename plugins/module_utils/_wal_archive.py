# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: one run of ransomeye_wal_archive (decide, install, preflight, ALTER SYSTEM).

Order: validate keys and paths, read the server, install the program and its
config, run the program's own ``check`` as the PostgreSQL OS user, and only
then point archive_command at it. A program that cannot write the repository
or read its keys is never handed to PostgreSQL.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import sys
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres as pgu
from ansible_collections.ransomeye.ops.plugins.module_utils import _pg_settings as pgs
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_install as inst
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_resident as resident
from ansible_collections.ransomeye.ops.plugins.module_utils._backup_keys import load_encryption, load_signer
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write

CONFIG_NAME = "archive.json"


def _abs(paths: t.Sequence[str]) -> t.List[str]:
    return [os.path.abspath(p) for p in paths]


def wanted_config(params: dict, repo_id: str, system_identifier: str) -> dict:
    return {
        "format": "ransomeye-wal-program", "version": 1, "repo": os.path.abspath(params["repo"]),
        "repo_id": repo_id, "system_identifier": system_identifier, "mode": params["mode"],
        "recipients": _abs(params.get("recipients") or []) if params["mode"] == "rsa" else [],
        "key_file": os.path.abspath(params["key_file"]) if params["mode"] == "aes" else None,
        "signing_key": os.path.abspath(params["signing_key"]),
        "sign_every": int(params.get("sign_every") or 1),
        "look_ahead": int(params.get("look_ahead") or 0),
        "resident_idle": int(params.get("resident_idle") or 0),
        "timeout": int(params.get("command_timeout") or 60),
        "lock_timeout": min(30, int(params.get("command_timeout") or 60)),
    }


def _wal_area(params: dict, user: inst.OsUser, system_identifier: str, segment_size: int,
              check_mode: bool) -> t.Tuple[str, bool]:
    """Create or check the repository and its wal/ area; (repo_id, changed)."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo
    path = os.path.abspath(params["repo"])
    changed = False
    if os.path.exists(os.path.join(path, "repo.json")):
        repo = brepo.Repo.open(path)
    elif check_mode:
        return "", True
    else:
        repo = brepo.Repo.create(path)
        changed = True
    layout = wf.WalLayout(path)
    changed = inst.allow_traverse(path, user, check_mode) or changed
    changed = inst.ensure_owned_dir(layout.root, user, 0o700, check_mode) or changed
    if os.path.exists(layout.config):
        current = wf.read_config(layout)
        if current.get("repo_id") != repo.repo_id:
            raise RansomeyeError("%s belongs to repository %s, not %s"
                                 % (layout.config, current.get("repo_id"), repo.repo_id))
        if str(current.get("system_identifier")) != system_identifier:
            raise RansomeyeError(
                "repository %s archives WAL of database system %s, but this server is system %s; use another "
                "repository for another cluster" % (path, current.get("system_identifier"), system_identifier))
    else:
        changed = True
        if not check_mode:
            atomic_write(layout.config, inst.config_bytes({
                "format": wf.WAL_FORMAT, "version": wf.FORMAT_VERSION, "repo_id": repo.repo_id,
                "system_identifier": system_identifier, "segment_size": segment_size}),
                mode=0o644, uid=user.uid, gid=user.gid)
    return repo.repo_id, changed


def run_wal_archive(module: t.Any) -> dict:
    params = module.params
    check_mode = module.check_mode
    timeout = params.get("archive_timeout")
    if timeout is None or timeout < 0:
        raise RansomeyeError("archive_timeout must be 0 (off) or a number of seconds")
    if (params.get("sign_every") or 1) < 1:
        raise RansomeyeError("sign_every must be at least 1")
    if not 0 <= (params.get("look_ahead") or 0) <= 64:
        raise RansomeyeError("look_ahead must be between 0 (off) and 64 segments")
    if not 0 <= (params.get("resident_idle") or 0) <= 86400:
        raise RansomeyeError("resident_idle must be between 0 (no resident archiver) and 86400 seconds")
    info = pgu.ConnInfo.from_params(params)
    pgu.require_psycopg2(module)
    result: t.Dict[str, t.Any] = {"changed": False, "restart_required": False, "reload_required": False}
    program_dir = os.path.abspath(params["program_dir"])
    config_path = os.path.join(program_dir, CONFIG_NAME)
    with pgu.connection(info) as conn:
        system_identifier = str(pgu.query_one(conn, "SELECT system_identifier FROM pg_control_system()"))
        names = ["archive_mode", "archive_command", "archive_timeout", "wal_level"]
        settings = pgs.read_settings(conn, names)
        if params["state"] == "disabled":
            wanted = {"archive_mode": "off"}
            if not check_mode:
                resident.stop(config_path)
        else:
            user = inst.os_user(params["os_user"])
            load_encryption(params, "", create_id_key=False)
            load_signer(params["signing_key"])
            segment_size = int(pgu.query_one(conn, "SELECT setting::bigint * CASE unit WHEN '8kB' THEN 8192 "
                                                   "WHEN 'MB' THEN 1048576 ELSE 1 END FROM pg_settings "
                                                   "WHERE name = 'wal_segment_size'"))
            repo_id, repo_changed = _wal_area(params, user, system_identifier, segment_size, check_mode)
            installed = inst.install_files(program_dir, inst.program_files(params.get("python") or sys.executable),
                                           check_mode)
            if params.get("look_ahead"):
                # Look-ahead markers (docs/BACKUP_FORMAT.md 4.3.2): written by the program as the server's user.
                if inst.ensure_owned_dir(os.path.join(program_dir, inst.SPOOL), user, 0o700, check_mode):
                    installed.append(inst.SPOOL + "/")
            if params.get("resident_idle"):
                # The resident archiver's socket and lock (docs/BACKUP_FORMAT.md 4.3.3): the server's user only.
                if inst.ensure_owned_dir(os.path.join(program_dir, inst.RUN), user, 0o700, check_mode):
                    installed.append(inst.RUN + "/")
            if repo_id:
                # Group-readable by the server's OS user only: it names the key files (it never holds a secret).
                config = {CONFIG_NAME: (inst.config_bytes(wanted_config(params, repo_id, system_identifier)), 0o640)}
                installed += inst.install_files(program_dir, config, check_mode,
                                                gid=user.gid if os.geteuid() == 0 else None)
            result.update(program=os.path.join(program_dir, inst.LAUNCHER), config=config_path,
                          installed=installed, system_identifier=system_identifier)
            result["changed"] = bool(installed) or repo_changed
            if installed and not check_mode:
                # It would answer "retry" and exit at the next push anyway; this makes it go now.
                resident.stop(config_path)
            if not check_mode:
                proc = inst.run_program(program_dir, user, ["check", "--config", config_path])
                if proc.returncode != 0:
                    raise RansomeyeError(
                        "the WAL program cannot work as OS user %s, so archive_command was not changed: %s"
                        % (user.name, (proc.stderr or proc.stdout).strip()[-2000:]), **result)
            wanted = {"archive_mode": "on", "archive_command": inst.archive_command(program_dir, config_path),
                      "archive_timeout": "%ds" % timeout}
            if settings.get("wal_level") and settings["wal_level"].setting == "minimal":
                wanted["wal_level"] = "replica"
        pgs.validate_wanted(settings, wanted, pgu.server_major(conn))
        plan = pgs.plan_alter_system(settings, wanted)
        result["settings"] = {name: {"before": change["before"], "after": change["after"]}
                              for name, change in plan.changes.items()}
        result["restart_required"] = plan.restart_required
        result["reload_required"] = plan.reload_required
        if plan.changes:
            result["changed"] = True
            if not check_mode:
                pgs.alter_system(conn, plan.changes, settings)
                pgs.reload_conf(conn)
        if module._diff:
            result["diff"] = {
                "before": "".join("%s = %s\n" % (n, c["before"]) for n, c in sorted(plan.changes.items())),
                "after": "".join("%s = %s\n" % (n, c["after"]) for n, c in sorted(plan.changes.items())),
            }
        current = pgs.read_settings(conn, ["archive_mode"])["archive_mode"]
        result["archive_mode_running"] = current.setting
    pid = resident.running_pid(config_path)
    result["resident_archiver"] = {"running": pid is not None, "pid": pid}
    return result
