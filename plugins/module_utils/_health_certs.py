# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: days left before given certificates expire."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._health_report import CRITICAL, Threshold, make_check

try:
    from cryptography import x509
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - depends on the managed host
    x509 = None
    HAS_CRYPTOGRAPHY = False

Thresholds = t.Mapping[str, Threshold]
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def _not_after(cert: t.Any) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return value


def load_certificate(path: str) -> t.Any:
    """The first certificate of a PEM (or DER) file."""
    with open(path, "rb") as handle:
        data = handle.read(1024 * 1024)
    if _PEM_BEGIN in data:
        return x509.load_pem_x509_certificate(data[data.index(_PEM_BEGIN):])
    return x509.load_der_x509_certificate(data)


def certificate_checks(paths: t.Sequence[str], thresholds: Thresholds,
                       now: t.Optional[datetime.datetime] = None) -> t.List[dict]:
    """A check per certificate: days until notAfter (negative once expired). Unreadable means critical."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    checks = []
    for path in paths:
        if x509 is None:
            checks.append(make_check("cert_days_left", None, thresholds, target=path, status=CRITICAL,
                                     message="the cryptography library is missing"))
            continue
        try:
            cert = load_certificate(path)
        except (OSError, ValueError) as exc:
            checks.append(make_check("cert_days_left", None, thresholds, target=path, status=CRITICAL,
                                     message="cannot read certificate: %s" % exc))
            continue
        not_after = _not_after(cert)
        days = (not_after - now).total_seconds() / 86400.0
        checks.append(make_check("cert_days_left", days, thresholds, target=path,
                                 message="expired" if days < 0 else "",
                                 not_after=not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 subject=cert.subject.rfc4514_string()))
    return checks
