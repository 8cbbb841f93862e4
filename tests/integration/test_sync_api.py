"""The sync playbook against a lab fleet, api topology: full cycle, idempotence, activity, paging, check mode,
--limit halves, --tags phases, report. Judged by `fnelab verify`."""

from __future__ import annotations

import json

from fnetest import BIN, ansible_env, run
from test_sync_support import hosts_of, lab_state, ledger, sync, tree_digest


def test_fleet_cycle(lab_factory, tmp_path):
    """20 servers, security and HTTPS on some, a paged backlog: check mode changes nothing; the first run syncs
    everything in order; a second run changes nothing; activity syncs exactly the new records."""
    lab = lab_factory(20, "--security", "0.3", "--https", "0.3", "--records", "25", "--page-size", "10")
    store = tmp_path / "store"
    hosts = hosts_of(lab)

    before = lab_state(lab)
    check = sync(lab, store, "--check")
    assert lab_state(lab) == before, "check mode changed the lab"
    assert not store.exists(), "check mode wrote to the store"
    assert not check.failed(), check
    assert check.changed() == set(), check  # whether records are pending is unknown without asking (handing out)
    assert "would download new records" in check.out

    first = sync(lab, store)
    assert first.changed() == set(hosts), first
    assert not first.failed(), first
    lab.verify(complete=True)
    for host in hosts:
        sent = sorted(p.name for p in (store / host / "sent").glob("*.fnesync"))
        assert len(sent) == 3, (host, sent)  # 25 records, pages of 10
        assert not list((store / host / "outbox").iterdir())
        assert not list((store / host / "acks").iterdir())
        events = [e["event"] for e in ledger(store, host)]
        assert events.count("fetched") == 3 and events.count("uploaded") == 3 and events.count("processed") == 1

    report = json.loads((store / "report.json").read_text())
    assert report["totals"]["servers"] == 20 and report["totals"]["failed"] == 0
    assert report["totals"]["records_this_run"] == 20 * 25
    html = (store / "report.html").read_text()
    assert "<table" in html and "lls020" in html
    assert "fleet: 20 server(s), 20 ok, 0 failed" in first.out

    settled = lab_state(lab)
    digest = tree_digest(store / "lls001")
    second = sync(lab, store)
    assert second.changed() == set(), second
    assert not second.failed(), second
    assert lab_state(lab) == settled, "a run with nothing new changed the lab"
    assert tree_digest(store / "lls001") == digest

    active = hosts[:5]
    lab.activity(7, *active)
    before = lab_state(lab)
    digest_before = tree_digest(store)
    check = sync(lab, store, "--check")
    assert lab_state(lab) == before and tree_digest(store) == digest_before, "check mode changed something"
    third = sync(lab, store)
    assert third.changed() == set(active), third
    lab.verify(complete=True)
    for host in active:
        fetched = [e for e in ledger(store, host) if e["event"] == "fetched"]
        assert fetched[-1]["records"] == 7
    report = json.loads((store / "report.json").read_text())
    assert report["totals"]["records_this_run"] == 5 * 7


def test_limit_halves_cover_the_fleet(lab_factory, tmp_path):
    """--limit halves, one after the other: each run touches only its own servers; together they cover all."""
    lab = lab_factory(8, "--records", "12", "--security", "0.5")
    store = tmp_path / "store"
    hosts = hosts_of(lab)
    first_half, second_half = hosts[:4], hosts[4:]

    run1 = sync(lab, store, "--limit", ",".join(first_half))
    assert run1.changed() == set(first_half), run1
    state = lab.state()["servers"]
    for host in second_half:
        assert state[host]["requests"].get("generate", 0) == 0, f"{host} was touched by the other half's run"
        assert not (store / host).exists()
    digest_first = {h: tree_digest(store / h) for h in first_half}
    run2 = sync(lab, store, "--limit", ",".join(second_half))
    assert run2.changed() == set(second_half), run2
    assert {h: tree_digest(store / h) for h in first_half} == digest_first, "second half's run touched the first"
    lab.verify(complete=True)


