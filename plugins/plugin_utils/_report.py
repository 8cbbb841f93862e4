# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report: per-server figures and history from each store's ledger, this run's step results, the
summary lines of the play output, and the report files.

The report always covers the whole fleet: every server of this run and every server folder of the store (a
``--limit`` run or an AWX slice does not shrink it). Each real run appends one ``run`` line to the ledger of each
server it changed or failed (what the back office accepted this run, and the error if it failed; a run with
nothing to do leaves the store as it was); the history pages and charts are drawn from those lines. Files (all
0600): ``STORE/report.{json,html}`` (the latest run), ``STORE/reports/<run>.{json,html}`` (each run's own, the
newest ``KEEP_RUN_REPORTS`` kept) and
``STORE/reports/servers/<host>.html`` (one server's history). The HTML is self-contained: inline CSS, SVG and a
little JavaScript for sorting and filtering, nothing fetched."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import glob
import html
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fne.offline_sync.plugins.module_utils._files import parse_time, write_atomic
from ansible_collections.fne.offline_sync.plugins.plugin_utils._bundle import in_transit
from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import in_processes, process_count
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore, StoreError, os_error_text

UNKNOWN = {"records_synchronized": 0, "files_uploaded": 0, "last_sync": None, "recoveries": 0, "errors": 1,
           "last_error": None, "last_error_time": None, "age_days": None, "outbox": 0, "pending_acks": 0,
           "needs_force": None, "quarantined": 0, "history": []}
_SUMMARY_FIELDS = ("records_synchronized", "files_uploaded", "last_sync", "recoveries", "errors", "last_error",
                   "last_error_time", "history")
HISTORY_KEEP = 60  # runs of history per server in the cache and the pages (the ledger keeps every one)
ACCEPTED_KEEP = 100  # accepted files whose records the cache remembers (a run's figures need its own files')
KEEP_RUN_REPORTS = 100  # STORE/reports/<run>.{json,html}: the newest ones
SUMMARY_PROBLEMS = 12  # play output: at most this many problem servers by name, then "and N more"
# a server's status, most urgent first: the attention list and the default order of the table
STATUSES = ("failed", "recovery pending", "quarantined", "stale", "ok", "not in this run")


# ---- figures from the ledger -----------------------------------------------------------------------------------
def _fold(state: dict, entry: dict) -> None:
    event = entry.get("event")
    if event == "fetched":
        state["records_by_file"][entry.get("file")] = int(entry.get("records") or 0)
    elif event == "uploaded":  # the file's records move from downloaded to accepted
        name = entry.get("file")
        records = state["records_by_file"].pop(name, None)
        if records is None:
            records = state["records_accepted"].pop(name, 0)
        state["records_accepted"][name] = records
        state["files_uploaded"] += 1
        state["records_synchronized"] += records
    elif event == "processed":
        state["last_sync"] = entry.get("time")
    elif event == "recovered":
        state["recoveries"] += 1
    elif event == "error":
        state["errors"] += 1
        state["last_error"] = entry.get("detail")
        state["last_error_time"] = entry.get("time")
    elif event == "run":
        state["history"].append({"run": entry.get("run"), "time": entry.get("time"),
                                 "records": int(entry.get("records") or 0), "files": int(entry.get("files") or 0),
                                 "failed": bool(entry.get("failed")), "error": entry.get("detail"),
                                 "age_days": _age(state["last_sync"], parse_time(entry.get("time") or ""))})
        del state["history"][:-HISTORY_KEEP]


def _age(last_sync: Optional[str], now: Optional[_dt.datetime]) -> Optional[float]:
    parsed = parse_time(last_sync) if last_sync else None
    if parsed is None or now is None:
        return None
    return round(max(0.0, (now - parsed).total_seconds()) / 86400, 3)


def _fresh() -> dict:
    return {"offset": 0, "records_by_file": {}, "records_accepted": {}, "records_synchronized": 0,
            "files_uploaded": 0, "last_sync": None, "recoveries": 0, "errors": 0, "last_error": None,
            "last_error_time": None, "history": []}


def _ledger_state(store: ServerStore, state: Optional[dict] = None) -> dict:
    """The ledger folded into figures, from ``state`` (what was read so far) or ``.summary.json`` (which remembers
    the figures and how far the ledger was read, so a report reads only the new lines)."""
    if state is None:
        state = _fresh()
        with contextlib.suppress(OSError, ValueError, TypeError):
            with open(os.path.join(store.dir, ".summary.json"), encoding="utf-8") as handle:
                cached = json.load(handle)
            if set(state) <= set(cached):
                state = cached
        state["_read_from"] = state["offset"]
    try:
        size = os.path.getsize(store.ledger_path)
    except OSError:
        size = 0
    if size < state["offset"]:  # a replaced ledger: read it again from the start
        state = dict(_fresh(), _read_from=-1)
    start = state["offset"]
    if size > start:
        with open(store.ledger_path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # only whole lines: a line being written is read next time
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                _fold(state, json.loads(line))
        state["offset"] = start + end
    return state


def _save_state(store: ServerStore, state: dict) -> None:
    """Remember the figures (a real run only: never in check mode or by status). Only a cache, rebuilt from the
    ledger when lost: replaced without an fsync. Of the accepted files it keeps the newest (``records_by_file``
    holds the downloaded ones not accepted yet), so it stays small however old the store."""
    if store.exists() and state["offset"] != state.get("_read_from"):
        cached = {k: v for k, v in state.items() if k != "_read_from"}
        cached["records_accepted"] = dict(list(state["records_accepted"].items())[-ACCEPTED_KEEP:])
        with contextlib.suppress(OSError):
            _write_view(os.path.join(store.dir, ".summary.json"), json.dumps(cached, sort_keys=True))


def summarize(store: ServerStore, now: Optional[_dt.datetime] = None, update_cache: bool = False,
              state: Optional[dict] = None) -> dict:
    """Per-server figures for the report, from the ledger and the folders."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if state is None:
        state = _ledger_state(store)
        if update_cache:
            _save_state(store, state)
    out = _ledger_figures(state, now)
    out.update(outbox=len(store.outbox_files()), pending_acks=len(store.pending_acks()),
               needs_force=store.needs_force(), quarantined=len(store.quarantined()))
    return out


def _ledger_figures(state: dict, now: _dt.datetime) -> dict:
    """The figures of :func:`summarize` that come from the ledger (the folders' come from listing them)."""
    return dict({name: state[name] for name in _SUMMARY_FIELDS}, age_days=_age(state["last_sync"], now))


def store_servers(store_root: str) -> List[str]:
    """The servers the store knows: every folder with a ledger."""
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(glob.escape(store_root), "*",
                                                                                       "ledger.jsonl")))


# ---- the report --------------------------------------------------------------------------------------------------
def _run_figures(entries: List[Dict[str, Any]], records_accepted: Dict[str, int]) -> Dict[str, Any]:
    """This run of one server. Records and files count what the back office accepted, once: a forced download
    repeats records already downloaded this run, and only the file the back office took counts."""
    uploaded = sorted({f for e in entries for f in e.get("uploaded") or []})
    failed = [e for e in entries if e.get("failed")]
    return {
        "records": sum(records_accepted.get(f, 0) for f in uploaded),
        "files_uploaded": len(uploaded),
        "files_downloaded": len({f for e in entries for f in e.get("fetched") or []}),
        "acks_processed": sum(len(e.get("processed") or []) for e in entries),
        "recovered": any(e.get("recovered") for e in entries),
        "changed": any(e.get("changed") for e in entries),
        "failed": bool(failed),
        "errors": [e["msg"] for e in failed],
    }


def status_of(server: Dict[str, Any]) -> str:
    run = server.get("run")
    if run and run["failed"]:
        return "failed"
    if server["needs_force"]:
        return "recovery pending"
    if server["quarantined"]:
        return "quarantined"
    if server["stale"]:
        return "stale"
    return "ok" if run else "not in this run"


def reasons_of(server: Dict[str, Any]) -> List[str]:
    """Why a server needs attention, one short phrase per problem (empty: it does not)."""
    out = []
    run = server.get("run")
    if run and run["failed"]:
        when = f"last run ({run['time']})" if run.get("time") else "this run"
        out.append(f"failed {when}: " + " | ".join(_without_host(server["name"], m) for m in run["errors"]))
    if server.get("live") and not server["live"].get("reachable"):
        out.append(_live_text(server["live"]))
    if server["needs_force"]:
        out.append(f"awaiting recovery: {server['needs_force']}")
    if server["quarantined"]:
        out.append(f"{server['quarantined']} file(s) quarantined (list or release them with the "
                   "fne.offline_sync.quarantine playbook)")
    if server["stale"]:
        out.append("never synchronized" if server["age_days"] is None else
                   f"stale: last sync {server['last_sync']}, {server['age_days']:.1f} days ago")
    for item in server.get("in_transit") or []:  # in transit is normal; only a bundle out too long is a problem
        if item["stale"]:
            out.append(f"bundle {item['bundle']} in transit for {item['age_days']:.1f} days (since "
                       f"{item['created']}, no acknowledgment back)")
    return out


def _without_host(name: str, msg: str) -> str:
    return msg[len(name) + 2:] if msg.startswith(name + ": ") else msg


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _totals(servers: Iterable[Dict[str, Any]]) -> Dict[str, int]:
    servers = list(servers)
    in_run = [s for s in servers if s["run"]]
    return {
        "servers": len(servers),
        "in_run": len(in_run),
        "ok": sum(1 for s in in_run if not s["run"]["failed"]),
        "failed": sum(1 for s in in_run if s["run"]["failed"]),
        "changed": sum(1 for s in in_run if s["run"]["changed"]),
        "stale": sum(1 for s in servers if s["stale"]),
        "attention": sum(1 for s in servers if s["reasons"]),
        "records_this_run": sum(s["run"]["records"] for s in in_run),
        "files_uploaded_this_run": sum(s["run"]["files_uploaded"] for s in in_run),
        "records_total": sum(s["records_synchronized"] for s in servers),
        "files_total": sum(s["files_uploaded"] for s in servers),
        "recoveries_this_run": sum(1 for s in in_run if s["run"]["recovered"]),
        "recoveries_total": sum(s["recoveries"] for s in servers),
        "needs_force": sum(1 for s in servers if s["needs_force"]),
        "quarantined": sum(s["quarantined"] for s in servers),
        "in_transit": sum(1 for s in servers if s.get("in_transit")),
        "in_transit_stale": sum(1 for s in servers if any(i["stale"] for i in s.get("in_transit") or [])),
    }


def _order(servers: Dict[str, Dict[str, Any]]) -> List[str]:
    """Most urgent first, then by name."""
    return sorted(servers, key=lambda n: (STATUSES.index(servers[n]["status"]), n))


def build_report(store_root: str, hosts: List[str], topologies: Dict[str, str], results: List[Dict[str, Any]],
                 stale_days: float, now: Optional[_dt.datetime] = None,
                 failed_hosts: Optional[List[str]] = None, update_cache: bool = False,
                 secrets: Optional[Dict[str, List[str]]] = None, last_run: bool = False,
                 live: Optional[Dict[str, Dict[str, Any]]] = None,
                 backends: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The fleet report from every server's store and this run's step results. With ``update_cache`` (a real
    run) each server of ``hosts`` gets its ``run`` line in the ledger; nothing else in the store changes.
    ``last_run`` (the status playbook, which runs no step): each server's last recorded run stands for "this run";
    ``live``: what each server answered to server_info just now. An air-gapped site's inside store adds each
    server's outgoing bundles not yet acknowledged (``in_transit``); its ``stale`` flag stays about the last
    acknowledged sync."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    run_id = now.strftime("%Y%m%dT%H%M%SZ")
    transit, bundle_problems = in_transit(store_root, stale_days, now)
    in_run = set(hosts)

    def view(name: str, problem: Optional[str] = None) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        """One server's figures, and its result in this run (None: not in this run); ``problem``: why its store
        was not read."""
        entries = [r["hosts"][name] for r in results if isinstance(r, dict) and name in (r.get("hosts") or {})]
        state, store = _fresh(), None
        if problem is None:
            try:
                store = ServerStore(store_root, name, (secrets or {}).get(name, ()))
                state = _ledger_state(store)
                info = summarize(store, now, state=state)
            except (StoreError, OSError) as exc:  # one unreadable store must not hide the others
                store, problem = None, getattr(exc, "msg", None) or os_error_text(exc)
        if problem is not None:
            info = dict(UNKNOWN, last_error=problem, last_error_time=None)
            entries.append({"failed": True, "msg": f"{name}: cannot read its store: {problem}"})
        run = None
        if name in in_run:
            if name in (failed_hosts or []) and not any(e.get("failed") for e in entries):
                entries.append({"failed": True, "msg": f"{name}: failed earlier in this run (see its tasks above)"})
            run = _last_run(info) if last_run else _run_figures(entries, state["records_accepted"])
            # a run that found nothing to do leaves the server's store as it was (no line)
            if update_cache and store is not None and not last_run and (run["changed"] or run["failed"]):
                state = _log_run(store, state, run, run_id, now)
                info.update(_ledger_figures(state, now))
        if update_cache and store is not None:
            _save_state(store, state)  # only when it read new lines
        info.update(name=name, topology=topologies.get(name, "api" if name in in_run else "unknown"),
                    backend=(backends or {}).get(name), run=run)
        info["stale"] = info["age_days"] is None or info["age_days"] > stale_days
        info["in_transit"] = transit.get(name, [])
        info["reasons"] = reasons_of(info)
        info["status"] = status_of(info)
        if live and name in live:
            info["live"] = live[name]
        if last_run and name in in_run:
            return info, {"changed": False, "failed": False, "msg": _status_msg(name, info)}
        if run is not None:
            return info, {"changed": run["changed"], "failed": run["failed"], "msg": _host_msg(name, info, entries)}
        return info, None

    names = sorted(in_run | set(store_servers(store_root)))
    views = in_processes(names, process_count(0, len(names)),
                         lambda share: {name: view(name) for name in share},
                         lambda share, how: {name: view(name, f"the process reading it {how}") for name in share})
    servers = {name: views[name][0] for name in names}
    host_results = {name: views[name][1] for name in names if views[name][1] is not None}
    servers = {name: servers[name] for name in _order(servers)}
    return {
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": run_id,
        "store": os.path.abspath(os.path.expanduser(store_root)),
        "stale_days": stale_days,
        "last_run": last_run,
        "bundle_problems": bundle_problems,
        "totals": _totals(servers.values()),
        "servers": servers,
        "hosts": host_results,
    }


def _log_run(store: ServerStore, state: dict, run: Dict[str, Any], run_id: str, now: _dt.datetime) -> dict:
    """One ``run`` line in this server's ledger (the history's source), then its ledger's state with that line
    (``state`` as it was when nothing was written; a line changes no folder)."""
    if not os.path.isdir(store.dir):  # a server no step touched (its variables are invalid, say) keeps no trace
        return state
    try:
        store.log("run", durable=False, time=now.strftime("%Y-%m-%dT%H:%M:%SZ"), run=run_id, records=run["records"],
                  files=run["files_uploaded"],
                  failed=run["failed"], detail="; ".join(_without_host(store.name, m) for m in run["errors"]) or None)
    except StoreError:  # the history misses this run; the report and the results still stand
        return state
    return _ledger_state(store, state)


def _last_run(info: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A server's last recorded run in the shape of this run's figures (None: no run recorded yet)."""
    if not info["history"]:
        return None
    last = info["history"][-1]
    return {"records": last["records"], "files_uploaded": last["files"], "files_downloaded": None,
            "acks_processed": None, "recovered": False, "changed": False, "failed": last["failed"],
            "errors": [last["error"] or "failed"] if last["failed"] else [], "time": last["time"]}


def _status_msg(name: str, info: Dict[str, Any]) -> str:
    """The status playbook's line: the last run's outcome, what waits in the store, the sync age, the live answer."""
    run = info["run"]
    if run is None:
        parts = ["no run recorded yet"]
    elif run["failed"]:
        parts = [f"last run {run['time']} FAILED: {'; '.join(run['errors'])}"]
    else:
        parts = [f"last run {run['time']} ok ({run['records']} record(s) in {run['files_uploaded']} file(s) "
                 "accepted)"]
    parts.append("never synchronized" if info["age_days"] is None else
                 f"last sync {info['last_sync']} ({info['age_days']:.2f} days ago)")
    counts = ((info["outbox"], "file(s) in the outbox"), (info["pending_acks"], "acknowledgment(s) pending"),
              (info["quarantined"], "file(s) quarantined"))
    waiting = [f"{count} {what}" for count, what in counts if count]
    parts.append(", ".join(waiting) + " in the store" if waiting else "nothing waits in the store")
    if info["needs_force"]:
        parts.append(f"recovery pending: {info['needs_force']}")
    if info["in_transit"]:
        parts.append("in transit: " + ", ".join(_transit_text(i) for i in info["in_transit"]))
    if info["stale"]:
        parts.append("STALE")
    if info.get("live"):
        parts.append(_live_text(info["live"]))
    return f"{name}: " + "; ".join(parts)


def _transit_text(item: Dict[str, Any]) -> str:
    return (f"{item['bundle']} since {item['created']} ({item['age_days']:.1f} days"
            + (", out too long)" if item["stale"] else ")"))


def _live_text(answer: Dict[str, Any]) -> str:
    if not answer.get("reachable"):
        return f"live: UNREACHABLE ({answer.get('error') or 'no answer'})"
    text = f"live: reachable, version {answer.get('version') or '?'}, status {answer.get('status') or '?'}"
    if answer.get("authorized") is False:
        text += f", credentials refused ({answer.get('error')})"
    if answer.get("pending"):
        text += f", {len(answer['pending'])} sync file(s) waiting on the host"
    return text


def _host_msg(name: str, info: Dict[str, Any], entries: List[Dict[str, Any]]) -> str:
    failed = [e for e in entries if e.get("failed")]
    if failed:
        return " | ".join(e["msg"] for e in failed)
    msgs = [e["msg"] for e in entries if e.get("msg") and not e.get("idle")]
    if msgs:
        return " | ".join(msgs)
    msg = f"{name}: up to date (last sync {info['last_sync'] or 'never'}"
    if info["outbox"] or info["pending_acks"]:
        msg += f", {info['outbox']} file(s) in the outbox, {info['pending_acks']} acknowledgment(s) pending"
    if info["needs_force"]:
        msg += f", recovery pending: {info['needs_force']}"
    if info["quarantined"]:
        msg += f", {info['quarantined']} file(s) quarantined"
    return msg + ")"


def run_view(report: Dict[str, Any]) -> Dict[str, Any]:
    """The report restricted to this run's servers (what an AWX job hands to the next workflow node)."""
    servers = {n: s for n, s in report["servers"].items() if s["run"]}
    return dict({k: v for k, v in report.items() if k != "hosts"}, servers=_without_history(servers),
                totals=_totals(servers.values()))


def _without_history(servers: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The servers without their history (the ledger and the history pages hold it): JSON and set_stats stay
    small on large fleets."""
    return {n: {k: v for k, v in s.items() if k != "history"} for n, s in servers.items()}


def summary_lines(report: Dict[str, Any], path: Optional[str] = None) -> List[str]:
    """The play output's summary, problems first and short whatever the fleet's size."""
    t = report["totals"]
    lines = [
        f"fleet: {t['servers']} server(s), {t['ok']} ok, {t['failed']} failed, {t['changed']} changed, "
        f"{t['stale']} stale (> {report['stale_days']} days), {t['needs_force']} awaiting recovery"
        + (f", {t['quarantined']} file(s) quarantined" if t["quarantined"] else "")
        + (f", {t['in_transit']} with files in transit ({t['in_transit_stale']} in a bundle out > "
           f"{report['stale_days']} days)" if t["in_transit"] else "")
        + (f"; {t['in_run']} in this run" if t["in_run"] != t["servers"] and not report.get("last_run") else ""),
        f"{'last runs' if report.get('last_run') else 'this run'}: {t['records_this_run']} record(s) in "
        f"{t['files_uploaded_this_run']} file(s) accepted by the "
        f"back office, {t['recoveries_this_run']} recovery(ies); all time: {t['records_total']} record(s), "
        f"{t['files_total']} file(s)",
    ]
    problems = [s for s in report["servers"].values() if s["reasons"]]  # already most urgent first
    # servers with the very same problem (a back office out of reach, say) make one line, not hundreds
    groups: Dict[Tuple[str, str], List[str]] = {}
    for server in problems:
        reasons = "; ".join(server["reasons"]).removeprefix("failed this run: ")  # FAILED says it
        groups.setdefault((server["status"], reasons), []).append(server["name"])
    for (status, reasons), names in list(groups.items())[:SUMMARY_PROBLEMS]:
        more = ", ..." if len(names) > 3 else ""
        who = names[0] if len(names) == 1 else f"{len(names)} servers ({', '.join(names[:3])}{more})"
        lines.append(_one_line(f"{status.upper()} {who}: {reasons}"))
    rest = [server for names in list(groups.values())[SUMMARY_PROBLEMS:] for server in names]
    if rest:
        counts = ", ".join(f"{sum(1 for n in rest if report['servers'][n]['status'] == st)} {st}" for st in STATUSES
                           if any(report["servers"][n]["status"] == st for n in rest))
        lines.append(f"... and {len(rest)} more needing attention ({counts}): see the report")
    lines += [_one_line(f"AIR GAP {problem}") for problem in report.get("bundle_problems") or []]
    if not problems and not report.get("bundle_problems"):
        lines.append("nothing needs attention")
    lines.append(f"report: {path or 'not written'}")
    return lines


# ---- HTML ----------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:middle}
th{background:#f0f0f0}
#servers th{cursor:pointer;user-select:none}#servers th:after{content:" \\2195";color:#aaa}
td.n{text-align:right}
.s-failed{background:#f8d7da}.s-recovery-pending{background:#ffe5b4}.s-quarantined{background:#ffe5b4}
.s-stale{background:#fff3cd}.s-not-in-this-run{color:#777}
.late{color:#c0392b;font-weight:bold}
.badge{font-weight:bold;white-space:nowrap}
#attention{border:2px solid #c0392b;padding:.3em 1em 1em;margin:1em 0;max-width:100em}
#attention.none{border-color:#27ae60}
.totals{display:flex;flex-wrap:wrap;gap:.4em;margin:.6em 0;font-size:12px}
.totals div{border:1px solid #ccc;border-radius:4px;padding:.15em .5em}.totals b{font-size:1.1em}
td.err{max-width:30em;font-size:12px}figure{margin:0}
.charts{display:flex;flex-wrap:wrap;gap:2em}
small,.muted{color:#666}
#filter{font-size:14px;padding:3px 6px;width:28em}
"""

_JS = """
(function(){
var table=document.getElementById('servers'),body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
var box=document.getElementById('filter'),shown=document.getElementById('shown');
function apply(){var q=box.value.trim().toLowerCase(),n=0;rows.forEach(function(r){
 var ok=!q||r.textContent.toLowerCase().indexOf(q)>=0;r.hidden=!ok;if(ok)n++;});shown.textContent=n;}
box.addEventListener('input',apply);
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
 var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';th.setAttribute('data-dir',dir);
 function key(r){var c=r.cells[i],v=c.getAttribute('data-v');if(v===null)v=c.textContent;
  var f=parseFloat(v);return isNaN(f)?v.toLowerCase():f;}
 rows.sort(function(a,b){var x=key(a),y=key(b);
  if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(dir==='asc'?1:-1);});
 rows.forEach(function(r){body.appendChild(r);});});});
if(location.hash.indexOf('#filter=')===0){box.value=decodeURIComponent(location.hash.slice(8));}
apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


@functools.lru_cache(maxsize=1024)
def _label(text: str) -> str:
    """A chart label escaped: the same run names label every server's charts, escaped once each."""
    return _e(text)


def _slug(status: str) -> str:
    return status.replace(" ", "-")


def bars(values: List[float], width: int = 80, height: int = 18, color: str = "#4a7ebb",
         title: str = "", labels: Optional[List[str]] = None) -> str:
    """A small bar chart as inline SVG (one bar per value, scaled to the largest)."""
    if not values:
        return f"<svg width='{width}' height='{height}' role='img'><title>{_e(title)}: no runs yet</title></svg>"
    top = max(values) or 1
    step = min(width / len(values), max(4.0, height / 3))  # a few runs make narrow bars, not one wide block
    parts = [f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"
             f"<title>{_e(title)}</title><line x1='0' y1='{height - .5}' x2='{width}' y2='{height - .5}' "
             "stroke='#bbb'/>"]
    if height >= 40:  # the scale, on the larger charts
        parts.append(f"<text x='{width - 2}' y='9' font-size='9' fill='#666' text-anchor='end'>max {top:g}</text>")
    # the parts every bar of the chart shares, built once: a report draws hundreds of thousands of bars
    scale, width_attr, fill = (height - 1) / top, f"' width='{max(step - 1, 1):.1f}' height='", f"' fill='{color}'>"
    for i, (value, label) in enumerate(zip(values, labels or [None] * len(values))):
        h = max(1.0, value * scale) if value else 0
        tip = f"<title>{_label(label)}: {value:g}</title>" if label is not None else ""
        parts.append(f"<rect x='{i * step + .5:.1f}' y='{height - 1 - h:.1f}{width_attr}{h:.1f}{fill}{tip}</rect>")
    return "".join(parts) + "</svg>"


def line(values: List[Optional[float]], width: int = 300, height: int = 60, color: str = "#c0392b",
         title: str = "") -> str:
    """A line chart as inline SVG; None values (no sync yet) leave a gap."""
    known = [v for v in values if v is not None]
    top = max(known) if known else 1
    top = top or 1
    step = width / max(len(values) - 1, 1)
    segments: List[List[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            segments.append([])
            continue
        segments[-1].append(f"{i * step:.1f},{height - 2 - (height - 4) * value / top:.1f}")
    paths = "".join(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{' '.join(s)}'/>"
                    for s in segments if s)
    return (f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'><title>{_e(title)}"
            f"</title><line x1='0' y1='{height - .5}' x2='{width}' y2='{height - .5}' stroke='#bbb'/>{paths}"
            f"<text x='2' y='10' font-size='9' fill='#666'>{top:g}</text></svg>")


def _age_buckets(report: Dict[str, Any]) -> List[Tuple[str, int]]:
    stale = report["stale_days"]
    buckets = [("< 1 day", 0), ("1-2 days", 0), (f"2-{stale:g} days", 0), (f"> {stale:g} days", 0), ("never", 0)]
    counts = [0] * len(buckets)
    for server in report["servers"].values():
        age = server["age_days"]
        counts[4 if age is None else 0 if age < 1 else 1 if age < 2 else 2 if age <= stale else 3] += 1
    return [(label, counts[i]) for i, (label, _count) in enumerate(buckets)]


def fleet_runs(report: Dict[str, Any], keep: int = 30) -> List[Tuple[str, int, int]]:
    """(run, records, failed servers) of the newest runs, from every server's history."""
    runs: Dict[str, List[int]] = {}
    for server in report["servers"].values():
        for item in server.get("history") or []:
            figures = runs.setdefault(str(item.get("run")), [0, 0])
            figures[0] += item["records"]
            figures[1] += 1 if item["failed"] else 0
    return [(run, figures[0], figures[1]) for run, figures in sorted(runs.items())[-keep:]]


def _days(age: Optional[float]) -> str:
    return "never" if age is None else f"{age:.2f}"


_HEAD = "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"


def _history_link(name: str) -> str:
    return f"reports/servers/{_e(name)}.html"


def render_html(report: Dict[str, Any]) -> str:
    """The fleet page, STORE/report.html: its links are relative to STORE (see run_copy)."""
    t = report["totals"]
    servers = report["servers"]
    attention = [s for s in servers.values() if s["reasons"]]
    att_rows = "".join(
        f"<tr class='s-{_slug(s['status'])}'><td><a href='{_history_link(s['name'])}'>{_e(s['name'])}</a></td>"
        f"<td class='badge'>{_e(s['status'])}</td><td title='{_e('; '.join(s['reasons']))}'>"
        f"{_e(_one_line('; '.join(s['reasons']), 240))}</td></tr>" for s in attention)
    if attention:
        att = (f"<section id='attention'><h2>Needs attention: {len(attention)} server(s)</h2>"
               "<table><thead><tr><th>server</th><th>status</th><th>reason</th></tr></thead>"
               f"<tbody>{att_rows}</tbody></table></section>")
    else:
        att = ("<section id='attention' class='none'><h2>Needs attention: none</h2>"
               "<p>Every server synchronized recently, nothing failed this run, nothing waits for recovery.</p>"
               "</section>")
    figures = [
        ("servers", t["servers"]), ("in this run", t["in_run"]), ("ok", t["ok"]), ("failed", t["failed"]),
        ("stale", t["stale"]), ("awaiting recovery", t["needs_force"]), ("quarantined files", t["quarantined"]),
        ("records accepted this run", t["records_this_run"]), ("files accepted this run",
                                                               t["files_uploaded_this_run"]),
        ("records all time", t["records_total"]), ("files all time", t["files_total"])]
    if t["in_transit"]:  # an air-gapped site's inside store
        figures += [("servers with files in transit", t["in_transit"]),
                    (f"in a bundle out &gt; {report['stale_days']:g} days", t["in_transit_stale"])]
    cards = "".join(f"<div>{label}<br><b>{value}</b></div>" for label, value in figures)
    bundle_problems = "".join(f"<p class='s-failed bundle-problem'><b>air gap:</b> {_e(p)}</p>"
                              for p in report.get("bundle_problems") or [])
    ages = _age_buckets(report)
    runs = fleet_runs(report)
    charts = (
        "<div class='charts'><figure><figcaption>servers by sync age</figcaption>"
        + bars([c for _label, c in ages], 250, 80, "#7a9cc6", "servers by sync age", [a for a, _c in ages])
        + "<br><small>" + " &middot; ".join(f"{_e(a)}: {c}" for a, c in ages) + "</small></figure>"
        "<figure><figcaption>records accepted per run (newest right)</figcaption>"
        + bars([r for _run, r, _f in runs], 300, 80, "#4a7ebb", "records per run", [run for run, _r, _f in runs])
        + f"<br><small>{len(runs)} run(s)</small></figure>"
        "<figure><figcaption>failed servers per run</figcaption>"
        + bars([f for _run, _r, f in runs], 300, 80, "#c0392b", "failed servers per run",
               [run for run, _r, _f in runs])
        + "</figure></div>")
    rows = []
    for s in servers.values():
        run = s["run"] or {}
        hist = s.get("history") or []
        spark = bars([h["records"] for h in hist[-20:]], 60, 16, "#4a7ebb", f"{s['name']}: records per run",
                     [h["run"] or "" for h in hist[-20:]])
        this_error = "; ".join(_without_host(s["name"], m) for m in run.get("errors") or [])
        last_error = (f"{s['last_error_time'] or ''} {s['last_error']}" if s["last_error"] else "")
        age = s["age_days"]
        topology = s["topology"] + (f" ({s['backend']})" if s.get("backend") else "")
        rows.append(
            f"<tr class='s-{_slug(s['status'])}'><td><a href='{_history_link(s['name'])}'>{_e(s['name'])}"
            f"</a></td><td class='badge' data-v='{STATUSES.index(s['status'])}'>{_e(s['status'])}</td>"
            f"<td>{_e(topology)}</td>"
            f"<td data-v='{sum(h['records'] for h in hist[-20:])}'>{spark}</td>"
            f"<td class='n'>{_e(run.get('records', ''))}</td><td class='n'>{_e(run.get('files_uploaded', ''))}</td>"
            f"<td class='n'>{s['records_synchronized']}</td><td class='n'>{s['files_uploaded']}</td>"
            f"<td>{_e(s['last_sync'] or 'never')}</td>"
            f"<td class='n' data-v='{age if age is not None else 1e9}'>{_days(age)}</td>"
            f"<td class='n' data-v='{s['outbox'] + s['pending_acks']}'>{s['outbox']}/{s['pending_acks']}</td>"
            f"{_transit_cell(s.get('in_transit') or [])}"
            f"<td class='err' title='{_e(this_error)}'>{_e(_one_line(this_error, 160))}</td>"
            f"<td class='err' title='{_e(last_error)}' data-v='{_e(s['last_error_time'] or '')}'>"
            f"{_e(_one_line(last_error, 120))}</td></tr>")
    return (
        f"{_HEAD}<title>FlexNet offline sync: {t['failed']} failed, {t['attention']} need attention</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>FlexNet Embedded offline synchronization</h1>"
        f"<p><small>run {_e(report['run'])}, generated {_e(report['generated_at'])}, store {_e(report['store'])}; "
        f"stale: no sync for more than {report['stale_days']:g} days; this run's own copy: "
        f"<a href='reports/{_e(report['run'])}.html'>reports/{_e(report['run'])}.html</a></small></p>"
        f"{bundle_problems}{att}<div class='totals'>{cards}</div>{charts}"
        f"<h2>Servers</h2><p><input id='filter' type='search' placeholder='filter: name, status, error...' "
        f"aria-label='filter servers'> <small><span id='shown'>{len(rows)}</span> of {len(rows)} shown; click a "
        "column to sort</small></p>"
        "<table id='servers'><thead><tr><th>server</th><th>status</th><th>topology</th><th>records per run</th>"
        "<th>records this run</th><th>files this run</th><th>records total</th><th>files total</th>"
        "<th>last sync</th><th>age (days)</th><th>outbox/acks</th><th>in transit</th><th>error this run</th>"
        "<th>last error (date)</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table><script>{_JS}</script></body></html>\n")


def run_copy(page: str) -> str:
    """The fleet page as this run's copy in STORE/reports/: the same bytes, its links read from STORE (``<base>``);
    rendered once, not twice (a 1,000-server page is 2.5 MB)."""
    return page.replace(_HEAD, _HEAD + "<base href='../'>", 1)


def _transit_cell(items: List[Dict[str, Any]]) -> str:
    """An air-gapped server's bundles not yet acknowledged: name, age in days (since its creation in the title), in
    red when out longer than stale_days; sorted by the oldest."""
    parts = [f"<span class='{'late' if i['stale'] else ''}' title='{_e(i['bundle'])}: created {_e(i['created'])}, "
             f"{i['files']} file(s) of this server'>{_e(i['bundle'])} ({i['age_days']:.1f} d)</span>" for i in items]
    return f"<td data-v='{max((i['age_days'] for i in items), default=-1)}'>{'<br>'.join(parts)}</td>"


def render_server_html(server: Dict[str, Any]) -> str:
    """One server's history page (STORE/reports/servers/<host>.html): what its store and ledger say, nothing of the
    run that wrote it, so a server the run left as it was keeps the same page."""
    hist = server.get("history") or []
    labels = [h["run"] or "" for h in hist]
    rows = "".join(
        f"<tr class='{'s-failed' if h['failed'] else ''}'><td>{_e(h['time'])}</td>"
        f"<td>{'failed' if h['failed'] else 'ok'}</td><td class='n'>{h['records']}</td><td class='n'>{h['files']}</td>"
        f"<td class='n'>{_days(h['age_days'])}</td><td>{_e(h['error'] or '')}</td></tr>" for h in reversed(hist))
    reasons = "; ".join(server["reasons"]) or "nothing needs attention"
    transit = server.get("in_transit") or []
    transit_text = ("<p id='in-transit'>in transit (outgoing bundles not yet acknowledged): "
                    + "; ".join(f"<span class='{'late' if i['stale'] else ''}'>{_e(_transit_text(i))}</span>"
                                for i in transit) + "</p>") if transit else ""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(server['name'])}: offline sync "
        f"history</title><style>{_CSS}</style></head><body><p><a href='../../report.html'>&larr; fleet report</a></p>"
        f"<h1>{_e(server['name'])}</h1><p class='s-{_slug(server['status'])}'><b>{_e(server['status'])}</b>: "
        f"{_e(reasons)}</p><p><small>last sync {_e(server['last_sync'] or 'never')}; {server['records_synchronized']} "
        f"record(s) in {server['files_uploaded']} file(s) accepted all time; {server['outbox']} file(s) in the "
        f"outbox, {server['pending_acks']} acknowledgment(s) pending; last error: "
        f"{_e((server['last_error_time'] or '') + ' ' + (server['last_error'] or 'none'))}</small></p>"
        f"{transit_text}<div class='charts'>"
        f"<figure><figcaption>records accepted per run</figcaption>"
        f"{bars([h['records'] for h in hist], 300, 70, '#4a7ebb', 'records per run', labels)}</figure>"
        f"<figure><figcaption>files accepted per run</figcaption>"
        f"{bars([h['files'] for h in hist], 300, 70, '#7a9cc6', 'files per run', labels)}</figure>"
        f"<figure><figcaption>sync age after each run (days)</figcaption>"
        f"{line([h['age_days'] for h in hist], 300, 70, '#c0392b', 'sync age in days')}</figure></div>"
        f"<h2>Runs (newest first, the last {HISTORY_KEEP} kept here; the ledger keeps all)</h2>"
        "<table><thead><tr><th>time</th><th>outcome</th><th>records</th><th>files</th><th>sync age (days)</th>"
        f"<th>error</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n")


def _write_view(path: str, text: str) -> None:
    """A page derived from the ledger: replaced atomically, without an fsync, when it changed (most servers' pages
    stay as they were on a night with nothing new)."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        if handle.read(len(text) + 1) == text:
            return
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_report(report: Dict[str, Any]) -> Dict[str, str]:
    """STORE/report.{json,html}, this run's copies under STORE/reports/, and each server's history page."""
    root = report["store"]
    reports = os.path.join(root, "reports")
    pages = os.path.join(reports, "servers")
    for folder in (root, reports, pages):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    body = dict({k: v for k, v in report.items() if k != "hosts"}, servers=_without_history(report["servers"]))
    data = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")
    json_path = os.path.join(root, "report.json")
    html_path = os.path.join(root, "report.html")
    page = render_html(report)
    write_atomic(json_path, [data])  # 0600
    write_atomic(html_path, [page.encode("utf-8")])
    run_json = os.path.join(reports, f"{report['run']}.json")
    write_atomic(run_json, [data])
    write_atomic(os.path.join(reports, f"{report['run']}.html"), [run_copy(page).encode("utf-8")])

    def write_pages(share: List[Dict[str, Any]]) -> Dict[str, bool]:
        for server in share:
            _write_view(os.path.join(pages, f"{server['name']}.html"), render_server_html(server))
        return {server["name"]: True for server in share}

    servers = list(report["servers"].values())
    written = in_processes(servers, process_count(0, len(servers)), write_pages,
                           lambda share, how: {server["name"]: how for server in share})
    missed = sorted(name for name, done in written.items() if done is not True)
    if missed:  # their pages stay those of the run before; the next run writes them
        raise OSError(f"the process writing the history pages of {len(missed)} server(s) ({', '.join(missed[:5])}"
                      f"{' ...' if len(missed) > 5 else ''}) {written[missed[0]]}")
    for old in sorted(glob.glob(os.path.join(glob.escape(reports), "*.json")))[:-KEEP_RUN_REPORTS]:
        for path in (old, old[:-5] + ".html"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return {"json": json_path, "html": html_path, "run": run_json[:-5] + ".html"}
