# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet steps: the offline synchronization cycle for many license servers in one controller process.

Used by the ``fne.offline_sync.fleet`` action plugin. Each server is worked by one thread of a bounded pool,
under its store lock, with the one client (``_client.py``). A server's failure is recorded in its own entry
and never stops the others.

Steps: ``collect`` (finish a dead run, process pending acknowledgments, download new messages), ``upload``
(outbox to the back office, oldest first), ``acknowledge`` (process the newest acknowledgment), ``recover`` (the
documented forced re-download), ``status`` (read-only), and the small store operations the remote topology needs
(``admit``, ``prepare_ack``, ``complete_ack``, ``supersede``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import hashlib
import html
import json
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils import _client as client_mod
from ansible_collections.fne.offline_sync.plugins.module_utils import _store as store_mod
from ansible_collections.fne.offline_sync.plugins.module_utils._client import (
    FneError,
    LostResponseError,
    MismatchError,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import sha256_file, sync_time_of, write_atomic
from ansible_collections.fne.offline_sync.plugins.module_utils._store import (
    LockedError,
    ServerStore,
    StoreError,
    parse_time,
)

STEPS = ("collect", "upload", "acknowledge", "recover", "status", "admit", "prepare_ack", "complete_ack",
         "supersede", "mark_force")

# environment fallbacks, the same names the modules document
ENV = {
    "lls_url": "FNE_LLS_URL",
    "lls_username": "FNE_LLS_USERNAME",
    "lls_password": "FNE_LLS_PASSWORD",
    "lls_ca_path": "FNE_LLS_CA_PATH",
    "backoffice_url": "FNE_BACKOFFICE_URL",
    "backoffice_ca_path": "FNE_BACKOFFICE_CA_PATH",
}


@dataclass
class ServerConfig:
    """Everything one server's step needs, resolved from that host's variables (then the environment)."""

    name: str
    topology: str = "api"
    lls_url: Optional[str] = None
    lls_username: Optional[str] = None
    lls_password: Optional[str] = None
    lls_ca_path: Optional[str] = None
    lls_validate_certs: bool = True
    backoffice_url: Optional[str] = None
    backoffice_ca_path: Optional[str] = None
    backoffice_validate_certs: bool = True
    timeout: float = 30
    retries: int = 3
    max_retry_wait: float = 60

    def with_env(self, environ: Optional[Dict[str, str]] = None) -> ServerConfig:
        environ = os.environ if environ is None else environ
        for attr, var in ENV.items():
            if getattr(self, attr) in (None, "") and environ.get(var):
                setattr(self, attr, environ[var])
        return self


@dataclass
class Options:
    store: str
    check_mode: bool = False
    auto_recover: bool = True
    lock_timeout: float = 5
    workers: int = 16
    remote_files: List[Dict[str, Any]] = field(default_factory=list)  # admit: [{src, sha256, records}]
    forced: bool = False
    reason: Optional[str] = None
    ack: Optional[str] = None  # complete_ack: the acknowledgment that was processed (newer ones stay pending)
    last_sync_time: Optional[str] = None  # complete_ack: what the server answered when it processed it


def _connection(url: Optional[str], username, password, ca_path, validate_certs, cfg: ServerConfig):
    return client_mod.Connection(
        url=url, username=username or None, password=password or None, validate_certs=bool(validate_certs),
        ca_path=ca_path or None, timeout=float(cfg.timeout), retries=int(cfg.retries),
        max_retry_wait=float(cfg.max_retry_wait))


def _error_text(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return str(text)


_THREAD = threading.local()


class ServerWork:
    """One server's step: the store, the clients, and what happened (the host's entry in the result)."""

    def __init__(self, cfg: ServerConfig, opts: Options):
        self.cfg = cfg
        self.opts = opts
        self.store = ServerStore(opts.store, cfg.name)
        self.warnings: List[str] = []
        self.notes: List[str] = []
        self.plan: List[str] = []
        self.changed = False
        self.records = 0
        self.fetched: List[str] = []
        self.uploaded: List[str] = []
        self.processed: List[str] = []
        self.last_sync_time: Optional[str] = opts.last_sync_time
        self.recovered = False
        self._lls = None
        self._bo = None

    # ---- clients ------------------------------------------------------------------------------------------
    def _warn(self, text: str) -> None:
        self.warnings.append(f"{self.cfg.name}: {text}")

    @property
    def lls(self):
        if self._lls is None:
            if not self.cfg.lls_url:
                raise StoreError("no license server URL: set fne_lls_url (or FNE_LLS_URL)")
            conn = _connection(self.cfg.lls_url, self.cfg.lls_username, self.cfg.lls_password, self.cfg.lls_ca_path,
                               self.cfg.lls_validate_certs, self.cfg)
            self._lls = client_mod.LicenseServer(conn, warn=self._warn)
        return self._lls

    @property
    def backoffice(self):
        if self._bo is None:
            if not self.cfg.backoffice_url:
                raise StoreError("no back office URL: set fne_backoffice_url (or FNE_BACKOFFICE_URL)")
            conn = _connection(self.cfg.backoffice_url, None, None, self.cfg.backoffice_ca_path,
                               self.cfg.backoffice_validate_certs, self.cfg)
            # one back office for the whole fleet: reuse its keep-alive TLS session within a worker thread
            cache = _THREAD.__dict__.setdefault("backoffice", {})
            key = repr(conn)  # url and TLS settings: the back office takes no credentials
            if key not in cache:
                cache[key] = client_mod.BackOffice(conn, warn=self._warn)
            self._bo = cache[key]
            self._bo.warn = self._bo.http.warn = self._warn
        return self._bo

    # ---- building blocks ----------------------------------------------------------------------------------
    def resume(self) -> None:
        if self.opts.check_mode:  # check mode writes nothing: say what a real run would finish
            done = [os.path.basename(f) for f in self.store.outbox_files() if os.path.exists(self.store.ack_for(f))]
            if done:
                self.plan.append(f"move {len(done)} accepted file(s) to sent/: {', '.join(done)}")
            return
        moved = self.store.resume()
        if moved:
            self.changed = True
            self.notes.append(f"resumed: {len(moved)} accepted file(s) moved to sent/")

    def process_pending(self) -> bool:
        """Process the newest pending acknowledgment (it covers the older ones). False when there is none."""
        acks = self.store.pending_acks()
        if not acks:
            return False
        newest = acks[-1]
        if self.opts.check_mode:
            self.plan.append(f"process acknowledgment {os.path.basename(newest)}")
            return True
        answer = self.lls.process(newest, None)
        self.last_sync_time = answer.get("last_sync_time") or self.last_sync_time
        self.store.complete_acks(newest, self.last_sync_time)
        self.processed.append(os.path.basename(newest))
        self.changed = True
        return True

    def generate(self, force: bool = False) -> None:
        if self.opts.check_mode:
            self.plan.append("download again with force" if force else
                             "download new records (if any: unknown in check mode, asking hands them out)")
            return
        before = set(self.store.outbox_files())
        try:
            answer = self.lls.generate(self.store.outbox, force=force)
        except LostResponseError as exc:
            self._admit_new(before, {}, force)
            reason = (f"lost response while downloading from {self.cfg.lls_url}: {_error_text(exc)}; the server may "
                      "have handed out records that never arrived, a forced download is needed")
            self.store.log("lost_response", detail=_error_text(exc))
            self.store.set_needs_force(reason)
            raise
        except BaseException:
            self._admit_new(before, {}, force)
            raise
        by_name = {os.path.basename(f.get("path") or f.get("name") or ""): f for f in answer.get("files") or []}
        self._admit_new(before, by_name, force)
        if self.fetched:
            self.changed = True

    def _admit_new(self, before: set, by_name: Dict[str, dict], force: bool) -> None:
        for path in self.store.outbox_files():
            if path in before:
                continue
            info = by_name.get(os.path.basename(path), {})
            records = info.get("records")
            self.store.admit(path, sha256=info.get("sha256"), records=records, forced=force)
            self.fetched.append(os.path.basename(path))
            self.records += int(records or 0)
            self.changed = True

    def upload_outbox(self) -> None:
        """Upload outbox files oldest first; stop at the first failure (later files must wait for it)."""
        files = self.store.outbox_files()
        if self.opts.check_mode:
            if files:
                self.plan.append(f"upload {len(files)} file(s): {', '.join(os.path.basename(f) for f in files)}")
            return
        for path in files:
            self._upload_one(path)

    def _upload_one(self, path: str) -> None:
        name = os.path.basename(path)
        sha = sha256_file(path)
        for attempt in (1, 2):
            try:
                ack = self.backoffice.upload_file(path)
            except MismatchError as exc:
                if self._already_accepted(path, exc):
                    return
                raise
            except LostResponseError as exc:
                self.store.log("lost_response", file=name, detail=_error_text(exc))
                if attempt == 1:
                    self._warn(f"upload of {name}: answer lost ({_error_text(exc)}); uploading it again")
                    continue
                raise
            self.store.record_ack(path, ack, sha256=sha)
            self.uploaded.append(name)
            self.changed = True
            return

    def _already_accepted(self, path: str, exc: MismatchError) -> bool:
        """The re-upload rule (docs/design.md): a mismatch whose expected time is at or after this file's own
        sync time means the back office already holds this file (an earlier answer was lost)."""
        name = os.path.basename(path)
        file_time = sync_time_of(name)
        expected = parse_time(getattr(exc, "expected", "") or "")
        if file_time is None or expected is None or expected < file_time:
            return False
        detail = (f"already accepted by the back office (re-upload answered: expected sync time "
                  f"{getattr(exc, 'expected', '')}); its acknowledgment was lost, a later acknowledgment covers it")
        self.store.mark_accepted(path, detail)
        self.uploaded.append(name)
        self.notes.append(f"{name} {detail}")
        self.changed = True
        return True

    def recover(self, reason: str) -> None:
        """The documented procedure: process the newest acknowledgment received so far, set aside what is left
        in the outbox, download again with force, upload, process the new acknowledgment."""
        if self.opts.check_mode:
            self.plan.append(f"recover ({reason}): process newest ack, supersede outbox, forced download, upload, "
                             "process")
            return
        self.store.log("mismatch" if "mismatch" in reason.lower() else "error", detail=f"recovery starts: {reason}")
        self.resume()  # an accepted file (its ack exists) goes to sent/, never to superseded/
        self.process_pending()
        moved = self.store.supersede(reason)
        before_fetched = len(self.fetched)
        self.generate(force=True)
        self.upload_outbox()
        self.process_pending()
        self.store.clear_needs_force()
        self.store.log("recovered", detail=f"{reason}; superseded {len(moved)} file(s), "
                                           f"{len(self.fetched) - before_fetched} forced file(s)")
        self.recovered = True
        self.changed = True
        self.notes.append(f"recovered ({reason})")

    def upload_step(self) -> None:
        self.resume()
        reason = self.store.needs_force()
        if reason and self.opts.forced:
            # the remote topology's recovery upload: the outbox holds the forced download now
            self.upload_outbox()
            if not self.opts.check_mode:
                self.store.clear_needs_force()
                self.store.log("recovered", detail=reason)
                self.recovered = True
                self.changed = True
                self.notes.append(f"recovered ({reason})")
            return
        if reason:
            if self.cfg.topology == "api" and self.opts.auto_recover:
                self.recover(reason)
            else:
                self.notes.append(f"recovery pending: {reason}")
            return
        try:
            self.upload_outbox()
        except MismatchError as exc:
            text = _error_text(exc)
            if self.opts.check_mode:
                raise
            self.store.log("mismatch", detail=text)
            reason = f"back office mismatch: {text}"
            self.store.set_needs_force(reason)
            if self.opts.auto_recover and self.cfg.topology == "api":
                self.recover(reason)
            elif self.opts.auto_recover:
                self.notes.append(f"{reason}; the documented recovery follows")
            else:
                raise

    # ---- steps --------------------------------------------------------------------------------------------
    def run(self, step: str) -> None:
        if step == "status":
            return
        if self.opts.check_mode:
            self._run_step(step)
            return
        self.store.ensure()
        with self.store.lock(self.opts.lock_timeout):
            try:
                self._run_step(step)
            except (StoreError, FneError) as exc:
                if not isinstance(exc, LockedError):
                    self.store.log("error", detail=f"{step}: {_error_text(exc)}")
                raise

    def _run_step(self, step: str) -> None:
        if step == "collect":
            self.resume()
            self.process_pending()
            reason = self.store.needs_force()
            if reason:
                self.notes.append(f"recovery pending: {reason}")
                if self.opts.check_mode:
                    self.plan.append("recover (forced download)")
                return
            try:
                self.generate()
            except LostResponseError as exc:
                if not self.opts.auto_recover:
                    raise
                self.changed = True
                self.notes.append(f"answer lost while downloading ({_error_text(exc)}); the documented recovery "
                                  "runs in the upload step")
        elif step == "upload":
            self.upload_step()
        elif step == "acknowledge":
            self.resume()
            self.process_pending()
        elif step == "recover":
            self.recover(self.store.needs_force() or "forced resynchronization requested")
        elif step == "admit":
            known = self.known_files()
            for item in self.opts.remote_files:
                name = os.path.basename(item.get("path") or item.get("src") or "")
                src = item.get("src") or os.path.join(self.store.dir, ".incoming", name)
                if name in known:
                    if os.path.exists(src) and not self.opts.check_mode:
                        os.unlink(src)
                    continue
                if self.opts.check_mode:
                    self.plan.append(f"take {name} into the outbox")
                    continue
                if not os.path.exists(src):
                    raise StoreError(f"fetched file {src} is missing")
                module_sha, host_sha = item.get("module_sha256"), item.get("sha256") or item.get("checksum")
                if module_sha and host_sha and module_sha.lower() != host_sha.lower():
                    raise StoreError(f"{name} changed on the license server host after generate wrote it: sha256 "
                                     f"{host_sha} there, {module_sha} when written")
                self.store.admit(src, sha256=item.get("module_sha256") or item.get("sha256") or item.get("checksum"),
                                 records=item.get("records"),
                                 forced=self.opts.forced)
                self.fetched.append(os.path.basename(src))
                self.records += int(item.get("records") or 0)
                self.changed = True
        elif step == "prepare_ack":
            # the entry carries the newest pending acknowledgment, see result(); a dead run's accepted file goes to
            # sent/ first, before that acknowledgment is processed (force_resync supersedes the outbox next)
            self.resume()
        elif step == "complete_ack":
            acks = self.store.pending_acks()
            if self.opts.ack:
                acks = [a for a in acks if os.path.basename(a) <= os.path.basename(self.opts.ack)]
            if acks and not self.opts.check_mode:
                self.store.complete_acks(acks[-1], self.last_sync_time)
                self.processed.append(os.path.basename(acks[-1]))
                self.changed = True
        elif step == "mark_force":
            if not self.opts.check_mode:
                self.store.log("lost_response", detail=self.opts.reason)
                self.store.set_needs_force(self.opts.reason or "forced download requested")
        elif step == "supersede":
            if not self.opts.check_mode:
                self.resume()  # an accepted file (its ack exists) goes to sent/, never to superseded/
                moved = self.store.supersede(self.store.needs_force() or "forced resynchronization requested")
                self.changed = self.changed or bool(moved)
        else:
            raise StoreError(f"unknown fleet step {step!r}")

    def known_files(self) -> List[str]:
        """Names already in the store (outbox, sent, superseded): a remote file with one of them is not new."""
        names = set()
        for folder in (self.store.outbox, self.store.sent, self.store.superseded):
            with contextlib.suppress(FileNotFoundError):
                names.update(os.listdir(folder))
        return sorted(n for n in names if n.endswith(store_mod.SYNC_SUFFIX))

    def result(self, step: str, error: Optional[str] = None) -> Dict[str, Any]:
        secrets = [self.cfg.lls_password] if self.cfg.lls_password else []
        if error is not None:
            error = client_mod.scrub(error, secrets)
        self.warnings = [client_mod.scrub(w, secrets) for w in self.warnings]
        acks = self.store.pending_acks()
        entry: Dict[str, Any] = {
            "host": self.cfg.name,
            "topology": self.cfg.topology,
            "step": step,
            # check mode: whether the server has new records is unknown (asking hands them out), as in the generate
            # module; everything else in the plan is certain
            "changed": bool(self.changed or (self.opts.check_mode and any(
                not p.startswith("download new records") for p in self.plan))),
            "failed": error is not None,
            "records": self.records,
            "fetched": self.fetched,
            "uploaded": self.uploaded,
            "processed": self.processed,
            "last_sync_time": self.last_sync_time,
            "recovered": self.recovered,
            "needs_force": self.store.needs_force() is not None,
            "outbox": [os.path.basename(f) for f in self.store.outbox_files()],
            "pending_ack": acks[-1] if acks else None,
            "pending_ack_sha1": _sha1(acks[-1]) if acks else None,
            "warnings": self.warnings,
            "plan": self.plan,
        }
        if step == "prepare_ack":
            known = set(self.known_files())
            entry["new_files"] = sorted(
                ({"path": f.get("path"), "checksum": f.get("checksum")} for f in self.opts.remote_files
                 if os.path.basename(str(f.get("path"))) not in known), key=lambda f: str(f["path"]))
        if error is not None:
            entry["msg"] = f"{self.cfg.name}: {step} failed: {error}"
        else:
            entry["msg"] = describe(entry, self.notes)
        return entry


def _sha1(path: str) -> str:
    digest = hashlib.sha1()  # the checksum ansible.builtin.copy verifies a transfer with
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def describe(entry: Dict[str, Any], notes: Optional[List[str]] = None) -> str:
    parts = []
    if entry.get("plan"):
        parts.append("would " + "; ".join(entry["plan"]))
    if entry.get("fetched"):
        parts.append(f"downloaded {len(entry['fetched'])} file(s), {entry.get('records', 0)} record(s)")
    if entry.get("uploaded"):
        parts.append(f"uploaded {len(entry['uploaded'])} file(s)")
    if entry.get("processed"):
        parts.append(f"processed acknowledgment {entry['processed'][-1]}")
    parts.extend(notes or [])
    return f"{entry['host']}: {entry['step']}: " + ("; ".join(parts) if parts else "nothing to do")


def work_one(step: str, cfg: ServerConfig, opts: Options) -> Dict[str, Any]:
    work = ServerWork(cfg, opts)
    try:
        work.run(step)
    except (StoreError, FneError) as exc:
        return work.result(step, _error_text(exc))
    except Exception as exc:  # one server's surprise must not stop the fleet
        return work.result(step, f"unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    return work.result(step)


def run_fleet(step: str, configs: List[ServerConfig], opts: Options,
              worker: Callable[[str, ServerConfig, Options], Dict[str, Any]] = work_one) -> Dict[str, Dict[str, Any]]:
    """Run ``step`` for every server in a bounded thread pool; one entry per server, in input order."""
    if step not in STEPS:
        raise ValueError(f"unknown fleet step {step!r}; expected one of {', '.join(STEPS)}")
    results: Dict[str, Dict[str, Any]] = {}
    if not configs:
        return results
    workers = max(1, min(int(opts.workers), len(configs)))
    if workers == 1:
        for cfg in configs:
            results[cfg.name] = worker(step, cfg, opts)
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fne-fleet") as pool:
        futures = {cfg.name: pool.submit(worker, step, cfg, opts) for cfg in configs}
        for cfg in configs:
            results[cfg.name] = futures[cfg.name].result()
    return results


# ---- the report -----------------------------------------------------------------------------------------------
def build_report(store_root: str, hosts: List[str], topologies: Dict[str, str], results: List[Dict[str, Any]],
                 stale_days: float, now: Optional[_dt.datetime] = None,
                 failed_hosts: Optional[List[str]] = None, update_cache: bool = False) -> Dict[str, Any]:
    """Fleet summary from each server's store and this run's step results (read-only)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    servers: Dict[str, Dict[str, Any]] = {}
    host_results: Dict[str, Dict[str, Any]] = {}
    for name in hosts:
        entries = [r["hosts"][name] for r in results if isinstance(r, dict) and name in (r.get("hosts") or {})]
        info = store_mod.summarize(ServerStore(store_root, name), now, update_cache=update_cache)
        failed = [e for e in entries if e.get("failed")]
        if name in (failed_hosts or []) and not failed:
            failed = [{"msg": f"{name}: failed earlier in this run (see its tasks above)"}]
        run = {
            "records": sum(int(e.get("records") or 0) for e in entries),
            "files_downloaded": sum(len(e.get("fetched") or []) for e in entries),
            "files_uploaded": sum(len(e.get("uploaded") or []) for e in entries),
            "acks_processed": sum(len(e.get("processed") or []) for e in entries),
            "recovered": any(e.get("recovered") for e in entries),
            "changed": any(e.get("changed") for e in entries),
            "failed": bool(failed),
            "errors": [e["msg"] for e in failed],
        }
        info.update(name=name, topology=topologies.get(name, "api"), run=run)
        info["stale"] = info["age_days"] is None or info["age_days"] > stale_days
        servers[name] = info
        msgs = [e.get("msg", "") for e in entries if e.get("msg") and not e["msg"].endswith(": nothing to do")]
        if failed:
            msg = " | ".join(e["msg"] for e in failed)
        elif msgs:
            msg = " | ".join(msgs)
        else:
            msg = f"{name}: up to date (last sync {info['last_sync'] or 'never'}"
            if info["outbox"] or info["pending_acks"]:
                msg += f", {info['outbox']} file(s) in the outbox, {info['pending_acks']} acknowledgment(s) pending"
            if info["needs_force"]:
                msg += f", recovery pending: {info['needs_force']}"
            msg += ")"
        host_results[name] = {"changed": run["changed"], "failed": run["failed"], "msg": msg}
    totals = {
        "servers": len(servers),
        "ok": sum(1 for s in servers.values() if not s["run"]["failed"]),
        "failed": sum(1 for s in servers.values() if s["run"]["failed"]),
        "changed": sum(1 for s in servers.values() if s["run"]["changed"]),
        "stale": sum(1 for s in servers.values() if s["stale"]),
        "records_this_run": sum(s["run"]["records"] for s in servers.values()),
        "files_uploaded_this_run": sum(s["run"]["files_uploaded"] for s in servers.values()),
        "records_total": sum(s["records_synchronized"] for s in servers.values()),
        "files_total": sum(s["files_uploaded"] for s in servers.values()),
        "recoveries_this_run": sum(1 for s in servers.values() if s["run"]["recovered"]),
        "recoveries_total": sum(s["recoveries"] for s in servers.values()),
        "needs_force": sum(1 for s in servers.values() if s["needs_force"]),
    }
    return {
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "store": os.path.abspath(os.path.expanduser(store_root)),
        "stale_days": stale_days,
        "totals": totals,
        "servers": servers,
        "hosts": host_results,
    }


def summary_lines(report: Dict[str, Any]) -> List[str]:
    t = report["totals"]
    lines = [
        f"fleet: {t['servers']} server(s), {t['ok']} ok, {t['failed']} failed, {t['changed']} changed, "
        f"{t['stale']} stale (> {report['stale_days']} days), {t['needs_force']} awaiting recovery",
        f"this run: {t['records_this_run']} record(s), {t['files_uploaded_this_run']} file(s) uploaded, "
        f"{t['recoveries_this_run']} recovery(ies); all time: {t['records_total']} record(s), "
        f"{t['files_total']} file(s)",
    ]
    for name, s in report["servers"].items():
        if s["run"]["failed"] or s["stale"] or s["needs_force"] or s["run"]["changed"]:
            flags = [f for f, on in (("FAILED", s["run"]["failed"]), ("STALE", s["stale"]),
                                     ("RECOVERY PENDING", bool(s["needs_force"]))) if on]
            lines.append(f"{name}: {s['run']['records']} record(s) this run, last sync {s['last_sync'] or 'never'}"
                         + (f" [{', '.join(flags)}]" if flags else ""))
    return lines


_HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f0f0}
tr.stale td{background:#fff3cd}
tr.failed td{background:#f8d7da}
.totals td{font-weight:bold}
small{color:#666}
"""


def render_html(report: Dict[str, Any]) -> str:
    e = html.escape
    t = report["totals"]
    rows = []
    for name, s in sorted(report["servers"].items()):
        css = "failed" if s["run"]["failed"] else ("stale" if s["stale"] else "")
        age = "never" if s["age_days"] is None else f"{s['age_days']:.2f} d"
        errors = "; ".join(s["run"]["errors"]) or (s["last_error"] or "")
        rows.append(
            f"<tr class='{css}'><td>{e(name)}</td><td>{e(s['topology'])}</td><td>{s['run']['records']}</td>"
            f"<td>{s['run']['files_uploaded']}</td><td>{s['records_synchronized']}</td><td>{s['files_uploaded']}</td>"
            f"<td>{e(s['last_sync'] or 'never')}</td><td>{e(age)}</td><td>{s['recoveries']}</td>"
            f"<td>{s['outbox']}/{s['pending_acks']}</td><td>{e(s['needs_force'] or '')}</td>"
            f"<td>{e(errors)}</td></tr>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>FlexNet offline sync report {e(report['generated_at'])}</title><style>{_HTML_STYLE}</style></head>"
        f"<body><h1>FlexNet Embedded offline synchronization</h1>"
        f"<p><small>generated {e(report['generated_at'])}, store {e(report['store'])}; servers not synchronized "
        f"for more than {report['stale_days']} days are highlighted</small></p>"
        "<table class='totals'><tr><th>servers</th><th>ok</th><th>failed</th><th>changed</th><th>stale</th>"
        "<th>records this run</th><th>files this run</th><th>records total</th><th>files total</th>"
        "<th>recoveries this run</th></tr>"
        f"<tr><td>{t['servers']}</td><td>{t['ok']}</td><td>{t['failed']}</td><td>{t['changed']}</td>"
        f"<td>{t['stale']}</td><td>{t['records_this_run']}</td><td>{t['files_uploaded_this_run']}</td>"
        f"<td>{t['records_total']}</td><td>{t['files_total']}</td><td>{t['recoveries_this_run']}</td></tr></table>"
        "<h2>Servers</h2><table><tr><th>server</th><th>topology</th><th>records this run</th>"
        "<th>files this run</th><th>records total</th><th>files total</th><th>last sync</th><th>age</th>"
        "<th>recoveries</th><th>outbox/acks</th><th>recovery pending</th><th>errors</th></tr>"
        + "".join(rows) + "</table></body></html>\n")


def write_report(report: Dict[str, Any]) -> Dict[str, str]:
    root = report["store"]
    os.makedirs(root, mode=0o700, exist_ok=True)
    body = {k: v for k, v in report.items() if k != "hosts"}
    json_path = os.path.join(root, "report.json")
    html_path = os.path.join(root, "report.html")
    write_atomic(json_path, [(json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")], 0o644)
    write_atomic(html_path, [render_html(report).encode("utf-8")], 0o644)
    return {"json": json_path, "html": html_path}
