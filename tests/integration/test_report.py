"""The operator's view: the fleet report in headless Chromium (needs-attention first, filter, sort, history
pages) at 8 servers after real runs and at 1,000 servers from a synthetic store, and the play output's summary,
printed last. Screenshots go to $FNE_SCREENSHOTS when set."""

from __future__ import annotations

import json
import re

import pytest
from fnetest import ansible_env
from report_support import screenshot, start_browser, synthetic_fleet
from test_sync_support import hosts_of, lab_state, playbook, sync, tree_digest


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def visible_rows(driver) -> list[str]:
    """The server names of the rows shown, in table order (one script call: 1,000 rows one by one take minutes)."""
    return driver.execute_script("return Array.prototype.filter.call(document.querySelectorAll('#servers tbody tr'),"
                                 "function(r){return !r.hidden;}).map(function(r){return r.cells[0].textContent;})")


def check_page(driver, page, failed: set[str], shot: str, tmp_path) -> None:
    """Problems on the first screen, the filter filters, the columns sort, a row leads to its history."""
    driver.get(page.as_uri())
    attention = driver.find_element("id", "attention")
    first_screen = driver.execute_script("return window.innerHeight")
    assert attention.location["y"] < first_screen / 2, "the needs-attention section is not at the top"
    listed = {}
    for row in attention.find_elements("css selector", "tbody tr"):
        cells = row.find_elements("css selector", "td")
        listed[cells[0].text] = (cells[1].text, cells[2].text, row.location["y"] + row.size["height"])
    for name in failed:
        status, reason, bottom = listed[name]
        assert status == "failed" and reason.startswith("failed this run:"), (name, listed[name])
        assert bottom <= first_screen, f"{name}: failed, but not on the first screen"
    screenshot(driver, shot, tmp_path)

    every = visible_rows(driver)
    box = driver.find_element("id", "filter")
    name = sorted(failed)[0]
    box.send_keys(name)
    assert visible_rows(driver) == [name], "the filter box does not filter"
    assert driver.find_element("id", "shown").text == "1"
    box.clear()
    box.send_keys("failed")  # the status column too
    assert set(visible_rows(driver)) >= failed and len(visible_rows(driver)) < len(every)
    driver.execute_script("var b=document.getElementById('filter');b.value='';b.dispatchEvent(new Event('input'))")
    assert len(visible_rows(driver)) == len(every)

    assert every[:len(failed)] == sorted(failed), "failed servers are not first in the table"
    header = driver.find_elements("css selector", "#servers thead th")[0]
    header.click()
    assert visible_rows(driver) == sorted(every)
    header.click()
    assert visible_rows(driver) == sorted(every, reverse=True)

    driver.find_element("link text", name).click()
    assert driver.find_element("tag name", "h1").text == name
    assert driver.find_elements("css selector", "svg rect"), "no history chart on the server's page"
    assert "failed" in driver.find_element("css selector", "table tbody tr").text


def check_metrics(path, report: dict) -> None:
    """Prometheus' own parser reads the file; it holds every server with the report's figures; 0644."""
    from prometheus_client.parser import text_string_to_metric_families

    assert path.stat().st_mode & 0o777 == 0o644
    samples = {(s.name, s.labels.get("server") or s.labels.get("outcome")): s.value
               for family in text_string_to_metric_families(path.read_text()) for s in family.samples}
    for name, server in report["servers"].items():
        assert samples[("fne_sync_records_synchronized_total", name)] == server["records_synchronized"]
        assert samples[("fne_sync_files_synchronized_total", name)] == server["files_uploaded"]
        assert samples[("fne_sync_last_run_failed", name)] == int(server["status"] == "failed")
        assert samples[("fne_sync_recovery_pending", name)] == int(bool(server["needs_force"]))
        assert (("fne_sync_last_success_timestamp_seconds", name) in samples) == bool(server["last_sync"])
    t = report["totals"]
    assert samples[("fne_sync_run_servers", "failed")] == t["failed"]
    assert samples[("fne_sync_run_servers", "ok")] == t["ok"]
    assert samples[("fne_sync_run_records", None)] == t["records_this_run"]
    assert samples[("fne_sync_run_duration_seconds", None)] > 0


