# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: health check results, thresholds, overall status and the Nagios line.

A check is a plain dict (it goes straight into the module result and the JSON
report): ``name``, ``target``, ``value``, ``unit``, ``warning``, ``critical``,
``status`` (``ok``, ``warning``, ``critical``, ``unknown``) and ``message``.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
# Worst wins. An unmeasurable check ranks between ok and warning.
RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
NAGIOS_CODE = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


class Threshold(t.NamedTuple):
    warning: t.Optional[float]
    critical: t.Optional[float]
    lower_is_worse: bool = False
    unit: str = ""


MB = 1024 * 1024
# name -> (warning, critical, lower_is_worse, unit). check_postgres defaults where it has them.
DEFAULT_THRESHOLDS: t.Dict[str, Threshold] = {
    "disk_used_percent": Threshold(80, 90, False, "%"),
    "inodes_used_percent": Threshold(80, 90, False, "%"),
    "io_util_percent": Threshold(80, 95, False, "%"),
    "io_latency_ms": Threshold(50, 200, False, "ms"),
    "io_read_bytes_per_s": Threshold(None, None, False, "B/s"),
    "io_write_bytes_per_s": Threshold(None, None, False, "B/s"),
    "load_per_core": Threshold(2, 4, False, ""),
    "memory_available_percent": Threshold(10, 5, True, "%"),
    "swap_used_percent": Threshold(50, 80, False, "%"),
    "pg_connect_ms": Threshold(500, 2000, False, "ms"),
    "pg_query_ms": Threshold(100, 1000, False, "ms"),
    "pg_backends_percent": Threshold(90, 95, False, "%"),
    "pg_idle_in_transaction": Threshold(5, 20, False, ""),
    "pg_longest_query_seconds": Threshold(300, 1800, False, "s"),
    "pg_wraparound_age": Threshold(1300000000, 1400000000, False, ""),
    "pg_replication_lag_bytes": Threshold(16 * MB, 256 * MB, False, "B"),
    "pg_replication_lag_seconds": Threshold(60, 300, False, "s"),
    # WAL files waiting for the archive command: each is up to one segment or archive_timeout of RPO at risk.
    "pg_wal_archive_ready": Threshold(3, 10, False, ""),
    "service_running": Threshold(None, None, False, ""),
    "process_count": Threshold(None, None, False, ""),
    "cert_days_left": Threshold(30, 7, True, "d"),
    "app_http_status": Threshold(None, None, False, ""),
    "app_db_login": Threshold(None, None, False, ""),
    "backup_age_hours": Threshold(26, 50, False, "h"),
    "drill_age_days": Threshold(8, None, False, "d"),
    # The spool holds at most 10,000 alerts (_spool.DEFAULT_MAX_MESSAGES).
    "siem_spool_backlog": Threshold(500, 9000, False, ""),
    "pg_pre_restore_bytes": Threshold(None, None, False, "B"),
}


def _number(value: t.Any, where: str) -> t.Optional[float]:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RansomeyeError("%s must be a number, not %r" % (where, value))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RansomeyeError("%s must be a number, not %r" % (where, value))


def merge_thresholds(overrides: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, Threshold]:
    """Defaults updated from ``{name: {warning: x, critical: y}}`` or ``{name: [x, y]}``."""
    merged = dict(DEFAULT_THRESHOLDS)
    for name, spec in (overrides or {}).items():
        if name not in merged:
            raise RansomeyeError("unknown threshold %r; known: %s" % (name, ", ".join(sorted(merged))))
        base = merged[name]
        if isinstance(spec, (list, tuple)) and len(spec) == 2:
            spec = {"warning": spec[0], "critical": spec[1]}
        if not isinstance(spec, dict) or set(spec) - {"warning", "critical"}:
            raise RansomeyeError("threshold %s must be {warning: W, critical: C} or [W, C], not %r" % (name, spec))
        warning = _number(spec["warning"], "thresholds.%s.warning" % name) if "warning" in spec else base.warning
        critical = _number(spec["critical"], "thresholds.%s.critical" % name) if "critical" in spec else base.critical
        if warning is not None and critical is not None:
            if (critical < warning) if not base.lower_is_worse else (critical > warning):
                raise RansomeyeError("threshold %s: critical (%s) must be %s than warning (%s)" % (
                    name, critical, "lower" if base.lower_is_worse else "higher", warning))
        merged[name] = base._replace(warning=warning, critical=critical)
    return merged


