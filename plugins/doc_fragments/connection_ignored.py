# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # For modules in group/ransomeye.ops.all that never connect to PostgreSQL: module_defaults for the
    # group hands them the connection options, which they accept and ignore. cert_renew and alert_forward
    # use the name ca_cert for a CA of their own: their own documentation of ca_cert overrides this one
    # (a module's option wins over a fragment's), as their argument spec overrides ignored_connection_spec's.
    DOCUMENTATION = r'''
options:
  login_host:
    description: &ignored
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  login_port:
    description: *ignored
    type: int
  login_user:
    description: *ignored
    type: str
  login_password:
    description: *ignored
    type: str
  login_db:
    description: *ignored
    type: str
  ssl_mode:
    description: *ignored
    type: str
  connect_timeout:
    description: *ignored
    type: int
  ca_cert:
    description: *ignored
    type: path
'''
