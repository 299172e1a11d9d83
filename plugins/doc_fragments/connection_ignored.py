# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # For modules in group/ransomeye.ops.all that never connect to PostgreSQL: module_defaults for the
    # group hands them the connection options, which they accept and ignore. ca_cert is apart because
    # cert_renew and alert_forward use that name for a CA of their own.
    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  login_port:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: int
  login_user:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  login_password:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  login_db:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  ssl_mode:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: str
  connect_timeout:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: int
'''

    # Adds the ignored ca_cert, for modules that have no ca_cert of their own.
    CA_CERT = r'''
options:
  ca_cert:
    description:
      - Ignored. This module does not connect to PostgreSQL; it accepts the option so that
        C(module_defaults) for C(group/ransomeye.ops.all) can set the connection once for a whole play.
    type: path
'''
