# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host result of a fleet step: ok / changed / failed for this host, read from a registered fleet result.

Deliberately template-free: the arguments name a variable instead of templating it, because three templated
expressions (msg, changed_when, failed_when) per host cost more than the task itself on a thousand hosts.

Run once (`run_once: true`), it judges the whole fleet instead: one line for any number of servers (the cycle's
fleet-summary mode, fne_sync_host_results: false), where a per-host task is Ansible's own price per host."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

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
        if self._task.run_once:
            result.update(fleet_verdict(hosts if isinstance(hosts, dict) else {}))
            return result
        entry = hosts.get(host) if isinstance(hosts, dict) else None
        if not isinstance(entry, dict):
            result.update(changed=False, msg=str(self._task.args.get("default_msg") or f"{host}: nothing to do"))
            return result
        result.update(changed=bool(entry.get("changed")), msg=str(entry.get("msg") or f"{host}: nothing to do"))
        if entry.get("failed"):
            result["failed"] = True
        return result


SHOWN = 20  # failed servers named, with their messages, in a fleet verdict; the rest are counted


def fleet_verdict(hosts: Dict[str, Any]) -> Dict[str, Any]:
    """One result for every entry: failed when any server failed (the first SHOWN named with their messages)."""
    entries = [e for e in hosts.values() if isinstance(e, dict)]
    failed: List[str] = sorted(str(e.get("msg") or "failed") for e in entries if e.get("failed"))
    changed = sum(1 for e in entries if e.get("changed") and not e.get("failed"))
    head = f"{len(entries)} server(s): {len(entries) - len(failed)} ok ({changed} changed), {len(failed)} failed"
    if not failed:
        return {"changed": changed > 0, "msg": head}
    more = f"\n... and {len(failed) - SHOWN} more (see the report)" if len(failed) > SHOWN else ""
    return {"changed": changed > 0, "failed": True, "msg": head + "\n" + "\n".join(failed[:SHOWN]) + more}
