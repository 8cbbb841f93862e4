"""The control-node store: layout, crash-safe ordering, lock, ledger, the re-upload rule's time parsing."""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".venv" / "collections")
sys.path.insert(0, COLLECTIONS)

from ansible_collections.fne.offline_sync.plugins.module_utils._errors import MismatchError  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (  # noqa: E402
    parse_time,
    sync_time_of,
    write_atomic,
)
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._report import ACCEPTED_KEEP, summarize  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import (  # noqa: E402
    InFlight,
    LockedError,
    ServerStore,
    StoreError,
)


@pytest.fixture
def store(tmp_path):
    return ServerStore(str(tmp_path / "store"), "lls001").ensure()


def put(folder: str, name: str, data: bytes = b"x") -> str:
    path = os.path.join(folder, name)
    Path(path).write_bytes(data)
    return path


def test_layout_and_modes(store):
    for folder in (store.outbox, store.acks, store.sent, store.superseded):
        assert os.path.isdir(folder)
        assert os.stat(folder).st_mode & 0o777 == 0o700
    with pytest.raises(StoreError):
        ServerStore("/tmp", "../escape")


def test_listing_is_in_timestamp_order_and_ignores_temporaries(store):
    for name in ("20260102T000000.fnesync", "20260101T235959.fnesync", ".tmp-abc", "notes.txt"):
        put(store.outbox, name)
    names = [os.path.basename(p) for p in store.outbox_files()]
    assert names == ["20260101T235959.fnesync", "20260102T000000.fnesync"]


def test_admit_takes_the_bytes_generate_returned_only_when_they_check_out(store):
    """The remote topology's admit step with `content` (generate's return_content): written to the store, then held
    to the sha256 the host reported, like a fetched file; a name that is no sync file or bytes that are not base64
    fail that server and change nothing."""
    data = b"MESSAGE"
    good = {"path": "/h/20260101T000001.fnesync", "sha256": hashlib.sha256(data).hexdigest(),
            "content": base64.b64encode(data).decode()}

    def admit(*files):
        return fleet.run_fleet("admit", [fleet.server_config("lls001", {"fne_sync_topology": "remote"})],
                               fleet.Options(store=store.root, remote_files=list(files)))["lls001"]

    for bad, why in ((dict(good, sha256="0" * 64), "checksum mismatch"),
                     (dict(good, path="/h/notes.txt"), "no sync file name"),
                     (dict(good, content="not base64!"), "not base64")):
        entry = admit(bad)
        assert entry["failed"] and why in entry["msg"], entry
        assert store.outbox_files() == []
    entry = admit(good)
    assert not entry["failed"] and entry["fetched"] == ["20260101T000001.fnesync"], entry
    assert Path(store.outbox_files()[0]).read_bytes() == data
    assert admit(good)["fetched"] == []  # held already: not taken twice


