"""Faults: lost answers, the documented mismatch, a down server, a locked store. Every test ends with the lab's
judge clean, in both of the lab's answers to an exact re-upload (accept as a no-op, reject as out of order)."""

from __future__ import annotations

import fcntl
import os

import pytest
from test_sync_support import hosts_of, kill_run, ledger, sync

REUPLOAD = pytest.mark.parametrize("reupload", ["accept", "reject"])


def events(store, host):
    return [e["event"] for e in ledger(store, host)]


@REUPLOAD
def test_lost_generate_answer_recovers(lab_factory, tmp_path, reupload):
    """A download whose answer is lost (the server advanced its cursor): the same run runs the documented
    forced recovery; nothing lost, nothing twice."""
    lab = lab_factory(4, "--records", "20", "--page-size", "8", "--reupload", reupload)
    store = tmp_path / "store"
    sync(lab, store)
    lab.activity(10)
    lab.fault("lls002", "drop", "--endpoint", "generate", "--count", "1")
    run = sync(lab, store)
    assert not run.failed(), run
    assert "recovered" in events(store, "lls002")
    assert not (store / "lls002" / "needs_force").exists()
    lab.verify(complete=True)
    rerun = sync(lab, store)
    assert rerun.changed() == set() and not rerun.failed(), rerun


@REUPLOAD
def test_mismatch_recovers(lab_factory, tmp_path, reupload):
    """A message missing from the chain (here: removed from the outbox before upload) makes the back office answer
    the documented mismatch; the documented four steps run automatically."""
    lab = lab_factory(3, "--records", "30", "--page-size", "10", "--reupload", reupload)
    store = tmp_path / "store"
    sync(lab, store, "--tags", "collect")
    outbox = sorted((store / "lls001" / "outbox").glob("*.fnesync"))
    assert len(outbox) == 3
    outbox[0].rename(tmp_path / outbox[0].name)  # lost in transit
    run = sync(lab, store)
    assert not run.failed(), run
    ev = events(store, "lls001")
    assert "mismatch" in ev and "recovered" in ev and "superseded" in ev
    assert len(list((store / "lls001" / "superseded").glob("*.fnesync"))) == 2
    lab.verify(complete=True)
    rerun = sync(lab, store)
    assert rerun.changed() == set() and not rerun.failed(), rerun


@REUPLOAD
def test_lost_upload_answer(lab_factory, tmp_path, reupload):
    """The back office accepted a file but its answer was lost. accept: the re-upload returns the acknowledgment.
    reject: the re-upload is refused with 'Expected sync time X' where X is the file's own time; the rule in
    docs/design.md takes it as accepted, no loop, no forced download; the next acknowledgment covers it."""
    lab = lab_factory(2, "--records", "20", "--page-size", "10", "--reupload", reupload)
    store = tmp_path / "store"
    lab.fault("backoffice", "drop", "--endpoint", "upload", "--count", "1")
    run = sync(lab, store)
    assert not run.failed(), run
    lab.verify()
    assert "recovered" not in events(store, "lls001") + events(store, "lls002")
    details = [e.get("detail", "") for h in ("lls001", "lls002") for e in ledger(store, h) if e["event"] == "uploaded"]
    taken = [d for d in details if "already accepted by the back office" in d]
    assert len(taken) == (1 if reupload == "reject" else 0), details
    lab.activity(5)
    sync(lab, store)
    lab.verify(complete=True)
    for host in ("lls001", "lls002"):
        assert not list((store / host / "outbox").iterdir())
        assert "recovered" not in events(store, host)


@REUPLOAD
def test_lost_last_upload_answer_reject_then_activity(lab_factory, tmp_path, reupload):
    """The answer of the only file of a run is lost: in reject mode no acknowledgment can exist until a later
    message; the run must neither loop nor force. Activity later completes everything."""
    lab = lab_factory(1, "--records", "5", "--reupload", reupload)
    store = tmp_path / "store"
    lab.fault("backoffice", "drop", "--endpoint", "upload", "--count", "2")  # the retry in the same run too
    run = sync(lab, store, expect_rc=2)
    assert run.failed() == {"lls001"} and "answer was lost" in run.out, run
    lab.verify()
    again = sync(lab, store)
    assert not again.failed(), again
    lab.activity(3)
    sync(lab, store)
    lab.verify(complete=True)
    assert "recovered" not in events(store, "lls001")


