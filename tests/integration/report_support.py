"""Helpers for the report tests (no tests here): headless Chromium through selenium, and a synthetic store of many
servers written the way runs write it (ledger lines of the same shape, the report step's own code for the rest)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.plugin_utils import _report as report_mod  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the flags that work on a machine with no screen and a closed network (no sandbox as root, no background calls)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,900")


def start_browser(profile: Path):
    """Headless Chromium driven by chromedriver (Debian's chromium and chromium-driver: `make system-deps`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), f"{path} is missing: run `make system-deps` (chromium, chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    """Save the first screen; also into $FNE_SCREENSHOTS when set (to look at them)."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("FNE_SCREENSHOTS"):
        os.makedirs(os.environ["FNE_SCREENSHOTS"], exist_ok=True)
        shutil.copy(path, Path(os.environ["FNE_SCREENSHOTS"]) / name)
    return path


def _line(handle, when: dt.datetime, event: str, **fields) -> None:
    """One ledger line as ServerStore.log writes it."""
    entry = {"time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "event": event, **fields}
    handle.write(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")


def synthetic_fleet(store: Path, servers: int, runs: int, *, failing: dict[str, int], gone: tuple[str, ...] = (),
                    recovery: tuple[str, ...] = (), quarantined: tuple[str, ...] = ()) -> dict:
    """`servers` servers synchronized nightly for `runs` nights, as runs leave the store: each night every server's
    ledger gets fetched, uploaded, acknowledged and processed lines (or an error line) and the report step (the
    collection's own code) adds its run lines, writes the pages and keeps each run's report. `failing`: server ->
    the number of last nights it failed; `gone`: servers in the first night only (stale, not in later runs);
    `recovery`/`quarantined`: servers left awaiting recovery or with a file set aside. Returns the last report."""
    names = [f"lls{i:04d}" for i in range(1, servers + 1)]
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=runs + 8)
    report: dict = {}
    for night in range(runs):
        when = start + dt.timedelta(days=8 + night) if night else start
        hosts = [n for n in names if night == 0 or n not in gone]
        results: dict[str, dict] = {}
        for index, name in enumerate(hosts):
            folder = store / name
            if not night:
                ServerStore(str(store), name).ensure()
            fails = failing.get(name, 0) >= runs - night
            with open(folder / "ledger.jsonl", "a", encoding="utf-8") as handle:
                if fails:
                    msg = (f"collect failed: Cannot reach the license server at https://{name}.example:7070/api/1.0"
                           f"/sync_message/offline: Failed to establish a new connection: [Errno 111] Connection "
                           "refused. Check the URL and that the server is running and reachable from this host.")
                    _line(handle, when, "error", detail=msg)
                    results[name] = {"host": name, "step": "collect", "changed": False, "failed": True,
                                     "msg": f"{name}: {msg}"}
                    continue
                records = (index * 7 + night * 3) % 23
                file = when.strftime("%Y%m%dT%H%M%S") + ".fnesync"
                if records:
                    sha = hashlib.sha256(f"{name}{file}".encode()).hexdigest()
                    _line(handle, when, "fetched", file=file, records=records, sha256=sha)
                    _line(handle, when, "uploaded", file=file, sha256=sha)
                    _line(handle, when, "acknowledged", file=file[:-8] + ".ack", sha256=sha)
                _line(handle, when, "processed", file=file[:-8] + ".ack", detail=f"lastSyncTime {when}")
            results[name] = {"host": name, "step": "collect", "changed": bool(records), "failed": False,
                             "records": records, "fetched": [file] if records else [],
                             "uploaded": [file] if records else [], "processed": [file[:-8] + ".ack"],
                             "msg": f"{name}: downloaded and uploaded {records} record(s)", "idle": not records}
        if night == runs - 1:
            for name in recovery:
                ServerStore(str(store), name).set_needs_force("back office mismatch: expected sync time "
                                                              "2026-01-01T00:00:00Z; the documented recovery follows")
            for name in quarantined:
                (store / name / "quarantine" / "20260101T000000.fnesync").write_bytes(b"refused")
        report = report_mod.build_report(str(store), hosts, {}, [{"hosts": results}], 7.0, now=when,
                                         update_cache=True)
        report.pop("hosts")
        report_mod.write_report(report)
    return report
