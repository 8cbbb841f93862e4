"""Air-gap bundles (plugin_utils/_bundle.py): a file enters one bundle, unacknowledged bundles are re-sent whole,
every bundle is verified whole (site, kind, signature, sha256) and a refused one changes nothing, outgoing bundles
are taken in sequence order only, a return bundle imported twice changes nothing. The back office and the license
servers are the lab's, in tests/integration/test_airgap.py; here the outside's acknowledgments are written into
its store as the fleet's upload writes them."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.module_utils._files import parse_time  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _bundle as bundles  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _metrics as metrics  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _report as report_mod  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._bundle import BundleError  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import ServerStore  # noqa: E402

SITE, KEY = "plant7", "key-1"
HOSTS = {"lls001": {"host_id": "A1"}, "lls002": {"host_id": "A2"}}


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))} if root.exists() else {}


def fetch(store: Path, host: str, name: str, records: int = 5) -> None:
    server = ServerStore(str(store), host).ensure()
    tmp = Path(server.dir) / name
    tmp.write_bytes(f"{host} {name}".encode())
    server.admit(str(tmp), records=records)


def outside_uploads(root: str, names: list) -> dict:
    """What the fleet's upload leaves in the outside store: an acknowledgment per file, the file in sent/."""
    for name in names:
        server = ServerStore(root, name)
        for path in server.outbox_files():
            server.record_ack(path, b"ack of " + os.path.basename(path).encode())
    return {n: {"changed": True} for n in names}


@pytest.fixture
def inside(tmp_path):
    store = tmp_path / "inside"
    for host in HOSTS:
        fetch(store, host, "20261101T000001.fnesync")
        fetch(store, host, "20261101T000002.fnesync")
    return store


def test_a_file_enters_one_bundle_and_unacknowledged_bundles_are_carried_again(inside, tmp_path):
    before = digest(inside)
    check = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m0"), HOSTS, check_mode=True)
    assert check["hosts"]["lls001"]["changed"] and check["written"] is None
    assert digest(inside) == before and not (tmp_path / "m0").exists()

    first = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m1"), HOSTS)
    assert first["written"] == "fne-plant7-out-000001.tar"
    manifest = bundles.read_bundle(str(tmp_path / "m1" / first["written"]), bundles.OUTGOING, SITE, KEY).manifest
    entry = manifest["servers"]["lls001"]
    names = [f["name"] for f in entry["files"]]
    assert entry["host_id"] == "A1" and names == ["20261101T000001.fnesync", "20261101T000002.fnesync"]
    assert entry["files"][0]["records"] == 5 and entry["waiting_for"] == "20261101T000002.ack"

    again = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS)  # nothing new: no bundle 2
    assert again["written"] is None and not again["changed"]
    assert sorted(os.listdir(tmp_path / "m2")) == ["fne-plant7-out-000001.tar"]  # bundle 1 again, whole
    fetch(inside, "lls002", "20261101T000003.fnesync")
    third = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m3"), HOSTS)
    assert sorted(os.listdir(tmp_path / "m3")) == ["fne-plant7-out-000001.tar", "fne-plant7-out-000002.tar"]
    second = bundles.read_bundle(str(tmp_path / "m3" / third["written"]), bundles.OUTGOING, SITE, KEY)
    assert list(second.servers) == ["lls002"] and [f["name"] for f in second.servers["lls002"]["files"]] == [
        "20261101T000003.fnesync"]
    assert third["hosts"]["lls001"]["in_transit"] == ["fne-plant7-out-000001.tar"]
    assert third["stale"] == []

    # a bundle out longer than stale_days without an acknowledgment is named
    state_path = inside / ".airgap" / "inside" / SITE / "state.json"
    state = json.loads(state_path.read_text())
    state["bundles"][0]["created"] = "2026-01-01T00:00:00Z"
    state_path.write_text(json.dumps(state))
    late = bundles.export(str(inside), SITE, KEY, None, HOSTS, stale_days=7)
    assert late["stale"] == ["fne-plant7-out-000001.tar"] and late["outstanding"][0]["age_days"] > 7


