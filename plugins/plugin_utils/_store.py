# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The control-node store: one folder per license server, nothing ever deleted.

``STORE/<inventory_hostname>/`` holds ``outbox/`` (downloaded, not yet accepted by the back office), ``acks/``
(acknowledgments not yet processed on the server), ``sent/`` (done, kept for audit), ``superseded/`` (outbox files
replaced by a forced download), ``ledger.jsonl`` (one event a line), ``needs_force`` (marker) and ``.lock``;
``STORE/.in_flight/`` holds the journals of the fleet steps' downloads in flight (:class:`InFlight`).

Crash-safe ordering: an acknowledgment is written atomically before its file leaves ``outbox/``; a file whose
acknowledgment exists counts as accepted; acknowledgments move to ``sent/`` only after the server processed them.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from typing import Any, Iterable, Iterator, List, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._errors import scrub
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    SYNC_SUFFIX,
    fsync_dir,
    list_sync_files,
    sha256_file,
    sync_time_of,
    write_atomic,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._folder import save_ack_elsewhere

ACK_SUFFIX = ".ack"
EVENTS = ("generated", "fetched", "uploaded", "acknowledged", "processed", "purged", "mismatch", "lost_response",
          "recovery_started", "recovered", "superseded", "quarantined", "released", "error", "run", "pruned",
          "bundled")


class StoreError(Exception):
    """A store operation failed; ``msg`` says what and where."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


class LockedError(StoreError):
    """Another run holds this server's lock."""


def os_error_text(exc: OSError) -> str:
    """An OSError in words, without Python's "[Errno NN]": "Not a directory: /store/lls001/outbox"."""
    if exc.strerror is None:
        return str(exc)
    return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror


