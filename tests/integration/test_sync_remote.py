"""Remote topology over real SSH (the sshd fixture): generate and process run on the host, files travel with
checksums, mixed with api-topology servers in the same run."""

from __future__ import annotations

import pytest
from fnetest import ansible_env
from test_sync_support import PYTHON, lab_state, ledger, sync, tree_digest, write_inventory

REMOTE = ("lls001", "lls002", "lls003")


def remote_inventory(lab, sshd, tmp_path):
    overrides = {}
    for host in REMOTE:
        overrides[host] = {
            "fne_sync_topology": "remote",
            "fne_sync_remote_path": str(tmp_path / "hosts" / host / "fnesync"),  # one folder per "host"
            "ansible_host": sshd["host"],
            "ansible_port": sshd["port"],
            "ansible_user": sshd["user"],
            "ansible_ssh_private_key_file": sshd["key"],
            "ansible_python_interpreter": PYTHON,
        }
    return write_inventory(lab, tmp_path / "inventory.json", overrides)


def run(lab, inventory, store, *args, **kwargs):
    from test_sync_support import playbook

    return playbook("sync", inventory, store, *args, **kwargs)


@pytest.mark.slow
def test_remote_topology_cycle(lab_factory, sshd, tmp_path):
    lab = lab_factory(5, "--records", "12", "--page-size", "5", "--security", "0.4", "--https", "0.4")
    inventory = remote_inventory(lab, sshd, tmp_path)
    store = tmp_path / "store"

    before = lab_state(lab)
    check = run(lab, inventory, store, "--check")
    assert not check.failed(), check
    assert lab_state(lab) == before and not store.exists()

    first = run(lab, inventory, store, "-v")
    assert not first.failed(), first
    assert set(first.changed()) == {"lls001", "lls002", "lls003", "lls004", "lls005"}, first
    lab.verify(complete=True)
    # generate returned the files with their bytes: no fetch ran on any host
    assert fetches(first.out) == [], first
    for host in REMOTE:
        fetched = [e for e in ledger(store, host) if e["event"] == "fetched"]
        assert len(fetched) == 3 and all(len(e["sha256"]) == 64 for e in fetched)
        assert not list((tmp_path / "hosts" / host / "fnesync").glob("*.fnesync")), "not purged on the host"
        assert not list((store / host / "acks").iterdir())

    settled, digest = lab_state(lab), tree_digest(store / "lls001")
    second = run(lab, inventory, store)
    assert second.changed() == set(), second
    assert lab_state(lab) == settled and tree_digest(store / "lls001") == digest

    lab.activity(4, "lls001", "lls004")
    third = run(lab, inventory, store, "-vvv", env=ansible_env(ANSIBLE_PIPELINING="True"))
    assert not third.failed(), third
    assert {"lls001", "lls004"} <= third.changed(), third
    lab.verify(complete=True)
    # commands on the hosts, with pipelining: generate on each remote-topology server (the connection check runs
    # only when generate cannot reach its host), and process on lls001, the one with new records: 1 + 1 + 2
    assert third.out.count("SSH: EXEC") == 4, third

    # a message over generate's 1 MiB of returned bytes travels by fetch, checked the same way
    lab.cli("activity", "--dir", str(lab.dir), "--records", "2", "--servers", "lls002", "--bulk-bytes",
            str(1024 * 1024 + 1))
    big = run(lab, inventory, store, "-v")
    assert not big.failed(), big
    assert fetches(big.out) == ["lls002"], big
    fetched = [e for e in ledger(store, "lls002") if e["event"] == "fetched"][-1]
    assert fetched["records"] == 2 and (store / "lls002" / "sent" / fetched["file"]).stat().st_size > 1024 * 1024
    lab.verify(complete=True)


def fetches(output: str) -> list[str]:
    """The hosts the fetch task fetched a file from (its loop ran), from -v output; none when no host needed it
    (its include was skipped)."""
    marker = "TASK [fne.offline_sync.cycle : Fetch the new sync files"
    if marker not in output:
        return []
    section = output.split(marker, 1)[1].split("TASK [", 1)[0]
    return sorted({line.split("[", 1)[1].split("]", 1)[0] for line in section.splitlines()
                   if line.startswith(("ok: [", "changed: ["))})


def test_remote_phases_by_tag(lab_factory, sshd, tmp_path):
    """--tags collect / upload / acknowledge run one phase alone over SSH. An acknowledge-only run has no upload
    result to say whether an acknowledgment waits: it looks in the store and processes it on the host."""
    lab = lab_factory(3, "--records", "6", "--page-size", "5")
    inventory = remote_inventory(lab, sshd, tmp_path)
    store = tmp_path / "store"
    assert not run(lab, inventory, store, "--tags", "collect").failed()
    assert not run(lab, inventory, store, "--tags", "upload").failed()
    for host in REMOTE:
        assert len(list((store / host / "acks").glob("*.ack"))) == 2
        assert len(list((tmp_path / "hosts" / host / "fnesync").glob("*.fnesync"))) == 2
    acknowledged = run(lab, inventory, store, "--tags", "acknowledge")
    assert not acknowledged.failed() and set(REMOTE) <= acknowledged.changed(), acknowledged
    for host in REMOTE:
        assert not list((store / host / "acks").iterdir())
        assert not list((tmp_path / "hosts" / host / "fnesync").glob("*.fnesync")), "not purged on the host"
    lab.verify(complete=True)


