# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: are the given services and processes running?

Services are asked of their manager: systemd (``systemctl is-active``) on real
hosts, supervisord (``supervisorctl status``) on hosts without systemd such as
the demo host. Processes are matched by name or command line with psutil.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import re
import shutil
import subprocess
import sys
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import (
    CRITICAL, OK, UNKNOWN, Threshold, make_check,
)

try:
    import psutil
except ImportError:  # pragma: no cover - depends on the managed host
    psutil = None

Thresholds = t.Mapping[str, Threshold]
_RUNNING = re.compile(r"^(\S+)\s+(RUNNING|STARTING|BACKOFF|STOPPED|STOPPING|EXITED|FATAL|UNKNOWN)\b", re.MULTILINE)


def _which(name: str) -> t.Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else None


def detect_manager(requested: str, supervisor_conf: t.Optional[str]) -> str:
    if requested != "auto":
        return requested
    if os.path.isdir("/run/systemd/system") and _which("systemctl"):
        return "systemd"
    if supervisor_conf:
        return "supervisord"
    return "process"


def _systemd(names: t.Sequence[str], thresholds: Thresholds) -> t.List[dict]:
    systemctl = _which("systemctl")
    if not systemctl:
        raise RansomeyeError("service_manager systemd: systemctl was not found")
    checks = []
    for name in names:
        proc = subprocess.run([systemctl, "is-active", name], capture_output=True, text=True, timeout=30, check=False)
        state = proc.stdout.strip() or proc.stderr.strip()
        running = state == "active"
        checks.append(make_check("service_running", 1.0 if running else 0.0, thresholds, target=name,
                                 status=OK if running else CRITICAL, message=state, manager="systemd"))
    return checks


def _supervisord(names: t.Sequence[str], thresholds: Thresholds, conf: t.Optional[str]) -> t.List[dict]:
    ctl = _which("supervisorctl")
    if not ctl:
        raise RansomeyeError("service_manager supervisord: supervisorctl was not found")
    argv = [ctl] + (["-c", conf] if conf else []) + ["status"] + list(names)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    states = dict(_RUNNING.findall(proc.stdout))
    checks = []
    for name in names:
        state = states.get(name)
        if state is None:
            text = (proc.stdout + proc.stderr).strip().splitlines()
            checks.append(make_check("service_running", None, thresholds, target=name, status=CRITICAL,
                                     message=text[-1] if text else "unknown to supervisord", manager="supervisord"))
            continue
        running = state == "RUNNING"
        checks.append(make_check("service_running", 1.0 if running else 0.0, thresholds, target=name,
                                 status=OK if running else CRITICAL, message=state, manager="supervisord"))
    return checks


def _process_matches(proc: t.Any, pattern: str) -> bool:
    try:
        name = proc.info.get("name") or ""
        cmdline = proc.info.get("cmdline") or []
    except (AttributeError, KeyError):
        return False
    if name == pattern:
        return True
    if cmdline and (os.path.basename(cmdline[0]) == pattern or pattern in " ".join(cmdline)):
        return True
    return False


def process_checks(patterns: t.Sequence[str], thresholds: Thresholds, kind: str = "process_count") -> t.List[dict]:
    """Count processes whose name equals, or whose command line contains, each pattern."""
    if psutil is None:
        return [make_check(kind, None, thresholds, target=p, status=UNKNOWN, message="psutil is missing")
                for p in patterns]
    # Leave out this process and its ancestors: an ad-hoc `ansible -a "processes=x"` has x on its command line.
    own = set([os.getpid()])
    try:
        own.update(parent.pid for parent in psutil.Process().parents())
    except psutil.Error:
        pass
    procs = [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid not in own]
    checks = []
    for pattern in patterns:
        count = sum(1 for p in procs if _process_matches(p, pattern))
        value = float(count) if kind == "process_count" else (1.0 if count else 0.0)
        checks.append(make_check(kind, value, thresholds, target=pattern, status=OK if count else CRITICAL,
                                 message="%d process(es)" % count))
    return checks


def service_checks(names: t.Sequence[str], thresholds: Thresholds, manager: str = "auto",
                   supervisor_conf: t.Optional[str] = None) -> t.List[dict]:
    if not names:
        return []
    chosen = detect_manager(manager, supervisor_conf)
    if chosen == "systemd":
        return _systemd(names, thresholds)
    if chosen == "supervisord":
        return _supervisord(names, thresholds, supervisor_conf)
    return process_checks(names, thresholds, kind="service_running")
