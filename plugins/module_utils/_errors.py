# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the one exception type that modules turn into fail_json."""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t


class RansomeyeError(Exception):
    """An expected failure: bad input, a refused operation, an unreachable server.

    ``details`` are extra return values that help the operator (never secrets).
    """

    def __init__(self, msg: str, **details: t.Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
