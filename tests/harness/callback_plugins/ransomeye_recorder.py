# Test-only callback: records every task result as one JSON line, so tests can
# assert changed/failed/msg and return values per task and host.
from __future__ import annotations

DOCUMENTATION = r'''
name: ransomeye_recorder
type: aggregate
short_description: Record task results as JSON lines (ransomeye.ops test harness)
description:
  - Writes one JSON object per task result to the file named by E(RANSOMEYE_RECORD_FILE).
options: {}
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ransomeye_recorder"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("RANSOMEYE_RECORD_FILE")

    def _write(self, status, result):
        if not self._path:
            return
        task = result._task
        record = {
            "status": status,
            "host": result._host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "result": self._clean(result._result),
        }
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    @staticmethod
    def _clean(data):
        return json.loads(json.dumps(data, default=str))

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_unreachable(self, result):
        self._write("unreachable", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)

    def v2_playbook_on_stats(self, stats):
        if not self._path:
            return
        summary = {h: stats.summarize(h) for h in sorted(stats.processed.keys())}
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"status": "stats", "stats": summary}) + "\n")
