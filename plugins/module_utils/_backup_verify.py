# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: placeholder, being implemented (issue 3)."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


def run_verify_module(module: t.Any) -> dict:
    raise RansomeyeError("not implemented yet")