def _tar(path: Path, members: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _members(path: Path) -> list:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


@pytest.fixture
def outgoing(inside, tmp_path) -> Path:
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m1"), HOSTS)
    return tmp_path / "m1" / "fne-plant7-out-000001.tar"


def test_a_bundle_is_refused_whole_when_anything_is_wrong(outgoing, tmp_path):
    members = _members(outgoing)
    by_name = dict(members)
    payload = "servers/lls001/20261101T000001.fnesync"
    manifest = json.loads(by_name["manifest.json"])

    def variant(name: str, change) -> str:
        return str(_tar(tmp_path / name / outgoing.name, [(n, change(n, d)) for n, d in members if change(n, d)
                                                          is not None]))

    flipped = variant("flipped", lambda n, d: d + b"!" if n == payload else d)
    manifest["servers"]["lls001"]["files"][0]["sha256"] = hashlib.sha256(by_name[payload] + b"!").hexdigest()
    tampered = variant("tampered", lambda n, d: by_name[payload] + b"!" if n == payload else
                       json.dumps(manifest).encode() if n == "manifest.json" else d)
    unsigned = variant("unsigned", lambda n, d: None if n == "manifest.hmac" else d)
    extra = str(_tar(tmp_path / "extra" / outgoing.name, [*members, ("servers/lls001/x.fnesync", b"x")]))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    cases = [
        (flipped, SITE, KEY, bundles.OUTGOING, f"{payload} is corrupted"),
        (tampered, SITE, KEY, bundles.OUTGOING, "signature does not match the site key"),
        (unsigned, SITE, KEY, bundles.OUTGOING, "not signed, but this site has a key"),
        (str(outgoing), SITE, None, bundles.OUTGOING, "signed, but no site key is configured"),
        (str(outgoing), SITE, "other-key", bundles.OUTGOING, "signature does not match"),
        (str(outgoing), "plant8", KEY, bundles.OUTGOING, "a bundle of site 'plant7', this is site 'plant8'"),
        (str(outgoing), SITE, KEY, bundles.RETURN, "this is an outgoing bundle, a return bundle is needed"),
        (extra, SITE, KEY, bundles.OUTGOING, "do not match its manifest"),
        (str(tmp_path / "junk.tar"), SITE, KEY, bundles.OUTGOING, "not a readable bundle"),
    ]
    for path, site, key, kind, words in cases:
        with pytest.raises(BundleError, match=words):
            bundles.read_bundle(path, kind, site, key)
    assert bundles.read_bundle(str(outgoing), bundles.OUTGOING, SITE, KEY).sequence == 1


def test_outgoing_bundles_are_taken_in_sequence_order_only(inside, outgoing, tmp_path):
    fetch(inside, "lls001", "20261101T000003.fnesync")
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS)
    second = tmp_path / "m2" / "fne-plant7-out-000002.tar"
    outside = tmp_path / "outside"
    calls = []

    def uploads(root, names):
        calls.append(names)
        return outside_uploads(root, names)

    with pytest.raises(BundleError, match="bundle 1 of site plant7 has not arrived"):
        bundles.upload(str(outside), SITE, KEY, [str(second)], None, uploads)
    assert not calls and not outside.exists()

    done = bundles.upload(str(outside), SITE, KEY, [str(tmp_path / "m2")], str(tmp_path / "r1"), uploads)
    assert done["return_bundle"] == "fne-plant7-return-000001.tar" and calls == [["lls001", "lls002"]]
    held = digest(outside)
    repeat = bundles.upload(str(outside), SITE, KEY, [str(second), str(outgoing)], str(tmp_path / "r2"), uploads)
    assert repeat["return_bundle"] is None and os.listdir(tmp_path / "r2") == ["fne-plant7-return-000001.tar"]
    assert digest(outside) == held  # nothing admitted twice, no new return bundle

    # an inside store that was replaced numbers its bundles from 1 again: refused, not taken for a re-carry
    fresh = tmp_path / "fresh"
    fetch(fresh, "lls001", "20261102T000001.fnesync")
    bundles.export(str(fresh), SITE, KEY, str(tmp_path / "m9"), HOSTS)
    with pytest.raises(BundleError, match="sequence 1 was already received as bundle"):
        bundles.upload(str(outside), SITE, KEY, [str(tmp_path / "m9")], None, uploads)
    assert digest(outside) == held


