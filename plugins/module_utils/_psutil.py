# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: psutil, optional on the managed host.

``psutil`` is None and ``HAS_PSUTIL`` False when it is not installed; each
user falls back to /proc or fails with missing_required_lib("psutil").
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

try:
    import psutil  # noqa: F401 pylint: disable=unused-import
    HAS_PSUTIL = True
except ImportError:  # pragma: no cover - depends on the managed host
    psutil = None
    HAS_PSUTIL = False
