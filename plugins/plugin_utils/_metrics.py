# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report as Prometheus metrics, for node_exporter's textfile collector (the Prometheus text format,
which that collector reads): per server and per run, written atomically (the collector must never read half a
file) and readable by the exporter's user (0644: server names and figures, never a secret or an error text)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._files import parse_time, write_atomic

# name -> (type, help, the server's value or None to leave the server out)
_PER_SERVER = (
    ("fne_sync_last_success_timestamp_seconds", "gauge",
     "When the license server last processed an acknowledgment (Unix time).",
     lambda s: _timestamp(s["last_sync"])),
    ("fne_sync_records_synchronized_total", "counter", "Records the back office accepted, all time.",
     lambda s: s["records_synchronized"]),
    ("fne_sync_files_synchronized_total", "counter", "Sync files the back office accepted, all time.",
     lambda s: s["files_uploaded"]),
    ("fne_sync_failures_total", "counter", "Failed steps recorded in the ledger, all time.", lambda s: s["errors"]),
    ("fne_sync_last_run_failed", "gauge", "1 when the server's latest run failed.",
     lambda s: int(s["run"]["failed"]) if s["run"] else _last_failed(s)),
    ("fne_sync_recovery_pending", "gauge", "1 while the documented recovery waits for the next run.",
     lambda s: int(bool(s["needs_force"]))),
    ("fne_sync_outbox_files", "gauge", "Sync files waiting for the back office.", lambda s: s["outbox"]),
    ("fne_sync_quarantined_files", "gauge", "Files set aside as refused (fne.offline_sync.quarantine).",
     lambda s: s["quarantined"]),
    ("fne_sync_stale", "gauge", "1 when the server has not synchronized within fne_sync_stale_days.",
     lambda s: int(bool(s["stale"]))),
    # an air-gapped site's inside store: outgoing bundles whose acknowledgment has not come back
    ("fne_sync_bundle_in_transit_since_timestamp_seconds", "gauge",
     "When the oldest outgoing bundle with files of the server not yet acknowledged was written (Unix time).",
     lambda s: _timestamp(s["in_transit"][0]["created"]) if s.get("in_transit") else None),
    ("fne_sync_bundle_stale", "gauge",
     "1 when an outgoing bundle with files of the server has been in transit longer than fne_sync_stale_days.",
     lambda s: int(any(i["stale"] for i in s.get("in_transit") or []))),
)


def _timestamp(text: Optional[str]) -> Optional[float]:
    parsed = parse_time(text) if text else None
    return parsed.timestamp() if parsed else None


def _last_failed(server: Dict[str, Any]) -> Optional[int]:
    history = server.get("history") or []
    return int(bool(history[-1]["failed"])) if history else None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def render(report: Dict[str, Any], duration: Optional[float] = None) -> str:
    """The text of the metrics file: every server of the report, and this run's figures."""
    lines: List[str] = []
    for name, kind, text, value_of in _PER_SERVER:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for server in report["servers"].values():
            value = value_of(server)
            if value is not None:
                lines.append(f'{name}{{server="{_label(server["name"])}"}} {_number(value)}')
    t = report["totals"]
    run = [("fne_sync_run_timestamp_seconds", "When this run's report was made (Unix time).",
            _timestamp(report["generated_at"])),
           ("fne_sync_run_duration_seconds", "How long this run took, from its plan to its report.", duration),
           ("fne_sync_run_records", "Records the back office accepted in this run.", t["records_this_run"]),
           ("fne_sync_run_files", "Sync files the back office accepted in this run.", t["files_uploaded_this_run"]),
           ("fne_sync_servers", "Servers in the store and this run.", t["servers"])]
    for name, text, value in run:
        if value is not None:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    lines += ["# HELP fne_sync_run_servers Servers of this run by outcome.", "# TYPE fne_sync_run_servers gauge",
              f'fne_sync_run_servers{{outcome="ok"}} {t["ok"]}',
              f'fne_sync_run_servers{{outcome="failed"}} {t["failed"]}']
    return "\n".join(lines) + "\n"


def write(report: Dict[str, Any], path: str, duration: Optional[float] = None) -> str:
    """Write the metrics file atomically (a temporary file in the same folder, then a rename)."""
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_atomic(path, [render(report, duration).encode("utf-8")], mode=0o644)
    return path
