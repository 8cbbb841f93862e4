# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side fleet step: one task (run_once) works every server of the play in a thread pool.

The options are documented in plugins/modules/fleet.py, and the argument spec is read from that documentation (one
source). Host variables -> the connection table's host spec -> Ansible's validator -> ServerConfig
(plugin_utils/_fleet.py); the cycle is in plugin_utils/_fleet.py, the report in plugin_utils/_report.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Dict, List, Optional

import yaml
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.fne.offline_sync.plugins.modules import fleet as fleet_doc
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _metrics as metrics
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _report as report_mod
from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import process_count
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import StoreError

display = Display()

SPEC_KEYS = ("type", "required", "default", "choices", "elements", "no_log")


def argument_spec() -> Dict[str, dict]:
    """The fleet's argument spec, from its documentation."""
    options = yaml.safe_load(fleet_doc.DOCUMENTATION)["options"]
    return {name: {k: v for k, v in doc.items() if k in SPEC_KEYS} for name, doc in options.items()}


ARGUMENT_SPEC = argument_spec()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def _configs(self, names: List[str], task_vars: Dict[str, Any],
                 topology: str) -> tuple[List[fleet.ServerConfig], Dict[str, str]]:
        """The settings of each named host of `topology`, and the error of each host whose variables are invalid
        (that host fails alone)."""
        hostvars = task_vars.get("hostvars") or {}
        configs: List[fleet.ServerConfig] = []
        invalid: Dict[str, str] = {}
        for name in names:
            try:
                if name not in hostvars:
                    raise StoreError("not in the inventory")
                cfg = fleet.server_config(name, hostvars[name])
            except StoreError as exc:
                invalid[name] = f"{name}: {exc.msg}"
                continue
            if topology == "all" or cfg.topology == topology:
                configs.append(cfg)
        return configs, invalid

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result["started"] = time.time()  # the plan's is the run's start (the report's metrics give its duration)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        step = args["step"]
        names = args["hosts"] if args["hosts"] is not None else task_vars.get("ansible_play_hosts") or []
        names = fleet.plain(names)  # every entry of the result carries one: Ansible's tagged strings pickle slowly
        every, invalid = self._configs(names, task_vars, "all")
        configs = [c for c in every if args["topology"] in ("all", c.topology)]
        problem = ("store must name a folder" if not str(args["store"]).strip() else
                   "workers must be at least 1" if args["workers"] < 1 else
                   "processes must be 0 or more" if args["processes"] < 0 else
                   "lock_timeout must be 0 or more" if args["lock_timeout"] < 0 else None)
        if problem:  # the role's fne_sync_store, fne_sync_workers, fne_sync_lock_timeout; processes is the module's
            option = problem.split()[0]
            role_var = "" if option == "processes" else f" (fne_sync_{option})"
            return dict(result, failed=True, msg=f"fleet: {problem}{role_var}")
        check_mode = bool(self._task.check_mode)
        store = os.path.abspath(os.path.expanduser(args["store"]))
        for warning in _setting_warnings(store, configs, step):
            display.warning(warning)
        problems = _preflight(store, every, args["preflight"])
        if problems:
            msg = "pre-flight: " + "; ".join(problems) + ". No server was touched."
            if step != "status":
                return dict(result, failed=True, msg=msg)
            # the plan (run_once): a failed task here would leave every other server out of the recap and the
            # report; the cycle skips its steps and the report fails every server with this message
            return dict(result, changed=False, msg=msg, preflight_failed=msg, remote_hosts=[], hosts={})

        if step == "report":
            result.update(changed=False, **self._report(args, task_vars, store, configs, invalid, check_mode))
            return result

        opts = fleet.Options(store=store, check_mode=check_mode, auto_recover=args["auto_recover"],
                             lock_timeout=args["lock_timeout"], workers=args["workers"],
                             processes=process_count(args["processes"], len(configs), args["workers"]),
                             remote_files=_remote_files(args["files"], args["generated"]), forced=args["forced"],
                             reason=args["reason"], ack=args["ack"], last_sync_time=args["last_sync_time"],
                             keep_days=args["keep_days"], phases=args["phases"])
        results = fleet.run_fleet(step, configs, opts)
        for name, msg in invalid.items():
            results[name] = {"host": name, "step": step, "changed": False, "failed": True, "msg": msg}
        for entry in results.values():
            for warning in entry.get("warnings") or []:
                display.warning(warning)
        failed = sorted(name for name, entry in results.items() if entry["failed"])
        result.update(
            remote_hosts=[c.name for c in configs if c.topology == "remote"],
            changed=any(entry["changed"] for entry in results.values()),
            hosts=results,
            failed_hosts=failed,
            processes=opts.processes,
            step=step,
            msg=f"{step}: {len(results)} server(s), {len(failed)} failed",
        )
        return result

    @staticmethod
    def _report(args: Dict[str, Any], task_vars: Dict[str, Any], store: str, configs: List[fleet.ServerConfig],
                invalid: Dict[str, str], check_mode: bool) -> Dict[str, Any]:
        topologies = {c.name: c.topology for c in configs}
        # registered results named rather than templated: on 1,000 hosts templating them costs seconds
        results = [r for r in args["results"] if isinstance(r, dict)]
        results += [task_vars[n] for n in args["result_vars"] if isinstance(task_vars.get(n), dict)]
        results = _by_phase(results)
        results.append({"hosts": {name: {"failed": True, "msg": msg} for name, msg in invalid.items()}})
        if args["preflight_failed"]:
            results.append({"hosts": {c.name: {"failed": True, "msg": f"{c.name}: {args['preflight_failed']}"}
                                      for c in configs}})
        write = args["write_report"] and not check_mode and not args["preflight_failed"]  # a blocked run writes nothing
        live = {}
        if args["live_var"]:  # the status playbook's server_info answers, one registered result per host
            hostvars = task_vars.get("hostvars") or {}
            for cfg in configs:
                answer = hostvars[cfg.name].get(args["live_var"]) if cfg.name in hostvars else None
                if isinstance(answer, dict) and "reachable" in answer:
                    live[cfg.name] = {k: answer.get(k) for k in ("reachable", "version", "status", "error",
                                                                 "authorized", "pending")}
        report = report_mod.build_report(store, [c.name for c in configs] + list(invalid), topologies, results,
                                         args["stale_days"], failed_hosts=args["failed_hosts"], update_cache=write,
                                         secrets={c.name: c.secrets for c in configs}, last_run=args["last_run"],
                                         live=live, backends={c.name: c.lls["backend"] for c in configs})
        paths: Dict[str, str] = {}
        problem = None
        if write:
            try:
                paths = report_mod.write_report(report)
            except OSError as exc:  # the per-host results above still stand
                problem = f"the report files could not be written to {store}: {exc.strerror or exc}"
                display.warning(problem)
            if args["metrics_file"]:
                duration = time.time() - args["run_started"] if args["run_started"] else None
                try:
                    paths["metrics"] = metrics.write(report, args["metrics_file"], duration)
                except OSError as exc:
                    problem = f"the metrics file {args['metrics_file']} could not be written: {exc.strerror or exc}"
                    display.warning(problem)
        summary = report_mod.summary_lines(report, paths.get("html"))
        if problem:
            summary.insert(-1, problem)
        hosts = report.pop("hosts")
        # fne_sync_summary: printed after the play recap by the collection's summary callback
        callback = sys.modules.get("ansible_collections.fne.offline_sync.plugins.callback.summary")
        result = {"paths": paths, "hosts": hosts, "summary": summary, "fne_sync_summary": summary,
                  "summary_after_recap": bool(getattr(callback, "ACTIVE", False))}
        if args["stats"]:  # honoured in any task's result, as set_stats returns it: no task (and no templating) more
            published = report_mod.run_view(report)
            if args["stats"] == "totals":  # what an AWX workflow needs at any fleet size
                failed = sorted(n for n, s in published["servers"].items() if s["run"]["failed"])
                published = dict({k: v for k, v in published.items() if k != "servers"}, failed_servers=failed)
            result["ansible_stats"] = {"data": {"fne_sync_report": published, "fne_sync_report_paths": paths},
                                       "per_host": False, "aggregate": True}
        return result


