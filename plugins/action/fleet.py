# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side fleet step: one task (run_once) works every api-topology server of the play in a thread pool.

The documentation is in plugins/modules/fleet.py. The work is in module_utils/_fleet.py.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.fne.offline_sync.plugins.module_utils import _fleet as fleet

display = Display()

ARGUMENT_SPEC = {
    "step": {"type": "str", "required": True, "choices": list(fleet.STEPS) + ["report"]},
    "hosts": {"type": "list", "elements": "str"},
    "topology": {"type": "str", "default": "api", "choices": ["api", "remote", "all"]},
    "store": {"type": "path", "required": True},
    "workers": {"type": "int", "default": 16},
    "auto_recover": {"type": "bool", "default": True},
    "lock_timeout": {"type": "float", "default": 5},
    "files": {"type": "list", "elements": "dict", "default": []},
    "forced": {"type": "bool", "default": False},
    "last_sync_time": {"type": "str"},
    "results": {"type": "list", "elements": "raw", "default": []},
    "result_vars": {"type": "list", "elements": "str", "default": []},
    "stale_days": {"type": "float", "default": 7},
    "write_report": {"type": "bool", "default": True},
    "generated": {"type": "list", "elements": "raw", "default": []},
    "reason": {"type": "str"},
    "ack": {"type": "str"},
    "failed_hosts": {"type": "list", "elements": "str", "default": []},
}

# host variable -> ServerConfig attribute
HOST_VARS = {
    "fne_sync_topology": "topology",
    "fne_lls_url": "lls_url",
    "fne_lls_username": "lls_username",
    "fne_lls_password": "lls_password",
    "fne_lls_ca_path": "lls_ca_path",
    "fne_lls_validate_certs": "lls_validate_certs",
    "fne_backoffice_url": "backoffice_url",
    "fne_backoffice_ca_path": "backoffice_ca_path",
    "fne_backoffice_validate_certs": "backoffice_validate_certs",
    "fne_sync_timeout": "timeout",
    "fne_sync_retries": "retries",
    "fne_sync_max_retry_wait": "max_retry_wait",
}
_BOOLS = {"lls_validate_certs", "backoffice_validate_certs"}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def _host_config(self, hostvars: Any, name: str, task_vars: Dict[str, Any]) -> fleet.ServerConfig:
        try:
            hv = hostvars[name]
        except KeyError:
            raise AnsibleError(f"fleet: host {name!r} is not in the inventory") from None
        cfg = fleet.ServerConfig(name=name)
        for var, attr in HOST_VARS.items():
            if var not in hv:
                continue
            value = hv[var]
            if value is None or value == "":
                continue
            if attr in _BOOLS:
                value = _as_bool(value)
            elif attr in ("timeout", "max_retry_wait"):
                value = float(value)
            elif attr == "retries":
                value = int(value)
            else:
                value = str(value)
            setattr(cfg, attr, value)
        return cfg.with_env()

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        step = args["step"]
        names: List[str] = args["hosts"]
        if names is None:
            names = list(task_vars.get("ansible_play_hosts") or [])
        hostvars = task_vars.get("hostvars") or {}
        configs = []
        invalid: Dict[str, Dict[str, Any]] = {}
        for name in names:
            cfg = self._host_config(hostvars, name, task_vars)
            if cfg.topology not in ("api", "remote"):
                invalid[name] = {"host": name, "step": args["step"], "changed": False, "failed": True,
                                 "msg": f"{name}: fne_sync_topology must be api or remote, not {cfg.topology!r}"}
            elif args["topology"] == "all" or cfg.topology == args["topology"]:
                configs.append(cfg)
        check_mode = bool(self._task.check_mode)
        store = os.path.abspath(os.path.expanduser(args["store"]))

        if step == "report":
            topologies = {c.name: c.topology for c in configs}
            configs += [fleet.ServerConfig(name=n) for n in invalid]
            # registered results named rather than templated: on 1,000 hosts templating them costs seconds
            results = [r for r in args["results"] if isinstance(r, dict)]
            results += [task_vars[n] for n in args["result_vars"] if isinstance(task_vars.get(n), dict)]
            report = fleet.build_report(store, [c.name for c in configs], topologies,
                                        results, args["stale_days"],
                                        failed_hosts=args["failed_hosts"],
                                        update_cache=args["write_report"] and not check_mode)
            paths = {}
            if args["write_report"] and not check_mode:
                paths = fleet.write_report(report)
            result.update(changed=False, report=report, paths=paths, hosts=report.pop("hosts"),
                          summary=fleet.summary_lines(report))
            return result

        generated = {}  # what the generate module returned on the host: records and the sha256 it wrote
        for item in args["generated"]:
            if isinstance(item, dict):
                generated[os.path.basename(str(item.get("path") or item.get("name") or ""))] = item
        files = []
        for item in args["files"]:
            item = dict(item)
            info = generated.get(os.path.basename(str(item.get("path") or item.get("src"))), {})
            item.setdefault("records", info.get("records"))
            if info.get("sha256"):
                item["module_sha256"] = info["sha256"]
            files.append(item)
        opts = fleet.Options(store=store, check_mode=check_mode, auto_recover=args["auto_recover"],
                             lock_timeout=args["lock_timeout"], workers=args["workers"],
                             remote_files=files, forced=args["forced"], reason=args["reason"], ack=args["ack"],
                             last_sync_time=args["last_sync_time"])
        results = fleet.run_fleet(step, configs, opts)
        results.update(invalid)
        for entry in results.values():
            for warning in entry.get("warnings") or []:
                display.warning(warning)
        failed = sorted(name for name, entry in results.items() if entry["failed"])
        result.update(
            remote_hosts=[c.name for c in configs if c.topology == "remote"],
            changed=any(entry["changed"] for entry in results.values()),
            hosts=results,
            failed_hosts=failed,
            step=step,
            msg=f"{step}: {len(results)} server(s), {len(failed)} failed",
        )
        return result