def test_phases_by_tag_and_pending_ack_first(lab_factory, tmp_path):
    """--tags collect / upload / acknowledge run one phase alone; an acknowledgment left in acks/ (a run that died
    before processing it) is processed by the next run, before anything new."""
    lab = lab_factory(3, "--records", "15", "--page-size", "10")
    store = tmp_path / "store"
    hosts = hosts_of(lab)

    sync(lab, store, "--tags", "collect")
    for host in hosts:
        assert len(list((store / host / "outbox").glob("*.fnesync"))) == 2
    assert all(s["held"] == 15 for s in lab.state()["servers"].values())

    sync(lab, store, "--tags", "upload")
    for host in hosts:
        assert not list((store / host / "outbox").glob("*.fnesync"))
        assert len(list((store / host / "acks").glob("*.ack"))) == 2
    lab.verify()  # in the back office, not yet acknowledged on the servers
    before, digest = lab_state(lab), tree_digest(store)
    check = sync(lab, store, "--check")
    assert check.changed() == set(hosts) and "would process acknowledgment" in check.out, check
    assert lab_state(lab) == before and tree_digest(store) == digest

    # a crash between writing an ack and moving its file: put a sent file back into the outbox
    sent = sorted((store / hosts[0] / "sent").glob("*.fnesync"))
    sent[0].rename(store / hosts[0] / "outbox" / sent[0].name)

    lab.activity(4)
    run = sync(lab, store)
    assert run.changed() == set(hosts), run
    lab.verify(complete=True)
    for host in hosts:
        events = [e["event"] for e in ledger(store, host)]
        # the pending acknowledgment was processed before the new download
        assert events.index("processed") < len(events) - 1 - events[::-1].index("fetched")
        assert not list((store / host / "acks").iterdir())
        assert not list((store / host / "outbox").iterdir())
    assert len(list((store / hosts[0] / "sent").glob("*.fnesync"))) == 3


def test_status_changes_nothing(lab_factory, tmp_path):
    lab = lab_factory(3, "--records", "5")
    store = tmp_path / "store"
    sync(lab, store)
    lab.activity(3)
    before, digest = lab_state(lab), tree_digest(store)
    counters = {h: s["requests"] for h, s in lab.state()["servers"].items()}
    from test_sync_support import playbook

    status = playbook("status", lab.inventory, store)
    assert status.changed() == set() and not status.failed(), status
    assert lab_state(lab) == before and tree_digest(store) == digest
    assert {h: s["requests"] for h, s in lab.state()["servers"].items()} == counters, "status talked to a server"
    assert "fleet: 3 server(s)" in status.out


FLEET_IN_PROCESSES = """\
- hosts: license_servers
  gather_facts: false
  tasks:
    - fne.offline_sync.fleet:
        step: cycle
        store: "{{ store }}"
        workers: 4
        processes: 2
      run_once: true
      delegate_to: localhost
      register: cycle
"""


def test_a_fleet_step_in_two_processes_inside_ansible(lab_factory, tmp_path):
    """The fleet module with processes=2 in Ansible's worker, which has printed a warning (its result queue's
    thread runs) when it forks: the step reports two processes, every server is synchronized once."""
    lab = lab_factory(6, "--security", "0.5", "--https", "0.5", "--records", "5")
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)  # the store warning, printed before the fork
    play = tmp_path / "play.yml"
    play.write_text(FLEET_IN_PROCESSES)
    proc = run([str(BIN / "ansible-playbook"), "-i", str(lab.inventory), str(play), "-e", f"store={store}", "-v"],
               check=False, env=ansible_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "can be written by other users" in proc.stdout + proc.stderr
    assert '"processes": 2' in proc.stdout and '"failed_hosts": []' in proc.stdout, proc.stdout[-5000:]
    lab.verify(complete=True)
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("lls")) == hosts_of(lab)