def test_a_return_bundle_imported_twice_changes_nothing(inside, outgoing, tmp_path):
    bundles.upload(str(tmp_path / "outside"), SITE, KEY, [str(outgoing)], str(tmp_path / "r1"), outside_uploads)
    ret = tmp_path / "r1" / "fne-plant7-return-000001.tar"
    before = digest(inside)
    with pytest.raises(BundleError, match="this is site 'plant8'"):
        bundles.import_returns(str(inside), "plant8", KEY, [str(ret)], list(HOSTS))
    with pytest.raises(BundleError, match="this is an outgoing bundle"):
        bundles.import_returns(str(inside), SITE, KEY, [str(outgoing)], list(HOSTS))
    assert digest(inside) == before

    first = bundles.import_returns(str(inside), SITE, KEY, [str(ret)], list(HOSTS))
    assert first["changed"]
    for host in HOSTS:
        server = ServerStore(str(inside), host)
        assert not server.outbox_files()  # the newest acknowledgment covers the older file too
        assert [os.path.basename(a) for a in server.pending_acks()] == ["20261101T000002.ack"]
    after = digest(inside)
    second = bundles.import_returns(str(inside), SITE, KEY, [str(ret)], list(HOSTS))
    assert not second["changed"] and digest(inside) == after
    state = json.loads((inside / ".airgap" / "inside" / SITE / "state.json").read_text())
    assert state["bundles"][0]["done"]  # acknowledged: no longer carried
    assert bundles.export(str(inside), SITE, KEY, str(tmp_path / "m5"), HOSTS)["copied"] == []


def test_browser_parts_hold_at_most_100_files_and_never_change(tmp_path):
    """unpack: parts of at most 100 files of one server in upload order; a part laid out never changes (its saved
    acknowledgment covers exactly its files), new files go into new parts. pack: each saved acknowledgment covers
    its part's files, the others wait."""
    inside, outside, upload_dir = tmp_path / "inside", tmp_path / "outside", tmp_path / "upload"
    for second in range(101):
        fetch(inside, "lls001", f"20261101T00{second // 60:02d}{second % 60:02d}.fnesync")
    bundles.export(str(inside), SITE, None, str(tmp_path / "m1"), HOSTS)
    first = bundles.unpack(str(outside), SITE, None, [str(tmp_path / "m1")], str(upload_dir))
    host_dir = upload_dir / SITE / "lls001"
    assert [len(os.listdir(host_dir / p)) for p in ("part-01", "part-02")] == [100, 1]
    assert sorted(os.listdir(host_dir / "part-01"))[-1] == "20261101T000139.fnesync"  # upload order
    assert len([line for line in first["lines"] if line.startswith("[ ] ")]) == 2

    (host_dir / "part-01" / "acknowledgment.bin").write_bytes(b"ack of part 1")
    fetch(inside, "lls001", "20261101T010000.fnesync")
    bundles.export(str(inside), SITE, None, str(tmp_path / "m2"), HOSTS)
    second = bundles.unpack(str(outside), SITE, None, [str(tmp_path / "m2")], str(upload_dir))
    assert [len(os.listdir(host_dir / p)) for p in ("part-01", "part-02", "part-03")] == [101, 1, 1]  # 100 + ack
    assert [line.split()[3] for line in second["lines"] if line.startswith("[ ] ")] == ["part-02:", "part-03:"]

    packed = bundles.pack(str(outside), SITE, None, str(upload_dir), str(tmp_path / "r1"))
    server = ServerStore(str(outside / ".airgap" / "outside" / SITE / "servers"), "lls001")
    assert [os.path.basename(p) for p in server.outbox_files()] == ["20261101T000140.fnesync",
                                                                    "20261101T010000.fnesync"]
    assert [os.path.basename(p) for p in server.pending_acks()] == ["20261101T000139.ack"]
    assert packed["return_bundle"] == "fne-plant7-return-000001.tar"
    again = bundles.pack(str(outside), SITE, None, str(upload_dir), str(tmp_path / "r2"))
    assert again["return_bundle"] is None and not again["changed"]  # nothing new saved: nothing new packed


