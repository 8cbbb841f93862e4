# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compatibility check (the fne.offline_sync.compat_check action), controller only.

1. The vendor's own tools run the fleet's cycle (collect, upload, acknowledge) for one server, with a store of
   their own, through recording proxies (_recorder.py) to the real license server and back office: a real
   synchronization, as safe as the fleet's, which also shows how the real products answer.
2. The collection's HTTP client runs the same cycle against a replay of those answers, in a scratch store.
3. Each step is "compatible" when the client kept the same bytes as the tool (files and acknowledgment); otherwise
   the check names what that site needs: a profile setting (docs/compatibility.md), the tool backend, or an action
   at the back office. Three settings come from comparing what was exchanged: how the tool asks a forced download
   (`fne_lls_force_query`), the zone of the file names against the server's own `lastSyncTime`
   (`fne_lls_time_zone`), and the zone of the acknowledgment's LastSyncTime as the back-office tool printed it
   against the same time (`fne_backoffice_time_zone`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import (
    FORCE_QUERY,
    SYNC_ACK,
    SYNC_MESSAGE,
    connection_from_params,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import UNKNOWN_SERVER_RE
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    STAMP_FORMAT,
    parse_time,
    sync_time_of,
    zone_of,
)
from ansible_collections.fne.offline_sync.plugins.plugin_utils._fleet import PHASES, Options, ServerConfig, run_fleet
from ansible_collections.fne.offline_sync.plugins.plugin_utils._recorder import Exchange, Recorder, Replay
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore


def _through(params: Dict[str, Any], endpoint: Any, backend: str) -> Dict[str, Any]:
    """One side's settings, pointed at a local endpoint (plain HTTP on 127.0.0.1; the path is kept)."""
    path = urlsplit(params["url"]).path
    return dict(params, url=endpoint.url + path, backend=backend, ca_path=None, validate_certs=True, proxy=None)


def _cycle(cfg: ServerConfig, store: str) -> Dict[str, Dict[str, Any]]:
    """The fleet's cycle for one server, up to the first failed step."""
    results: Dict[str, Dict[str, Any]] = {}
    for step in PHASES:
        results[step] = run_fleet(step, [cfg], Options(store=store, workers=1))[cfg.name]
        if results[step]["failed"]:
            break
    return results


def _digests(store: str, host: str, pattern: str) -> Dict[str, str]:
    """name -> sha256 of the store's files of that server matching pattern, wherever the cycle left them."""
    out = {}
    for path in sorted(glob.glob(os.path.join(store, host, "*", pattern))):
        with open(path, "rb") as handle:
            out[os.path.basename(path)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def _offset(wall: datetime, true: datetime, zero: Optional[str] = None) -> Optional[str]:
    """The zone a wall time (read as UTC) was written in, when it is a whole number of quarter hours off the true
    time; `zero` when it is not off at all."""
    minutes = round((wall - true).total_seconds() / 60)
    if minutes == 0:
        return zero
    if minutes % 15 or abs(minutes) > 14 * 60:
        return None
    sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _last_sync_time(exchanges: List[Exchange]) -> Optional[datetime]:
    """The lastSyncTime the license server answered to the acknowledgment (with a zone), if it did."""
    for exchange in exchanges:
        if exchange.path.endswith(SYNC_ACK) and 200 <= exchange.status < 300:
            try:
                text = json.loads(exchange.body.decode("utf-8")).get("lastSyncTime") or ""
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except (ValueError, AttributeError, UnicodeDecodeError):
                continue
            if when.tzinfo is not None:
                return when.astimezone(timezone.utc)
    return None


def _printed_ack_time(store: str, cfg: ServerConfig) -> Optional[datetime]:
    """The acknowledgment's LastSyncTime as the back-office tool printed it, as a wall time read as UTC (the ledger
    keeps it converted from the configured zone: converted back here)."""
    times = [e["last_sync_time"] for e in ServerStore(store, cfg.name).ledger()
             if e.get("event") == "acknowledged" and e.get("last_sync_time")]
    when = parse_time(times[-1]) if times else None
    zone = zone_of(cfg.backoffice.get("time_zone"))
    return when.astimezone(zone).replace(tzinfo=timezone.utc) if when else None


def _force_asked(exchanges: List[Exchange]) -> Optional[str]:
    """The query of the first download request, when it asked anything (a forced download)."""
    first = next((e for e in exchanges if e.path.endswith(SYNC_MESSAGE)), None)
    return first.query if first and first.query else None


@dataclasses.dataclass
class Verdict:
    step: str
    compatible: Optional[bool]  # None: not reached
    detail: str
    settings: Dict[str, str] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        state = "not reached" if self.compatible is None else "compatible" if self.compatible else "NEEDS"
        return f"{self.step}: {state}" + (f": {self.detail}" if self.detail else "")


def judge(cfg: ServerConfig, tool: Dict[str, Dict[str, Any]], http: Dict[str, Dict[str, Any]], tool_store: str,
          http_store: str, lls_exchanges: List[Exchange], client_exchanges: List[Exchange]) -> List[Verdict]:
    """One verdict per step of the cycle."""
    host = cfg.name
    verdicts = []
    for step in PHASES:
        mine, theirs = http.get(step), tool.get(step)
        if theirs is None:
            verdicts.append(Verdict(step, None, "the vendor's tool failed before it"))
        elif theirs["failed"]:
            text = theirs["msg"].split(": ", 2)[-1]
            hint = ("the back office does not know this license server: register it there (the vendor's tool "
                    "fails the same way)" if UNKNOWN_SERVER_RE.search(text) else
                    "the vendor's tool itself failed, so nothing could be compared")
            verdicts.append(Verdict(step, False, f"{hint}: {text}"))
        elif mine is None or mine["failed"]:
            text = mine["msg"].split(": ", 2)[-1] if mine else "an earlier step failed"
            verdicts.append(Verdict(step, False, "the collection's HTTP client cannot read what this server answered "
                                    f"(set fne_sync_backend: tool for it, and report the transcript): {text}",
                                    {"fne_sync_backend": "tool"}))
        else:
            verdicts.append(Verdict(step, True, ""))
    files_tool, files_http = (_digests(s, host, "*.fnesync") for s in (tool_store, http_store))
    collect = verdicts[0]
    if collect.compatible and sorted(files_tool.values()) != sorted(files_http.values()):
        collect.compatible, collect.detail = False, (
            f"the HTTP client kept other bytes than the tool: {len(files_http)} file(s) against {len(files_tool)}; "
            "set fne_sync_backend: tool for it, and report the transcript")
        collect.settings["fne_sync_backend"] = "tool"
    elif collect.compatible and sorted(files_tool) != sorted(files_http):
        collect.detail = "the same messages, named by this host's clock (the server names none): a warning each run"
    asked = _force_asked(lls_exchanges)
    if collect.compatible and asked and asked != (cfg.lls.get("force_query") or FORCE_QUERY):
        collect.compatible = False
        collect.detail = f"the vendor's tool asks a forced download with ?{asked}, the HTTP client with " \
                         f"?{_force_asked(client_exchanges) or FORCE_QUERY}"
        collect.settings["fne_lls_force_query"] = asked
    elif collect.compatible and not asked:
        collect.detail = "(how a forced download is asked was not seen: the check's store was not new)"
    upload = verdicts[1]
    acks_tool, acks_http = (_digests(s, host, "*.ack") for s in (tool_store, http_store))
    if upload.compatible and sorted(acks_tool.values()) != sorted(acks_http.values()):
        upload.compatible, upload.detail = False, "the HTTP client kept another acknowledgment than the tool"
        upload.settings["fne_sync_backend"] = "tool"
    last, names = _last_sync_time(lls_exchanges), [sync_time_of(n) for n in files_tool]
    names = [n for n in names if n is not None]
    printed = _printed_ack_time(tool_store, cfg)
    if upload.compatible and last and printed:  # the acknowledgment's time is the server's new last sync time
        zone = _offset(printed, last, "UTC")
        configured = zone_of(cfg.backoffice.get("time_zone")).utcoffset(last)
        if zone and printed - last != configured:
            upload.compatible = False
            upload.detail = (f"the back office's times are in {'UTC' + zone if zone != 'UTC' else zone}: its tool "
                             f"printed the acknowledgment's LastSyncTime as {printed.strftime('%Y-%m-%d %H:%M:%S')}, "
                             f"the server's last sync time is {last.isoformat()} (where the back office keeps "
                             "daylight saving time, set its zone name instead)")
            upload.settings["fne_backoffice_time_zone"] = zone
    acknowledge = verdicts[2]
    if acknowledge.compatible and last and names:
        zone = _offset(max(names), last)
        if zone and zone != cfg.lls.get("time_zone"):
            acknowledge.compatible = False
            newest = max(names).strftime(STAMP_FORMAT)
            acknowledge.detail = (f"the file names are in UTC{zone}: the newest is {newest}, the server's last sync "
                                  f"time {last.isoformat()}")
            acknowledge.settings["fne_lls_time_zone"] = zone
    return verdicts


def check(cfg: ServerConfig, out: str) -> Dict[str, Any]:
    """Run the check for one server; its figures, verdicts, needed settings and transcript go under `out`."""
    stamp = datetime.now(timezone.utc).strftime(STAMP_FORMAT)
    folder = os.path.join(out, f"{cfg.name}-{stamp}")
    tool_store = os.path.join(folder, "store")  # new each time: a first contact asks a forced download
    os.makedirs(folder)
    lls, bo = cfg.lls, cfg.backoffice
    with Recorder(connection_from_params(lls), "license server") as lls_rec, \
            Recorder(connection_from_params(bo), "back office") as bo_rec:
        tool = _cycle(dataclasses.replace(cfg, lls=_through(lls, lls_rec, "tool"),
                                          backoffice=_through(bo, bo_rec, "tool")), tool_store)
    with Replay(lls_rec.exchanges) as lls_rp, Replay(bo_rec.exchanges) as bo_rp, \
            tempfile.TemporaryDirectory(prefix="fne-compat-") as http_store:
        http = _cycle(dataclasses.replace(cfg, lls=_through(lls, lls_rp, "http"),
                                          backoffice=_through(bo, bo_rp, "http")), http_store)
        verdicts = judge(cfg, tool, http, tool_store, http_store, lls_rec.exchanges, lls_rp.exchanges)
    settings = {k: v for verdict in verdicts for k, v in verdict.settings.items()}
    transcript = {
        "server": cfg.name, "checked": stamp,
        "verdicts": [dataclasses.asdict(v) for v in verdicts],
        "license_server": [e.transcript() for e in lls_rec.exchanges],
        "back_office": [e.transcript() for e in bo_rec.exchanges],
        "http_client": [e.transcript() for e in lls_rp.exchanges + bo_rp.exchanges],
    }
    transcript_path = os.path.join(folder, "transcript.json")
    with open(transcript_path, "w", encoding="utf-8") as handle:
        json.dump(transcript, handle, indent=1)
    inventory = "\n".join([f"{cfg.name}:"] + [f"  {k}: {json.dumps(v)}" for k, v in sorted(settings.items())]) \
        if settings else ""
    if inventory:
        with open(os.path.join(folder, "settings.yml"), "w", encoding="utf-8") as handle:
            handle.write(inventory + "\n")
    return {
        "compatible": all(v.compatible for v in verdicts),
        "steps": {v.step: v.line() for v in verdicts},
        "settings": settings,
        "inventory": inventory,
        "transcript": transcript_path,
        "store": tool_store,
        "tool_results": {step: r["msg"] for step, r in tool.items()},
    }