def test_admit_checks_sha256_and_logs(store, tmp_path):
    src = put(str(tmp_path), "20260101T000000.fnesync", b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(StoreError, match="checksum mismatch"):
        store.admit(src, sha256="0" * 64)
    assert os.path.exists(src) and not store.outbox_files(), "a bad file must not enter the outbox"
    dest = store.admit(src, sha256=good, records=3)
    assert dest == os.path.join(store.outbox, "20260101T000000.fnesync") and not os.path.exists(src)
    entry = store.ledger()[-1]
    assert entry["event"] == "fetched" and entry["sha256"] == good and entry["records"] == 3
    # the same bytes fetched again after a crash: accepted once
    src2 = put(str(tmp_path), "20260101T000000.fnesync", b"payload")
    store.admit(src2, sha256=good)
    assert len(store.outbox_files()) == 1 and not os.path.exists(src2)


def test_ack_is_written_before_the_file_leaves_the_outbox(store, monkeypatch):
    path = put(store.outbox, "20260101T000000.fnesync")
    order = []
    real_move = store._move

    def spy_move(src, folder):
        order.append(("move", os.path.basename(src), os.path.exists(store.ack_for(path))))
        return real_move(src, folder)

    monkeypatch.setattr(store, "_move", spy_move)
    store.record_ack(path, b"ACK")
    assert order == [("move", "20260101T000000.fnesync", True)]
    assert Path(store.ack_for(path)).read_bytes() == b"ACK"
    assert os.path.exists(os.path.join(store.sent, "20260101T000000.fnesync"))
    assert [e["event"] for e in store.ledger()] == ["uploaded", "acknowledged"]


def test_crash_after_ack_resume_moves_file(store):
    path = put(store.outbox, "20260101T000000.fnesync")
    put(store.outbox, "20260101T000001.fnesync")
    write_atomic(store.ack_for(path), [b"ACK"])  # the run died right after writing the ack
    assert store.resume() == ["20260101T000000.fnesync"]
    assert [os.path.basename(p) for p in store.outbox_files()] == ["20260101T000001.fnesync"]


def test_complete_acks_moves_newest_and_older(store):
    for stamp in ("20260101T000000", "20260101T000001", "20260101T000002"):
        put(store.acks, f"{stamp}.ack")
    moved = store.complete_acks(os.path.join(store.acks, "20260101T000001.ack"), "2026-01-01T00:00:01Z")
    assert moved == ["20260101T000000.ack", "20260101T000001.ack"]
    assert [os.path.basename(p) for p in store.pending_acks()] == ["20260101T000002.ack"]
    assert store.ledger()[-1]["event"] == "processed"


def test_supersede_and_needs_force(store):
    put(store.outbox, "20260101T000000.fnesync")
    put(store.superseded, "20260101T000000.fnesync", b"older")  # a name clash never overwrites
    assert store.needs_force() is None
    store.set_needs_force("lost response")
    assert store.needs_force() == "lost response"
    assert store.supersede("lost response") == ["20260101T000000.fnesync"]
    assert sorted(os.listdir(store.superseded)) == ["20260101T000000.1.fnesync", "20260101T000000.fnesync"]
    store.clear_needs_force()
    store.clear_needs_force()
    assert store.needs_force() is None


def test_mark_accepted_keeps_file(store):
    path = put(store.outbox, "20260101T000000.fnesync")
    store.mark_accepted(path, "already accepted")
    assert os.path.exists(os.path.join(store.sent, "20260101T000000.fnesync"))
    assert store.ledger()[-1]["detail"] == "already accepted"


def test_lock_is_exclusive_and_released(store):
    with store.lock():
        for name in os.listdir(store.dir):  # deleting files cannot defeat it: it is the folder's own lock
            if os.path.isfile(os.path.join(store.dir, name)):
                os.unlink(os.path.join(store.dir, name))
        fd = os.open(store.dir, os.O_RDONLY | os.O_DIRECTORY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        other = ServerStore(store.root, "lls001")
        with pytest.raises(LockedError, match="locked by another run"), other.lock(timeout=0.3):
            pass
    with store.lock():
        pass


def test_ledger_lines_are_json(store):
    store.log("error", detail="boom")
    lines = Path(store.ledger_path).read_text().splitlines()
    assert json.loads(lines[-1])["detail"] == "boom"
    Path(store.ledger_path).write_text(Path(store.ledger_path).read_text() + "{torn line\n")
    assert store.ledger()[-1]["detail"] == "boom"  # a torn last line (crash mid-write) is skipped


@pytest.mark.parametrize("text, expected", [
    ("Jan 24, 2019 11:04:09 AM", dt.datetime(2019, 1, 24, 11, 4, 9, tzinfo=dt.timezone.utc)),
    ("Nov 5, 2026 2:03:04 PM", dt.datetime(2026, 11, 5, 14, 3, 4, tzinfo=dt.timezone.utc)),
    ("Dec 1, 2026 12:00:00 AM", dt.datetime(2026, 12, 1, 0, 0, 0, tzinfo=dt.timezone.utc)),
    ("2026-11-25T14:03:05Z", dt.datetime(2026, 11, 25, 14, 3, 5, tzinfo=dt.timezone.utc)),
    ("garbage", None),
])
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_sync_file_times():
    """The re-upload rule compares a file's name time with the back office's expected time."""
    assert sync_time_of("/x/20140613T105312.fnesync") == dt.datetime(2014, 6, 13, 10, 53, 12, tzinfo=dt.timezone.utc)
    assert sync_time_of("other") is None


def _mismatch(expected: str, zone=None) -> MismatchError:
    return MismatchError("mismatch", f"Expected sync time {expected}, got Jan 1, 2019 1:00:00 AM", zone)


def test_reupload_rule(store, tmp_path):
    """Expected at or after the file's own time: already accepted. Before it: a real gap."""
    work = fleet.ServerWork(fleet.server_config("lls001", {}), fleet.Options(store=store.root), "upload")
    path = put(store.outbox, "20190124T110500.fnesync")
    assert not work._already_accepted(path, _mismatch("Jan 24, 2019 11:04:09 AM"))
    assert os.path.exists(path)
    assert work._already_accepted(path, _mismatch("Jan 24, 2019 11:05:00 AM"))
    assert not os.path.exists(path) and os.path.exists(os.path.join(store.sent, os.path.basename(path)))
    other = put(store.outbox, "20190124T110600.fnesync")
    assert not work._already_accepted(other, _mismatch("unparseable"))
    # a back office ahead of UTC: its 4:35:30 PM is 11:05:30 UTC, before the file's own time (no re-upload)
    ahead = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert _mismatch("Jan 24, 2019 4:35:30 PM").expected_time > sync_time_of(other)  # read as UTC: "accepted"
    assert not work._already_accepted(other, _mismatch("Jan 24, 2019 4:35:30 PM", ahead))
    assert work._already_accepted(other, _mismatch("Jan 24, 2019 4:36:00 PM", ahead))


def test_summarize_counts_uploaded_records(store, tmp_path):
    src = put(str(tmp_path), "20260101T000000.fnesync", b"a")
    path = store.admit(src, records=5)
    store.record_ack(path, b"ACK")
    store.complete_acks(store.pending_acks()[-1], "2026-01-01T00:00:00Z")
    info = summarize(store)
    assert info["records_synchronized"] == 5 and info["files_uploaded"] == 1
    assert info["last_sync"] and info["age_days"] is not None and info["pending_acks"] == 0


def test_check_mode_touches_nothing(tmp_path):
    root = tmp_path / "store"
    results = fleet.run_fleet("upload", [fleet.server_config("lls001", {})],
                              fleet.Options(store=str(root), check_mode=True))
    assert not results["lls001"]["failed"] and not root.exists()


def test_summary_cache_reads_only_new_lines(store, tmp_path):
    src = put(str(tmp_path), "20260101T000000.fnesync", b"a")
    store.record_ack(store.admit(src, records=4), b"ACK")
    first = summarize(store, update_cache=True)
    cache = Path(store.dir) / ".summary.json"
    assert cache.exists() and first["records_synchronized"] == 4
    src = put(str(tmp_path), "20260101T000001.fnesync", b"b")
    store.record_ack(store.admit(src, records=6), b"ACK")
    with open(store.ledger_path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "uploaded", "fi')  # a line still being written is not counted yet
    assert summarize(store)["records_synchronized"] == 10  # without update_cache: read-only
    assert json.loads(cache.read_text())["records_synchronized"] == 4
    assert summarize(store, update_cache=True)["files_uploaded"] == 2
    assert summarize(store)["files_uploaded"] == 2


def test_the_summary_cache_stays_small_however_many_files_were_accepted(store, tmp_path):
    """A nightly site accepts a file a night for years: the cache keeps the records of the newest accepted files
    and of those downloaded but not accepted yet, and its figures stay those of the whole ledger."""
    accepted = ACCEPTED_KEEP + 20
    for i in range(accepted):
        stamp = f"20260101T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}"
        store.record_ack(store.admit(put(str(tmp_path), f"{stamp}.fnesync", stamp.encode()), records=2), b"A")
    waiting = store.admit(put(str(tmp_path), "20260102T000000.fnesync", b"w"), records=5)
    assert summarize(store, update_cache=True)["records_synchronized"] == 2 * accepted
    cache = Path(store.dir) / ".summary.json"
    cached = json.loads(cache.read_text())
    assert len(cached["records_accepted"]) == ACCEPTED_KEEP
    assert cached["records_by_file"] == {"20260102T000000.fnesync": 5}
    store.record_ack(waiting, b"A")  # accepted after the cache was written: its records still count
    assert summarize(store, update_cache=True)["records_synchronized"] == 2 * accepted + 5
    cache.unlink()
    assert summarize(store)["records_synchronized"] == 2 * accepted + 5  # the same, rebuilt from the ledger


def test_check_mode_upload_does_not_resume(store):
    """A dead run's accepted file (ack written, file still in the outbox): check mode only plans the move."""
    path = put(store.outbox, "20260101T000000.fnesync")
    Path(store.ack_for(path)).write_bytes(b"ACK")
    ledger_before = store.ledger()
    results = fleet.run_fleet("upload", [fleet.server_config("lls001", {})],
                              fleet.Options(store=store.root, check_mode=True))
    entry = results["lls001"]
    assert not entry["failed"] and entry["changed"]
    assert os.path.exists(path) and not os.listdir(store.sent), "check mode must not move store files"
    assert store.ledger() == ledger_before
    assert any("sent/" in p for p in entry["plan"])


def test_unexpected_error_text_never_carries_the_password(store, monkeypatch):
    secret = "s3cret-Pa55"

    def boom(self):
        raise RuntimeError(f"cannot log in as admin with {secret}")

    monkeypatch.setitem(fleet.STEPS, "collect", (fleet.ServerWork, boom))
    cfg = fleet.server_config("lls001", {"fne_lls_username": "admin", "fne_lls_password": secret})
    entry = fleet.run_fleet("collect", [cfg], fleet.Options(store=store.root))["lls001"]
    assert entry["failed"] and secret not in json.dumps(entry)


class _FakeLls:
    def __init__(self):
        self.calls = []

    def process(self, ack, path):
        self.calls.append(("process", os.path.basename(ack)))
        return {"last_sync_time": "2026-01-01T00:00:00Z"}

    def generate(self, folder, force=False):
        self.calls.append(("generate", force))
        return {"files": []}


@pytest.mark.parametrize("step", ["recover", "supersede", "prepare_ack"])
def test_recovery_never_supersedes_an_accepted_file(store, monkeypatch, step):
    """A dead run left an accepted file in the outbox (its ack exists): it belongs in sent/, not superseded/."""
    path = put(store.outbox, "20260101T000000.fnesync")
    Path(store.ack_for(path)).write_bytes(b"ACK")
    fake = _FakeLls()
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: fake))
    store.set_needs_force("test")
    entry = fleet.run_fleet(step, [fleet.server_config("lls001", {})], fleet.Options(store=store.root))["lls001"]
    assert not entry["failed"], entry["msg"]
    assert not os.listdir(store.superseded)
    assert os.path.exists(os.path.join(store.sent, os.path.basename(path)))


def test_complete_ack_moves_only_the_processed_acknowledgment(store):
    """Remote topology: a newer acknowledgment written after prepare_ack (another run) was not processed."""
    for stem in ("20260101T000000", "20260102T000000", "20260103T000000"):
        Path(store.acks, stem + ".ack").write_bytes(b"ACK")
    opts = fleet.Options(store=store.root, ack="20260102T000000.ack")
    remote = fleet.server_config("lls001", {"fne_sync_topology": "remote"})
    entry = fleet.run_fleet("complete_ack", [remote], opts)["lls001"]
    assert not entry["failed"] and entry["processed"] == ["20260102T000000.ack"]
    assert [os.path.basename(a) for a in store.pending_acks()] == ["20260103T000000.ack"]


def test_complete_ack_records_the_last_sync_time(store):
    Path(store.acks, "20260101T000000.ack").write_bytes(b"ACK")
    opts = fleet.Options(store=store.root, last_sync_time="2026-01-01T00:00:00Z")
    remote = fleet.server_config("lls001", {"fne_sync_topology": "remote"})
    entry = fleet.run_fleet("complete_ack", [remote], opts)["lls001"]
    assert entry["last_sync_time"] == "2026-01-01T00:00:00Z"
    assert store.ledger()[-1]["detail"] == "lastSyncTime 2026-01-01T00:00:00Z"


def test_complete_ack_records_a_mismatch_at_the_process_step_after_moving_the_acknowledgment(store):
    """The server processed the acknowledgment up to the mismatch: it moves to sent/, then the store says the
    documented recovery is needed (one step, not two)."""
    Path(store.acks, "20260101T000000.ack").write_bytes(b"ACK")
    opts = fleet.Options(store=store.root, ack="20260101T000000.ack", reason="back office mismatch: test")
    remote = fleet.server_config("lls001", {"fne_sync_topology": "remote"})
    entry = fleet.run_fleet("complete_ack", [remote], opts)["lls001"]
    assert not entry["failed"] and entry["processed"] == ["20260101T000000.ack"] and entry["needs_force"]
    assert store.pending_acks() == [] and store.needs_force() == "back office mismatch: test"
    assert store.ledger()[-1]["detail"] == "back office mismatch: test"


def test_a_typo_in_a_host_variable_fails_that_host_with_the_validators_words():
    """`fne_lls_validate_certs: ture` must never turn certificate checks off."""
    with pytest.raises(StoreError, match="fne_lls_validate_certs.*ture"):
        fleet.server_config("lls001", {"fne_lls_validate_certs": "ture"})
    for bad in ({"fne_sync_timeout": "soon"}, {"fne_sync_topology": "cloud"}, {"fne_sync_retries": "3.5"}):
        with pytest.raises(StoreError, match=next(iter(bad))):
            fleet.server_config("lls001", bad)
    cfg = fleet.server_config("lls001", {"fne_lls_validate_certs": "no", "fne_backoffice_validate_certs": "yes",
                                         "fne_sync_timeout": "7"})
    assert cfg.lls["validate_certs"] is False and cfg.backoffice["validate_certs"] is True
    assert cfg.lls["timeout"] == cfg.backoffice["timeout"] == 7.0


def test_host_settings_fall_back_to_the_environment_as_the_modules_do(monkeypatch):
    monkeypatch.setenv("FNE_LLS_URL", "http://lls.example:7070")
    monkeypatch.setenv("FNE_LLS_PASSWORD", "from-env")
    monkeypatch.setenv("FNE_BACKOFFICE_URL", "https://bo.example/deviceservices")
    cfg = fleet.server_config("lls001", {"fne_lls_url": "", "fne_lls_username": "admin"})
    assert cfg.lls["url"] == "http://lls.example:7070" and cfg.lls["password"] == "from-env"
    assert cfg.backoffice["url"] == "https://bo.example/deviceservices" and "from-env" in cfg.secrets
    assert fleet.server_config("lls002", {"fne_lls_url": "http://given:7070"}).lls["url"] == "http://given:7070"


def test_a_torn_ledger_line_never_swallows_the_next_event(store):
    store.log("fetched", file="a.fnesync")
    with open(store.ledger_path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "uploaded", "fi')  # a crash in the middle of a line
    store.log("processed", file="a.ack")
    assert [e["event"] for e in store.ledger()] == ["fetched", "processed"]


def test_an_accepted_files_two_events_are_one_durable_write_after_a_torn_line(store, monkeypatch):
    """uploaded and acknowledged happen together: one write, one fsync of the ledger (not two), and a line torn
    by a crash before them swallows neither."""
    path = put(store.outbox, "20260101T000000.fnesync")
    with open(store.ledger_path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "fetched", "fi')
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    store.record_ack(path, b"ACK")
    assert synced.count(store.ledger_path) == 1
    assert [e["event"] for e in store.ledger()] == ["uploaded", "acknowledged"]


def test_a_ledger_that_cannot_be_written_fails_loudly(store):
    os.mkdir(store.ledger_path)  # any write error: EISDIR here, ENOSPC on a full disk
    with pytest.raises(StoreError, match="cannot write the ledger.*the fetched event of a.fnesync"):
        store.log("fetched", file="a.fnesync")


def test_only_sync_files_leave_the_outbox_and_strays_are_named(store):
    good = put(store.outbox, "20260101T000000.fnesync")
    for junk in ("notes.txt", "copy of 20260101T000000.fnesync", "20260101T000000.fnesync.abc.conflict"):
        put(store.outbox, junk)
    put(store.outbox, ".20260101T000001.fnesync.x.tmp")  # a download in progress: never a stray
    assert store.outbox_files() == [good]
    assert store.strays() == ["20260101T000000.fnesync.abc.conflict", "copy of 20260101T000000.fnesync",
                              "notes.txt"]


def test_an_unwritable_acks_folder_keeps_the_accepted_acknowledgment(store):
    path = put(store.outbox, "20260101T000000.fnesync")
    os.chmod(store.acks, 0o500)
    try:
        if os.access(store.acks, os.W_OK):
            os.chmod(store.acks, 0o700)
            os.rmdir(store.acks)
            Path(store.acks).write_bytes(b"")  # root ignores modes: a file where the folder should be
        with pytest.raises(StoreError, match="accepted 20260101T000000.fnesync.*saved as") as err:
            store.record_ack(path, b"ACK-BYTES")
    finally:
        if os.path.isdir(store.acks):
            os.chmod(store.acks, 0o700)
    kept = str(err.value.msg).split("saved as ")[1].split(":")[0]
    assert Path(kept).read_bytes() == b"ACK-BYTES"


def test_a_download_that_dies_midway_leaves_its_marker_for_a_forced_download(store, monkeypatch):
    """A run killed while the server hands out records (here: an unforeseen error in the middle of it) must leave
    the next run a forced download; a download that finishes, or fails cleanly, leaves nothing behind."""
    class Dying(_FakeLls):
        def generate(self, folder, force=False):
            put(folder, ".20260101T000000.fnesync.abc123.tmp")  # what a killed writer leaves
            raise RuntimeError("killed")

    store.log("fetched", file="x")  # not a first contact
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: Dying()))
    entry = fleet.run_fleet("collect", [fleet.server_config("lls001", {})], fleet.Options(store=store.root))["lls001"]
    assert entry["failed"] and "interrupted" in (store.needs_force() or "")
    fake = _FakeLls()
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: fake))
    store.clear_needs_force()
    entry = fleet.run_fleet("collect", [fleet.server_config("lls001", {})], fleet.Options(store=store.root))["lls001"]
    assert not entry["failed"] and store.needs_force() is None and fake.calls == [("generate", False)]
    assert os.listdir(store.outbox) == [], "a dead run's temporary file was left behind"