def test_a_mismatch_answered_outside_marks_the_server_for_recovery_inside(inside, outgoing, tmp_path):
    """Only the inside can run the documented forced download: the return bundle names the outside's problem and
    the import marks that server (needs_force), once."""
    outside = tmp_path / "outside"
    bundles.upload(str(outside), SITE, KEY, [str(outgoing)], None, lambda root, names: {})  # nothing accepted
    root = outside / ".airgap" / "outside" / SITE / "servers"
    ServerStore(str(root), "lls002").set_needs_force("back office mismatch: Expected sync time ...")
    packed = bundles.pack(str(outside), SITE, KEY, str(tmp_path / "none"), str(tmp_path / "r1"))
    manifest = bundles.read_bundle(str(tmp_path / "r1" / packed["return_bundle"]), bundles.RETURN, SITE, KEY).manifest
    assert manifest["servers"] == {"lls002": {"problem": "back office mismatch: Expected sync time ..."}}
    done = bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    assert "the outside reported: back office mismatch" in done["hosts"]["lls002"]["msg"]
    assert "back office mismatch" in ServerStore(str(inside), "lls002").needs_force()
    assert ServerStore(str(inside), "lls001").needs_force() is None
    ServerStore(str(inside), "lls002").clear_needs_force()  # recovered meanwhile: the same bundle again is no news
    again = bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    assert not again["changed"] and ServerStore(str(inside), "lls002").needs_force() is None


