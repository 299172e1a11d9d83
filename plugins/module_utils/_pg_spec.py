# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the PostgreSQL connection options every module takes (no psycopg2 import).

_postgres re-exports these; a module that only needs its argument spec imports them from here, so that a run
that never connects (a backup of files only, after nothing changed) does not load psycopg2.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def postgres_argument_spec() -> dict:
    """The connection options every PostgreSQL module takes (see the doc fragment)."""
    return dict(
        login_host=dict(type="str", default="localhost", aliases=["host"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        login_db=dict(type="str", default="postgres"),
        ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=10),
    )


def ignored_connection_spec(exclude: t.Sequence[str] = ()) -> dict:
    """The connection options, accepted and ignored by modules that never connect.

    ``module_defaults: group/ransomeye.ops.all`` hands the connection options
    to every module of the group; a module that rejected them would fail any
    play that sets them once. No defaults and no aliases: an alias such as
    ``port`` would collide with a module's own option. ``exclude`` drops names
    the module uses for something else (``ca_cert`` of a CA that signs).
    """
    spec = dict(
        login_host=dict(type="str"),
        login_port=dict(type="int"),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True),
        login_db=dict(type="str"),
        ssl_mode=dict(type="str"),
        ca_cert=dict(type="path"),
        connect_timeout=dict(type="int"),
    )
    for name in exclude:
        spec.pop(name)
    return spec