JOURNAL_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import InFlight
journal = InFlight(sys.argv[2], ["lls001", "lls002", "lls003"])
journal.begin("lls001")  # killed mid-download
journal.begin("lls003")
journal.end("lls003")  # settled
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_steps_journal_marks_only_the_downloads_it_left_open(tmp_path):
    """The journal of downloads in flight (one fsync per step instead of a marker pair per server): after a SIGKILL,
    the next step marks needs_force exactly the servers whose download had begun and not ended; a journal whose run
    is alive is left alone; one from another boot of the machine marks every server it names."""
    root = str(tmp_path / "store")
    stores = {name: ServerStore(root, name).ensure() for name in ("lls001", "lls002", "lls003")}
    # the collections folder named, not sys.path[0]: other test modules put their own folders first
    writer = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITER, COLLECTIONS, root], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert InFlight.adopt(root) == [], "a live run's journal was adopted"
        assert all(s.needs_force() is None for s in stores.values())
    finally:
        writer.kill()
        writer.wait()
    assert InFlight.adopt(root) == ["lls001"]
    assert "interrupted" in stores["lls001"].needs_force()
    assert stores["lls002"].needs_force() is None and stores["lls003"].needs_force() is None
    assert os.listdir(os.path.join(root, InFlight.FOLDER)) == [], "the settled journal stayed"
    assert InFlight.adopt(root) == []
    stores["lls001"].clear_needs_force()
    Path(root, InFlight.FOLDER, "1-1.journal").write_text(
        json.dumps({"boot": "another boot", "hosts": ["lls001", "lls002"], "started": "then"}) + "\nend lls001\n")
    assert InFlight.adopt(root) == ["lls001", "lls002"]
    assert stores["lls002"].needs_force() and stores["lls001"].needs_force()