def test_the_report_names_each_servers_bundles_in_transit_and_flags_old_ones(inside, tmp_path):
    """The fleet report reads the inside site's state, never changing it: each server's bundles not yet
    acknowledged, since when. One out longer than stale_days is a reason, a count, a metric and red in the HTML.
    The stale flag stays about the last acknowledged sync: a server that synchronized just now is not stale while
    its newer files are in transit, and one never synchronized stays stale though its files are on their way."""
    ServerStore(str(inside), "lls001").log("processed", file="20261031T000000.ack")  # lls001 synchronized now
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m1"), HOSTS)
    fetch(inside, "lls002", "20261101T000003.fnesync")
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS)
    state_path = inside / ".airgap" / "inside" / SITE / "state.json"
    state = json.loads(state_path.read_text())

    fresh = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
    lls001, lls002 = fresh["servers"]["lls001"], fresh["servers"]["lls002"]
    assert [(i["bundle"], i["files"], i["stale"]) for i in lls002["in_transit"]] == [
        ("fne-plant7-out-000001.tar", 2, False), ("fne-plant7-out-000002.tar", 1, False)]
    assert [(i["bundle"], i["id"], i["created"]) for i in lls001["in_transit"]] == [
        ("fne-plant7-out-000001.tar", state["bundles"][0]["id"], state["bundles"][0]["created"])]
    assert not lls001["stale"] and lls001["reasons"] == []  # in transit is no problem by itself
    assert lls002["stale"] and lls002["reasons"] == ["never synchronized"]
    assert fresh["totals"]["in_transit"] == 2 and fresh["totals"]["in_transit_stale"] == 0
    assert "2 with files in transit (0 in a bundle out > 7.0 days)" in report_mod.summary_lines(fresh)[0]

    # bundle 1 was written 30 days ago and no acknowledgment has come back
    month_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    state["bundles"][0]["created"] = month_ago
    state_path.write_text(json.dumps(state))
    airgap = digest(inside / ".airgap")
    late = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
    assert digest(inside / ".airgap") == airgap, "the report changed the site's state"
    lls001, lls002 = late["servers"]["lls001"], late["servers"]["lls002"]
    overdue = f"bundle fne-plant7-out-000001.tar in transit for 30.0 days (since {month_ago}, no acknowledgment back)"
    assert lls001["in_transit"][0]["stale"] and lls001["in_transit"][0]["age_days"] == 30.0
    assert not lls001["stale"] and lls001["status"] == "ok" and lls001["reasons"] == [overdue]
    assert lls002["reasons"] == ["never synchronized", overdue] and not lls002["in_transit"][1]["stale"]
    assert late["totals"]["in_transit_stale"] == 2
    lines = report_mod.summary_lines(late)
    assert "2 with files in transit (2 in a bundle out > 7.0 days)" in lines[0]
    assert any(line.startswith("OK lls001: bundle fne-plant7-out-000001.tar in transit") for line in lines), lines
    page = report_mod.render_html(late)
    assert re.search(r"<span class='late'[^>]*>fne-plant7-out-000001\.tar \(30\.0 d\)</span>", page)
    assert re.search(r"<span class=''[^>]*>fne-plant7-out-000002\.tar \(0\.0 d\)</span>", page)
    server_page = report_mod.render_server_html(lls002)
    assert f"fne-plant7-out-000001.tar since {month_ago} (30.0 days, out too long)" in server_page
    prom = metrics.render(late)
    assert 'fne_sync_bundle_stale{server="lls001"} 1' in prom
    created = dt.datetime.strptime(month_ago, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    assert f'fne_sync_bundle_in_transit_since_timestamp_seconds{{server="lls002"}} {created!r}' in prom

    # lls001's acknowledgment of bundle 1 comes back, lls002's not yet: bundle 1 is still out, for lls002 only
    outside = str(tmp_path / "outside")
    bundles.upload(outside, SITE, KEY, [str(tmp_path / "m1")], str(tmp_path / "r1"),
                   lambda root, names: outside_uploads(root, ["lls001"]))
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    half = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
    assert half["servers"]["lls001"]["in_transit"] == [] and half["servers"]["lls001"]["reasons"] == []
    assert [i["bundle"] for i in half["servers"]["lls002"]["in_transit"]] == [
        "fne-plant7-out-000001.tar", "fne-plant7-out-000002.tar"]
    assert 'fne_sync_bundle_stale{server="lls001"} 0' in metrics.render(half)

    # then lls002's: only bundle 2 is in transit
    bundles.upload(outside, SITE, KEY, [str(tmp_path / "m1")], str(tmp_path / "r2"), outside_uploads)
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r2")], list(HOSTS))
    back = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
    assert [i["bundle"] for i in back["servers"]["lls002"]["in_transit"]] == ["fne-plant7-out-000002.tar"]
    assert back["totals"]["in_transit"] == 1 and back["totals"]["in_transit_stale"] == 0
    assert "fne-plant7-out-000001" not in report_mod.render_html(back)


def test_a_damaged_site_state_does_not_break_the_report(inside, tmp_path):
    """No air gap: nothing in transit, nothing to say. A state that is no JSON, or JSON that is no state, shows no
    bundle and is named in the report, the summary and the page; the report is written and the state left as it
    was."""
    plain = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
    assert plain["bundle_problems"] == [] and not any(s["in_transit"] for s in plain["servers"].values())
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m1"), HOSTS)
    state_path = inside / ".airgap" / "inside" / SITE / "state.json"
    for damage, words in (('{"bundles": [{"id": "plant7-o', "is damaged (Unterminated string"),
                          (json.dumps({"bundles": [{"name": "x.tar", "servers": {"lls001": []}}]}),
                           "is damaged (KeyError('created'))")):
        state_path.write_text(damage)
        report = report_mod.build_report(str(inside), list(HOSTS), {}, [], 7.0)
        assert [p.split(": ", 1)[0] for p in report["bundle_problems"]] == ["site plant7"]
        assert words in report["bundle_problems"][0] and str(state_path) in report["bundle_problems"][0]
        assert not any(s["in_transit"] for s in report["servers"].values())
        lines = report_mod.summary_lines(report)
        assert any(line.startswith("AIR GAP site plant7: ") for line in lines), lines
        paths = report_mod.write_report(report)
        assert "air gap:</b> site plant7: " in Path(paths["html"]).read_text()
        assert json.loads(Path(paths["json"]).read_text())["bundle_problems"] == report["bundle_problems"]
        assert state_path.read_text() == damage


def forced_recovery(store: Path, calls: list):
    """What the fleet's recovery half leaves in a server's store (plugins/action/bundle.py runs the real one
    against a license server, tests/integration/test_airgap.py): the outbox set aside, a forced download, the
    mark cleared."""
    def recover(ready: dict) -> dict:
        calls.append(sorted(ready))
        for number, host in enumerate(sorted(ready), 10):
            server = ServerStore(str(store), host)
            server.supersede(ready[host])
            tmp = Path(server.dir) / f"20261101T0000{number}.fnesync"
            tmp.write_bytes(f"{host} forced".encode())
            server.admit(str(tmp), records=9, forced=True)
            server.clear_needs_force()
        return {h: {"failed": False, "msg": f"{h}: recover: downloaded 1 file(s)"} for h in ready}
    return recover


def test_a_lost_download_holds_the_server_until_nothing_of_it_is_in_transit(inside, outgoing, tmp_path):
    """An inside download whose answer was lost (needs_force) holds that server: nothing new of it is bundled and
    its forced download waits while a bundle of it is in transit (the back office may hold more than the server
    processed). Once that bundle's acknowledgment is in, export runs the recovery and flags the server forced."""
    calls: list = []
    lls002 = ServerStore(str(inside), "lls002")
    fetch(inside, "lls002", "20261101T000003.fnesync")  # downloaded before the answer that was lost
    lls002.set_needs_force("lost response while downloading")
    held = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS,
                          recover=forced_recovery(inside, calls))
    assert calls == [] and held["written"] is None
    assert held["hosts"]["lls002"]["msg"] == "lls002: recovery pending: lost response while downloading"

    bundles.upload(str(tmp_path / "outside"), SITE, KEY, [str(outgoing)], str(tmp_path / "r1"), outside_uploads)
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    before = digest(inside)
    check = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m3"), HOSTS, check_mode=True,
                           recover=forced_recovery(inside, calls))
    assert calls == [] and digest(inside) == before and "would run the recovery" in check["hosts"]["lls002"]["msg"]
    done = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m3"), HOSTS,
                          recover=forced_recovery(inside, calls))
    assert calls == [["lls002"]] and done["written"] == "fne-plant7-out-000002.tar"
    entry = bundles.read_bundle(str(tmp_path / "m3" / done["written"]), bundles.OUTGOING, SITE, KEY).servers
    assert list(entry) == ["lls002"] and entry["lls002"]["forced"] is True
    assert [f["name"] for f in entry["lls002"]["files"]] == ["20261101T000010.fnesync"]  # 000003 set aside
    assert "recover: downloaded 1 file(s); 1 file(s) into bundle" in done["hosts"]["lls002"]["msg"]


