"""The vendor's tools as the fleet's backend (fne_sync_backend=tool): the sync playbook drives the stand-in tools, real
Java programs, across both topologies, HTTPS and security, and in the lab variants where the tools exit 0 after an
error or are installed without `.sh`. Judged by `fnelab verify --complete`, the ledger and the report. A few runs
only: every step of every server is a JVM start."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from test_sync_support import PYTHON, ledger, playbook, write_inventory


def tool_args(lab) -> tuple[str, ...]:
    return "-e", "fne_sync_backend=tool", "-e", f"fne_sync_tool_path={lab.info['tools']}"


def stamp_iso(name: str) -> str:
    return datetime.strptime(name[:15], "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_tool_ledger(store, host: str) -> None:
    """Every talk with a server is recorded as the tool's, and each acknowledgment carries the LastSyncTime the
    back-office tool printed (only the tool prints it: the http backend leaves it out)."""
    events = ledger(store, host)
    talks = [e for e in events if e["event"] in ("fetched", "uploaded", "acknowledged", "processed")]
    assert talks and all(e.get("backend") == "tool" for e in talks), (host, talks)
    uploaded = [e["file"] for e in events if e["event"] == "uploaded"]
    acknowledged = [e for e in events if e["event"] == "acknowledged"]
    assert [e["last_sync_time"] for e in acknowledged] == [stamp_iso(f) for f in uploaded], (host, events)


@pytest.mark.slow
def test_tool_backend_syncs_both_topologies(lab_factory, sshd, tmp_path):
    lab = lab_factory(4, "--security", "0.5", "--https", "0.5", "--records", "12", "--page-size", "5")
    remote = {"lls001", "lls004"}  # one secured and one open server run the tools over SSH
    inventory = write_inventory(lab, tmp_path / "inventory.json", {host: {
        "fne_sync_topology": "remote", "fne_sync_remote_path": str(tmp_path / "hosts" / host),
        "ansible_host": sshd["host"], "ansible_port": sshd["port"], "ansible_user": sshd["user"],
        "ansible_ssh_private_key_file": sshd["key"], "ansible_python_interpreter": PYTHON} for host in remote})
    assert {(s["security"], s["https"]) for s in lab.info["servers"].values()} == {
        (False, False), (False, True), (True, False), (True, True)}
    store = tmp_path / "store"

    first = playbook("sync", inventory, store, *tool_args(lab))
    assert not first.failed() and first.changed() == set(lab.info["servers"]), first
    lab.verify(complete=True)
    report = json.loads((store / "report.json").read_text())
    assert {name: s["backend"] for name, s in report["servers"].items()} == dict.fromkeys(lab.info["servers"], "tool")
    for host in lab.info["servers"]:
        assert len(list((store / host / "sent").glob("*.fnesync"))) == 3  # 12 records, pages of 5
        assert_tool_ledger(store, host)
    for host in remote:
        assert not list((tmp_path / "hosts" / host).glob("*.fnesync")), "not purged on the host"

    again = playbook("sync", inventory, store, *tool_args(lab))  # the tools say "No new data is available."
    assert not again.failed() and again.changed() == set(), again
    lab.verify(complete=True)


def test_tools_exiting_zero_without_sh_are_judged_by_their_console_lines(lab_factory, tmp_path):
    """exit-zero-tools and tools-without-sh together: the tools are found without `.sh`; a tool that prints an error
    and exits 0 fails its host with the tool's own text (and the password stays out of every output); once the
    password is right, the next run's recovery brings everything over."""
    lab = lab_factory(3, "--security", "--https", "0.5", "--records", "8", "--page-size", "5",
                      "--variant", "exit-zero-tools", "--variant", "tools-without-sh")
    installed = sorted(p.name for p in (lab.dir / "tools").iterdir())
    assert installed == ["backofficeofflinesynctool", "serverofflinesynctool"]
    store = tmp_path / "store"
    wrong = write_inventory(lab, tmp_path / "wrong.json", {"lls002": {"fne_lls_password": "not-the-password"}})
    bad = playbook("sync", wrong, store, *tool_args(lab), expect_rc=2)
    assert bad.failed() == {"lls002"}, bad
    assert "glsErr.userAuthFailed" in bad.out and "printed no documented success line" in bad.out, bad
    assert "not-the-password" not in bad.out + bad.proc.stderr
    assert lab.state()["servers"]["lls002"]["cursor"] == 0  # nothing was handed out to a refused tool
    assert all(lab.info["servers"][h]["password"] not in bad.out for h in lab.info["servers"])

    good = playbook("sync", lab.inventory, store, *tool_args(lab))
    assert not good.failed() and "lls002" in good.changed(), good
    lab.verify(complete=True)
    for host in lab.info["servers"]:
        assert_tool_ledger(store, host)