def test_down_server_fails_alone_and_catches_up(lab_factory, tmp_path):
    lab = lab_factory(6, "--records", "10")
    store = tmp_path / "store"
    lab.fault("lls003", "down")
    run = sync(lab, store, "-e", "fne_sync_retries=1", expect_rc=2)
    assert run.failed() == {"lls003"}, run
    assert "lls003: collect failed" in run.out
    assert run.changed() == set(hosts_of(lab)) - {"lls003"}
    lab.verify()
    lab.clear_faults()
    lab.activity(2)
    run = sync(lab, store)
    assert not run.failed(), run
    lab.verify(complete=True)


def test_locked_store_fails_that_server_only(lab_factory, tmp_path):
    lab = lab_factory(3, "--records", "4")
    store = tmp_path / "store"
    (store / "lls002").mkdir(parents=True)
    fd = os.open(store / "lls002", os.O_RDONLY | os.O_DIRECTORY)  # what a run locks: the server's folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = sync(lab, store, "-e", "fne_sync_lock_timeout=0.5", expect_rc=2)
    finally:
        os.close(fd)
    assert run.failed() == {"lls002"}, run
    assert "locked by another run" in run.out
    run = sync(lab, store)
    assert not run.failed(), run
    lab.verify(complete=True)


def test_force_resync_playbook(lab_factory, tmp_path):
    """force_resync runs the documented procedure for the --limit servers only, and refuses a whole fleet."""
    from test_sync_support import playbook

    lab = lab_factory(3, "--records", "12", "--page-size", "5")
    store = tmp_path / "store"
    sync(lab, store, "--tags", "collect,upload")
    refused = playbook("force_resync", lab.inventory, store, expect_rc=2)
    assert "--limit" in refused.out
    run = playbook("force_resync", lab.inventory, store, "--limit", "lls002")
    assert run.changed() == {"lls002"}, run
    assert "recovered" in events(store, "lls002") and "recovered" not in events(store, "lls001")
    sync(lab, store)
    lab.verify(complete=True)


@REUPLOAD
def test_killed_run_is_completed_by_the_next(lab_factory, tmp_path, reupload):
    """SIGKILL the ansible-playbook run in the middle (slow back office), wherever it lands: the playbook and every
    process below it, its task workers included (kill_run); the next run completes the work, nothing lost or
    duplicated."""
    import subprocess
    import time

    from fnetest import BIN, ansible_env

    lab = lab_factory(4, "--records", "30", "--page-size", "5", "--reupload", reupload)
    store = tmp_path / "store"
    lab.fault("backoffice", "latency=0.4", "--endpoint", "upload")
    cmd = [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(lab.inventory),
           "-e", f"fne_sync_store={store}", "-e", "fne_sync_workers=2"]
    proc = subprocess.Popen(cmd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(store.glob("*/sent/*.fnesync")) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the uploads are under way, then kill mid-flight
    time.sleep(1.5)
    kill_run(proc)
    proc.stdout.close()
    uploaded = sum(len(list((store / h / "sent").glob("*.fnesync"))) for h in hosts_of(lab) if (store / h).exists())
    assert uploaded < 4 * 6, "the run finished before the kill: the test proves nothing"
    lab.clear_faults()
    lab.verify()
    run = sync(lab, store)
    assert not run.failed(), run
    if reupload == "reject":
        # if the kill hit the upload of a server's newest file, its acknowledgment can only come with the next
        # message (docs/design.md, re-upload rule)
        lab.verify()
        lab.activity(2)
        sync(lab, store)
    lab.verify(complete=True)