def test_a_mismatch_outside_is_recovered_once_and_replaces_what_the_outside_holds(inside, outgoing, tmp_path):
    """The outside's mismatch comes back with its newest acknowledgment: the recovery runs although the refused
    file's bundle is in transit, once (a later mark waits for that bundle); the outside sets the refused file aside
    before it takes the forced one, uploads only that, and reports no problem any more."""
    outside, calls = tmp_path / "outside", []
    root = outside / ".airgap" / "outside" / SITE / "servers"

    def refuse_lls002_second(root_dir: str, names: list) -> dict:
        server = ServerStore(root_dir, "lls002")
        first, _second = server.outbox_files()
        server.record_ack(first, b"ack of first")
        server.set_needs_force("back office mismatch: Expected sync time Nov 1, 2026 12:00:01 AM, got ...")
        return outside_uploads(root_dir, ["lls001"])

    bundles.upload(str(outside), SITE, KEY, [str(outgoing)], str(tmp_path / "r1"), refuse_lls002_second)
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    lls002 = ServerStore(str(inside), "lls002")
    assert "back office mismatch" in lls002.needs_force() and len(lls002.outbox_files()) == 1  # still in transit
    first = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS, recover=forced_recovery(inside, calls))
    assert calls == [["lls002"]] and first["written"] == "fne-plant7-out-000002.tar"

    # the outside runs again before bundle 2 arrives: its return still names the refused file, which bundle 2
    # replaces; that is no news, and neither is a lost download while bundle 2 is in transit
    def refuse_again(root_dir: str, names: list) -> dict:
        ServerStore(root_dir, "lls002").set_needs_force("back office mismatch: Expected ..., got ... (again)")
        return {}

    bundles.upload(str(outside), SITE, KEY, [str(outgoing)], str(tmp_path / "r1b"), refuse_again)
    assert bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1b")], list(HOSTS))["changed"]
    assert "(again)" in lls002.needs_force()
    again = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m3"), HOSTS, recover=forced_recovery(inside, calls))
    assert calls == [["lls002"]] and again["written"] is None
    assert again["hosts"]["lls002"]["msg"].startswith("lls002: recovery pending: outside upload: back office")
    lls002.clear_needs_force()  # (left set, it would cost one more forced download once bundle 2 is answered)

    uploads: list = []

    def record(root_dir: str, names: list) -> dict:
        uploads.extend(os.path.basename(p) for n in names for p in ServerStore(root_dir, n).outbox_files())
        return outside_uploads(root_dir, names)

    # a run that died after taking the forced bundle's files, before recording the bundle: taken again, its own
    # files stay (only what was there before goes aside)
    state_path = outside / ".airgap" / "outside" / SITE / "state.json"
    state = json.loads(state_path.read_text())
    bundles.upload(str(outside), SITE, KEY, [str(tmp_path / "m2")], None, lambda root_dir, names: {})
    state_path.write_text(json.dumps(state))
    back = bundles.upload(str(outside), SITE, KEY, [str(tmp_path / "m2")], str(tmp_path / "r2"), record)
    outside_lls002 = ServerStore(str(root), "lls002")
    assert uploads == ["20261101T000010.fnesync"]  # the refused file went aside, never uploaded again
    assert [os.path.basename(p) for p in os.scandir(outside_lls002.superseded)] == ["20261101T000002.fnesync"]
    assert outside_lls002.needs_force() is None
    manifest = bundles.read_bundle(str(tmp_path / "r2" / back["return_bundle"]), bundles.RETURN, SITE, KEY).manifest
    assert manifest["servers"]["lls002"] == {"problem": None, "ack": manifest["servers"]["lls002"]["ack"]}
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r2")], list(HOSTS))
    assert not lls002.outbox_files() and lls002.needs_force() is None
    assert bundles.export(str(inside), SITE, KEY, str(tmp_path / "m4"), HOSTS)["copied"] == []