def test_report_after_real_runs(lab_factory, browser, tmp_path):
    """8 servers, two down: the report puts them first with the reason; a --limit run keeps the whole fleet in
    the report (the earlier failure as the last error with its date, not as an error of this run)."""
    lab = lab_factory(8, "--records", "10")
    store = tmp_path / "store"
    for host in ("lls003", "lls006"):
        lab.fault(host, "down")
    first = sync(lab, store, expect_rc=2, env=ansible_env(ANSIBLE_DISPLAY_OK_HOSTS="false"))
    assert first.failed() == {"lls003", "lls006"}, first
    tail = first.out.rstrip().splitlines()[-25:]
    for host in ("lls003", "lls006"):
        assert any(line.startswith(f"FAILED {host}: collect failed: Cannot reach the license server")
                   for line in tail), (host, tail)
    assert tail[-1] == f"report: {store / 'report.html'}", tail
    assert "Could not match supplied host pattern" not in first.out
    check_page(browser, store / "report.html", {"lls003", "lls006"}, "report-8-servers.png", tmp_path)
    run_copy = next((store / "reports").glob("*.html"))  # the same page, its links read from the store (<base>)
    browser.get(run_copy.as_uri())
    browser.find_element("link text", "lls003").click()
    assert browser.find_element("tag name", "h1").text == "lls003"
    browser.get(run_copy.as_uri())
    browser.find_element("link text", f"reports/{run_copy.name}").click()
    assert browser.current_url == run_copy.as_uri()

    # status right after the failure: the failure and its time, never "up to date"; live asks without changing
    before, digest = lab_state(lab), tree_digest(store)
    status = playbook("status", lab.inventory, store, "-e", "fne_sync_live=true")
    assert re.search(r'"lls003: last run \S+Z FAILED: collect failed: Cannot reach the license server', status.out)
    assert "lls003: up to date" not in status.out
    assert re.search(r'"lls001: last run \S+Z ok \(10 record\(s\) in 1 file\(s\) accepted\); last sync \S+ '
                     r'\([0-9.]+ days ago\); nothing waits in the store; live: reachable', status.out), status
    assert re.search(r"lls006: .*live: UNREACHABLE \(Cannot reach the license server", status.out)
    assert lab_state(lab) == before and tree_digest(store) == digest, "status changed something"

    check_metrics(store / "fne_sync.prom", json.loads((store / "report.json").read_text()))

    lab.activity(4, "lls001")
    pages = store / "reports" / "servers"
    quiet_page = (pages / "lls002.html").stat()
    second = sync(lab, store, "--limit", "lls001,lls002")
    assert (pages / "lls002.html").stat().st_ino == quiet_page.st_ino, "a page with nothing new was written again"
    assert "one task for all api-topology servers: 2]" in second.out  # not "ok: [lls001 -> localhost]" alone
    report = json.loads((store / "report.json").read_text())
    assert set(report["servers"]) == set(hosts_of(lab)), "a --limit run shrank the fleet report"
    assert report["totals"]["in_run"] == 2 and report["totals"]["records_this_run"] == 4
    lls003 = report["servers"]["lls003"]
    assert lls003["run"] is None and lls003["status"] == "stale"
    assert lls003["last_error"].startswith("collect: Cannot reach") and lls003["last_error_time"]
    assert len(list((store / "reports").glob("*.html"))) == 2, "each run's own report is kept"
    page = (store / "reports" / "servers" / "lls001.html").read_text()  # its history: two runs, 10 then 4
    assert re.findall(r"<tr class=''><td>[^<]+</td><td>ok</td><td class='n'>(\d+)</td>", page) == ["4", "10"]
    assert "STALE 2 servers (lls003, lls006): never synchronized" in second.out  # one line for the same problem