def test_no_server_is_asked_without_the_journal(tmp_path, monkeypatch):
    """A journal that cannot be written (here a file where its folder goes): every server fails saying so, and no
    license server is asked for records."""
    root = tmp_path / "store"
    root.mkdir()
    (root / InFlight.FOLDER).write_text("in the way")
    fake = _FakeLls()
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: fake))
    results = fleet.run_fleet("cycle", [fleet.server_config(n, {}) for n in ("lls001", "lls002")],
                              fleet.Options(store=str(root)))
    assert all(e["failed"] and "journal of downloads in flight cannot be written" in e["msg"]
               for e in results.values()), results
    assert fake.calls == []


def test_the_cycle_works_each_server_through_its_phases_with_one_journal(tmp_path, monkeypatch):
    """step cycle: each server goes through the phases in order (an acknowledgment waiting is processed at collect,
    a download follows), the entry holds one entry per phase, and no journal or marker is left behind."""
    root = str(tmp_path / "store")
    fakes = {}
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: fakes.setdefault(self.cfg.name, _FakeLls())))
    first = ServerStore(root, "lls001").ensure()
    first.log("fetched", file="x")  # not a first contact
    Path(first.acks, "20260101T000000.ack").write_bytes(b"ACK")
    configs = [fleet.server_config(name, {}) for name in ("lls001", "lls002")]
    results = fleet.run_fleet("cycle", configs, fleet.Options(store=root, workers=2))
    assert [e["step"] for e in results["lls001"]["phases"]] == ["collect", "upload", "acknowledge"]
    for phase in results["lls001"]["phases"] + results["lls002"]["phases"]:  # what the cycle entry says, and empty
        # keys, left out: a thousand servers' results pass through Ansible's templating and pickling key by key
        assert {"step", "changed", "failed", "msg"} <= set(phase) and not {"host", "topology"} & set(phase), phase
        assert not [k for k, v in phase.items() if k not in ("changed", "failed") and v in (None, False, 0, "", [])]
    assert results["lls001"]["phases"][0]["processed"] == ["20260101T000000.ack"]
    assert fakes["lls001"].calls == [("process", "20260101T000000.ack"), ("generate", False)]
    assert fakes["lls002"].calls == [("generate", True)], "first contact: a forced download"
    assert results["lls001"]["changed"] and not results["lls001"]["failed"]
    assert "processed acknowledgment 20260101T000000.ack" in results["lls001"]["msg"]
    only_upload = fleet.run_fleet("cycle", configs[:1], fleet.Options(store=root, phases=["upload"]))
    assert [e["step"] for e in only_upload["lls001"]["phases"]] == ["upload"]
    assert os.listdir(os.path.join(root, InFlight.FOLDER)) == []
    assert all(ServerStore(root, c.name).needs_force() is None for c in configs)


