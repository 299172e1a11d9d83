# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Every module belongs to the action group used with module_defaults.
    DOCUMENTATION = r'''
attributes:
  action_group:
    description: Use C(group/ransomeye.ops.all) in C(module_defaults) to set default values for this module.
    support: full
    membership:
      - ransomeye.ops.all
'''
