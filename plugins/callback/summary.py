# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prints the fleet summary of the sync, status and force_resync playbooks after the play recap."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: summary
type: notification
short_description: Print the fleet summary last, after the play recap
version_added: 0.1.0
description:
  - Prints the short, problems-first fleet summary of the C(fne.offline_sync.cycle) report (at most about 20 lines
    whatever the fleet size, with the report's path) after the play recap, so that it is the last thing a run
    prints, also with C(display_ok_hosts=false).
  - The collection's playbooks (C(fne.offline_sync.sync), C(status), C(force_resync), C(quarantine)) load it
    themselves. A playbook of your own that uses the role enables it with C(callbacks_enabled =
    fne.offline_sync.summary) in C(ansible.cfg); without it the role prints the summary in a task before the recap.
  - Prints nothing with a JSON stdout callback (its output must stay one JSON document).
author:
  - fne.offline_sync developers (!UNKNOWN)
"""

from ansible import constants as C  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402

# True once loaded in this process: the report task (forked from it) then leaves the summary to this plugin
ACTIVE = False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "fne.offline_sync.summary"
    CALLBACK_NEEDS_ENABLED = True
    _printed = False  # class-wide: enabled by name and loaded beside a playbook, it still prints once

    def __init__(self, *args, **kwargs):
        global ACTIVE  # pylint: disable=global-statement
        super().__init__(*args, **kwargs)
        ACTIVE = True
        self._summary = None

    def v2_runner_on_ok(self, result):
        data = getattr(result, "result", None)
        if data is None:
            data = result._result  # ansible-core before 2.19
        if isinstance(data, dict) and isinstance(data.get("fne_sync_summary"), list):
            self._summary = [str(line) for line in data["fne_sync_summary"]]

    def v2_playbook_on_stats(self, stats):
        if not self._summary or CallbackModule._printed:
            return
        stdout = str(C.config.get_config_value("DEFAULT_STDOUT_CALLBACK") or "")
        if "json" in stdout:
            return
        CallbackModule._printed = True
        self._display.banner("FLEET SUMMARY (fne.offline_sync)")
        for line in self._summary:
            urgent = line.startswith(("FAILED", "RECOVERY", "QUARANTINED"))
            self._display.display(line, color=C.COLOR_ERROR if urgent else None)
