# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side shim of ransomeye.ops.ransomeye_alert_forward.

The public interface names the alert text ``message``, but Ansible reserves
``message`` as a module option name. This action plugin accepts ``message``
and hands it to the module as ``msg``; everything else runs in the module.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if "message" in args:
            if args.get("msg") not in (None, "") and args["msg"] != args["message"]:
                raise AnsibleActionFail("give the alert text once: message and msg are the same option")
            args["msg"] = args.pop("message")
        result.update(self._execute_module(module_name=self._task.resolved_action or "ransomeye.ops.ransomeye_alert_forward",
                                           module_args=args, task_vars=task_vars))
        return result