@pytest.mark.slow
def test_remote_lost_answer_recovers(lab_factory, sshd, tmp_path):
    lab = lab_factory(3, "--records", "10", "--page-size", "4")
    inventory = remote_inventory(lab, sshd, tmp_path)
    store = tmp_path / "store"
    run(lab, inventory, store)
    lab.activity(6)
    lab.fault("lls002", "drop", "--endpoint", "generate", "--count", "1")
    result = run(lab, inventory, store)
    assert not result.failed(), result
    events = [e["event"] for e in ledger(store, "lls002")]
    assert "lost_response" in events and "recovered" in events
    assert not (store / "lls002" / "needs_force").exists()
    lab.verify(complete=True)
    again = run(lab, inventory, store)
    assert again.changed() == set() and not again.failed(), again
    assert sync  # the api helper stays importable for the other tests


@pytest.mark.slow
def test_remote_mismatch_and_force_resync(lab_factory, sshd, tmp_path):
    """A message lost on its way (gone from the host and the store before upload): the back office answers the
    documented mismatch; the recovery runs over SSH. Then force_resync on one remote server."""
    from test_sync_support import playbook

    lab = lab_factory(3, "--records", "15", "--page-size", "5", "--reupload", "reject")
    inventory = remote_inventory(lab, sshd, tmp_path)
    store = tmp_path / "store"
    run(lab, inventory, store, "--tags", "collect")
    first = sorted((store / "lls002" / "outbox").glob("*.fnesync"))[0]
    first.unlink()
    (tmp_path / "hosts" / "lls002" / "fnesync" / first.name).unlink()
    result = run(lab, inventory, store)
    assert not result.failed(), result
    events = [e["event"] for e in ledger(store, "lls002")]
    assert "mismatch" in events and "recovered" in events and "superseded" in events
    lab.verify(complete=True)

    forced = playbook("force_resync", inventory, store, "--limit", "lls003")
    assert forced.changed() <= {"lls003"} and not forced.failed(), forced
    assert "recovered" in [e["event"] for e in ledger(store, "lls003")]
    # requested, not a fault: neither a lost response nor an error in the ledger
    assert not [e for e in ledger(store, "lls003") if e["event"] in ("lost_response", "error")]
    lab.verify(complete=True)
    again = run(lab, inventory, store)
    assert again.changed() == set() and not again.failed(), again


def test_remote_upload_failure_shows_when_the_first_remote_host_is_unreachable(lab_factory, sshd, tmp_path):
    """The remote upload is one run_once task; its result must reach the report even when the first remote host
    of the play is unreachable (an unreachable host gets no registered result)."""
    from test_sync_support import playbook

    lab = lab_factory(3, "--records", "6", "--page-size", "5")
    inventory = remote_inventory(lab, sshd, tmp_path)
    import json

    data = json.loads(inventory.read_text())
    hosts = data["all"]["children"]["license_servers"]["hosts"]
    hosts["lls001"].update(ansible_port=1, ansible_ssh_common_args="-o ConnectTimeout=3")  # nothing listens there
    hosts["lls002"].update(fne_backoffice_url="http://127.0.0.1:1/deviceservices", fne_sync_retries=0,
                           fne_sync_max_retry_wait=1)
    inventory.write_text(json.dumps(data, indent=1))
    result = playbook("sync", inventory, tmp_path / "store", expect_rc=None)
    assert {"lls001", "lls002"} <= result.failed(), result
    assert "lls003" in result.changed() and "lls003" not in result.failed(), result  # a whole cycle over SSH
    assert lab.verify()["servers"]["lls003"]["in_backoffice"] == 6


def test_every_remote_host_failing_is_still_reported(lab_factory, sshd, tmp_path):
    """A run whose servers are all remote-topology ones, each failing at a different step (SSH unreachable, the
    license server down): no host is left for a later play, yet each fails with the step that failed, the report
    is written and lists every server, and the exit status says hosts failed."""
    import json

    from test_sync_support import playbook

    lab = lab_factory(3, "--records", "2")
    inventory = remote_inventory(lab, sshd, tmp_path)
    data = json.loads(inventory.read_text())
    hosts = data["all"]["children"]["license_servers"]["hosts"]
    hosts["lls001"].update(ansible_port=1, ansible_ssh_common_args="-o ConnectTimeout=3")  # nothing listens there
    for name in ("lls002", "lls003"):
        hosts[name].update(fne_lls_url="http://127.0.0.1:1", fne_sync_retries=0)  # no license server there
    inventory.write_text(json.dumps(data, indent=1))
    result = playbook("sync", inventory, tmp_path / "store", expect_rc=2)
    assert result.failed() == set(REMOTE), result
    report = json.loads((tmp_path / "store" / "report.json").read_text())
    assert set(report["servers"]) == set(REMOTE)
    assert all(report["servers"][name]["run"]["failed"] for name in REMOTE), report["servers"]
    errors = {name: " ".join(report["servers"][name]["run"]["errors"]) for name in REMOTE}
    assert "Reach the license server host" in errors["lls001"] and "port 1" in errors["lls001"], errors
    for name in ("lls002", "lls003"):
        assert "Cannot reach the license server at http://127.0.0.1:1" in errors[name], errors
    assert lab.state()["backoffice"]["requests"].get("upload", 0) == 0
