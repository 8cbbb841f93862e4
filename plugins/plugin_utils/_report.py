# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report: per-server figures from each store's ledger, this run's step results, the summary lines of the
play output, and the report files (STORE/report.json, STORE/report.html). Read-only on the stores but for the
ledger summary cache."""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import json
import os
from typing import Any, Dict, List, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._files import parse_time, write_atomic
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore, StoreError, os_error_text

UNKNOWN = {"records_synchronized": 0, "files_uploaded": 0, "last_sync": None, "recoveries": 0, "errors": 1,
           "last_error": None, "age_days": None, "outbox": 0, "pending_acks": 0, "needs_force": None,
           "quarantined": 0}
_SUMMARY_FIELDS = ("records_synchronized", "files_uploaded", "last_sync", "recoveries", "errors", "last_error")


def _fold(state: dict, entry: dict) -> None:
    event = entry.get("event")
    if event == "fetched":
        state["records_by_file"][entry.get("file")] = int(entry.get("records") or 0)
    elif event == "uploaded":
        state["files_uploaded"] += 1
        state["records_synchronized"] += state["records_by_file"].get(entry.get("file"), 0)
    elif event == "processed":
        state["last_sync"] = entry.get("time")
    elif event == "recovered":
        state["recoveries"] += 1
    elif event == "error":
        state["errors"] += 1
        state["last_error"] = entry.get("detail")


def summarize(store: ServerStore, now: Optional[_dt.datetime] = None, update_cache: bool = False) -> dict:
    """Per-server figures for the report, from the ledger and the folders.

    The ledger grows with every run; ``.summary.json`` remembers the figures and how far the ledger was read, so a
    report reads only the new lines. Written only with ``update_cache`` (never in check mode or by status)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    cache_path = os.path.join(store.dir, ".summary.json")
    fresh = {"offset": 0, "records_by_file": {}, "records_synchronized": 0, "files_uploaded": 0, "last_sync": None,
             "recoveries": 0, "errors": 0, "last_error": None}
    state = dict(fresh, records_by_file={})
    with contextlib.suppress(OSError, ValueError, TypeError):
        with open(cache_path, encoding="utf-8") as handle:
            cached = json.load(handle)
        if set(fresh) <= set(cached):
            state = cached
    try:
        size = os.path.getsize(store.ledger_path)
    except OSError:
        size = 0
    if size < state["offset"]:  # a replaced ledger: read it again from the start
        state = dict(fresh, records_by_file={})
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
    if update_cache and store.exists() and state["offset"] != start:
        with contextlib.suppress(OSError):  # only a cache: the next report reads the ledger again
            write_atomic(cache_path, [json.dumps(state, sort_keys=True).encode("utf-8")])
    age_days = None
    if state["last_sync"]:
        parsed = parse_time(state["last_sync"])
        if parsed:
            age_days = round((now - parsed).total_seconds() / 86400, 3)
    out = {name: state[name] for name in _SUMMARY_FIELDS}
    out.update(age_days=age_days, outbox=len(store.outbox_files()), pending_acks=len(store.pending_acks()),
               needs_force=store.needs_force(), quarantined=len(store.quarantined()))
    return out


def build_report(store_root: str, hosts: List[str], topologies: Dict[str, str], results: List[Dict[str, Any]],
                 stale_days: float, now: Optional[_dt.datetime] = None,
                 failed_hosts: Optional[List[str]] = None, update_cache: bool = False,
                 backends: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Fleet summary from each server's store and this run's step results (read-only)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    servers: Dict[str, Dict[str, Any]] = {}
    host_results: Dict[str, Dict[str, Any]] = {}
    for name in hosts:
        entries = [r["hosts"][name] for r in results if isinstance(r, dict) and name in (r.get("hosts") or {})]
        try:
            info = summarize(ServerStore(store_root, name), now, update_cache=update_cache)
        except (StoreError, OSError) as exc:  # one unreadable store must not hide the others
            info = dict(UNKNOWN, last_error=getattr(exc, "msg", None) or os_error_text(exc))
            entries.append({"failed": True, "msg": f"{name}: cannot read its store: {info['last_error']}"})
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
        info.update(name=name, topology=topologies.get(name, "api"), backend=(backends or {}).get(name, "http"),
                    run=run)
        info["stale"] = info["age_days"] is None or info["age_days"] > stale_days
        servers[name] = info
        msgs = [e["msg"] for e in entries if e.get("msg") and not e.get("idle")]
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
            if info["quarantined"]:
                msg += f", {info['quarantined']} file(s) quarantined"
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
        "quarantined": sum(s["quarantined"] for s in servers.values()),
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
        f"{t['stale']} stale (> {report['stale_days']} days), {t['needs_force']} awaiting recovery"
        + (f", {t['quarantined']} file(s) quarantined" if t["quarantined"] else ""),
        f"this run: {t['records_this_run']} record(s), {t['files_uploaded_this_run']} file(s) uploaded, "
        f"{t['recoveries_this_run']} recovery(ies); all time: {t['records_total']} record(s), "
        f"{t['files_total']} file(s)",
    ]
    for name, s in report["servers"].items():
        if s["run"]["failed"] or s["stale"] or s["needs_force"] or s["run"]["changed"] or s["quarantined"]:
            flags = [f for f, on in (("FAILED", s["run"]["failed"]), ("STALE", s["stale"]),
                                     ("RECOVERY PENDING", bool(s["needs_force"])),
                                     (f"{s['quarantined']} QUARANTINED", bool(s["quarantined"]))) if on]
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
        topology = f"{s['topology']} ({s.get('backend', 'http')})"
        rows.append(
            f"<tr class='{css}'><td>{e(name)}</td><td>{e(topology)}</td><td>{s['run']['records']}</td>"
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
        "<h2>Servers</h2><table><tr><th>server</th><th>topology (backend)</th><th>records this run</th>"
        "<th>files this run</th><th>records total</th><th>files total</th><th>last sync</th><th>age</th>"
        "<th>recoveries</th><th>outbox/acks</th><th>recovery pending</th><th>errors</th></tr>"
        + "".join(rows) + "</table></body></html>\n")


def write_report(report: Dict[str, Any]) -> Dict[str, str]:
    root = report["store"]
    os.makedirs(root, mode=0o700, exist_ok=True)
    body = {k: v for k, v in report.items() if k != "hosts"}
    json_path = os.path.join(root, "report.json")
    html_path = os.path.join(root, "report.html")
    write_atomic(json_path, [(json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")])  # 0600
    write_atomic(html_path, [render_html(report).encode("utf-8")])
    return {"json": json_path, "html": html_path}
