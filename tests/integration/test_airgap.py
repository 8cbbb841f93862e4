"""Air-gapped site end to end (issue 11, "Done when"): the inside reaches only the license servers, the outside only
the back office; bundles are lost, carried out of order, carried twice, and come back late. Judged by `fnelab verify`,
the lab's per-endpoint counters and the stores."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from test_sync_support import hosts_of, lab_state, ledger, playbook, tree_digest

SITE, KEY = "plant7", "s3cret-site-key"


def _inventories(lab, tmp_path: Path) -> tuple[Path, Path]:
    """Inside: the license servers, no back office settings at all. Outside: localhost with the back office only."""
    data = yaml.safe_load(lab.inventory.read_text())
    backoffice = {k: data["all"]["children"]["license_servers"]["vars"].pop(k)
                  for k in ("fne_backoffice_url", "fne_backoffice_ca_path")}
    inside = tmp_path / "inside.yml"
    inside.write_text(json.dumps(data))
    outside = tmp_path / "outside.yml"
    outside.write_text(json.dumps({"all": {"hosts": {"localhost": {"ansible_connection": "local", **backoffice}}}}))
    return inside, outside


def _counters(lab) -> tuple[dict, dict]:
    state = lab.state()
    return ({h: s["requests"] for h, s in state["servers"].items()}, state["backoffice"]["requests"])


def _without_report(digest: dict) -> dict:
    """The store without the views every run rewrites (the report, its per-run copies and history pages, the
    metrics, the summary cache): what a run changed lives in the ledgers and the folders."""
    return {k: v for k, v in digest.items()
            if not k.startswith(("report.", "reports/", "fne_sync.prom")) and ".summary.json" not in k}


@pytest.mark.slow
def test_air_gap_cycle(lab_factory, tmp_path):
    lab = lab_factory(20, "--security", "0.3", "--https", "0.3", "--records", "12", "--page-size", "5")
    hosts = hosts_of(lab)
    inside_inv, outside_inv = _inventories(lab, tmp_path)
    inside, outside = tmp_path / "inside-store", tmp_path / "outside-store"
    site = ["-e", f"fne_sync_site={SITE}", "-e", f"fne_sync_site_key={KEY}"]

    def carry_out(medium: Path):
        return _inside_only(lab, lambda: playbook("carry_out", inside_inv, inside, *site,
                                                  "-e", f"fne_sync_bundle_dir={medium}"))

    def carry_in(*src: Path, expect_rc: int = 0, extra: tuple = ()):
        return _inside_only(lab, lambda: playbook("carry_in", inside_inv, inside, *site, *extra,
                                                  "-e", json.dumps({"fne_sync_bundle_src": [str(s) for s in src]}),
                                                  expect_rc=expect_rc))

    def upload(src: list[Path], dest: Path, expect_rc: int = 0):
        before = _counters(lab)[0]
        result = playbook("upload_bundle", outside_inv, outside, *site, "-e", f"fne_sync_bundle_dir={dest}",
                          "-e", json.dumps({"fne_sync_bundle_src": [str(s) for s in src]}), expect_rc=expect_rc)
        assert _counters(lab)[0] == before, "the outside run called a license server"
        return result

    # three outgoing bundles before the first return; the first medium is lost
    m1, m2, m3 = tmp_path / "m1", tmp_path / "m2", tmp_path / "m3"
    out1 = carry_out(m1)
    assert sorted(p.name for p in m1.iterdir()) == [f"fne-{SITE}-out-000001.tar"], out1
    manifest = _manifest(m1 / f"fne-{SITE}-out-000001.tar")
    assert manifest["site"] == SITE and manifest["sequence"] == 1 and set(manifest["servers"]) == set(hosts)
    assert all(len(s["files"]) == 3 and s["waiting_for"].endswith(".ack") for s in manifest["servers"].values())
    assert sum(f["records"] for s in manifest["servers"].values() for f in s["files"]) == 20 * 12
    # the fleet report names each server's bundle in transit, since when
    assert _in_transit(inside) == {h: [f"fne-{SITE}-out-000001.tar"] for h in hosts}
    assert "20 with files in transit (0 in a bundle out > " in out1.out, out1
    assert f"fne-{SITE}-out-000001.tar since {manifest['created']} (" in \
        (inside / "reports" / "servers" / f"{hosts[0]}.html").read_text()
    shutil.rmtree(m1)  # lost on the way

    lab.activity(4)
    carry_out(m2)  # bundle 2, and bundle 1 again (not acknowledged: re-sent whole)
    assert sorted(p.name for p in m2.iterdir()) == [f"fne-{SITE}-out-00000{i}.tar" for i in (1, 2)]
    assert all(len(s["files"]) == 1 for s in _manifest(m2 / f"fne-{SITE}-out-000002.tar")["servers"].values())

    # carried out of order: bundle 2 without bundle 1 is refused, nothing changes
    lab_before, bo_before = lab_state(lab), _counters(lab)[1]
    refused = upload([m2 / f"fne-{SITE}-out-000002.tar"], tmp_path / "r0", expect_rc=2)
    assert "bundle 1 of site plant7 has not arrived" in refused.out, refused
    assert lab_state(lab) == lab_before and _counters(lab)[1] == bo_before
    assert not (outside / ".airgap" / "outside" / SITE / "servers").exists()

    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    upload([m2], r1)
    lab.verify()  # in the back office, not yet acknowledged on the servers
    lab.activity(3)
    carry_out(m3)  # bundle 3; bundles 1 and 2 again: no acknowledgment has come back yet
    assert len(list(m3.iterdir())) == 3
    assert _in_transit(inside) == {h: [f"fne-{SITE}-out-00000{i}.tar" for i in (1, 2, 3)] for h in hosts}
    upload([m3], r2)  # bundles 1 and 2 carried a second time: nothing of them is uploaded again
    digest, uploads = tree_digest(outside), _counters(lab)[1].get("upload", 0)
    again = upload([m3], tmp_path / "r2-again")  # the whole medium carried twice
    assert _counters(lab)[1].get("upload", 0) == uploads, "a re-carried bundle uploaded something again"
    assert _without_report(tree_digest(outside)) == _without_report(digest), again
    total = 20 * 5  # files: 3 + 1 + 1 per server
    assert uploads == total and lab.state()["backoffice"]["messages_accepted"] == total

    # the returns come back late, the second one imported twice
    assert [p.name for p in r1.iterdir()] == [f"fne-{SITE}-return-000001.tar"]
    before, digest = lab_state(lab), tree_digest(inside)
    check = carry_in(r1, extra=("--check",))
    assert "would take acknowledgment" in check.out and check.changed() == set(hosts), check
    assert lab_state(lab) == before and tree_digest(inside) == digest, "check mode changed something"
    first = carry_in(r1)
    assert first.changed() == set(hosts), first
    for host in hosts:
        assert len(list((inside / host / "outbox").glob("*.fnesync"))) == 1  # bundle 3's file is still in transit
    assert _in_transit(inside) == {h: [f"fne-{SITE}-out-000003.tar"] for h in hosts}  # return 1 covers 1 and 2
    _refused_when_tampered(lab, tmp_path, inside, r2 / f"fne-{SITE}-return-000002.tar", carry_in)
    carry_in(r2)
    assert _in_transit(inside) == {h: [] for h in hosts}
    pages = [inside / "report.html", *(inside / "reports" / "servers").glob("*.html")]
    assert not [p.name for p in pages if f"fne-{SITE}-out-" in p.read_text()], "a report still names a bundle"
    settled, digest = lab_state(lab), _without_report(tree_digest(inside))
    twice = carry_in(r2)
    assert twice.changed() == set(), twice
    assert lab_state(lab) == settled and _without_report(tree_digest(inside)) == digest, "a second import changed"

    lab.verify(complete=True)
    final = carry_out(tmp_path / "m4")  # nothing new, nothing in transit: nothing to carry
    assert not (tmp_path / "m4").exists() or not list((tmp_path / "m4").iterdir()), final
    for host in hosts:
        assert not list((inside / host / "outbox").iterdir()) and not list((inside / host / "acks").iterdir())
        assert len(list((inside / host / "sent").glob("*.fnesync"))) == 5
        events = [e["event"] for e in ledger(outside / ".airgap" / "outside" / SITE / "servers", host)]
        assert events.count("uploaded") == 5 and "mismatch" not in events, (host, events)


def _inside_only(lab, run):
    """The inside never calls the back office (its inventory has no back office URL, and the counters prove it)."""
    before = _counters(lab)[1]
    result = run()
    assert _counters(lab)[1] == before, "the inside run called the back office"
    return result


def _in_transit(store: Path) -> dict:
    """Each server's bundles in transit, as the fleet report of the last inside run names them (and its page)."""
    report = json.loads((store / "report.json").read_text())
    page = (store / "report.html").read_text()
    named = {name: [i["bundle"] for i in server["in_transit"]] for name, server in report["servers"].items()}
    assert all(bundle in page for bundles in named.values() for bundle in bundles), "report.html misses a bundle"
    return named


