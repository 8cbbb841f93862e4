# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side air-gap bundles: export (inside), upload (outside), import (inside).

The options are documented in plugins/modules/bundle.py and the argument spec is read from there; the bundle logic
is plugins/plugin_utils/_bundle.py, the upload of one server's outbox is the fleet's (plugin_utils/_fleet.py).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Dict, List, Optional

import yaml
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError, MismatchError
from ansible_collections.fne.offline_sync.plugins.modules import bundle as bundle_doc
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _bundle as bundles
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import StoreError

display = Display()
SPEC_KEYS = ("type", "required", "default", "choices", "elements")
ARGUMENT_SPEC = {name: {k: v for k, v in doc.items() if k in SPEC_KEYS}
                 for name, doc in yaml.safe_load(bundle_doc.DOCUMENTATION)["options"].items()}
ARGUMENT_SPEC["site_key"]["no_log"] = True  # a secret (module documentation has no no_log key)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check_mode = bool(self._task.check_mode)
        hosts: List[str] = args["hosts"]
        if hosts is None:
            hosts = list(task_vars.get("ansible_play_hosts") or [])
        key = args["site_key"] or None
        if check_mode and args["op"] in ("unpack", "pack"):
            return dict(result, skipped=True, changed=False, msg=f"bundle {args['op']}: not supported in check mode")
        try:
            bundles.check_site(args["site"])
            if args["op"] == "export":
                hostvars = task_vars.get("hostvars") or {}
                out = bundles.export(args["store"], args["site"], key, args["dest"],
                                     {h: {"host_id": (hostvars.get(h) or {}).get("fne_lls_host_id")} for h in hosts},
                                     args["lock_timeout"], check_mode, args["stale_days"],
                                     lambda ready: recover_servers(hostvars, args["store"], ready,
                                                                   args["lock_timeout"], args["workers"]))
                if out["stale"]:
                    display.warning(f"bundle(s) out for longer than {args['stale_days']} day(s) without an "
                                    f"acknowledgment: {', '.join(out['stale'])}; is the return path working? "
                                    "(docs/air-gap.md, recovery)")
            elif args["op"] == "import":
                out = bundles.import_returns(args["store"], args["site"], key, args["src"], hosts,
                                             args["lock_timeout"], check_mode)
            elif args["op"] == "unpack":
                out = bundles.unpack(args["store"], args["site"], key, args["src"], _required(args, "dest"))
            elif args["op"] == "pack":
                out = bundles.pack(args["store"], args["site"], key, _required(args, "folder"), args["dest"])
            else:
                cfg = fleet.server_config("backoffice", task_vars)  # the back office settings of this task's host
                if not cfg.backoffice["url"]:
                    raise StoreError("no back office URL: set fne_backoffice_url (or FNE_BACKOFFICE_URL)")
                out = bundles.upload(args["store"], args["site"], key, args["src"], args["dest"],
                                     lambda root, names: upload_servers(cfg, root, names, args["lock_timeout"]),
                                     check_mode)
        except (StoreError, OSError) as exc:
            if isinstance(exc, OSError):
                exc = StoreError(f"{exc.strerror or exc}: {exc.filename or ''}")
            return dict(result, failed=True, changed=False, msg=f"bundle {args['op']}: {exc.msg}")
        failed = sorted(h for h, e in out["hosts"].items() if e.get("failed"))
        if failed and args["op"] == "upload":  # no per-host task on the outside: the run itself fails
            result["failed"] = True
        result.update(out, failed_hosts=failed,
                      msg=f"bundle {args['op']}: {len(out['hosts'])} server(s), {len(failed)} failed")
        return result


def _required(args: Dict[str, Any], name: str) -> str:
    if not args[name]:
        raise StoreError(f"{name} is required for op={args['op']}")
    return args[name]


def recover_servers(hostvars: Any, store: str, ready: Dict[str, str], lock_timeout: float,
                    workers: int) -> Dict[str, dict]:
    """The first half of the documented recovery (the fleet's: process the newest acknowledgment, set the outbox
    aside, download with force) for each api-topology server export found ready, under its store lock and the
    step's journal of downloads in flight; the upload is the outside's, from the next bundle. A server left out
    of the answer (the remote topology) stays held."""
    configs = []
    out: Dict[str, dict] = {}
    for name in ready:
        try:
            cfg = fleet.server_config(name, hostvars.get(name) or {})
        except StoreError as exc:
            out[name] = {"failed": True, "msg": f"{name}: {exc.msg}"}
            continue
        if cfg.topology == "api":
            configs.append(cfg)

    def force(work: fleet.ServerWork) -> None:
        reason = ready[work.cfg.name]
        moved = work.force_download(reason)
        work.store.clear_needs_force()  # the forced files are in the outbox; export flags them for the outside
        work.notes.append(f"forced download ({reason}); {moved} file(s) set aside, the outside sets aside what it "
                          "holds of this server")

    def one(step: str, cfg: fleet.ServerConfig, opts: fleet.Options) -> Dict[str, Any]:
        work = fleet.ServerWork(cfg, opts, step)
        try:
            with work.store.lock(opts.lock_timeout):
                return fleet._work(work, force, True)
        except StoreError as exc:  # another run holds its lock
            return fleet._failed_entry(cfg, step, exc.msg)

    opts = fleet.Options(store=store, lock_timeout=lock_timeout, workers=workers)
    for name, entry in fleet.run_fleet("recover", configs, opts, worker=one).items():
        for warning in entry.get("warnings") or []:
            display.warning(warning)
        out[name] = entry
    return out


def upload_servers(base: fleet.ServerConfig, root: str, names: List[str], lock_timeout: float) -> Dict[str, dict]:
    """The fleet's upload of each server's outside outbox, in a thread pool: oldest first, the re-upload rule, a lost
    answer uploaded once more. A mismatch is recorded for the return bundle (only the inside can force a download)."""
    opts = fleet.Options(store=root, auto_recover=False, lock_timeout=lock_timeout)

    def one(name: str) -> dict:
        cfg = fleet.ServerConfig(name=name, topology="api", lls=base.lls, backoffice=base.backoffice,
                                 secrets=base.secrets)
        work = fleet.ServerWork(cfg, opts, "upload")
        fleet._THREAD.work = work  # the back office's warnings go to this server
        error = None
        try:
            with work.store.lock(lock_timeout):
                work.resume()
                if work.store.outbox_files():
                    work.store.clear_needs_force()  # a new try: a mismatch sets it again
                try:
                    work.upload_outbox()
                except MismatchError as exc:
                    work.store.log("mismatch", detail=exc.msg)
                    if bundles.beyond_acks(work.store, exc.expected_time):
                        # no acknowledgment here reaches the time the back office expects: the inside cannot
                        # learn it from a return bundle, and a forced download would not fit either
                        exc.amend(fleet.ACK_LOST_HINT)
                    work.store.set_needs_force(f"back office mismatch: {exc.msg}")
                    raise
        except (FneError, StoreError) as exc:
            error = exc.msg
        entry = work.result("upload", error)
        return {k: entry[k] for k in ("changed", "failed", "msg", "uploaded", "warnings")}

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return dict(zip(names, pool.map(one, names)))