# Events of a talk with the license server or the back office: the ledger says which backend (http, tool) did it.
BACKEND_EVENTS = frozenset(("fetched", "uploaded", "acknowledged", "processed"))


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ServerStore:
    """The store of one license server. Every method that changes something needs :meth:`ensure` first."""

    def __init__(self, root: str, name: str, secrets: Iterable[str] = (), backend: Optional[str] = None):
        if not name or "/" in name or name in (".", ".."):
            raise StoreError(f"invalid server name for the store: {name!r}")
        self.root = os.path.abspath(os.path.expanduser(root))
        self.name = name
        self.secrets = list(secrets)  # kept out of the ledger, whatever text an error carried
        self.backend = backend  # fne_sync_backend: written into the events that talked to a server
        self.dir = os.path.join(self.root, name)
        self.outbox = os.path.join(self.dir, "outbox")
        self.acks = os.path.join(self.dir, "acks")
        self.sent = os.path.join(self.dir, "sent")
        self.superseded = os.path.join(self.dir, "superseded")
        self.ledger_path = os.path.join(self.dir, "ledger.jsonl")
        self.needs_force_path = os.path.join(self.dir, "needs_force")
        self.quarantine = os.path.join(self.dir, "quarantine")

    # ---- layout -------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def ensure(self) -> ServerStore:
        folders = (self.outbox, self.acks, self.sent, self.superseded, self.quarantine)
        # all there (every run but the first): one listing, not 21 system calls
        with contextlib.suppress(OSError), os.scandir(self.dir) as entries:
            if {os.path.basename(f) for f in folders} <= {e.name for e in entries if e.is_dir()}:
                return self
        for folder in (self.root, self.dir, *folders):
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            except FileExistsError as exc:  # makedirs' words for "a file is in the way" mislead
                raise StoreError(f"cannot create store folder {folder}: it is a file, not a folder") from exc
            except OSError as exc:
                raise StoreError(f"cannot create store folder {folder}: {exc.strerror}") from exc
        return self

    @contextlib.contextmanager
    def lock(self, timeout: float = 0) -> Iterator[None]:
        """Hold this server's lock; wait up to ``timeout`` seconds, then raise :class:`LockedError`. The lock is on
        the server's folder itself: no file that someone could delete while a run holds it. Taking it removes what
        a dead run half wrote (once per hold, not in each phase)."""
        self.ensure()
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockedError(f"{self.name}: store {self.dir} is locked by another run; "
                                          "try again when it has finished") from None
                    time.sleep(0.2)
            self._remove_temporaries()
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ---- listings (read-only, safe when the store does not exist) -----------------------------------------
    @staticmethod
    def _list(folder: str, suffix: str) -> List[str]:
        try:
            names = [n for n in os.listdir(folder) if n.endswith(suffix) and not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [os.path.join(folder, n) for n in sorted(names)]

    def outbox_files(self) -> List[str]:
        """Files waiting for the back office, oldest first (the name is the sync time and the upload order)."""
        return list_sync_files(self.outbox)

    def strays(self) -> List[str]:
        """Files in outbox/ that are no sync file (never uploaded): named in a warning each run."""
        try:
            names = os.listdir(self.outbox)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(".") and sync_time_of(n) is None)

    def pending_acks(self) -> List[str]:
        """Acknowledgments not yet processed on the server, oldest first."""
        return self._list(self.acks, ACK_SUFFIX)

    def sent_files(self) -> List[str]:
        return self._list(self.sent, SYNC_SUFFIX)

    def ack_for(self, sync_file: str) -> str:
        return os.path.join(self.acks, os.path.basename(sync_file)[: -len(SYNC_SUFFIX)] + ACK_SUFFIX)

    def needs_force(self) -> Optional[str]:
        """The reason text when the next run must run the documented recovery, else None."""
        try:
            with open(self.needs_force_path, encoding="utf-8") as handle:
                return handle.read().strip() or "recovery requested"
        except FileNotFoundError:
            return None

    def ledger(self) -> List[dict]:
        entries = []
        try:
            with open(self.ledger_path, encoding="utf-8") as handle:
                for line in handle:
                    line = line.strip()
                    if line:
                        with contextlib.suppress(ValueError):
                            entries.append(json.loads(line))
        except FileNotFoundError:
            pass
        return entries

    # ---- changes ------------------------------------------------------------------------------------------
    def log(self, event: str, durable: bool = True, **fields: Any) -> dict:
        """Append one event to the ledger (fsynced: it is the audit trail). A line torn by a crash is ended first,
        so it never swallows this one; a ledger that cannot be written fails the step (StoreError), never silently.
        ``durable=False`` skips the fsync: for the report's ``run`` line, written for every server of a run."""
        entry = self._entry(event, **fields)
        self._append([entry], durable)
        return entry

    def _entry(self, event: str, **fields: Any) -> dict:
        entry = {"time": utcnow(), "event": event}
        if event in BACKEND_EVENTS and self.backend:
            entry["backend"] = self.backend
        entry.update({k: scrub(v, self.secrets) if isinstance(v, str) else v for k, v in fields.items()
                      if v is not None})
        return entry

    def _append(self, entries: List[dict], durable: bool = True) -> None:
        """Append ``entries`` in one write (and one fsync): events that happen together are recorded together."""
        data = b"".join((json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
                        for e in entries)
        try:
            fd = os.open(self.ledger_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write")
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            events = " and ".join(f"the {e['event']} event of {e.get('file') or 'this step'}" for e in entries)
            raise StoreError(f"{self.name}: cannot write the ledger {self.ledger_path} ({exc.strerror or exc}); "
                             f"{events} {'is' if len(entries) == 1 else 'are'} not recorded") from None

    def _move(self, src: str, folder: str) -> str:
        """Rename into ``folder`` (same file system), never overwriting: a clash gets a numbered name."""
        base = os.path.basename(src)
        dest = os.path.join(folder, base)
        counter = 1
        while os.path.exists(dest):
            stem, dot, suffix = base.partition(".")
            dest = os.path.join(folder, f"{stem}.{counter}{dot}{suffix}")
            counter += 1
        os.rename(src, dest)
        fsync_dir(folder)
        fsync_dir(os.path.dirname(src))
        return dest

    def admit(self, path: str, *, sha256: Optional[str] = None, records: Optional[int] = None,
              event: str = "fetched", forced: bool = False) -> str:
        """Take a downloaded file into ``outbox/`` (moving it when it is elsewhere), after checking its sha256
        when one is given; log ``event``. Returns the outbox path."""
        actual = sha256_file(path)
        if sha256 and actual != sha256.lower():
            raise StoreError(f"{self.name}: checksum mismatch for {os.path.basename(path)}: "
                             f"expected sha256 {sha256}, got {actual}")
        dest = path
        if os.path.dirname(os.path.abspath(path)) != self.outbox:
            target = os.path.join(self.outbox, os.path.basename(path))
            if os.path.exists(target):
                if sha256_file(target) != actual:
                    raise StoreError(f"{self.name}: {target} already exists with other content")
                os.unlink(path)  # the same bytes are already in the outbox: a re-fetch after a crash
                return target
            dest = self._move(path, self.outbox)
        self.log(event, file=os.path.basename(dest), sha256=actual, records=records, forced=forced or None)
        return dest

    def record_ack(self, sync_file: str, ack: bytes, *, sha256: Optional[str] = None,
                   detail: Optional[str] = None, last_sync_time: Optional[str] = None) -> str:
        """The back office accepted ``sync_file``: write its acknowledgment atomically, then move the file from
        ``outbox/`` to ``sent/``. Returns the acknowledgment path."""
        ack_path = self.ack_for(sync_file)
        try:
            write_atomic(ack_path, [ack])
        except OSError as exc:
            # The back office holds the message now: its acknowledgment must not vanish with this error.
            kept = save_ack_elsewhere(sync_file, ack)
            where = f"it was saved as {kept}: move it to {ack_path}" if kept else "it could not be saved anywhere"
            raise StoreError(f"{self.name}: the back office accepted {os.path.basename(sync_file)} but its "
                             f"acknowledgment could not be written to {ack_path} ({exc.strerror or exc}); "
                             f"{where}, then run again") from None
        self._append([self._entry("uploaded", file=os.path.basename(sync_file), sha256=sha256, detail=detail),
                      self._entry("acknowledged", file=os.path.basename(ack_path),
                                  sha256=hashlib.sha256(ack).hexdigest(), last_sync_time=last_sync_time)])
        if os.path.exists(sync_file):
            self._move(sync_file, self.sent)
        return ack_path

    def mark_accepted(self, sync_file: str, detail: str) -> str:
        """The back office holds ``sync_file`` but its acknowledgment is lost (see docs/design.md, "Re-upload
        rule"): move it to ``sent/``; the acknowledgment of a later message covers its records."""
        self.log("uploaded", file=os.path.basename(sync_file), detail=detail)
        return self._move(sync_file, self.sent)

    def resume(self) -> List[str]:
        """Finish a run that died between writing an acknowledgment and moving its file: files in ``outbox/``
        whose acknowledgment exists go to ``sent/``. Returns the moved names."""
        moved = []
        for path in self.outbox_files():
            if os.path.exists(self.ack_for(path)):
                self._move(path, self.sent)
                moved.append(os.path.basename(path))
        return moved

    def _remove_temporaries(self) -> None:
        """A dead run's half-written files (`.NAME.RANDOM.tmp`, never complete): under the lock, just taken, no
        run can be writing them. The records of a half-downloaded message come again with the forced download its
        marker asks for."""
        for folder in (self.outbox, self.acks):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(folder):
                    if name.startswith(".") and name.endswith(".tmp"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(folder, name))

    def complete_acks(self, processed_ack: str, last_sync_time: Optional[str] = None) -> List[str]:
        """The server processed ``processed_ack``: it and every older acknowledgment move to ``sent/``.
        Returns the names moved."""
        limit = os.path.basename(processed_ack)
        moved = []
        for path in self.pending_acks():
            if os.path.basename(path) <= limit:
                self._move(path, self.sent)
                moved.append(os.path.basename(path))
        self.log("processed", file=limit, detail=f"lastSyncTime {last_sync_time}" if last_sync_time else None)
        return moved

    def supersede(self, reason: str, keep: Iterable[str] = ()) -> List[str]:
        """Move every outbox file to ``superseded/`` (a forced download replaces them), but those named in ``keep``
        (the air gap's forced files, admitted before a run died and taken again)."""
        moved = []
        kept = set(keep)
        for path in (p for p in self.outbox_files() if os.path.basename(p) not in kept):
            self._move(path, self.superseded)
            moved.append(os.path.basename(path))
            self.log("superseded", file=os.path.basename(path), detail=reason)
        return moved

    def set_aside(self, path: str, reason: str) -> str:
        """Move a sync file the back office, or an acknowledgment the server, refused as invalid into quarantine/:
        the next run goes on without it (for a file, the documented recovery downloads its records again).
        Returns its new path."""
        dest = self._move(path, self.quarantine)
        self.log("quarantined", file=os.path.basename(path), detail=reason)
        return dest

    def quarantined(self) -> List[str]:
        try:
            return sorted(os.path.join(self.quarantine, n) for n in os.listdir(self.quarantine)
                          if not n.startswith("."))
        except FileNotFoundError:
            return []

    def release(self) -> List[str]:
        """Give every quarantined file another try: sync files back to outbox/, acknowledgments to acks/."""
        moved = []
        for path in self.quarantined():
            folder = self.acks if path.endswith(ACK_SUFFIX) else self.outbox
            self._move(path, folder)
            moved.append(os.path.basename(path))
            self.log("released", file=os.path.basename(path))
        return moved

    def prune_sent(self, keep_days: float, now: Optional[_dt.datetime] = None) -> List[str]:
        """Retention: remove from sent/ the sync files and acknowledgments whose sync time is more than
        ``keep_days`` old and older than every acknowledgment still pending (what is not yet acknowledged and
        processed is never in sent/, and nothing at or after a pending one goes). The ledger keeps their lines, so
        the report's totals stay true; one ``pruned`` line names how many went. Returns the names removed."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        limit = now - _dt.timedelta(days=keep_days)
        pending = [sync_time_of(os.path.basename(a)[: -len(ACK_SUFFIX)] + SYNC_SUFFIX) for a in self.pending_acks()]
        for when in pending:
            if when is not None and when < limit:
                limit = when
        removed = []
        try:
            names = sorted(os.listdir(self.sent))
        except FileNotFoundError:
            return removed
        for name in names:
            stem = name[: -len(ACK_SUFFIX)] + SYNC_SUFFIX if name.endswith(ACK_SUFFIX) else name
            when = sync_time_of(stem)
            if when is None or when >= limit:  # an unknown name or a recent file stays
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.sent, name))
                removed.append(name)
        if removed:
            fsync_dir(self.sent)
            self.log("pruned", detail=f"{len(removed)} file(s) older than {keep_days:g} days removed from sent/: "
                                      f"{removed[0]} to {removed[-1]}")
        return removed

    def set_needs_force(self, reason: str) -> None:
        write_atomic(self.needs_force_path, [(reason.strip() + "\n").encode("utf-8")])

    def clear_needs_force(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.needs_force_path)
            fsync_dir(self.dir)


def _boot_id() -> Optional[str]:
    """This boot of the machine (Linux): a journal from another boot may have lost its unsynced lines."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


class InFlight:
    """The durable note of a fleet step's downloads in flight: one journal per step (``STORE/.in_flight/``) instead
    of a durable marker written and removed around every server's download (asking hands records out; should the
    run die before the answers are safe in the outbox, the next run must download with force).

    Its first line, fsynced before any server is asked, names every server of the step and this boot of the
    machine; ``begin NAME`` before a server's download and ``end NAME`` once its answers are settled (in the outbox,
    or a lost answer recorded in that server's ``needs_force``) are appended without fsync: a killed process leaves
    them in the page cache, and only a crash of the machine loses them (then the boot differs and every server of
    the journal counts as begun). The step holds the journal's lock while it runs and removes it at its end; a
    later step that can take the lock of a journal left behind adopts it: each server begun and not ended gets
    ``needs_force``, then the journal goes."""

    FOLDER = ".in_flight"

    def __init__(self, root: str, names: Iterable[str]):
        self.root = os.path.abspath(os.path.expanduser(root))
        folder = os.path.join(self.root, self.FOLDER)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.path = os.path.join(folder, f"{os.getpid()}-{time.time_ns()}.journal")
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        head = json.dumps({"boot": _boot_id(), "hosts": sorted(names), "started": utcnow()}) + "\n"
        os.write(self._fd, head.encode("utf-8"))
        os.fsync(self._fd)
        fsync_dir(folder)

    def _note(self, word: str, name: str) -> None:
        with self._lock:
            os.write(self._fd, f"{word} {name}\n".encode())

    def begin(self, name: str) -> None:
        self._note("begin", name)

    def end(self, name: str) -> None:
        self._note("end", name)

    def close(self) -> List[str]:
        """The step is over: a server begun and not ended (an unforeseen error cut its download) gets needs_force;
        then the journal goes. Returns those servers."""
        try:
            return _settle(self.root, self.path, _boot_id())
        finally:
            os.close(self._fd)

    @classmethod
    def adopt(cls, root: str) -> List[str]:
        """Settle the journals of runs that died (their lock is free); returns the servers marked needs_force."""
        root = os.path.abspath(os.path.expanduser(root))
        folder = os.path.join(root, cls.FOLDER)
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".journal"))
        except FileNotFoundError:
            return []
        marked: List[str] = []
        boot = _boot_id()
        for name in names:
            path = os.path.join(folder, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another run settled it meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its run is alive
                os.close(fd)
                continue
            try:
                if os.fstat(fd).st_nlink:  # not yet settled by a run that held the lock before us
                    marked += _settle(root, path, boot)
            finally:
                os.close(fd)
        return marked


def _settle(root: str, path: str, boot: Optional[str]) -> List[str]:
    """Mark needs_force for every server of the journal at ``path`` whose download may have handed out records that
    never arrived, then remove the journal (its lock is held by the caller)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    try:
        head = json.loads(lines[0])
        listed = [str(n) for n in head["hosts"]]
    except (IndexError, ValueError, KeyError, TypeError):  # torn before its fsync: no server was asked yet
        listed, head = [], {}
    notes = collections.Counter(tuple(line.split(" ", 1)) for line in lines[1:] if " " in line)
    if boot is not None and head.get("boot") == boot:  # every line is there: the downloads begun, not ended
        open_names = [n for n in listed if notes["begin", n] > notes["end", n]]
    else:  # the machine restarted: unsynced lines may be lost
        open_names = listed
    for name in open_names:
        store = ServerStore(root, name)
        if store.exists() and store.needs_force() is None:
            store.set_needs_force(f"a download from this server was interrupted (the run of {head.get('started')} "
                                  "died or failed during it): the server may have handed out records that never "
                                  "arrived, a forced download is needed")
    os.unlink(path)
    return open_names
