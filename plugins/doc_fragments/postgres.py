# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The connection options shared by every module that talks to PostgreSQL.
    # Set them once for a play with
    # module_defaults: {group/ransomeye.ops.all: {login_host: ..., login_password: ...}}.
    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server, or the directory of its Unix socket.
    type: str
    default: localhost
    aliases: [host]
  login_port:
    description:
      - TCP port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to log in as.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user).
      - It reaches libpq as a connection keyword and client tools such as C(pg_dump) through a temporary
        0600 passfile; it never appears on a command line, in the environment of a child process or in the
        module's output.
    type: str
    aliases: [password]
  login_db:
    description:
      - Database to connect to for server-wide work.
    type: str
    default: postgres
  ssl_mode:
    description:
      - libpq C(sslmode). Use V(verify-full) with O(ca_cert) across untrusted networks.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA certificate file that the server certificate must chain to (libpq C(sslrootcert)).
    type: path
    aliases: [ssl_rootcert]
  connect_timeout:
    description:
      - Seconds to wait for a connection before failing. A server that hangs fails the task within this time.
    type: int
    default: 10
requirements:
  - psycopg2 (or psycopg2-binary) on the managed host
notes:
  - All options here can be set once for a play with C(module_defaults) and the action group
    C(group/ransomeye.ops.all).
'''
