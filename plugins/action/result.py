# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host result of a fleet step: ok / changed / failed for this host, read from a registered fleet result.

Deliberately template-free: the arguments name a variable instead of templating it, because three templated
expressions (msg, changed_when, failed_when) per host cost more than the task itself on a thousand hosts."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False
    _VALID_ARGS = frozenset(("var", "default_msg"))

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result["_ansible_verbose_always"] = True  # show the message for ok and changed hosts too, as debug does
        name = str(self._task.args.get("var") or "__fne_report")
        host = task_vars.get("inventory_hostname")
        registered = task_vars.get(name)
        hosts = registered.get("hosts") if isinstance(registered, dict) else None
        entry = hosts.get(host) if isinstance(hosts, dict) else None
        if not isinstance(entry, dict):
            result.update(changed=False, msg=str(self._task.args.get("default_msg") or f"{host}: nothing to do"))
            return result
        result.update(changed=bool(entry.get("changed")), msg=str(entry.get("msg") or f"{host}: nothing to do"))
        if entry.get("failed"):
            result["failed"] = True
        return result
