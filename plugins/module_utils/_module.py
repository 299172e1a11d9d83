# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the module base class.

Every module builds a RansomeyeModule and hands its work to ``run()``. Expected
errors (RansomeyeError, OSError, ValueError raised by helpers) end as
``fail_json(msg=...)``; nothing ends in a traceback.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import canonical_path


def _replace_surrogates(value: t.Any, name: str, found: t.List[str]) -> t.Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            found.append(name.split(".")[0] or "?")
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return dict((_replace_surrogates(k, name or str(k), found), _replace_surrogates(v, name or str(k), found))
                    for k, v in value.items())
    if isinstance(value, list):
        return [_replace_surrogates(v, name, found) for v in value]
    return value


class RansomeyeModule(AnsibleModule):
    """AnsibleModule that merges shared argument specs and never dies in a traceback."""

    def __init__(
        self,
        argument_spec: dict,
        shared_specs: t.Sequence[dict] = (),
        **kwargs: t.Any,
    ) -> None:
        spec: dict = {}
        for shared in shared_specs:
            spec.update(shared)
        spec.update(argument_spec)
        self._not_utf8: t.List[str] = []
        super().__init__(argument_spec=spec, **kwargs)
        if self._not_utf8:
            self.fail_json(msg="option(s) %s hold bytes that are not UTF-8 text; give them as UTF-8"
                           % ", ".join(sorted(set(self._not_utf8))))
        self._canonical_paths(spec)

    def _load_params(self) -> None:
        """Read the parameters; a value holding undecodable bytes is noted (and made encodable) to fail clearly.

        AnsibleModule itself would die in a traceback logging such a value
        (a lone surrogate from non-UTF-8 input cannot be encoded).
        """
        super()._load_params()
        self.params = _replace_surrogates(self.params, "", self._not_utf8)

    def _canonical_paths(self, spec: dict) -> None:
        """Every path option, canonical before any check reads it: ``//`` is ``/``, ``/x/..`` is what it names.

        A templated path can render to ``//`` or ``/srv/x/../``; a check
        that refuses ``/`` must see the same path the kernel will.
        """
        for name, option in spec.items():
            value = self.params.get(name)
            if value is None:
                continue
            if option.get("type") == "path" and isinstance(value, str):
                self.params[name] = canonical_path(value)
            elif option.get("type") == "list" and option.get("elements") == "path" and isinstance(value, list):
                self.params[name] = [canonical_path(v) if isinstance(v, str) else v for v in value]

    def run(self, action: t.Callable[["RansomeyeModule"], dict]) -> None:
        """Call ``action(self)``, which returns the result dict, and exit with it."""
        try:
            result = action(self)
        except RansomeyeError as exc:
            self.fail_json(msg=exc.msg, **exc.details)
        except (OSError, ValueError) as exc:
            # Helpers raise these for unreadable paths and malformed input; the
            # message names the path or value, which is what the operator needs.
            self.fail_json(msg="%s: %s" % (type(exc).__name__, exc))
        result.setdefault("changed", False)
        self.exit_json(**result)
