"""The fleet report's figures and summary, without a lab: what the back office accepted counts once, the report
covers the whole store, the summary stays short, a requested resynchronization is no error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _report as report_mod  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore  # noqa: E402


def fetched(store: ServerStore, name: str, records: int, forced: bool = False) -> str:
    path = Path(store.dir) / name
    path.write_bytes(name.encode())
    return store.admit(str(path), records=records, forced=forced)


def test_a_forced_download_counts_once(tmp_path):
    """collect downloaded 24 records, the recovery in the same run downloaded them again with 16 more and the back
    office accepted that one file: 40 records this run, not 64."""
    store = ServerStore(str(tmp_path), "lls001").ensure()
    first = fetched(store, "20260101T000000.fnesync", 24)
    store.supersede("back office mismatch")
    forced = fetched(store, "20260101T000100.fnesync", 40, forced=True)
    store.record_ack(forced, b"ACK")
    results = [{"hosts": {"lls001": {"step": "collect", "changed": True, "records": 24,
                                     "fetched": [Path(first).name], "msg": "lls001: collect: downloaded"}}},
               {"hosts": {"lls001": {"step": "upload", "changed": True, "records": 40, "recovered": True,
                                     "fetched": [Path(forced).name], "uploaded": [Path(forced).name],
                                     "msg": "lls001: upload: recovered"}}}]
    report = report_mod.build_report(str(tmp_path), ["lls001"], {}, results, 7.0, update_cache=True)
    assert report["servers"]["lls001"]["run"]["records"] == 40
    assert report["totals"]["records_this_run"] == 40 == report["totals"]["records_total"]
    assert [h["records"] for h in report["servers"]["lls001"]["history"]] == [40]


def test_a_limit_run_keeps_the_whole_fleet(tmp_path):
    for name in ("lls001", "lls002", "lls003"):
        ServerStore(str(tmp_path), name).ensure().log("error", detail="collect: down")
    report = report_mod.build_report(str(tmp_path), ["lls002"], {}, [], 7.0)
    assert list(report["servers"]) == ["lls001", "lls002", "lls003"]  # all stale: by name
    assert report["servers"]["lls001"]["run"] is None and report["servers"]["lls001"]["status"] == "stale"
    assert report["servers"]["lls001"]["last_error"] == "collect: down"
    assert set(report["hosts"]) == {"lls002"} and set(report_mod.run_view(report)["servers"]) == {"lls002"}


def test_the_summary_stays_short_whatever_the_fleet(tmp_path):
    """500 servers behind a back office out of reach make one line; 30 distinct failures end in "and N more"."""
    names = [f"lls{i:04d}" for i in range(1, 531)]
    for name in names:
        ServerStore(str(tmp_path), name).ensure()
    breaker = "upload failed: upload not tried: the back office could not be reached by 3 uploads in a row"
    entries = {n: {"failed": True, "msg": f"{n}: {breaker}" if i < 500 else f"{n}: collect failed: error {i}"}
               for i, n in enumerate(names)}
    report = report_mod.build_report(str(tmp_path), names, {}, [{"hosts": entries}], 7.0)
    lines = report_mod.summary_lines(report, "/store/report.html")
    assert len(lines) <= 20, lines
    assert f"FAILED 500 servers (lls0001, lls0002, lls0003, ...): {breaker}; never synchronized" in lines
    assert lines[-2].startswith("... and 19 more needing attention (19 failed)") and lines[-1].endswith(".html")


def test_a_requested_resynchronization_is_no_error(tmp_path):
    cfg = fleet.server_config("lls001", {"fne_sync_topology": "remote"})
    opts = fleet.Options(store=str(tmp_path), forced=True, reason="forced resynchronization requested")
    assert not fleet.run_fleet("mark_force", [cfg], opts)["lls001"]["failed"]
    store = ServerStore(str(tmp_path), "lls001")
    assert [e["event"] for e in store.ledger()] == ["recovery_started"]
    assert report_mod.summarize(store)["errors"] == 0


def test_a_quiet_run_remembers_the_figures_it_read(tmp_path):
    """A server with nothing to do in this run writes no line, but the figures read from its ledger are
    remembered (the next report reads only new lines), for a server of the run as for one outside it."""
    for name in ("lls001", "lls002"):
        store = ServerStore(str(tmp_path), name).ensure()
        store.record_ack(fetched(store, "20260101T000000.fnesync", 7), b"ACK")
    results = [{"hosts": {"lls001": {"step": "cycle", "changed": False, "idle": True, "msg": "lls001: idle"}}}]
    report = report_mod.build_report(str(tmp_path), ["lls001"], {}, results, 7.0, update_cache=True)
    assert report["servers"]["lls001"]["run"]["changed"] is False
    for name in ("lls001", "lls002"):
        store = ServerStore(str(tmp_path), name)
        cached = json.loads((Path(store.dir) / ".summary.json").read_text())
        assert cached["offset"] == Path(store.ledger_path).stat().st_size and cached["records_synchronized"] == 7
        assert [e["event"] for e in store.ledger()] == ["fetched", "uploaded", "acknowledged"]  # no run line


def _fleet_store(root: Path, count: int) -> list:
    names = [f"lls{i:03d}" for i in range(1, count + 1)]
    for number, name in enumerate(names, 1):
        store = ServerStore(str(root), name).ensure()
        store.record_ack(fetched(store, f"20260101T00000{number % 10}.fnesync", number), b"ACK")
    return names


def test_the_report_is_the_same_read_in_two_processes(tmp_path, monkeypatch):
    """Above a few hundred servers the report reads the stores and writes the history pages in one process per
    CPU: the same report, every page written."""
    names = _fleet_store(tmp_path, 6)
    results = [{"hosts": {n: {"step": "collect", "changed": False, "msg": f"{n}: nothing"} for n in names}}]
    now = report_mod._dt.datetime(2026, 1, 2, tzinfo=report_mod._dt.timezone.utc)
    one = report_mod.build_report(str(tmp_path), names, {}, results, 7.0, now=now)
    monkeypatch.setattr(report_mod, "process_count", lambda *_args: 2)
    two = report_mod.build_report(str(tmp_path), names, {}, results, 7.0, now=now)
    assert two == one and list(two["servers"]) == list(one["servers"])
    report_mod.write_report(two)
    assert sorted(p.stem for p in (tmp_path / "reports" / "servers").glob("*.html")) == names


def test_a_report_process_that_dies_leaves_its_servers_unread(tmp_path, monkeypatch):
    """The forked process dies reading its share of the stores: those servers show why and fail; the others are
    read as usual, and nothing was written for the lost ones."""
    import os

    names = _fleet_store(tmp_path, 4)
    parent, summarize = os.getpid(), report_mod.summarize

    def dies_in_the_child(*args, **kwargs):
        if os.getpid() != parent:
            os._exit(5)
        return summarize(*args, **kwargs)
    monkeypatch.setattr(report_mod, "summarize", dies_in_the_child)
    monkeypatch.setattr(report_mod, "process_count", lambda *_args: 2)
    report = report_mod.build_report(str(tmp_path), names, {}, [], 7.0, update_cache=True)
    lost = ["lls002", "lls004"]  # the second share: every other server
    for name in names:
        server, host = report["servers"][name], report["hosts"][name]
        if name in lost:
            assert server["last_error"] == "the process reading it exited 5" and host["failed"], (server, host)
        else:
            assert server["records_synchronized"] == int(name[-1]) and not host["failed"], (server, host)
    assert report["totals"]["failed"] == 2


def test_history_pages_a_dead_process_could_not_write_are_named(tmp_path, monkeypatch):
    import os

    names = _fleet_store(tmp_path, 4)
    report = report_mod.build_report(str(tmp_path), names, {}, [], 7.0)
    parent, render = os.getpid(), report_mod.render_server_html

    def dies_in_the_child(server):
        if os.getpid() != parent:
            os._exit(6)
        return render(server)
    monkeypatch.setattr(report_mod, "render_server_html", dies_in_the_child)
    monkeypatch.setattr(report_mod, "process_count", lambda *_args: 2)
    try:
        report_mod.write_report(report)
    except OSError as exc:
        assert "history pages of 2 server(s) (lls002, lls004) exited 6" in str(exc), exc
    else:
        raise AssertionError("a page that was not written must be told")
    assert sorted(p.stem for p in (tmp_path / "reports" / "servers").glob("*.html")) == ["lls001", "lls003"]