def test_report_at_1000_servers(browser, tmp_path):
    """1,000 servers, four failed this run among them, two long gone, one awaiting recovery, one with a
    quarantined file: all on the first screen, the filter and sorting work on 1,000 rows."""
    failing = {"lls0137": 1, "lls0420": 1, "lls0777": 3, "lls0999": 1}
    store = tmp_path / "store"
    report = synthetic_fleet(store, 1000, 3, failing=failing, gone=("lls0005", "lls0500"), recovery=("lls0600",),
                             quarantined=("lls0701",))
    t = report["totals"]
    # stale: the two gone, and lls0777, which failed every night
    assert (t["servers"], t["failed"], t["stale"], t["needs_force"], t["quarantined"]) == (1000, 4, 3, 1, 1), t
    assert [s["name"] for s in report["servers"].values()][:4] == sorted(failing)
    check_page(browser, store / "report.html", set(failing), "report-1000-servers.png", tmp_path)
    assert len(list((store / "reports").glob("*.json"))) == 3
    lines = __import__("ansible_collections.fne.offline_sync.plugins.plugin_utils._report",
                       fromlist=["summary_lines"]).summary_lines(report, str(store / "report.html"))
    assert len(lines) <= 20 and sum(line.startswith("FAILED ") for line in lines) == 4, lines


def test_summary_is_last_and_short(lab_factory, tmp_path):
    """30 servers, four down, ok hosts hidden: the last 25 lines name all four failures and the report path."""
    lab = lab_factory(30, "--records", "3")
    down = {"lls004", "lls011", "lls019", "lls027"}
    for host in down:
        lab.fault(host, "down")
    store = tmp_path / "store"
    run = playbook("sync", lab.inventory, store, expect_rc=2, env=ansible_env(ANSIBLE_DISPLAY_OK_HOSTS="false"))
    tail = run.out.rstrip().splitlines()[-25:]
    named = {m for line in tail for m in re.findall(r"^FAILED (lls\d+): collect failed", line)}
    assert named == down, tail
    assert tail[-1] == f"report: {store / 'report.html'}"


def test_set_stats_totals_only(lab_factory, tmp_path):
    """fne_sync_stats=totals: the AWX artifact holds the run's totals and the failed servers' names, no per-server
    entries (its size no longer grows with the fleet); full (the default) holds every server of the run."""
    lab = lab_factory(3, "--records", "2")
    lab.fault("lls002", "down")
    env = ansible_env(ANSIBLE_SHOW_CUSTOM_STATS="true", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    stats = {}
    for mode in ("totals", "full"):
        run = playbook("sync", lab.inventory, tmp_path / "store", "-e", f"fne_sync_stats={mode}", expect_rc=2, env=env)
        text = run.out[run.out.index("CUSTOM STATS"):]
        stats[mode] = json.loads(text[text.index("{"):text.rindex("}") + 1])["fne_sync_report"]
    assert "servers" not in stats["totals"] and stats["totals"]["failed_servers"] == ["lls002"]
    assert stats["totals"]["totals"]["failed"] == 1 and stats["totals"]["totals"]["in_run"] == 3
    assert set(stats["full"]["servers"]) == {"lls001", "lls002", "lls003"}
    assert len(json.dumps(stats["totals"])) < len(json.dumps(stats["full"]))


def test_fleet_summary_mode(lab_factory, tmp_path):
    """fne_sync_host_results=false: one result for the whole fleet, on the play's first host, failed when a server
    failed and naming it; no per-server result lines; the report still holds every server; status likewise."""
    lab = lab_factory(4, "--records", "2")
    lab.fault("lls003", "down")
    store = tmp_path / "store"
    off = ("-e", "fne_sync_host_results=false")
    run = playbook("sync", lab.inventory, store, *off, expect_rc=2)
    assert set(run.recap) - {"localhost"} == {"lls001"} and run.failed() == {"lls001"}, run
    assert "4 server(s): 3 ok (3 changed), 1 failed\nlls003: collect" in run.out.replace("\\n", "\n"), run
    assert not re.search(r"^(ok|changed|failed): \[lls00[234]\]", run.out, re.M), run
    report = json.loads((store / "report.json").read_text())
    assert set(report["servers"]) == {"lls001", "lls002", "lls003", "lls004"}
    assert report["totals"]["failed"] == 1

    lab.clear_faults()
    again = playbook("sync", lab.inventory, store, *off)
    assert again.failed() == set() and "4 server(s): 4 ok (1 changed), 0 failed" in again.out, again
    lab.verify(complete=True)
    status = playbook("status", lab.inventory, store, *off)
    assert "4 server(s): 4 ok (0 changed), 0 failed" in status.out, status
    assert not re.search(r"^(ok|changed|failed): \[lls00[234]\]", status.out, re.M), status
