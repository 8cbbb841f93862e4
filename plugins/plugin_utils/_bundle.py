# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Air-gapped sites: the sync cycle split across the gap as verified transfer bundles (docs/air-gap.md).

- ``export`` (inside, reaches the license servers): every outbox file not yet in a bundle goes into one new
  outgoing bundle; every bundle not yet acknowledged is copied to the medium again, whole (a lost medium is
  recovered by the next carry).
- ``upload`` (outside, reaches the back office): outgoing bundles are admitted in sequence order into an outside
  store (one ``ServerStore`` per server, so the connected cycle's upload rules apply unchanged), uploaded, and the
  newest acknowledgment of each server goes into a return bundle. A file the outside store holds is never uploaded
  again.
- ``import`` (inside): a return bundle's acknowledgments go into each server's ``acks/``, the files they cover
  leave ``outbox/``; the fleet's ``acknowledge`` step then processes each server's newest one.

A bundle is one tar file: ``manifest.json``, ``manifest.hmac`` (HMAC-SHA256 of the manifest bytes with the site
key, when one is configured) and the payload files, each listed in the manifest with its sha256. Every bundle is
verified whole before anything is changed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import tarfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    SYNC_SUFFIX,
    AtomicWriter,
    ensure_dir,
    sha256_file,
    sync_time_of,
    write_atomic,
)
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import (
    ACK_SUFFIX,
    ServerStore,
    StoreError,
    utcnow,
)

FORMAT = 1
OUTGOING, RETURN = "outgoing", "return"
MANIFEST, SIGNATURE = "manifest.json", "manifest.hmac"
BUNDLE_NAME = re.compile(r"^fne-(?P<site>[A-Za-z0-9_.-]+)-(?P<kind>out|return)-(?P<seq>\d{6})\.tar$")
SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AIRGAP_DIR = ".airgap"  # under the store root; no inventory name starts with a dot


class BundleError(StoreError):
    """A bundle was refused (wrong site, corrupted, tampered, out of sequence): nothing was changed."""


def bundle_name(site: str, kind: str, sequence: int) -> str:
    return f"fne-{site}-{'out' if kind == OUTGOING else 'return'}-{sequence:06d}.tar"


def check_site(site: str) -> str:
    if not site or not SITE_RE.match(site):
        raise BundleError(f"invalid site name {site!r} (fne_sync_site): letters, digits, '.', '_' and '-' only")
    return site


# ---- the bundle file --------------------------------------------------------------------------------------------
def _signature(key: Optional[str], data: bytes) -> Optional[str]:
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest() if key else None


def write_bundle(path: str, manifest: Dict[str, Any], payload: List[Tuple[str, str]], key: Optional[str]) -> str:
    """Write the bundle atomically: ``payload`` is [(name in the bundle, source file)]; the manifest must list
    each with its sha256 already. Returns the bundle's sha256."""
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    members = [(MANIFEST, data)]
    signature = _signature(key, data)
    if signature:
        members.append((SIGNATURE, (signature + "\n").encode("ascii")))
    with AtomicWriter(path) as writer:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, content in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(content), 0o600, int(_dt.datetime.now().timestamp())
                tar.addfile(info, io.BytesIO(content))
            for name, source in payload:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = os.path.getsize(source), 0o600, int(os.path.getmtime(source))
                with open(source, "rb") as handle:
                    tar.addfile(info, handle)
        writer.commit()
        return writer.sha256


class Bundle:
    """A verified bundle: its manifest, and its payload files read on demand (each checked against its sha256)."""

    def __init__(self, path: str, manifest: Dict[str, Any], members: Dict[str, tarfile.TarInfo]):
        self.path = path
        self.manifest = manifest
        self._members = members

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    @property
    def sequence(self) -> int:
        return int(self.manifest["sequence"])

    @property
    def servers(self) -> Dict[str, Dict[str, Any]]:
        return self.manifest["servers"]

    def read(self, name: str) -> bytes:
        with tarfile.open(self.path, "r:") as tar:
            handle = tar.extractfile(self._members[name])
            if handle is None:  # a member that is no regular file (the manifest check refuses those)
                raise BundleError(f"{self.path}: a bundle member is not a file")
            return handle.read()

    def extract(self, name: str, dest: str, sha256: str) -> None:
        """Copy one payload file atomically to ``dest``, checking its sha256 again (the medium may change)."""
        with tarfile.open(self.path, "r:") as tar, AtomicWriter(dest) as writer:
            handle = tar.extractfile(self._members[name])
            if handle is None:  # a member that is no regular file (the manifest check refuses those)
                raise BundleError(f"{self.path}: a bundle member is not a file")
            shutil.copyfileobj(handle, writer)
            if writer.sha256 != sha256:
                raise BundleError(f"{self.path}: {name} changed while it was read (sha256 {writer.sha256}, manifest "
                                  f"{sha256}); nothing of it was taken")
            writer.commit()


def payload_files(manifest: Dict[str, Any]) -> Dict[str, str]:
    """{name in the bundle: sha256} of every payload file the manifest lists."""
    out = {}
    for host, entry in (manifest.get("servers") or {}).items():
        for item in entry.get("files") or []:
            out[f"servers/{host}/{item['name']}"] = item["sha256"]
        if entry.get("ack"):
            out[f"servers/{host}/{entry['ack']['name']}"] = entry["ack"]["sha256"]
    return out