def test_a_bundle_is_carried_until_the_outside_has_it(inside, outgoing, tmp_path):
    """A bundle whose files no longer wait inside because they were set aside or lost (a wiped store), not
    acknowledged, is still carried: the outside takes bundles in sequence order only, so a later one would be
    refused without it. A forced download (a wiped store's first contact) goes out flagged forced."""
    fetch(inside, "lls002", "20261101T000003.fnesync")
    bundles.export(str(inside), SITE, KEY, str(tmp_path / "m2"), HOSTS)  # bundle 2: lls002 only
    ServerStore(str(inside), "lls002").supersede("a forced download replaces it")
    server = ServerStore(str(inside), "lls002")
    (Path(server.dir) / "20261101T000004.fnesync").write_bytes(b"forced")
    server.admit(str(Path(server.dir) / "20261101T000004.fnesync"), records=9, forced=True)
    third = bundles.export(str(inside), SITE, KEY, str(tmp_path / "m3"), HOSTS)
    assert sorted(os.listdir(tmp_path / "m3")) == [f"fne-plant7-out-00000{i}.tar" for i in (1, 2, 3)]
    assert third["hosts"]["lls002"]["in_transit"] == ["fne-plant7-out-000003.tar"]  # its others are set aside
    manifest = bundles.read_bundle(str(tmp_path / "m3" / third["written"]), bundles.OUTGOING, SITE, KEY).manifest
    assert manifest["servers"]["lls002"]["forced"] is True and "forced" not in manifest["servers"].get("lls001", {})
    bundles.upload(str(tmp_path / "outside"), SITE, KEY, [str(tmp_path / "m3")], str(tmp_path / "r1"),
                   outside_uploads)
    bundles.import_returns(str(inside), SITE, KEY, [str(tmp_path / "r1")], list(HOSTS))
    assert bundles.export(str(inside), SITE, KEY, str(tmp_path / "m4"), HOSTS)["copied"] == []


def test_a_mismatch_beyond_every_acknowledgment_outside_means_one_was_lost(tmp_path):
    """The outside names the lost-acknowledgment case (only the vendor's manual step helps there) when the back
    office expects a time later than every acknowledgment it holds; an acknowledgment on its way back is no such
    case."""
    server = ServerStore(str(tmp_path), "lls001").ensure()
    assert bundles.beyond_acks(server, parse_time("Nov 1, 2026 12:00:01 AM"))  # none at all
    fetch(tmp_path, "lls001", "20261101T000001.fnesync")
    server.record_ack(server.outbox_files()[0], b"ack")
    assert not bundles.beyond_acks(server, parse_time("Nov 1, 2026 12:00:01 AM"))
    assert bundles.beyond_acks(server, parse_time("Nov 1, 2026 12:00:02 AM"))
    assert not bundles.beyond_acks(server, None)  # the text named no readable time