def _by_phase(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The results with each cycle entry replaced by its phases' entries: the report reads what each phase did."""
    out = []
    for result in results:
        hosts = result.get("hosts")
        cycles = {n: e for n, e in (hosts or {}).items() if isinstance(e, dict) and "phases" in e}
        if not cycles:
            out.append(result)
            continue
        out.append(dict(result, hosts={n: e for n, e in hosts.items() if n not in cycles}))
        by_number: Dict[int, Dict[str, Any]] = {}  # one result per phase: the report looks each server up in each
        for name, entry in cycles.items():
            for number, phase in enumerate(entry["phases"]):
                by_number.setdefault(number, {})[name] = phase
        out += [{"hosts": by_number[number]} for number in sorted(by_number)]
    return out


def _setting_warnings(store: str, configs: List[fleet.ServerConfig], step: str) -> List[str]:
    """What an operator must hear once per step: a store others can write, certificate checks turned off."""
    warnings = []
    with contextlib.suppress(OSError):
        if os.stat(store).st_mode & 0o022:
            warnings.append(f"the store {store} can be written by other users (mode "
                            f"{oct(os.stat(store).st_mode & 0o777)}): they could change or remove sync records; "
                            f"chmod 700 it")
    if step in fleet.DOWNLOADING_STEPS:  # the steps that talk to the servers
        insecure = [c.name for c in configs if any(not side["validate_certs"] and str(side["url"]).startswith("https:")
                                                   for side in (c.lls, c.backoffice))]
        if insecure:
            warnings.append(f"TLS certificate checks are off (fne_lls_validate_certs or fne_backoffice_validate_certs "
                            f"false) for {len(insecure)} server(s): {', '.join(insecure[:20])}"
                            f"{' ...' if len(insecure) > 20 else ''}; set ca_path to the private CA instead")
    return warnings


def _preflight(store: str, configs: List[fleet.ServerConfig], checks: List[str]) -> List[str]:
    """What would fail every server, found before any is touched (read-only: also in check mode)."""
    problems = []
    if "store" in checks:
        existing = store
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)  # the store is created on first use: its nearest parent counts
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"the store {store} cannot be written ({existing} is not a writable folder): set "
                            "fne_sync_store to a folder this user can write")
    if "backoffice" in checks:
        missing = [c.name for c in configs if not c.backoffice["url"]]
        if missing:
            problems.append(f"no back office URL for {len(missing)} server(s) ({', '.join(missing[:5])}"
                            f"{', ...' if len(missing) > 5 else ''}): set fne_backoffice_url (or FNE_BACKOFFICE_URL)")
    return problems


def _remote_files(files: List[dict], generated: List[Any]) -> List[dict]:
    """The fetched files of the remote topology, each with the records and sha256 generate reported on the host."""
    by_name = {}
    for item in generated:
        if isinstance(item, dict):
            by_name[os.path.basename(str(item.get("path") or item.get("name") or ""))] = item
    out = []
    for item in files:
        item = dict(item)
        info = by_name.get(os.path.basename(str(item.get("path") or item.get("src"))), {})
        item.setdefault("records", info.get("records"))
        if info.get("sha256"):
            item["module_sha256"] = info["sha256"]
        out.append(item)
    return out
