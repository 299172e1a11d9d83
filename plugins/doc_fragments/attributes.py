# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The base every module uses: the action group used with module_defaults, POSIX hosts, and the
    # descriptions of check_mode, diff_mode and platform (worded as ansible.builtin.action_common_attributes
    # words them). A module adds ONE support variant below; its own attributes.check_mode.details or
    # attributes.diff_mode.details merge over the variant.
    DOCUMENTATION = r'''
attributes:
  action_group:
    description: Use C(group/ransomeye.ops.all) in C(module_defaults) to set default values for this module.
    support: full
    membership:
      - ransomeye.ops.all
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target, if not
      supported the action will be skipped.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode
  platform:
    description: Target OS/families that can be operated against
    support: N/A
    platforms: posix
'''

    # Full check mode (reports, changes nothing) and a diff of what changes (or would change in check mode).
    DIFF = r'''
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
'''

    # Full check mode (reports, changes nothing); no diff.
    NO_DIFF = r'''
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
'''
