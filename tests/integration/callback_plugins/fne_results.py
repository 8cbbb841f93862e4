"""Test helper callback: append every task result to the JSON-lines file named by $FNE_RESULTS_FILE."""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fne_results
type: aggregate
short_description: write task results as JSON lines (tests only)
description: [Writes each task result to the file named by FNE_RESULTS_FILE.]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fne_results"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status: str) -> None:
        path = os.environ.get("FNE_RESULTS_FILE")
        if not path:
            return
        data = getattr(result, "result", None)
        if data is None:
            data = result._result
        text = self._dump_results(dict(data), indent=None, keep_invocation=True)
        line = {"host": result._host.get_name(), "task": result._task.get_name(), "status": status,
                "result": json.loads(text)}
        with open(path, "a") as handle:
            handle.write(json.dumps(line) + "\n")

    def v2_runner_on_ok(self, result) -> None:
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._write(result, "unreachable")