def _manifest(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return json.loads(tar.extractfile("manifest.json").read())


def _refused_when_tampered(lab, tmp_path: Path, inside: Path, good: Path, carry_in) -> None:
    """A return bundle tampered with is refused with a clear error; nothing changes on the servers or in the store
    (corrupted bundles, other sites, unsigned ones: tests/unit/test_bundle.py)."""
    before, digest = lab_state(lab), _without_report(tree_digest(inside))
    with tarfile.open(good) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(dict((m.name, d) for m, d in members)["manifest.json"])

    def rewrite(name: str, change) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        path = folder / good.name
        with tarfile.open(path, "w") as tar:
            for member, data in members:
                data = change(member.name, data)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return path

    ack_member = next(m.name for m, _d in members if m.name.endswith(".ack"))
    # tampered: the manifest follows the changed file, but its signature cannot
    changed_ack = next(d for m, d in members if m.name == ack_member)[:-1] + b"!"
    host = ack_member.split("/")[1]
    manifest["servers"][host]["ack"]["sha256"] = hashlib.sha256(changed_ack).hexdigest()
    tampered = rewrite("tampered", lambda n, d: changed_ack if n == ack_member else
                       (json.dumps(manifest).encode() if n == "manifest.json" else d))
    result = carry_in(tampered, expect_rc=2)
    assert "signature does not match the site key" in result.out, result

    assert lab_state(lab) == before and _without_report(tree_digest(inside)) == digest


def test_browser_only_outside(lab_factory, tmp_path):
    """The outside has only a browser: a bundle laid out in per-server parts of at most 100 files with a checklist,
    the parts submitted to the lab's "Upload synchronization history" page (as a person would, one server's part
    at a time), the saved acknowledgments packed into a return bundle, imported inside: complete."""
    import requests

    lab = lab_factory(2, "--records", "206", "--page-size", "2")  # 103 files per server: two parts each
    inside_inv, outside_inv = _inventories(lab, tmp_path)
    inside, outside = tmp_path / "inside-store", tmp_path / "outside-store"
    site = ["-e", f"fne_sync_site={SITE}"]  # no site key: unsigned bundles
    upload_dir, medium, back = tmp_path / "upload", tmp_path / "m1", tmp_path / "r"
    playbook("carry_out", inside_inv, inside, *site, "-e", f"fne_sync_bundle_dir={medium}")

    before = _counters(lab)
    unpacked = playbook("unpack_bundle", outside_inv, outside, *site, "-e", f"fne_sync_bundle_src={medium}",
                        "-e", f"fne_sync_bundle_dir={upload_dir}")
    assert _counters(lab) == before, "unpacking talked to the lab"
    checklist = (upload_dir / SITE / "CHECKLIST.txt").read_text()
    assert checklist.count("[ ] ") == 4 and "[ ] lls001 part-01: 100 file(s)" in checklist, unpacked
    parts = {host: sorted((upload_dir / SITE / host).iterdir()) for host in hosts_of(lab)}
    assert [len(list(p.glob("*.fnesync"))) for p in parts["lls001"]] == [100, 3]

    info = lab.info["backoffice"]
    page = info["url"].replace("/deviceservices", "/history")

    def submit(part: Path) -> None:
        files = [("file", (p.name, p.read_bytes())) for p in sorted(part.glob("*.fnesync"))]
        answer = requests.post(page, files=files, verify=info["ca_path"], timeout=60)
        assert answer.status_code == 200, answer.text
        (part / "acknowledgment.bin").write_bytes(answer.content)

    submit(parts["lls001"][0])  # one part only before the first pack: the rest stays pending
    pack = ["-e", f"fne_sync_bundle_src={upload_dir}", "-e", f"fne_sync_bundle_dir={back}"]
    playbook("pack_return", outside_inv, outside, *site, *pack)
    assert [p.name for p in back.iterdir()] == [f"fne-{SITE}-return-000001.tar"]
    assert list(_manifest(back / f"fne-{SITE}-return-000001.tar")["servers"]) == ["lls001"]
    for part in (parts["lls001"][1], *parts["lls002"]):
        submit(part)
    playbook("pack_return", outside_inv, outside, *site, *pack)
    playbook("carry_in", inside_inv, inside, *site, "-e", f"fne_sync_bundle_src={back}")
    lab.verify(complete=True)
    assert _counters(lab)[1].get("history_upload") == 4 and not _counters(lab)[1].get("upload")
    assert lab.state()["backoffice"]["messages_accepted"] == 2 * 103  # each file once


def test_forced_recovery_across_the_gap(lab_factory, tmp_path):
    """The documented recovery split across the gap. lls001's inside store is lost while its bundle is uploaded
    outside (its acknowledgment not yet back): the first contact's forced download overlaps what the back office
    holds, the outside is answered the mismatch and names it in the return bundle; once that acknowledgment is
    processed inside, carry_out downloads with force and flags lls001 `forced`, the outside sets its refused file
    aside and uploads the forced one. lls002's download answer is lost while its bundle is in transit: it is held
    (nothing new bundled) until no bundle of it is in transit, then recovered the same way. Complete, each record
    once in the back office, every server synchronized again."""
    lab = lab_factory(3, "--records", "6", "--page-size", "5")
    hosts = hosts_of(lab)
    inside_inv, outside_inv = _inventories(lab, tmp_path)
    inside, outside = tmp_path / "inside-store", tmp_path / "outside-store"
    site = ["-e", f"fne_sync_site={SITE}"]
    outside_servers = outside / ".airgap" / "outside" / SITE / "servers"

    def carry_out(medium: Path):
        return _inside_only(lab, lambda: playbook("carry_out", inside_inv, inside, *site,
                                                  "-e", f"fne_sync_bundle_dir={medium}"))

    def carry_in(*src: Path):
        return _inside_only(lab, lambda: playbook("carry_in", inside_inv, inside, *site, "-e",
                                                  json.dumps({"fne_sync_bundle_src": [str(s) for s in src]})))

    def upload(src: Path, dest: Path, expect_rc: int = 0):
        return playbook("upload_bundle", outside_inv, outside, *site, "-e", f"fne_sync_bundle_src={src}",
                        "-e", f"fne_sync_bundle_dir={dest}", expect_rc=expect_rc)

    m1, m2, m3, r1, r2, r3 = (tmp_path / n for n in ("m1", "m2", "m3", "r1", "r2", "r3"))
    carry_out(m1)
    upload(m1, r1)  # all of bundle 1 in the back office; return 1 is not carried in yet
    shutil.rmtree(inside / "lls001")  # lost with its disk: lls001 is a first contact again
    lab.activity(3)
    lab.fault("lls002", "drop", "--count", "1", "--endpoint", "generate")  # the download's answer is lost
    second = carry_out(m2)
    assert "lls002: recovery pending: lost response while downloading" in second.out, second
    bundle2 = _manifest(m2 / f"fne-{SITE}-out-000002.tar")["servers"]
    assert bundle2["lls001"]["forced"] and "lls002" not in bundle2 and not bundle2["lls003"].get("forced")
    assert (inside / "lls002" / "needs_force").exists()

    refused = upload(m2, r2, expect_rc=2)  # lls001's forced file starts before what the back office holds
    problem = _manifest(r2 / f"fne-{SITE}-return-000002.tar")["servers"]["lls001"]["problem"]
    assert "Mismatched or out of order time stamp" in problem and "never reached" not in problem, refused

    carry_in(r1, r2)  # the late return first; lls001 marked needs_force, every acknowledgment processed
    third = carry_out(m3)
    bundle3 = _manifest(m3 / f"fne-{SITE}-out-000003.tar")["servers"]
    assert bundle3["lls001"]["forced"] and bundle3["lls002"]["forced"], third
    for host in ("lls001", "lls002"):
        assert not (inside / host / "needs_force").exists()
        assert list((inside / host / "superseded").glob("*.fnesync")) or host == "lls002"
    upload(m3, r3)
    # the refused forced files, set aside outside; never uploaded
    assert sorted(p.name for p in (outside_servers / "lls001" / "superseded").iterdir()) == \
        [f["name"] for f in bundle2["lls001"]["files"]]
    carry_in(r3)

    report = lab.verify(complete=True)  # every record in the back office once, purged from its server
    assert all(s["duplicated"] == 0 and s["not_purged"] == 0 for s in report["servers"].values()), report
    uploaded = []
    for host in hosts:
        assert not (inside / host / "needs_force").exists()
        assert not list((inside / host / "outbox").iterdir()) and not list((inside / host / "acks").iterdir())
        uploaded += [(host, e["file"]) for e in ledger(outside_servers, host) if e["event"] == "uploaded"]
    assert len(uploaded) == len(set(uploaded)) == lab.state()["backoffice"]["messages_accepted"], uploaded
    assert _in_transit(inside) == {h: [] for h in hosts}  # every bundle acknowledged: nothing to carry


@pytest.mark.slow
def test_remote_topology_servers_cross_the_gap(lab_factory, sshd, tmp_path):
    """A remote-topology server inside (generate and process run on its host over real SSH) beside api-topology
    ones: carry_out downloads on the host and bundles its files, carry_in processes its acknowledgment there (the
    host's folder purged). Complete, and no outside run reaches a license server."""
    from test_sync_support import PYTHON

    lab = lab_factory(3, "--records", "7", "--page-size", "5")
    inside_inv, outside_inv = _inventories(lab, tmp_path)
    data = json.loads(inside_inv.read_text())
    folder = tmp_path / "hosts" / "lls001" / "fnesync"
    data["all"]["children"]["license_servers"]["hosts"]["lls001"].update(
        fne_sync_topology="remote", fne_sync_remote_path=str(folder), ansible_host=sshd["host"],
        ansible_port=sshd["port"], ansible_user=sshd["user"], ansible_ssh_private_key_file=sshd["key"],
        ansible_python_interpreter=PYTHON)
    inside_inv.write_text(json.dumps(data))
    inside, outside = tmp_path / "inside-store", tmp_path / "outside-store"
    site = ["-e", f"fne_sync_site={SITE}"]

    _inside_only(lab, lambda: playbook("carry_out", inside_inv, inside, *site,
                                       "-e", f"fne_sync_bundle_dir={tmp_path / 'm1'}"))
    files = _manifest(tmp_path / "m1" / f"fne-{SITE}-out-000001.tar")["servers"]["lls001"]["files"]
    assert [f["records"] for f in files] == [5, 2] and len(list(folder.glob("*.fnesync"))) == 2  # kept on the host
    before = _counters(lab)[0]
    playbook("upload_bundle", outside_inv, outside, *site, "-e", f"fne_sync_bundle_src={tmp_path / 'm1'}",
             "-e", f"fne_sync_bundle_dir={tmp_path / 'r1'}")
    assert _counters(lab)[0] == before, "the outside run called a license server"
    back = _inside_only(lab, lambda: playbook("carry_in", inside_inv, inside, *site,
                                              "-e", f"fne_sync_bundle_src={tmp_path / 'r1'}"))
    assert "lls001" in back.changed(), back
    assert not list(folder.glob("*.fnesync")), "not purged on the license server host"
    assert not list((inside / "lls001" / "acks").iterdir()) and not list((inside / "lls001" / "outbox").iterdir())
    lab.verify(complete=True)
