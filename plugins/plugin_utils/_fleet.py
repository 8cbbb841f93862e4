# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet cycle: the offline synchronization steps for many license servers in one controller task.

Used by the ``fne.offline_sync.fleet`` action plugin. Each server is worked by one thread of a bounded pool,
under its store lock, with the backend its settings name (module_utils/_backend.py); a large step shares its
servers between processes (``run_fleet``). A server's failure is recorded in its own entry and never stops the
others.

Cycle steps (``ServerWork``): ``collect`` (finish a dead run, process pending acknowledgments, download new
messages), ``upload`` (outbox to the back office, oldest first), ``acknowledge`` (process the newest
acknowledgment), ``recover`` (the documented forced re-download), ``status`` (read-only). The remote topology runs
generate and process on the host; its store operations are ``RemoteStoreWork``'s steps (``admit``,
``prepare_ack``, ``complete_ack``, ``supersede``, ``mark_force``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.fne.offline_sync.plugins.module_utils._backend import (
    BackOfficeBackend,
    LicenseServerBackend,
    back_office,
    license_server,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._connection import (
    SIDES,
    check_connection,
    connection_from_params,
    host_spec,
    params_from_host,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import (
    FneError,
    LostResponseError,
    MismatchError,
    SettingError,
    UnknownServerError,
    scrub,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    sha256_file,
    sync_time_of,
    write_atomic,
    zone_of,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._tool import (
    BACKOFFICE_TOOL,
    SERVER_TOOL,
    tool_command,
)
from ansible_collections.fne.offline_sync.plugins.plugin_utils._action import run_command
from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import in_processes, process_count
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import (
    ACK_SUFFIX,
    SYNC_SUFFIX,
    InFlight,
    ServerStore,
    StoreError,
    os_error_text,
)

TOPOLOGIES = ("api", "remote")
# The cycle step's phases, in the order each server goes through them (one thread, one hold of its store lock).
PHASES = ("collect", "upload", "acknowledge")
# A forced download starts at the server's last acknowledged sync; a back office that still expects a later time
# holds records whose acknowledgment never reached the server (lost with a wiped store, say): only that
# acknowledgment moves the server on.
ACK_LOST_HINT = ("The back office already holds this server's records up to that expected time, but their "
                 "acknowledgment never reached the license server (it was lost, for example with a wiped store): "
                 "download this server's latest acknowledgment from the back office (its web page offers it), "
                 "process it with fne.offline_sync.process (src: that file, url: this license server), then run "
                 "the sync again. Nothing is lost meanwhile: the server keeps its records.")
# Answers that refuse the content itself (not the request, the credentials or the moment): set the file aside.
REFUSED_STATUSES = frozenset((400, 409, 422))
# Every host variable the fleet reads, validated per host with Ansible's own validator (types, choices, env
# fallbacks): a host whose variables are invalid fails alone, in the validator's words.
HOST_SPEC: Dict[str, dict] = dict(
    host_spec("lls"), **host_spec("backoffice"),
    fne_sync_topology={"type": "str", "default": "api", "choices": list(TOPOLOGIES)},
)


@dataclass
class ServerConfig:
    """Everything one server's step needs: module-style params for each side, from that host's variables."""

    name: str
    topology: str
    lls: Dict[str, Any]
    backoffice: Dict[str, Any]
    secrets: List[str] = field(default_factory=list, repr=False)  # the no_log values of its settings


HOST_VALIDATOR = ArgumentSpecValidator(HOST_SPEC)  # keeps no state between validate() calls


def plain(value: Any) -> Any:
    """``value`` in Python's own types. Ansible hands variables over as subclasses carrying their origin (tagged, or
    unsafe before ansible-core 2.19), which copy and pickle many times slower: at a thousand hosts the validator's
    copies of them and the results that name them cost about half a second a run (docs/performance.md)."""
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _validate(host_vars: Mapping[str, Any]) -> tuple:
    """(validated variables, no_log values) of one host; unset or empty variables take the environment fallback."""
    given = {}
    for var in HOST_SPEC:
        with contextlib.suppress(KeyError):
            value = host_vars[var]
            if value is not None and value != "":
                given[var] = plain(value)
    validation = HOST_VALIDATOR.validate(given)
    if validation.errors.errors:
        raise StoreError(f"invalid host variables: {validation.errors.msg}")
    return validation.validated_parameters, sorted(str(v) for v in validation._no_log_values if v)


# Each side: its name in messages, its vendor tool and the option of that tool's exact command.
SIDE_CHECKS = (("lls", "license server", SERVER_TOOL, "tool_server_command"),
               ("backoffice", "back office", BACKOFFICE_TOOL, "tool_backoffice_command"))


def server_config(name: str, host_vars: Mapping[str, Any]) -> ServerConfig:
    """A server's settings from its host variables; raises StoreError naming the variable when one is invalid."""
    validated, secrets = _validate(host_vars)
    cfg = ServerConfig(name=name, topology=validated["fne_sync_topology"],
                       lls=params_from_host("lls", validated), backoffice=params_from_host("backoffice", validated),
                       secrets=secrets)
    # URLs, numbers, credentials and (for an api-topology server, whose vendor tools run here) the tools, as the
    # clients will check them, but now: before this host is contacted or its store touched, and in the words of
    # the variables the user set
    for side, what, tool, command in SIDE_CHECKS:
        params = getattr(cfg, side)
        try:
            if params["url"]:
                check_connection(connection_from_params(params), what)
            if params["backend"] == "tool" and cfg.topology == "api":
                tool_command(params["tool_path"], params.get(command), tool)
        except SettingError as exc:
            names = ", ".join(dict.fromkeys(s.host_var for s in SIDES[side] if s.option in exc.options))
            raise StoreError(f"invalid host variables ({names or side}): {scrub(exc.msg, secrets)}") from None
    return cfg


class BackOfficeBreaker:
    """The one back office of a fleet step: after ``LIMIT`` uploads in a row could not reach it, the remaining
    servers' uploads fail at once with one message instead of each retrying on its own (minutes on a large fleet).
    Their files wait in the outbox; the next run sends them."""

    LIMIT = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.last: Optional[str] = None

    def check(self) -> None:
        with self._lock:
            if self.failures >= self.LIMIT:
                raise StoreError(f"upload not tried: the back office could not be reached by {self.LIMIT} uploads "
                                 "in a row; every file waits in the outbox and the next run sends it (the last "
                                 f"error: {self.last})")

    def record(self, exc: Optional[BaseException]) -> None:
        """The outcome of one upload: a connection failure counts, anything the back office answered resets."""
        unreachable = (isinstance(exc, FneError) and not isinstance(exc, (LostResponseError, MismatchError))
                       and exc.status is None and str(exc.msg).startswith("Cannot reach"))
        with self._lock:
            if unreachable:
                self.failures += 1
                self.last = _error_text(exc)
            elif self.failures < self.LIMIT:
                self.failures = 0


@dataclass
class Options:
    store: str
    check_mode: bool = False
    auto_recover: bool = True
    lock_timeout: float = 5
    workers: int = 16  # threads, over all processes
    processes: int = 1  # 0: as many as process_count() finds worth it
    remote_files: List[Dict[str, Any]] = field(default_factory=list)  # admit: [{src, sha256, records}]
    forced: bool = False
    reason: Optional[str] = None
    ack: Optional[str] = None  # complete_ack: the acknowledgment that was processed (newer ones stay pending)
    last_sync_time: Optional[str] = None  # complete_ack: what the server answered when it processed it
    breaker: BackOfficeBreaker = field(default_factory=BackOfficeBreaker)  # one per fleet step
    in_flight: Optional[InFlight] = None  # the step's journal of downloads in flight (run_fleet opens it)
    phases: List[str] = field(default_factory=lambda: list(PHASES))  # cycle: the phases, in this order
    keep_days: float = 0  # acknowledge: prune sent/ files older than this (0: keep every file)


def _error_text(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return str(text)


_THREAD = threading.local()  # .work: the ServerWork this worker thread runs now
if hasattr(os, "register_at_fork"):  # a keep-alive connection of a thread's back office client is never shared
    os.register_at_fork(after_in_child=_THREAD.__dict__.clear)


def _warn_current_server(text: str) -> None:
    """Warnings of the back office a worker thread shares between its servers go to the server it works now."""
    _THREAD.work._warn(text)


class ServerWork:
    """One server's cycle step: the store, the backends, and what happened (the host's entry in the result)."""

    def __init__(self, cfg: ServerConfig, opts: Options, step: str, cycle: Optional[Dict[str, Any]] = None):
        self.cfg = cfg
        self.opts = opts
        self.step = step
        self.store = ServerStore(opts.store, cfg.name, cfg.secrets, backend=cfg.lls["backend"])
        self.warnings: List[str] = []
        self.notes: List[str] = []
        self.plan: List[str] = []
        self.plan_changes = False  # check mode: whether the plan holds a certain change (not just a maybe)
        self.changed = False
        self.records = 0
        self.fetched: List[str] = []
        self.uploaded: List[str] = []
        self.processed: List[str] = []
        self.last_sync_time: Optional[str] = opts.last_sync_time
        self.recovered = False
        self.ack_mismatch: Optional[str] = None  # the mismatch the server reported when processing an acknowledgment
        # What the phases of one server's cycle share: its license server client (one connection, one token; its
        # warnings go to the phase that runs now).
        self._cycle: Dict[str, Any] = {} if cycle is None else cycle
        self._lls_warn = self._warn if cycle is None else _warn_current_server
        self._bo: Optional[BackOfficeBackend] = None

    # ---- backends -----------------------------------------------------------------------------------------
    def _warn(self, text: str) -> None:
        self.warnings.append(f"{self.cfg.name}: {text}")

    def _would(self, text: str, certain: bool = True) -> None:
        """Check mode: note what a real run would do (`certain=False`: it may find nothing to do)."""
        self.plan.append(text)
        self.plan_changes = self.plan_changes or certain

    @property
    def lls(self) -> LicenseServerBackend:
        if "lls" not in self._cycle:
            if not self.cfg.lls["url"]:
                raise StoreError("no license server URL: set fne_lls_url (or FNE_LLS_URL)")
            self._cycle["lls"] = license_server(self.cfg.lls, self._lls_warn, run_command)
        return self._cycle["lls"]

    @property
    def backoffice(self) -> BackOfficeBackend:
        if self._bo is None:
            params = self.cfg.backoffice
            if not params["url"]:
                raise StoreError("no back office URL: set fne_backoffice_url (or FNE_BACKOFFICE_URL)")
            # one back office for the whole fleet: reuse its keep-alive TLS session within a worker thread
            cache = _THREAD.__dict__.setdefault("backoffice", {})
            key = repr(sorted(params.items()))  # url, TLS and transport settings: the back office takes no credentials
            if key not in cache:
                cache[key] = back_office(params, _warn_current_server, run_command)
            self._bo = cache[key]
        return self._bo

    # ---- building blocks ----------------------------------------------------------------------------------
    def resume(self) -> None:
        if self.opts.check_mode:  # check mode writes nothing: say what a real run would finish
            done = [os.path.basename(f) for f in self.store.outbox_files() if os.path.exists(self.store.ack_for(f))]
            if done:
                self._would(f"move {len(done)} accepted file(s) to sent/: {', '.join(done)}")
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
            self._would(f"process acknowledgment {os.path.basename(newest)}")
            return True
        try:
            answer = self.lls.process(newest, None)
        except MismatchError as exc:
            # Reported at the process step: the server took the acknowledgment up to the mismatch (the documented
            # first step); the records after it come again with the documented forced download.
            text = _error_text(exc)
            self.store.complete_acks(newest, None)
            self.store.log("mismatch", detail=text)
            self.ack_mismatch = f"back office mismatch reported when processing {os.path.basename(newest)}: {text}"
            self.store.set_needs_force(self.ack_mismatch)
            self.processed.append(os.path.basename(newest))
            self.changed = True
            return True
        except FneError as exc:
            self._set_aside_if_refused(newest, exc)
            raise
        if not answer.get("last_sync_time") and self.cfg.lls["backend"] == "http":  # docs/compatibility.md
            self.notes.append("the license server confirmed it without its last sync time: it may hold the records "
                              "until an acknowledgment it confirms with one")
        self.last_sync_time = answer.get("last_sync_time") or self.last_sync_time
        self.store.complete_acks(newest, self.last_sync_time)
        self.processed.append(os.path.basename(newest))
        self.changed = True
        return True

    def generate(self, force: bool = False, first_contact: bool = False) -> None:
        if self.opts.check_mode:
            if first_contact:
                self._would("download new records (first contact: every record since the last acknowledged sync; "
                            "if any: unknown in check mode)", certain=False)
            elif force:
                self._would("download again with force")
            else:
                self._would("download new records (if any: unknown in check mode, asking hands them out)",
                            certain=False)
            return
        before = set(self.store.outbox_files())
        # Asking hands records out: should this process die before the answers are safe in the outbox, the step's
        # journal (Options.in_flight) leaves this server needs_force, and the next run downloads with force.
        journal = self.opts.in_flight
        if journal is None:
            raise StoreError("a download needs the step's journal of downloads in flight (run it with run_fleet)")
        journal.begin(self.cfg.name)
        try:
            answer = self.lls.generate(self.store.outbox, force=force)
        except LostResponseError as exc:
            self._admit_new(before, {}, force)
            reason = (f"lost response while downloading from {self.lls.base}: {_error_text(exc)}; the server may "
                      "have handed out records that never arrived, a forced download is needed")
            self.store.log("lost_response", detail=_error_text(exc))
            self.store.set_needs_force(reason)
            journal.end(self.cfg.name)
            raise
        except (FneError, StoreError):  # the answers say nothing was handed out that is not in the outbox
            self._admit_new(before, {}, force)
            journal.end(self.cfg.name)
            raise
        by_name = {os.path.basename(f.get("path") or f.get("name") or ""): f for f in answer.get("files") or []}
        self._admit_new(before, by_name, force)
        journal.end(self.cfg.name)
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
                self._would(f"upload {len(files)} file(s): {', '.join(os.path.basename(f) for f in files)}")
            return
        for path in files:
            self._upload_one(path)

    def _upload_one(self, path: str) -> None:
        name = os.path.basename(path)
        sha = sha256_file(path)
        for attempt in (1, 2):
            self.opts.breaker.check()
            try:
                ack = self._upload_through_breaker(path)
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
            except FneError as exc:
                self._set_aside_if_refused(path, exc)
                raise
            # the tool backend prints the acknowledgment's LastSyncTime: the ledger keeps it
            printed = getattr(self.backoffice, "last_sync_time", None)
            self.store.record_ack(path, ack, sha256=sha, last_sync_time=printed)
            self.uploaded.append(name)
            self.changed = True
            return

    def _upload_through_breaker(self, path: str) -> bytes:
        try:
            ack = self.backoffice.upload_file(path)
        except FneError as exc:
            self.opts.breaker.record(exc)
            raise
        self.opts.breaker.record(None)
        return ack

    def _set_aside_if_refused(self, path: str, exc: FneError) -> None:
        """A file or acknowledgment the other side refuses as invalid would block this server on every run: set it
        aside (quarantine/) and say so; the next run goes on without it."""
        if isinstance(exc, (LostResponseError, MismatchError, UnknownServerError)) or \
                exc.status not in REFUSED_STATUSES:  # no fault of this file
            return
        kept = self.store.set_aside(path, _error_text(exc))
        if path.endswith(SYNC_SUFFIX):  # its records are on the server still: the recovery downloads them again
            self.store.set_needs_force(f"{os.path.basename(path)} was refused by the back office as invalid and set "
                                       "aside: its records come again with a forced download")
        exc.amend(f"{os.path.basename(path)} was set aside as {kept}; the next run goes on without it (list or "
                  "release it with the fne.offline_sync.quarantine playbook).")

    def _already_accepted(self, path: str, exc: MismatchError) -> bool:
        """The re-upload rule (docs/design.md): a mismatch whose expected time is at or after this file's own
        sync time means the back office already holds this file (an earlier answer was lost)."""
        name = os.path.basename(path)
        file_time = sync_time_of(name, zone_of(self.cfg.lls.get("time_zone")))
        expected = exc.expected_time  # read in the zone of the back office's times
        if file_time is None or expected is None or expected < file_time:
            return False
        detail = (f"already accepted by the back office (re-upload answered: expected sync time "
                  f"{exc.expected}); its acknowledgment was lost, a later acknowledgment covers it")
        self.store.mark_accepted(path, detail)
        self.uploaded.append(name)
        self.notes.append(f"{name} {detail}")
        self.changed = True
        return True

    def recover(self, reason: str) -> None:
        """The documented procedure: process the newest acknowledgment received so far, set aside what is left
        in the outbox, download again with force, upload, process the new acknowledgment."""
        if self.opts.check_mode:
            self._would(f"recover ({reason}): process newest ack, supersede outbox, forced download, upload, process")
            return
        before_fetched = len(self.fetched)
        moved = self.force_download(reason)
        try:
            self.upload_outbox()
        except MismatchError as exc:
            if any(path.endswith(ACK_SUFFIX) for path in self.store.quarantined()):
                exc.amend("An acknowledgment this license server refused is in quarantine: release it once the server "
                          "takes it (fne.offline_sync.quarantine with fne_sync_release=true), then run the sync again.")
            else:
                exc.amend(ACK_LOST_HINT)
            raise
        self.ack_mismatch = None
        self.process_pending()
        if self.ack_mismatch:  # the forced messages did not fit either: never report a recovery that did not happen
            raise FneError(f"the documented recovery did not help: {self.ack_mismatch}")
        self._recovered(f"{reason}; superseded {moved} file(s), {len(self.fetched) - before_fetched} forced "
                        "file(s)")

    def force_download(self, reason: str) -> int:
        """The recovery's first half, all of it an air-gapped inside can do (docs/air-gap.md): process the newest
        acknowledgment received so far, set aside what is left in the outbox, download again with force. Returns
        how many files were set aside."""
        self.store.log("recovery_started", detail=reason)
        self.resume()  # an accepted file (its ack exists) goes to sent/, never to superseded/
        self.process_pending()
        moved = self.store.supersede(reason)
        self.generate(force=True)
        return len(moved)

    def _recovered(self, detail: str) -> None:
        self.store.clear_needs_force()
        self.store.log("recovered", detail=detail)
        self.recovered = True
        self.changed = True
        self.notes.append(f"recovered ({detail})")

    # ---- the cycle steps ----------------------------------------------------------------------------------
    def collect(self) -> None:
        self.warn_strays()
        first_contact = not os.path.exists(self.store.ledger_path)
        self.resume()
        self.process_pending()
        reason = self.store.needs_force()
        if reason:
            self.notes.append(f"recovery pending: {reason}")
            if self.opts.check_mode:
                self._would("recover (forced download)")
            return
        if first_contact and not self.opts.check_mode:
            # A store that has never seen this server (new, wiped, or an AWX job's fresh container) cannot know
            # what an earlier run downloaded: download everything since the last acknowledged sync; the back
            # office's answers (the re-upload rule) tell what it already holds. Nothing is lost, only slower.
            self.notes.append("first contact: forced download since the last acknowledged sync")
        try:
            self.generate(force=first_contact, first_contact=first_contact)
        except LostResponseError as exc:
            if not self.opts.auto_recover:
                raise
            self.changed = True
            self.notes.append(f"answer lost while downloading ({_error_text(exc)}); the documented recovery runs in "
                              "the upload step")

    def warn_strays(self) -> None:
        strays = self.store.strays()
        if strays:
            self._warn(f"never uploaded, not sync files: {', '.join(strays)} in {self.store.outbox}")

    def upload(self) -> None:
        self.resume()
        reason = self.store.needs_force()
        if (reason or self.store.outbox_files()) and not self.opts.check_mode:
            self.opts.breaker.check()  # the back office is out of reach: not even a recovery's download
        if reason and self.opts.forced:
            # the remote topology's recovery upload: the outbox holds the forced download now
            self.upload_outbox()
            if not self.opts.check_mode:
                self._recovered(reason)
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

    def acknowledge(self) -> None:
        self.resume()
        self.process_pending()
        if self.ack_mismatch and self.cfg.topology == "api" and self.opts.auto_recover:
            self.recover(self.ack_mismatch)
        elif self.ack_mismatch:
            self.notes.append(f"recovery pending: {self.ack_mismatch}")
        if self.opts.keep_days and not self.opts.check_mode:  # retention, once the cycle is done
            pruned = self.store.prune_sent(self.opts.keep_days)
            if pruned:
                self.notes.append(f"retention: {len(pruned)} old file(s) removed from sent/")

    def recover_requested(self) -> None:
        self.recover(self.store.needs_force() or "forced resynchronization requested")

    def status(self) -> None:
        """Read-only: the entry alone says where the server stands."""

    def release(self) -> None:
        """Quarantined files get another try (the fne.offline_sync.quarantine playbook)."""
        names = self.store.quarantined()
        if self.opts.check_mode:
            if names:
                self._would(f"release {len(names)} quarantined file(s)")
            return
        moved = self.store.release()
        if moved:
            self.changed = True
            self.notes.append(f"released from quarantine: {', '.join(moved)}")

    # ---- the result ---------------------------------------------------------------------------------------
    def extra_result(self) -> Dict[str, Any]:
        return {}

    def store_state(self) -> Dict[str, Any]:
        """Where the server's store stands (its entry's last fields)."""
        acks = self.store.pending_acks()
        return {"needs_force": self.store.needs_force() is not None,
                "outbox": [os.path.basename(f) for f in self.store.outbox_files()],
                "pending_ack": acks[-1] if acks else None,
                "quarantined": [os.path.basename(f) for f in self.store.quarantined()]}

    def result(self, step: str, error: Optional[str] = None, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The entry; ``state``: store_state(), when the caller read it already."""
        secrets = self.cfg.secrets
        if error is not None:
            error = scrub(error, secrets)
        self.warnings = [scrub(w, secrets) for w in self.warnings]
        entry: Dict[str, Any] = {
            "host": self.cfg.name,
            "topology": self.cfg.topology,
            "step": step,
            "changed": self.changed or (self.opts.check_mode and self.plan_changes),
            "failed": error is not None,
            "records": self.records,
            "fetched": self.fetched,
            "uploaded": self.uploaded,
            "processed": self.processed,
            "last_sync_time": self.last_sync_time,
            "recovered": self.recovered,
            **(state if state is not None else self.store_state()),
            "warnings": self.warnings,
            "plan": self.plan,
        }
        done = self.plan or self.fetched or self.uploaded or self.processed or self.notes
        entry["idle"] = error is None and not done
        entry.update(self.extra_result())
        entry["msg"] = f"{self.cfg.name}: {step} failed: {error}" if error is not None else describe(entry, self.notes)
        return entry


class RemoteStoreWork(ServerWork):
    """The remote topology's store operations: generate and process run on the license server host (per-host
    tasks over SSH); these steps keep the control-node store in step with what those tasks did."""

    def admit(self) -> None:
        """Take the fetched files, and those generate returned with their bytes (``content``), into the outbox after
        checking their sha256."""
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
            if item.get("content") is not None:  # returned by generate: never trusted more than a fetched file
                if sync_time_of(name) is None:
                    raise StoreError(f"generate returned the bytes of {name!r}, which is no sync file name")
                try:
                    data = base64.b64decode(item["content"], validate=True)
                except ValueError:
                    raise StoreError(f"the bytes generate returned for {name} are not base64") from None
                os.makedirs(os.path.dirname(src), mode=0o700, exist_ok=True)
                write_atomic(src, [data])
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

    def prepare_ack(self) -> None:
        # the entry carries the newest pending acknowledgment and the new remote files (extra_result); a dead
        # run's accepted file goes to sent/ first, before that acknowledgment is processed
        self.resume()

    def complete_ack(self) -> None:
        acks = self.store.pending_acks()
        if self.opts.ack:
            acks = [a for a in acks if os.path.basename(a) <= os.path.basename(self.opts.ack)]
        if acks and not self.opts.check_mode:
            self.store.complete_acks(acks[-1], self.last_sync_time)
            self.processed.append(os.path.basename(acks[-1]))
            self.changed = True
        if self.opts.reason:  # the mismatch the process step reported: the documented recovery is needed
            self.mark_force()

    def mark_force(self) -> None:
        if not self.opts.check_mode:
            # a lost answer on the host is a fault; a requested resynchronization (forced) is no error
            self.store.log("recovery_started" if self.opts.forced else "lost_response", detail=self.opts.reason)
            self.store.set_needs_force(self.opts.reason or "forced download requested")

    def supersede(self) -> None:
        if not self.opts.check_mode:
            self.resume()  # an accepted file (its ack exists) goes to sent/, never to superseded/
            moved = self.store.supersede(self.store.needs_force() or "forced resynchronization requested")
            self.changed = self.changed or bool(moved)

    def known_files(self) -> List[str]:
        """Names already in the store (outbox, sent, superseded): a remote file with one of them is not new."""
        names = set()
        for folder in (self.store.outbox, self.store.sent, self.store.superseded):
            with contextlib.suppress(FileNotFoundError):
                names.update(os.listdir(folder))
        return sorted(n for n in names if n.endswith(SYNC_SUFFIX))

    def extra_result(self) -> Dict[str, Any]:
        if self.step != "prepare_ack":
            return {}
        known = set(self.known_files())
        # inline: generate returned its bytes (no fetch)
        return {"new_files": sorted(({"path": f.get("path"), "sha256": f.get("sha256") or f.get("checksum"),
                                      "inline": f.get("content") is not None}
                                     for f in self.opts.remote_files
                                     if os.path.basename(str(f.get("path"))) not in known),
                                    key=lambda f: str(f["path"]))}


# step -> (the class that works it, its method); only "status" leaves the store untouched
STEPS: Dict[str, tuple] = {
    "collect": (ServerWork, ServerWork.collect),
    "upload": (ServerWork, ServerWork.upload),
    "acknowledge": (ServerWork, ServerWork.acknowledge),
    "recover": (ServerWork, ServerWork.recover_requested),
    "status": (ServerWork, ServerWork.status),
    "release": (ServerWork, ServerWork.release),
    "admit": (RemoteStoreWork, RemoteStoreWork.admit),
    "prepare_ack": (RemoteStoreWork, RemoteStoreWork.prepare_ack),
    "complete_ack": (RemoteStoreWork, RemoteStoreWork.complete_ack),
    "supersede": (RemoteStoreWork, RemoteStoreWork.supersede),
    "mark_force": (RemoteStoreWork, RemoteStoreWork.mark_force),
}
READ_ONLY_STEPS = frozenset(("status",))
# Steps that may download from a license server (directly, or through the documented recovery): run_fleet keeps
# their journal of downloads in flight.
DOWNLOADING_STEPS = frozenset(("cycle", "collect", "upload", "acknowledge", "recover"))


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
    if entry.get("quarantined"):
        parts.append(f"quarantined (refused as invalid; release with the fne.offline_sync.quarantine playbook): "
                     f"{', '.join(entry['quarantined'])}")
    return f"{entry['host']}: {entry['step']}: " + ("; ".join(parts) if parts else "nothing to do")


def _failed_entry(cfg: ServerConfig, step: str, msg: str) -> Dict[str, Any]:
    return {"host": cfg.name, "topology": cfg.topology, "step": step, "changed": False, "failed": True,
            "msg": scrub(f"{cfg.name}: {step} failed: {msg}", cfg.secrets)}


def _work(work: ServerWork, method: Callable[[ServerWork], None], locked: bool) -> Dict[str, Any]:
    """One step of one server (its lock held when ``locked``); its entry, whatever happened."""
    return _entries([work], [_run(work, method, locked)])[0]


def _run(work: ServerWork, method: Callable[[ServerWork], None], locked: bool) -> Optional[str]:
    """One step of one server (its lock held when ``locked``); what went wrong, or None."""
    _THREAD.work = work
    try:
        try:
            method(work)
        except (StoreError, FneError) as exc:
            if locked:
                work.store.log("error", detail=f"{work.step}: {_error_text(exc)}")
            raise
    except (StoreError, FneError) as exc:
        error: Optional[str] = _error_text(exc)
    except Exception as exc:  # one server's surprise must not stop the fleet
        error = f"unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
    else:
        error = None
    return error


def _entries(works: List[ServerWork], errors: List[Optional[str]]) -> List[Dict[str, Any]]:
    """The entries of one server's steps, with its store as it stands after the last (read once)."""
    if not works:
        return []
    try:
        state, unreadable = works[-1].store_state(), None
    except OSError as exc:  # a store that cannot even be read (its folder is a file, say): this host alone fails
        state, unreadable = {}, os_error_text(exc)
    entries = []
    for number, (work, error) in enumerate(zip(works, errors), 1):
        problem = unreadable if number == len(works) else None  # the steps before keep their own figures
        if problem is None:
            try:
                entries.append(work.result(work.step, error, state))
                continue
            except OSError as exc:
                problem = os_error_text(exc)
        entries.append(_failed_entry(work.cfg, work.step, f"{error or ''} (its store cannot be read: {problem})"))
    return entries


def _phase(entry: Dict[str, Any]) -> Dict[str, Any]:
    """A phase's entry inside its cycle entry: without what the cycle entry says (host, topology) and without the
    keys at their empty value. A thousand servers' results pass through Ansible's templating and pickling, key by
    key; a quiet server's phase is five keys instead of nineteen."""
    return {k: v for k, v in entry.items() if k in ("step", "changed", "failed", "msg")
            or (k not in ("host", "topology") and v not in (None, False, 0, "", []))}


def work_one(step: str, cfg: ServerConfig, opts: Options) -> Dict[str, Any]:
    """One server's step under one hold of its store lock (none for a read-only step or in check mode). The cycle
    runs ``opts.phases`` in order; its entry holds each phase's entry in ``phases``."""
    steps = list(opts.phases) if step == "cycle" else [step]
    try:
        cycle: Dict[str, Any] = {}  # what the phases share
        works = [STEPS[s][0](cfg, opts, s, cycle) for s in steps]
    except StoreError as exc:  # a host name no folder can carry: this host fails, the others go on
        return _failed_entry(cfg, step, exc.msg)
    locked = not (step in READ_ONLY_STEPS or opts.check_mode)
    try:
        with contextlib.ExitStack() as held:
            if locked and works:  # lock() creates the store's folders first
                held.enter_context(works[0].store.lock(opts.lock_timeout))
            entries = _entries(works, [_run(work, STEPS[work.step][1], locked) for work in works])
    except StoreError as exc:  # the store cannot be created, or another run holds its lock
        entries = [_failed_entry(cfg, steps[0], exc.msg)]
    except OSError as exc:
        entries = [_failed_entry(cfg, steps[0], os_error_text(exc))]
    if step != "cycle":
        return entries[0]
    failed = [e["msg"] for e in entries if e["failed"]]
    busy = [e["msg"] for e in entries if not e.get("idle")]
    return {"host": cfg.name, "topology": cfg.topology, "step": step, "phases": [_phase(e) for e in entries],
            "warnings": [w for e in entries for w in e.get("warnings") or []],
            "changed": any(e["changed"] for e in entries), "failed": bool(failed),
            "msg": " | ".join(failed or busy) or f"{cfg.name}: {step}: nothing to do"}


Worker = Callable[[str, ServerConfig, Options], Dict[str, Any]]  # one server's step: work_one, or a test's


def run_fleet(step: str, configs: List[ServerConfig], opts: Options,
              worker: Worker = work_one) -> Dict[str, Dict[str, Any]]:
    """Run ``step`` for every server in bounded thread pools (in ``opts.processes`` processes); one entry per server,
    in input order."""
    if step not in STEPS and step != "cycle":
        raise ValueError(f"unknown fleet step {step!r}; expected one of {', '.join(STEPS)}")
    if not configs:
        return {}
    journal = step in DOWNLOADING_STEPS and not opts.check_mode
    if journal:
        try:
            InFlight.adopt(opts.store)  # a dead run's downloads: those servers are needs_force before we begin
            opts.in_flight = InFlight(opts.store, [c.name for c in configs])
        except OSError as exc:  # no server is asked for anything without it
            problem = f"the journal of downloads in flight cannot be written in {opts.store}: {os_error_text(exc)}"
            return {cfg.name: _failed_entry(cfg, step, problem) for cfg in configs}
    try:
        processes = process_count(opts.processes, len(configs), opts.workers)
        threads = max(1, int(opts.workers) // processes)

        def lost(share: List[ServerConfig], how: str) -> Dict[str, Dict[str, Any]]:
            return {cfg.name: _failed_entry(cfg, step, f"the process working this server {how} (had it begun a "
                                                       "download, the next run downloads again with force)")
                    for cfg in share}
        results = in_processes(configs, processes, lambda share: _in_threads(step, share, opts, worker, threads), lost)
        return {cfg.name: results[cfg.name] for cfg in configs}
    finally:
        if journal and opts.in_flight is not None:
            # should it fail, the journal stays and the next step settles it
            with contextlib.suppress(OSError):
                opts.in_flight.close()
            opts.in_flight = None


def _in_threads(step: str, configs: List[ServerConfig], opts: Options,
                worker: Worker, threads: int) -> Dict[str, Dict[str, Any]]:
    threads = min(threads, len(configs))
    if threads == 1:
        return {cfg.name: worker(step, cfg, opts) for cfg in configs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fne-fleet") as pool:
        futures = {cfg.name: pool.submit(worker, step, cfg, opts) for cfg in configs}
        return {cfg.name: futures[cfg.name].result() for cfg in configs}