def test_host_variables_are_read_as_plain_python_values(tmp_path):
    """Ansible hands an inventory's names and values over as subclasses carrying their origin (tagged, or unsafe
    before ansible-core 2.19), which copy and pickle slowly; the fleet reads them as Python's own types, same values."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    lls001:\n      fne_lls_url: https://lls001.example:7071\n      fne_sync_retries: 5\n"
        "      fne_lls_password: secret\n      fne_sync_timeout: 2.5\n      fne_lls_validate_certs: false\n")
    loader = DataLoader()
    inventory = InventoryManager(loader, sources=[str(tmp_path / "inventory.yml")])
    hostvars = HostVars(inventory, VariableManager(loader=loader, inventory=inventory), loader)
    names = fleet.plain([host.name for host in inventory.get_hosts()])
    assert names == ["lls001"] and [type(n) for n in names] == [str]
    cfg = fleet.server_config(names[0], hostvars["lls001"])
    assert (cfg.lls["url"], cfg.lls["password"], cfg.lls["retries"], cfg.lls["timeout"],
            cfg.lls["validate_certs"]) == ("https://lls001.example:7071", "secret", 5, 2.5, False)
    assert [type(cfg.lls[k]) for k in ("url", "password", "retries", "timeout")] == [str, str, int, float]
    assert cfg.secrets == ["secret"]
    assert fleet.plain({"a": ("b", 1, None, True)}) == {"a": ["b", 1, None, True]}


def test_report_files_are_private_and_warnings_name_an_open_store_and_unchecked_certificates(store, tmp_path):
    from ansible_collections.fne.offline_sync.plugins.action.fleet import _setting_warnings
    from ansible_collections.fne.offline_sync.plugins.plugin_utils import _report as report

    built = report.build_report(store.root, ["lls001"], {}, [], 7)
    paths = report.write_report(built)
    assert {oct(os.stat(p).st_mode & 0o777) for p in paths.values()} == {"0o600"}
    os.chmod(store.root, 0o777)
    insecure = fleet.server_config("lls001", {"fne_lls_url": "https://lls:1443", "fne_lls_validate_certs": False})
    plain = fleet.server_config("lls002", {"fne_lls_url": "http://lls:7070", "fne_lls_validate_certs": False})
    warnings = _setting_warnings(store.root, [insecure, plain], "collect")
    assert any("can be written by other users" in w for w in warnings)
    assert any("certificate checks are off" in w and "lls001" in w and "lls002" not in w for w in warnings)
    os.chmod(store.root, 0o700)
    assert _setting_warnings(store.root, [plain], "collect") == []


@pytest.mark.parametrize("variables, words", [
    ({"fne_lls_url": "ftp://lls:7070"}, "fne_lls_url"),
    ({"fne_lls_url": "http://admin:pw@lls:7070"}, "fne_lls_url"),
    ({"fne_lls_url": "http://lls:7070", "fne_sync_timeout": -1}, "fne_sync_timeout"),
    ({"fne_lls_url": "http://lls:7070", "fne_sync_retries": 1000}, "fne_sync_retries"),
    ({"fne_lls_url": "http://lls:7070", "fne_lls_username": "admin"}, "fne_lls_username"),
    ({"fne_backoffice_url": "bo.example/deviceservices"}, "fne_backoffice_url"),
])
def test_host_settings_are_checked_before_the_host_is_touched(variables, words):
    with pytest.raises(StoreError, match=words) as err:
        fleet.server_config("lls001", variables)
    assert "pw" not in err.value.msg.replace("password", "")


def test_reupload_rule_reads_file_names_in_the_servers_zone(store, tmp_path):
    """Names in UTC+02:00: 13:05 there is 11:05 UTC, the time the back office (UTC) expects. Read as UTC, the
    name would look two hours later than the expected time and the accepted file would be taken for a gap."""
    work = fleet.ServerWork(fleet.server_config("lls001", {"fne_lls_time_zone": "+02:00"}),
                            fleet.Options(store=store.root), "upload")
    path = put(store.outbox, "20190124T130500.fnesync")
    assert work._already_accepted(path, _mismatch("Jan 24, 2019 11:05:00 AM"))
    later = put(store.outbox, "20190124T130600.fnesync")
    assert not work._already_accepted(later, _mismatch("Jan 24, 2019 11:05:00 AM"))


def test_an_invalid_time_zone_fails_that_host_alone():
    with pytest.raises(StoreError) as err:
        fleet.server_config("lls001", {"fne_lls_url": "http://h:7070", "fne_lls_time_zone": "Mars/Olympus"})
    assert "fne_lls_time_zone" in err.value.msg


@pytest.mark.parametrize("query", ["force=true&x=<script>", "?force=true", "forcé=1", "force true"])
def test_an_invalid_force_query_fails_that_host_alone(query):
    with pytest.raises(StoreError) as err:
        fleet.server_config("lls001", {"fne_lls_url": "http://h:7070", "fne_lls_force_query": query})
    assert "fne_lls_force_query" in err.value.msg and "is not a query string" in err.value.msg


def test_retention_prunes_only_old_acknowledged_files(store, tmp_path):
    """sent/ loses what is older than keep_days and older than any pending acknowledgment; the totals stay."""
    from ansible_collections.fne.offline_sync.plugins.plugin_utils._report import summarize

    for stamp, records in (("20260101T000000", 4), ("20260102T000000", 5), ("20260301T000000", 6)):
        store.record_ack(store.admit(put(str(tmp_path), f"{stamp}.fnesync", stamp.encode()), records=records), b"A")
    store.complete_acks(store.pending_acks()[1])  # the March acknowledgment is still pending
    totals = summarize(store)["records_synchronized"]
    now = dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)
    removed = store.prune_sent(30, now=now)
    assert removed == ["20260101T000000.ack", "20260101T000000.fnesync", "20260102T000000.ack",
                       "20260102T000000.fnesync"]
    assert sorted(os.listdir(store.sent)) == ["20260301T000000.fnesync"]  # recent: kept
    assert [os.path.basename(a) for a in store.pending_acks()] == ["20260301T000000.ack"]  # never touched
    assert summarize(store)["records_synchronized"] == totals == 15
    assert store.ledger()[-1]["event"] == "pruned"
    # a pending acknowledgment older than the limit keeps everything from its time on
    store.record_ack(store.admit(put(str(tmp_path), "20250101T000000.fnesync", b"old"), records=1), b"A")
    assert store.prune_sent(1, now=now) == []


def _with_pid(step, cfg, opts):
    return dict(fleet.work_one(step, cfg, opts), pid=os.getpid())


def test_a_fleet_step_in_two_processes_syncs_every_server_once(lab_factory, tmp_path):
    """processes=2: the servers are shared between this process and a forked one (their entries come back in input
    order), each talks to its servers over real HTTP and TLS, and the lab finds every record delivered once."""
    import yaml

    lab = lab_factory(6, "--security", "0.5", "--https", "0.5", "--records", "7")
    group = yaml.safe_load(lab.inventory.read_text())["all"]["children"]["license_servers"]
    configs = [fleet.server_config(name, {**group["vars"], **host}) for name, host in group["hosts"].items()]
    opts = fleet.Options(store=str(tmp_path / "store"), workers=4, processes=2)
    results = fleet.run_fleet("cycle", configs, opts, worker=_with_pid)
    assert list(results) == [c.name for c in configs]
    assert not [e["msg"] for e in results.values() if e["failed"]]
    pids = [results[c.name]["pid"] for c in configs]
    assert set(pids[0::2]) == {os.getpid()} and len(set(pids[1::2]) - {os.getpid()}) == 1, pids
    lab.verify(complete=True)
    assert os.listdir(tmp_path / "store" / InFlight.FOLDER) == []


def _dies_in_the_child(parent, step, cfg, opts):
    if os.getpid() != parent:
        opts.in_flight.begin(cfg.name)  # a download had begun when the process died
        os._exit(3)
    return fleet.work_one(step, cfg, opts)


def test_a_process_that_dies_fails_its_servers_alone_and_leaves_them_needs_force(tmp_path, monkeypatch):
    """The forked process dies in a download: its servers fail with how it ended and, from the step's journal
    (written by both processes), need a forced download; the servers of this process are worked as usual."""
    root = str(tmp_path / "store")
    monkeypatch.setattr(fleet.ServerWork, "lls", property(lambda self: _FakeLls()))
    configs = [fleet.server_config(f"lls00{n}", {}) for n in (1, 2, 3, 4)]
    for cfg in configs:
        ServerStore(root, cfg.name).ensure()
    results = fleet.run_fleet("collect", configs, fleet.Options(store=root, workers=2, processes=2),
                              worker=functools.partial(_dies_in_the_child, os.getpid()))
    mine, theirs = configs[0::2], configs[1::2]
    assert not [results[c.name]["msg"] for c in mine if results[c.name]["failed"]]
    for cfg in theirs:
        assert results[cfg.name]["failed"] and "the process working this server exited 3" in results[cfg.name]["msg"]
    assert [c.name for c in configs if ServerStore(root, c.name).needs_force()] == ["lls002"], \
        "the child began one download before it died"
    assert os.listdir(os.path.join(root, InFlight.FOLDER)) == []


def test_each_process_counts_unreachable_back_office_uploads_on_its_own(tmp_path):
    """The back office breaker is per process: with two processes of one thread each and a back office no one
    answers, each tries three uploads, then its other servers' files wait without a try."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/deviceservices"
    root = str(tmp_path / "store")
    configs = [fleet.server_config(f"lls{n:03d}", {"fne_backoffice_url": closed, "fne_sync_retries": 0})
               for n in range(1, 11)]
    for cfg in configs:
        store = ServerStore(root, cfg.name).ensure()
        store.log("fetched", file="x")  # not a first contact
        store.admit(put(str(tmp_path), "20260101T000000.fnesync"))
    results = fleet.run_fleet("upload", configs, fleet.Options(store=root, workers=2, processes=2))
    assert all(e["failed"] for e in results.values())
    tried = [c.name for c in configs if "upload not tried" not in results[c.name]["msg"]]
    assert tried == ["lls001", "lls002", "lls003", "lls004", "lls005", "lls006"], results
    assert all(ServerStore(root, c.name).outbox_files() for c in configs), "every file waits in the outbox"