def evaluate(value: t.Optional[float], threshold: Threshold) -> str:
    if value is None:
        return UNKNOWN
    worse = (lambda limit: value <= limit) if threshold.lower_is_worse else (lambda limit: value >= limit)
    if threshold.critical is not None and worse(threshold.critical):
        return CRITICAL
    if threshold.warning is not None and worse(threshold.warning):
        return WARNING
    return OK


def make_check(
    name: str,
    value: t.Optional[float],
    thresholds: t.Mapping[str, Threshold],
    target: str = "",
    message: str = "",
    status: t.Optional[str] = None,
    **extra: t.Any,
) -> dict:
    """One check result; ``status`` forces a status (e.g. critical for an unreachable server)."""
    threshold = thresholds[name]
    if isinstance(value, float):
        value = round(value, 3)
    check = dict(
        name=name,
        target=target,
        value=value,
        unit=threshold.unit,
        warning=threshold.warning,
        critical=threshold.critical,
        status=status or evaluate(value, threshold),
        message=message,
    )
    check.update(extra)
    return check


def worst(checks: t.Iterable[dict]) -> str:
    status = OK
    for check in checks:
        if RANK[check["status"]] > RANK[status]:
            status = check["status"]
    return status


def should_fail(status: str, fail_on: str) -> bool:
    if fail_on == "never":
        return False
    return RANK[status] >= RANK[fail_on]


def _label(check: dict) -> str:
    label = check["name"] + ("[%s]" % check["target"] if check["target"] else "")
    return "'%s'" % label.replace("'", "''").replace("=", "_")


_PERF_UOM = {"%": "%", "ms": "ms", "s": "s", "B": "B", "B/s": "", "d": "", "": ""}


def _fmt(number: t.Optional[float]) -> str:
    if number is None:
        return ""
    if float(number).is_integer():
        return str(int(number))
    return ("%.3f" % number).rstrip("0").rstrip(".")


def nagios_line(checks: t.Sequence[dict], status: t.Optional[str] = None, label: str = "RANSOMEYE") -> str:
    """``RANSOMEYE WARNING - 1 warning: disk_used_percent[/]=85% | 'disk_used_percent[/]'=85%;80;90;0;100 ...``"""
    status = status or worst(checks)
    bad = [c for c in checks if c["status"] != OK]
    if bad:
        counts = []
        for name in (CRITICAL, WARNING, UNKNOWN):
            number = sum(1 for c in bad if c["status"] == name)
            if number:
                counts.append("%d %s" % (number, name))
        bad.sort(key=lambda c: -RANK[c["status"]])
        details = "; ".join(
            "%s%s%s" % (c["name"], "[%s]" % c["target"] if c["target"] else "",
                        "=%s%s" % (_fmt(c["value"]), c["unit"]) if c["value"] is not None else " (%s)" % (c["message"] or "no value"))
            for c in bad)
        summary = "%s: %s" % (", ".join(counts), details)
    else:
        summary = "%d checks ok" % len(checks)
    summary = summary.replace("|", "/").replace("\n", " ")
    perf = []
    for check in checks:
        if check["value"] is None:
            continue
        uom = _PERF_UOM.get(check["unit"], "")
        minimum, maximum = ("0", "100") if check["unit"] == "%" else ("", "")
        fields = (_label(check), _fmt(check["value"]), uom, _fmt(check["warning"]), _fmt(check["critical"]),
                  minimum, maximum)
        item = "%s=%s%s;%s;%s;%s;%s" % fields
        perf.append(item.rstrip(";"))
    line = "%s %s - %s" % (label, status.upper(), summary)
    return line + (" | " + " ".join(perf) if perf else "")