def read_bundle(path: str, kind: str, site: str, key: Optional[str]) -> Bundle:
    """Open and verify a bundle whole (site, kind, signature, every file's sha256, nothing more, nothing less);
    raise BundleError saying why it is refused."""
    where = os.path.basename(path)
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the `with tar` below; opening is what may fail
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{where}: not a readable bundle ({exc}); it is corrupted or not a bundle") from None
    with tar:
        try:
            infos = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{where}: corrupted ({exc})") from None
        members: Dict[str, tarfile.TarInfo] = {}
        for info in infos:
            if not info.isfile() or info.name in members or info.name.startswith("/") or ".." in info.name.split("/"):
                raise BundleError(f"{where}: unexpected member {info.name!r} (not a plain file, or twice)")
            members[info.name] = info

        def content(name: str) -> bytes:
            handle = tar.extractfile(members[name])
            if handle is None:  # a member that is no regular file (the manifest check refuses those)
                raise BundleError(f"{where}: a bundle member is not a file")
            return handle.read()

        if MANIFEST not in members:
            raise BundleError(f"{where}: no {MANIFEST}; it is corrupted or not a bundle")
        data = content(MANIFEST)
        signature = content(SIGNATURE).decode("ascii", "replace").strip() if SIGNATURE in members else None
        if key:
            if signature is None:
                raise BundleError(f"{where}: not signed, but this site has a key (fne_sync_site_key): refused")
            if not hmac.compare_digest(signature, _signature(key, data) or ""):
                raise BundleError(f"{where}: signature does not match the site key: the bundle was changed after it "
                                  "was written, or written with another key; refused")
        elif signature is not None:
            raise BundleError(f"{where}: signed, but no site key is configured here (fne_sync_site_key): it cannot "
                              "be verified; refused")
        try:
            manifest = json.loads(data)
            expected = payload_files(manifest)
            bundle_site, bundle_kind = manifest["site"], manifest["kind"]
            manifest["sequence"], manifest["id"] = int(manifest["sequence"]), str(manifest["id"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{where}: its manifest is not a bundle manifest ({exc!r}); refused") from None
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{where}: manifest format {manifest.get('format')!r}, this collection reads {FORMAT}")
        if bundle_kind != kind:
            raise BundleError(f"{where}: this is {'an outgoing' if bundle_kind == OUTGOING else 'a return'} bundle, "
                              f"{'an outgoing' if kind == OUTGOING else 'a return'} bundle is needed here")
        if bundle_site != site:
            raise BundleError(f"{where}: a bundle of site {bundle_site!r}, this is site {site!r}: refused")
        extra = set(members) - set(expected) - {MANIFEST, SIGNATURE}
        missing = set(expected) - set(members)
        if extra or missing:
            raise BundleError(f"{where}: its files do not match its manifest (missing: {sorted(missing)}, not listed: "
                              f"{sorted(extra)}); refused")
        for name, sha in expected.items():
            handle = tar.extractfile(members[name])
            if handle is None:  # a member that is no regular file (the manifest check refuses those)
                raise BundleError(f"{where}: a bundle member is not a file")
            digest = hashlib.sha256()
            for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(chunk)
            if digest.hexdigest() != sha:
                raise BundleError(f"{where}: {name} is corrupted (sha256 {digest.hexdigest()}, manifest {sha}); "
                                  "refused, nothing changed")
    return Bundle(path, manifest, members)


def bundle_paths(sources: List[str], kind: str) -> List[str]:
    """The bundle files named, a folder standing for every bundle of that kind in it."""
    suffix = "out" if kind == OUTGOING else "return"
    paths = []
    for src in sources:
        src = os.path.abspath(os.path.expanduser(src))
        if os.path.isdir(src):
            paths += sorted(os.path.join(src, n) for n in os.listdir(src)
                            if (m := BUNDLE_NAME.match(n)) and m.group("kind") == suffix)
        elif os.path.isfile(src):
            paths.append(src)
        else:
            raise BundleError(f"{src}: no such bundle or folder")
    return paths


def read_bundles(sources: List[str], kind: str, site: str, key: Optional[str]) -> List[Bundle]:
    """Every bundle verified (one refused refuses the run: nothing changed), one per id, in sequence order."""
    by_id: Dict[str, Bundle] = {}
    for path in bundle_paths(sources, kind):
        bundle = read_bundle(path, kind, site, key)
        by_id.setdefault(bundle.id, bundle)  # the same bundle carried twice on one medium
    ordered = sorted(by_id.values(), key=lambda b: b.sequence)
    for first, second in zip(ordered, ordered[1:]):
        if first.sequence == second.sequence:
            raise BundleError(f"two different bundles with sequence {first.sequence}: {first.path} ({first.id}) and "
                              f"{second.path} ({second.id}); refused")
    return ordered


# ---- the site's bookkeeping --------------------------------------------------------------------------------------
class SiteState:
    """``STORE/.airgap/<side>/<site>/state.json`` and the bundles kept there, under one lock."""

    def __init__(self, store: str, side: str, site: str):
        self.site = check_site(site)
        self.dir = os.path.join(os.path.abspath(os.path.expanduser(store)), AIRGAP_DIR, side, site)
        self.path = os.path.join(self.dir, "state.json")
        self.bundles_dir = os.path.join(self.dir, "bundles")

    def load(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{self.path} is damaged ({exc}); restore it from a backup") from None

    def save(self, state: Dict[str, Any]) -> None:
        write_atomic(self.path, [(json.dumps(state, indent=1, sort_keys=True) + "\n").encode("utf-8")])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        ensure_dir(self.bundles_dir)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreError(f"{self.dir} is locked by another run; try again when it has finished") from None
            yield
        finally:
            os.close(fd)


def _copy_to(src: str, folder: str) -> str:
    """Copy a bundle onto the medium atomically (an identical copy already there is left alone)."""
    ensure_dir(folder)
    dest = os.path.join(folder, os.path.basename(src))
    if os.path.exists(dest) and sha256_file(dest) == sha256_file(src):
        return dest
    with open(src, "rb") as handle:
        write_atomic(dest, iter(lambda: handle.read(1 << 20), b""))
    return dest


def _fetched(store: ServerStore) -> Dict[str, Dict[str, Any]]:
    """Each file's last ``fetched`` event: its records, and whether a forced download brought it."""
    return {e.get("file"): e for e in store.ledger() if e.get("event") == "fetched"}


def beyond_acks(store: ServerStore, when: Optional[_dt.datetime]) -> bool:
    """Whether the back office's expected sync time (a mismatch answer's ``expected_time``) is later than every
    acknowledgment this outside store holds (each is named by the sync time of the message it acknowledges): the
    back office holds messages whose acknowledgment is lost."""
    times = [sync_time_of(os.path.basename(a)[: -len(ACK_SUFFIX)] + SYNC_SUFFIX) for a in store.pending_acks()]
    newest = max((t for t in times if t is not None), default=None)  # the outside never processes its acks
    return when is not None and (newest is None or when > newest)


def _entry(host: str, changed: bool = False, msg: str = "", failed: bool = False) -> Dict[str, Any]:
    return {"host": host, "changed": changed, "failed": failed, "msg": f"{host}: {msg or 'nothing to do'}"}


# ---- inside: export ---------------------------------------------------------------------------------------------
def export(store: str, site: str, key: Optional[str], dest: Optional[str], hosts: Dict[str, Dict[str, Any]],
           lock_timeout: float = 5, check_mode: bool = False, stale_days: float = 7,
           recover: Optional[Callable[[Dict[str, str]], Dict[str, Dict[str, Any]]]] = None) -> Dict[str, Any]:
    """Write one outgoing bundle with every outbox file of ``hosts`` ({name: {host_id}}) not yet in a bundle; copy
    every unacknowledged bundle to ``dest``. A server marked ``needs_force`` is held (nothing new of it is bundled)
    until its recovery may run; then ``recover({name: reason})`` (the first half of the documented recovery, see
    plugins/action/bundle.py) runs for it first, and its forced files go out flagged ``forced``."""
    side = SiteState(store, "inside", site)
    entries = {h: _entry(h) for h in hosts}
    with contextlib.nullcontext() if check_mode else side.lock():  # check mode creates nothing, not even a folder
        state = side.load() or {"site": site, "next_sequence": 1, "bundles": []}
        settled = _settle(state, store)
        stores = {h: ServerStore(store, h) for h in hosts}
        recovered = _recover_ready(state, store, stores, entries, recover, check_mode)
        settled = settled or bool(recovered)
        in_bundles = {(h, f) for b in state["bundles"] if not b.get("done") for h, fs in b["servers"].items()
                      for f in fs}
        servers: Dict[str, Dict[str, Any]] = {}
        payload: List[Tuple[str, str]] = []
        for host, info in hosts.items():
            server = stores[host]
            if not server.exists():
                continue
            with contextlib.nullcontext() if check_mode else server.lock(lock_timeout):
                reason = server.needs_force()
                if reason:  # held: its new files would only queue behind what the recovery replaces
                    if not entries[host]["failed"] and not entries[host]["changed"]:  # (check mode: "would")
                        entries[host]["msg"] = f"{host}: recovery pending: {reason}"
                    continue
                files = [p for p in server.outbox_files() if (host, os.path.basename(p)) not in in_bundles]
                if not files and host in recovered:
                    # nothing after the last processed acknowledgment: what the outside holds of this server is
                    # in the back office already or comes again later; it goes aside there all the same
                    servers[host] = {"host_id": info.get("host_id"), "files": [], "waiting_for": None, "forced": True}
                if not files:
                    continue
                fetched = _fetched(server)
                items = [{"name": os.path.basename(p), "sha256": sha256_file(p), "size": os.path.getsize(p),
                          "records": fetched.get(os.path.basename(p), {}).get("records")} for p in files]
                servers[host] = {"host_id": info.get("host_id"), "files": items,
                                 "waiting_for": items[-1]["name"][: -len(SYNC_SUFFIX)] + ACK_SUFFIX}
                if any(fetched.get(i["name"], {}).get("forced") for i in items):
                    # a forced download starts at the last processed acknowledgment: it replaces every file of
                    # this server the outside still holds
                    servers[host]["forced"] = True
                payload += [(f"servers/{host}/{os.path.basename(p)}", p) for p in files]
        written = None
        if servers and not check_mode:
            sequence = int(state["next_sequence"])
            manifest = {"format": FORMAT, "kind": OUTGOING, "site": site, "sequence": sequence,
                        "id": f"{site}-out-{sequence:06d}-{secrets.token_hex(4)}", "created": utcnow(),
                        "servers": servers}
            name = bundle_name(site, OUTGOING, sequence)
            _remove_orphans(side, state)
            sha = write_bundle(os.path.join(side.bundles_dir, name), manifest, payload, key)
            state["bundles"].append({"id": manifest["id"], "sequence": sequence, "name": name, "sha256": sha,
                                     "created": manifest["created"], "done": False,
                                     "servers": {h: [i["name"] for i in e["files"]] for h, e in servers.items()}})
            state["next_sequence"] = sequence + 1
            for host in (h for h, e in servers.items() if e.get("forced")):
                # a mismatch reported before the outside took this bundle is no news: it names a replaced file
                state.setdefault("forced_out", {})[host] = sequence
            side.save(state)
            written = name
            for host, entry in servers.items():
                forced = " (forced: they replace what the outside holds of this server)" if entry.get("forced") else ""
                stores[host].log("bundled", file=entry["files"][-1]["name"] if entry["files"] else None,
                                 detail=f"{len(entry['files'])} file(s) in outgoing bundle {manifest['id']}{forced}")
                _say(entries[host], f"{len(entry['files'])} file(s) into bundle {name}{forced}")
        elif settled and not check_mode:
            side.save(state)
        if servers and check_mode:
            for host, entry in servers.items():
                _say(entries[host], f"would put {len(entry['files'])} file(s) into a new bundle")
        outstanding = [b for b in state["bundles"] if not b.get("done")]
        copied = [] if check_mode or not dest else \
            [_copy_to(os.path.join(side.bundles_dir, b["name"]), dest) for b in outstanding]
        for host in hosts:
            waiting = [b["name"] for b in outstanding if host in b["servers"] and
                       _waiting(store, host, b["servers"][host])]
            if waiting and not entries[host]["changed"] and not stores[host].needs_force():
                entries[host]["msg"] = f"{host}: in transit in {', '.join(waiting)}"
            entries[host]["in_transit"] = waiting
    now = _dt.datetime.now(_dt.timezone.utc)
    out = [{"name": b["name"], "id": b["id"], "created": b["created"], "age_days": _age_days(b["created"], now)}
           for b in outstanding]
    for item in out:
        item["stale"] = item["age_days"] > stale_days
    return {"changed": written is not None, "written": written, "copied": copied, "outstanding": out,
            "stale": [i["name"] for i in out if i["stale"]], "hosts": entries}


def _say(entry: Dict[str, Any], text: str) -> None:
    """Add what happened to a server's entry (after what happened before in this run)."""
    entry["msg"] = f"{entry['msg']}; {text}" if entry["changed"] else f"{entry['host']}: {text}"
    entry["changed"] = True


def _recover_ready(state: Dict[str, Any], store: str, stores: Dict[str, ServerStore],
                   entries: Dict[str, Dict[str, Any]],
                   recover: Optional[Callable[[Dict[str, str]], Dict[str, Dict[str, Any]]]],
                   check_mode: bool) -> set:
    """The first half of the documented recovery for each server marked ``needs_force`` whose acknowledgment so far
    is in (a forced message starts at the last acknowledgment the server processed, and the back office refuses it
    while it holds more): the newest return bundle naming the server reported the outside's mismatch (it carried
    the outside's newest acknowledgment, and after a mismatch the outside uploads nothing more of that server), or no
    bundle of the server is in transit. Returns the servers recovered."""
    problems, seen_by = state.get("problems_seen") or {}, state.get("problem_received") or {}
    ready: Dict[str, str] = {}
    for host, server in stores.items():
        reason = server.needs_force() if server.exists() else None
        if not reason:
            continue
        seen = problems.get(host)
        # the mismatch is news only from an outside that had taken the last forced bundle of this server (a
        # return written before it arrived reports the file that bundle replaces)
        mismatch_back = seen and (state.get("last_return") or {}).get(host, seen) == seen and \
            (seen_by.get(host) is None or seen_by[host] >= (state.get("forced_out") or {}).get(host, 0))
        if mismatch_back or not _in_transit_for(state, store, host):
            ready[host] = reason
    if not ready or recover is None:
        return set()
    if check_mode:
        for host in ready:
            _say(entries[host], "would run the recovery's first half (process the newest acknowledgment, set the "
                                "outbox aside, download with force) and bundle the forced files")
        return set()
    recovered = set()
    for host, result in recover(ready).items():
        if result.get("failed"):
            entries[host].update(failed=True, msg=result["msg"])
            continue
        _say(entries[host], result["msg"].split(": ", 1)[-1])
        recovered.add(host)
    return recovered


def _in_transit_for(state: Dict[str, Any], store: str, host: str) -> bool:
    return any(not b.get("done") and host in b["servers"] and _waiting(store, host, b["servers"][host])
               for b in state.get("bundles", []))


def _parse_utc(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


def _age_days(created: str, now: _dt.datetime) -> float:
    return round((now - _parse_utc(created)).total_seconds() / 86400, 2)


def _remove_orphans(side: SiteState, state: Dict[str, Any]) -> None:
    """A bundle written by a run that died before recording it was never carried (copies follow the record)."""
    known = {b["name"] for b in state["bundles"]}
    for name in os.listdir(side.bundles_dir):
        if BUNDLE_NAME.match(name) and name not in known:
            os.unlink(os.path.join(side.bundles_dir, name))


def _settle(state: Dict[str, Any], store: str) -> bool:
    """A bundle is done when none of its files is still waiting in its server's outbox and the outside has it (an
    acknowledgment came back for a file of it or of a later bundle): files set aside for a forced download, or
    lost with a wiped store, are not acknowledged, and the outside takes bundles in sequence order only."""
    changed = False
    if "received_upto" not in state:  # a state written before it was kept: its done bundles were acknowledged
        state["received_upto"] = max((b["sequence"] for b in state.get("bundles", []) if b.get("done")), default=0)
    for bundle in state.get("bundles", []):
        if bundle.get("done") or bundle["sequence"] > state["received_upto"]:
            continue
        if not any(_waiting(store, h, fs) for h, fs in bundle["servers"].items()):
            bundle["done"], changed = utcnow(), True
    return changed


def _waiting(store: str, host: str, files: List[str]) -> bool:
    """A bundle is not yet acknowledged for a server while one of its files waits in that server's outbox."""
    return any(os.path.exists(os.path.join(store, host, "outbox", f)) for f in files)


# ---- inside: what is in transit, for the fleet report -----------------------------------------------------------
def in_transit(store: str, stale_days: float,
               now: Optional[_dt.datetime] = None) -> Tuple[Dict[str, List[Dict[str, Any]]], List[str]]:
    """For the fleet report: each server's outgoing bundles not yet acknowledged for it, of every site of the inside
    store, oldest first ({host: [{site, bundle, id, created, age_days, stale, files}]}), and what could not be read
    (one line per site). Read only: ``state.json`` is replaced atomically, so it is read whole without the site's
    lock (a carry run may hold it), and nothing is settled or saved here. A site whose state cannot be read shows
    no bundle; no air gap at all is no bundle and no problem."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    root = os.path.join(os.path.abspath(os.path.expanduser(store)), AIRGAP_DIR, "inside")
    out: Dict[str, List[Dict[str, Any]]] = {}
    problems: List[str] = []
    try:
        sites = sorted(n for n in os.listdir(root) if SITE_RE.match(n) and os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return out, problems
    except OSError as exc:
        return out, [f"{root} cannot be read ({exc.strerror or exc}): no bundle in transit is shown"]
    for site in sites:
        side = SiteState(store, "inside", site)
        try:
            found = []
            for bundle in side.load().get("bundles") or []:
                if bundle.get("done"):
                    continue
                age = _age_days(bundle["created"], now)
                for host, files in bundle["servers"].items():
                    if _waiting(store, host, files):
                        found.append((host, {"site": site, "bundle": bundle["name"], "id": bundle["id"],
                                             "created": bundle["created"], "age_days": age,
                                             "stale": age > stale_days, "files": len(files)}))
        except StoreError as exc:  # not JSON: SiteState.load says so
            problems.append(f"site {site}: {exc}; no bundle of this site is shown")
            continue
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # JSON, but not the state export writes
            problems.append(f"site {site}: {side.path} is damaged ({exc!r}); restore it from a backup; no bundle of "
                            "this site is shown")
            continue
        except OSError as exc:
            problems.append(f"site {site}: {side.path} cannot be read ({exc.strerror or exc}); no bundle of this "
                            "site is shown")
            continue
        for host, item in found:
            out.setdefault(host, []).append(item)
    for items in out.values():
        items.sort(key=lambda i: (i["created"], i["site"], i["bundle"]))
    return out, problems


# ---- outside: upload --------------------------------------------------------------------------------------------
def upload(store: str, site: str, key: Optional[str], sources: List[str], dest: Optional[str],
           upload_servers: Callable[[str, List[str]], Dict[str, Dict[str, Any]]],
           check_mode: bool = False) -> Dict[str, Any]:
    """Admit the outgoing bundles in sequence order into the outside store, upload through
    ``upload_servers(root, hosts)`` (the fleet's upload of each server's outbox, see plugins/action/bundle.py), and
    write a return bundle with each server's newest acknowledgment to ``dest``."""
    side = SiteState(store, "outside", site)
    root = os.path.join(side.dir, "servers")
    bundles = read_bundles(sources, OUTGOING, site, key)
    if not bundles:
        raise BundleError(f"no outgoing bundle of site {site} in {', '.join(sources)}")
    _check_sequence(side.load(), bundles, site)  # before the lock, which creates the site's folder
    with contextlib.nullcontext() if check_mode else side.lock():
        state = side.load() or {"site": site, "received": {}, "next_return": 1, "returns": []}
        received = _check_sequence(state, bundles, site)
        entries: Dict[str, Dict[str, Any]] = {}
        if check_mode:
            for bundle in bundles:
                for host, entry in bundle.servers.items():
                    entries.setdefault(host, _entry(host))["msg"] = \
                        f"{host}: would take bundle {bundle.sequence} ({len(entry['files'])} file(s))"
            return {"changed": False, "hosts": entries, "return_bundle": None, "copied": []}
        hosts = _admit(side, state, received, bundles, root)
        for host, entry in upload_servers(root, hosts).items():
            entries[host] = dict(_entry(host), **entry)
        return_name, copied = _write_return(side, state, root, hosts, entries, key, dest)
    return {"changed": any(e.get("changed") for e in entries.values()) or return_name is not None,
            "hosts": entries, "return_bundle": return_name, "copied": copied,
            "received": [b.id for b in bundles]}


def _admit(side: SiteState, state: Dict[str, Any], received: Dict[int, Dict[str, Any]], bundles: List[Bundle],
           root: str) -> List[str]:
    """Take the bundles' files into the outside store, each file once (a re-carried one is there already); record
    each bundle once all its files are in. Returns every server of the outside store."""
    for bundle in bundles:
        for host, entry in bundle.servers.items():
            server = ServerStore(root, host).ensure()
            if entry.get("forced") and bundle.sequence not in received:
                # a forced download starts at the last acknowledgment the license server processed: it replaces
                # every file of this server still waiting here (this bundle's own, admitted before a run died, stay)
                server.resume()  # an accepted file (its ack exists) goes to sent/, never to superseded/
                server.supersede(f"replaced by the forced download in bundle {bundle.id}",
                                 keep=[i["name"] for i in entry["files"]])
                server.clear_needs_force()  # the mismatch is answered; the forced files' upload says what is next
            held = set()
            for folder in (server.outbox, server.sent, server.quarantine):
                held.update(os.listdir(folder))
            incoming = os.path.join(server.dir, ".incoming")
            ensure_dir(incoming)
            for item in entry["files"]:
                superseded = os.path.join(server.superseded, item["name"])
                if item["name"] in held or (os.path.exists(superseded) and sha256_file(superseded) == item["sha256"]):
                    continue  # a re-carried file: the outside store has it already
                tmp = os.path.join(incoming, item["name"])
                bundle.extract(f"servers/{host}/{item['name']}", tmp, item["sha256"])
                server.admit(tmp, sha256=item["sha256"], records=item.get("records"), event="fetched",
                             forced=bool(entry.get("forced")))
        if bundle.sequence not in received:
            received[bundle.sequence] = {"id": bundle.id, "received": utcnow()}
            state["received"] = {str(k): v for k, v in sorted(received.items())}
            side.save(state)
    return sorted(n for n in os.listdir(root) if not n.startswith(".")) if os.path.isdir(root) else []


def _check_sequence(state: Dict[str, Any], bundles: List[Bundle], site: str) -> Dict[int, Dict[str, Any]]:
    """Outgoing bundles are taken in sequence order, each sequence number once, with one id."""
    received = {int(k): v for k, v in (state.get("received") or {}).items()}
    for bundle in bundles:
        known = received.get(bundle.sequence)
        if known and known["id"] != bundle.id:
            raise BundleError(f"{os.path.basename(bundle.path)}: sequence {bundle.sequence} was already received "
                              f"as bundle {known['id']}, this one is {bundle.id}: refused (was the inside store "
                              "replaced? see docs/air-gap.md)")
    expected = max(received, default=0) + 1
    for bundle in bundles:
        if bundle.sequence in received:
            continue
        if bundle.sequence != expected:
            raise BundleError(f"{os.path.basename(bundle.path)}: sequence {bundle.sequence}, but bundle "
                              f"{expected} of site {site} has not arrived: carry it too (the inside copies every "
                              "unacknowledged bundle onto the medium) and run again; nothing changed")
        expected += 1
    return received


def _write_return(side: SiteState, state: Dict[str, Any], root: str, hosts: List[str],
                  entries: Dict[str, Dict[str, Any]], key: Optional[str],
                  dest: Optional[str]) -> Tuple[Optional[str], list]:
    """A return bundle with each server's newest acknowledgment (it covers the older ones), and a server's open
    problem (a mismatch the inside must recover from). A run that adds nothing copies the last one again."""
    servers: Dict[str, Dict[str, Any]] = {}
    payload: List[Tuple[str, str]] = []
    for host in hosts:
        server = ServerStore(root, host)
        acks = server.pending_acks()
        problem = server.needs_force()
        if not acks and not problem:
            continue
        servers[host] = {"problem": problem}
        if acks:
            servers[host]["ack"] = {"name": os.path.basename(acks[-1]), "sha256": sha256_file(acks[-1])}
            payload.append((f"servers/{host}/{os.path.basename(acks[-1])}", acks[-1]))
    last = state["returns"][-1] if state["returns"] else None
    if not servers:
        return None, []
    if last and last["servers"] == servers:
        return None, [_copy_to(os.path.join(side.bundles_dir, last["name"]), dest)] if dest else []
    sequence = int(state["next_return"])
    manifest = {"format": FORMAT, "kind": RETURN, "site": side.site, "sequence": sequence,
                "id": f"{side.site}-return-{sequence:06d}-{secrets.token_hex(4)}", "created": utcnow(),
                "servers": servers, "received": max((int(k) for k in state.get("received") or {}), default=0)}
    name = bundle_name(side.site, RETURN, sequence)
    write_bundle(os.path.join(side.bundles_dir, name), manifest, payload, key)
    state["returns"].append({"name": name, "id": manifest["id"], "servers": servers})
    state["next_return"] = sequence + 1
    side.save(state)
    for host in servers:
        entries.setdefault(host, _entry(host))["return_bundle"] = name
    return name, [_copy_to(os.path.join(side.bundles_dir, name), dest)] if dest else []


# ---- inside: import ---------------------------------------------------------------------------------------------
def import_returns(store: str, site: str, key: Optional[str], sources: List[str], hosts: List[str],
                   lock_timeout: float = 5, check_mode: bool = False) -> Dict[str, Any]:
    """Take the return bundles' acknowledgments into each server's store: the acknowledgment goes to ``acks/``
    (the fleet's acknowledge step processes it) and the outbox files it covers go to ``sent/``. An acknowledgment
    not newer than the one a server already has is skipped, so importing twice changes nothing."""
    side = SiteState(store, "inside", site)
    bundles = read_bundles(sources, RETURN, site, key)
    if not bundles:
        raise BundleError(f"no return bundle of site {site} in {', '.join(sources)}")
    entries = {h: _entry(h) for h in hosts}
    with contextlib.nullcontext() if check_mode else side.lock():
        state = side.load() or {"site": site, "next_sequence": 1, "bundles": []}
        acked: Dict[str, str] = state.setdefault("acked", {})
        dirty = False
        for bundle in bundles:
            for host, entry in bundle.servers.items():
                if host not in entries:
                    continue  # another slice's or an unlisted server: its store is not this run's to change
                ack = entry.get("ack")
                server = ServerStore(store, host)
                if not check_mode:  # export's recovery reads whether the newest return naming it had a problem
                    last = state.setdefault("last_return", {})
                    if bundle.sequence > last.get(host, 0):
                        last[host], dirty = bundle.sequence, True
                # a problem is taken once per return bundle (a re-import, or an older bundle, changes nothing)
                problems: Dict[str, int] = state.setdefault("problems_seen", {})
                if entry.get("problem") and not check_mode and server.exists() and \
                        bundle.sequence > problems.get(host, 0):
                    with server.lock(lock_timeout):
                        if server.needs_force() is None:
                            server.set_needs_force(f"outside upload: {entry['problem']}")
                    problems[host] = bundle.sequence
                    state.setdefault("problem_received", {})[host] = bundle.manifest.get("received")
                    dirty = True
                    entries[host].update(changed=True, msg=f"{host}: the outside reported: {entry['problem']}")
                if not ack or ack["name"] <= acked.get(host, ""):
                    continue
                if check_mode:
                    entries[host].update(changed=True, msg=f"{host}: would take acknowledgment {ack['name']}")
                    continue
                if not server.exists():
                    raise BundleError(f"{host}: no store in {store}: is this the site's inside store?")
                with server.lock(lock_timeout):
                    moved = _take_ack(server, bundle, host, ack)
                acked[host] = ack["name"]
                # the outside uploaded the acknowledged file: it has its bundle and every earlier one
                file = ack["name"][: -len(ACK_SUFFIX)] + SYNC_SUFFIX
                for sent in state.get("bundles", []):
                    if file in sent["servers"].get(host, []) and sent["sequence"] > state.get("received_upto", 0):
                        state["received_upto"] = sent["sequence"]
                dirty = True
                entries[host].update(changed=True, msg=f"{host}: acknowledgment {ack['name']} from "
                                                       f"{os.path.basename(bundle.path)} ({moved} file(s) accepted)")
        dirty = (not check_mode and _settle(state, store)) or dirty
        if dirty and not check_mode:
            seen = state.setdefault("imported", [])
            seen += [b.id for b in bundles if b.id not in seen]
            side.save(state)
    return {"changed": dirty, "hosts": entries, "imported": [b.id for b in bundles]}


def _take_ack(server: ServerStore, bundle: Bundle, host: str, ack: Dict[str, str]) -> int:
    """The back office holds every outbox file up to the acknowledged one (an acknowledgment covers all before
    it): write the acknowledgment, move those files to sent/."""
    stem = ack["name"][: -len(ACK_SUFFIX)]
    data = bundle.read(f"servers/{host}/{ack['name']}")
    if hashlib.sha256(data).hexdigest() != ack["sha256"]:
        raise BundleError(f"{bundle.path}: {ack['name']} changed while it was read; refused")
    moved = 0
    for path in server.outbox_files():
        name = os.path.basename(path)
        if name[: -len(SYNC_SUFFIX)] < stem:
            server.mark_accepted(path, f"uploaded from an outgoing bundle; covered by {ack['name']} of return "
                                       f"bundle {bundle.id}")
            moved += 1
    sync_file = os.path.join(server.outbox, stem + SYNC_SUFFIX)
    if os.path.exists(sync_file):
        moved += 1
    if not os.path.exists(server.ack_for(sync_file)):
        server.record_ack(sync_file, data, detail=f"uploaded from an outgoing bundle; return bundle {bundle.id}")
    return moved


# ---- outside with a browser only: unpack for the web page, pack what it answered --------------------------------
WEB_LIMIT = 100  # the back office's web page: up to 100 files per submission, all from one license server
ACK_FILE = "acknowledgment.bin"  # where the checklist asks to save the web page's answer in each part folder


def _parts(files: List[str]) -> List[List[str]]:
    return [files[i:i + WEB_LIMIT] for i in range(0, len(files), WEB_LIMIT)]


def unpack(store: str, site: str, key: Optional[str], sources: List[str], dest: str) -> Dict[str, Any]:
    """Take the outgoing bundles into the outside store as ``upload`` does, then lay out every server's files still
    waiting for the back office in ``DEST/SITE/HOST/part-NN/`` (at most 100 files each, in upload order) with a
    checklist, ``DEST/SITE/CHECKLIST.txt``, for the back office's web page."""
    side = SiteState(store, "outside", site)
    root = os.path.join(side.dir, "servers")
    bundles = read_bundles(sources, OUTGOING, site, key)
    if not bundles:
        raise BundleError(f"no outgoing bundle of site {site} in {', '.join(sources)}")
    _check_sequence(side.load(), bundles, site)
    out = os.path.join(os.path.abspath(os.path.expanduser(dest)), site)
    entries: Dict[str, Dict[str, Any]] = {}
    lines = [f"Site {site}: upload on the back office's page \"Upload synchronization history\", in this order.",
             "Each line is one submission: choose every file of the folder (all from one license server), submit,",
             f"download the acknowledgment and save it in that folder as {ACK_FILE}. Go on with the next part of a",
             "server only after its previous part was acknowledged. Then run fne.offline_sync.pack_return.", ""]
    with side.lock():
        state = side.load() or {"site": site, "received": {}, "next_return": 1, "returns": []}
        received = _check_sequence(state, bundles, site)
        for host in _admit(side, state, received, bundles, root):
            entries[host] = _entry(host)
            waiting = {os.path.basename(p) for p in ServerStore(root, host).outbox_files()}
            # a part, once laid out, never changes (its acknowledgment covers exactly its files): new files go
            # into new parts
            parts = sorted(glob_parts(os.path.join(out, host)), key=_part_number)
            laid_out = {n for part in parts for n in os.listdir(part)}
            new = sorted(waiting - laid_out)
            number = max((_part_number(p) for p in parts), default=0)
            for chunk in _parts(new):
                number += 1
                folder = os.path.join(out, host, f"part-{number:02d}")
                ensure_dir(folder)
                for name in chunk:
                    _copy_to(os.path.join(root, host, "outbox", name), folder)
                parts.append(folder)
            for part in parts:
                names = sorted(n for n in os.listdir(part) if n.endswith(SYNC_SUFFIX))
                if names and names[-1] in waiting and not os.path.exists(os.path.join(part, ACK_FILE)):
                    lines.append(f"[ ] {host} {os.path.basename(part)}: {len(names)} file(s), {names[0]} .. "
                                 f"{names[-1]} -> {part}")
            if new:
                entries[host].update(changed=True, msg=f"{host}: {len(new)} file(s) laid out for the web page in "
                                                       f"{os.path.join(out, host)}")
        ensure_dir(out)
        write_atomic(os.path.join(out, "CHECKLIST.txt"), [("\n".join(lines) + "\n").encode("utf-8")])
    return {"changed": any(e["changed"] for e in entries.values()), "hosts": entries,
            "checklist": os.path.join(out, "CHECKLIST.txt"), "lines": lines, "copied": []}


def pack(store: str, site: str, key: Optional[str], folder: str, dest: Optional[str]) -> Dict[str, Any]:
    """The acknowledgments saved from the web page (``FOLDER/SITE/HOST/part-NN/acknowledgment.bin``) into the
    outside store (each covers its part's files and every earlier one), then a return bundle as ``upload`` writes."""
    side = SiteState(store, "outside", site)
    root = os.path.join(side.dir, "servers")
    base = os.path.join(os.path.abspath(os.path.expanduser(folder)), site)
    entries: Dict[str, Dict[str, Any]] = {}
    with side.lock():
        state = side.load() or {"site": site, "received": {}, "next_return": 1, "returns": []}
        hosts = sorted(n for n in os.listdir(root) if not n.startswith(".")) if os.path.isdir(root) else []
        for host in hosts:
            entries[host] = _entry(host)
            server = ServerStore(root, host)
            for part in sorted(glob_parts(os.path.join(base, host)), key=_part_number):
                ack_path = os.path.join(part, ACK_FILE)
                names = sorted(n for n in os.listdir(part) if n.endswith(SYNC_SUFFIX))
                if not os.path.isfile(ack_path) or not names:
                    continue
                last = os.path.join(server.outbox, names[-1])
                if not os.path.exists(last):
                    continue  # packed already (the acknowledgment is in the store)
                with open(ack_path, "rb") as handle:
                    data = handle.read()
                if not data:
                    raise BundleError(f"{ack_path} is empty: download the acknowledgment again")
                with server.lock():
                    for path in server.outbox_files():
                        if os.path.basename(path) < names[-1]:
                            server.mark_accepted(path, f"uploaded on the web page; covered by {ack_path}")
                    server.record_ack(last, data, detail=f"uploaded on the web page ({os.path.basename(part)})")
                entries[host].update(changed=True, msg=f"{host}: acknowledgment of {os.path.basename(part)} taken")
            waiting = len(server.outbox_files())
            if waiting:
                entries[host]["msg"] += f"; {waiting} file(s) still waiting for the web page"
        return_name, copied = _write_return(side, state, root, hosts, entries, key, dest)
    return {"changed": return_name is not None or any(e["changed"] for e in entries.values()), "hosts": entries,
            "return_bundle": return_name, "copied": copied}


def _part_number(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


def glob_parts(folder: str) -> List[str]:
    try:
        return [os.path.join(folder, n) for n in os.listdir(folder) if re.match(r"^part-\d+$", n)]
    except FileNotFoundError:
        return []
