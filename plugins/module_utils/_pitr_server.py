# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: starting and stopping the clusters of a point-in-time restore.

Two layouts of real hosts need more than ``pg_ctl -D <data dir>``:
- the configuration outside the data directory (Debian and Ubuntu keep it in
  /etc/postgresql/<major>/<cluster>/): the server is started with
  ``-c config_file=`` and ``-c data_directory=``, because that file's own
  data_directory names the live directory and must not win for the side instance;
- a cluster run by systemd: stopping it with pg_ctl behind systemd's back leaves
  the unit failed and the restarted server outside its control, so the live
  cluster is stopped and started with systemctl.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import shlex
import shutil
import subprocess
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_install as inst

# Settings of the live configuration a side instance must not share with the live server.
_SIDE_ISOLATION = {"external_pid_file": ""}
# Removed in PostgreSQL 15; before that Debian points it at a directory shared by the cluster.
_SIDE_ISOLATION_BEFORE_15 = {"stats_temp_directory": "pg_stat_tmp"}


class Control(t.NamedTuple):
    user: inst.OsUser
    major: int
    config_file: t.Optional[str] = None
    service: t.Optional[str] = None


def pg_bin(name: str, major: int) -> str:
    for path in ("/usr/lib/postgresql/%d/bin/%s" % (major, name), "/usr/pgsql-%d/bin/%s" % (major, name)):
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise RansomeyeError("%s for PostgreSQL %d was not found" % (name, major))


def check_options(config_file: t.Optional[str], service: t.Optional[str], live: t.Optional[str]) -> None:
    """Preflight of pg_config_file and pg_service, before anything is extracted or stopped."""
    if config_file and not os.path.isfile(config_file):
        raise RansomeyeError("pg_config_file %s is not a file" % config_file)
    if service:
        if not live:
            raise RansomeyeError("pg_service names the unit of the live cluster: give live_data_dir too")
        if not shutil.which("systemctl"):
            raise RansomeyeError("pg_service %s needs systemctl, which this host does not have" % service)
        known = _systemctl(["cat", service], 30)
        if known.returncode != 0:
            raise RansomeyeError("pg_service %s is not a systemd unit on this host: %s"
                                 % (service, (known.stderr or known.stdout).strip()[-300:]))


def needs_config(data_dir: str, config_file: t.Optional[str], what: str) -> None:
    """Refuse, with the option to set, a data directory that cannot start on its own."""
    if not config_file and not os.path.isfile(os.path.join(data_dir, "postgresql.conf")):
        raise RansomeyeError(
            "%s %s has no postgresql.conf: the cluster keeps its configuration outside the data directory (as "
            "Debian and Ubuntu do, in /etc/postgresql/<major>/<cluster>/); give its path as pg_config_file"
            % (what, data_dir))


def side_settings(control: Control) -> t.Dict[str, str]:
    """postgresql.auto.conf settings that keep a side instance off the live server's shared files."""
    if not control.config_file:
        return {}
    out = dict(_SIDE_ISOLATION)
    if control.major < 15:
        out.update(_SIDE_ISOLATION_BEFORE_15)
    return out


def _options(control: Control, data_dir: str) -> t.List[str]:
    if not control.config_file:
        return []
    # pg_ctl hands -o to a shell: each -c value is quoted as one word.
    return ["-o", "-c %s -c %s" % (shlex.quote("config_file=" + control.config_file),
                                   shlex.quote("data_directory=" + data_dir))]


def pg_ctl(control: Control, args: t.List[str], timeout: int) -> subprocess.CompletedProcess:
    argv = inst.as_user(control.user, [pg_bin("pg_ctl", control.major)] + args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, cwd="/", check=False)


def start(control: Control, data_dir: str, log: str, timeout: int) -> subprocess.CompletedProcess:
    """pg_ctl start of ``data_dir`` (the side instance, or the live one without pg_service)."""
    args = ["-D", data_dir, "-l", log, "-w", "-t", str(timeout)] + _options(control, data_dir) + ["start"]
    return pg_ctl(control, args, timeout)


def stop(control: Control, data_dir: str, mode: str = "fast", timeout: int = 120) -> subprocess.CompletedProcess:
    return pg_ctl(control, ["-D", data_dir, "-m", mode, "-w", "-t", str(timeout), "stop"], timeout)


def _systemctl(args: t.List[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl"] + args, capture_output=True, text=True, timeout=timeout, cwd="/",
                          check=False)


def stop_live(control: Control, live: str) -> subprocess.CompletedProcess:
    if control.service:
        return _systemctl(["stop", control.service], 180)
    return stop(control, live)


def start_live(control: Control, live: str, log: str) -> subprocess.CompletedProcess:
    if control.service:
        return _systemctl(["start", control.service], 330)
    return start(control, live, log, 300)


def kill_live(control: Control, live: str) -> None:
    """Stop a live server that started wrong, before its directory is renamed back."""
    if control.service:
        _systemctl(["stop", control.service], 180)
    if os.path.exists(os.path.join(live, "postmaster.pid")):
        stop(control, live, "immediate", 60)
