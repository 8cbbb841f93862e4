"""The variant matrix: every plausible shape the lab plays (tests/lab/fnelab/variants.py, `fnelab variants`) where
the vendor documents nothing. One lab per variant keeps it cheap: the modules meet the variant's shape on lls001
(the test says what broke before the compatibility profile), then the fleet's sync playbook takes the whole lab to
`fnelab verify --complete` with only the inventory settings the lab writes; where a rerun meets the variant, it
changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from fnelab.variants import VARIANTS
from test_modules_support import BO_ARGS, LLS_ARGS, inventory, playbook, sync_files, task
from test_sync_support import PYTHON, ledger, sync, write_inventory
from test_sync_support import playbook as fleet_playbook

MODULE_HOSTS = {"m": {"server": "lls001"}}
OUT = "{{ out }}"
ACK = "{{ out }}/syncack.bin"


def run_tasks(tmp_path, lab, tasks, hosts=None):
    return playbook(tmp_path, inventory(tmp_path, lab, hosts or MODULE_HOSTS), tasks, check=False)


def warned(res, text: str) -> bool:
    """Whether the run printed a warning with this text (Ansible wraps long warnings over lines)."""
    return text in " ".join(res.output.split())


def _health_wrapped(lab, tmp_path):
    """The "LLS"-wrapped health with security "enabled" and host ids at /hostids: read as the flat one."""
    hosts = {f"s{i}": {"server": f"lls00{i}"} for i in (1, 2, 3)}
    res = run_tasks(tmp_path, lab, [task("info", "server_info", LLS_ARGS)], hosts)
    for host, spec in hosts.items():
        server = lab.info["servers"][spec["server"]]
        info = res.get("info", host)
        assert info["reachable"] and info["version"] == "2024.09-fnelab", info
        assert info["security"] is server["security"] and info["host_id"] == server["host_id"], info
        assert info["instance_id"] == f"fnelab-{spec['server']}" and info["database"] == "success", info
        assert "LLS" in info["health"]


def _mismatch_then_recovery(process_fails: bool):
    """generate three messages, lose the middle one, upload: the documented mismatch (at the upload, or when the
    acknowledgment is processed); then the documented recovery."""
    first_process = task("process", "process", dict(LLS_ARGS, src=ACK, path=OUT), register="proc",
                         ignore_errors=process_fails)
    return [
        task("generate", "generate", dict(LLS_ARGS, path=OUT), register="gen"),
        {"name": "lose", "ansible.builtin.file": {"path": "{{ gen.files[1].path }}", "state": "absent"}},
        task("upload", "upload", dict(BO_ARGS, src=OUT), ignore_errors=not process_fails),
        first_process,
        task("force", "generate", dict(LLS_ARGS, path=OUT, force=True), register="forced"),
        {"name": "drop superseded", "ansible.builtin.file": {"path": "{{ item }}", "state": "absent"},
         "loop": "{{ forced.superseded }}"},
        task("upload again", "upload", dict(BO_ARGS, src=OUT)),
        task("process again", "process", dict(LLS_ARGS, src=ACK, path=OUT)),
    ]


def _error_objects(lab, tmp_path):
    """The mismatch as {key, message, arguments}: before, it was refused as an ordinary 400 (and the fleet set
    the file aside); now it is the documented mismatch."""
    res = run_tasks(tmp_path, lab, _mismatch_then_recovery(process_fails=False))
    up = res.get("upload", "m")
    assert up["failed"] and up["mismatch"] is True, up
    assert up["expected"] and up["received"] and up["expected"] != up["received"]
    assert res.get("upload again", "m")["mismatch"] is False and not res.get("process again", "m")["failed"]


def _mismatch_at_process(lab, tmp_path):
    """The back office acknowledges the out-of-order message; the license server reports the mismatch when it
    processes that acknowledgment: a mismatch result naming the documented recovery, which then works."""
    res = run_tasks(tmp_path, lab, _mismatch_then_recovery(process_fails=True))
    assert not res.get("upload", "m")["failed"]
    proc = res.get("process", "m")
    assert proc["failed"] and proc["mismatch"] is True and "force: true" in proc["msg"], proc
    assert "Expected sync time" in proc["msg"] and proc["purged"] == []
    assert res.get("force", "m")["records"] == 15  # every record after the first message (25 in pages of 10)
    assert not res.get("process again", "m")["failed"]


def _no_disposition(lab, tmp_path):
    """No Content-Disposition, no record count: named by this host's clock (in order, one second apart at least),
    with a warning. Before, every such answer was a lost response: the fleet looped on forced recoveries."""
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT)),
        task("upload", "upload", dict(BO_ARGS, src=OUT)),
        task("process", "process", dict(LLS_ARGS, src=ACK, path=OUT)),
    ])
    gen = res.get("generate", "m")
    names = [f["name"] for f in gen["files"]]
    assert len(names) == 3 and names == sorted(set(names)), gen
    assert warned(res, "named by this host's clock"), res.output
    assert not res.get("process", "m")["failed"]


def _empty_200(lab, tmp_path):
    """Nothing new as an empty 200; sync_ack confirmed by an empty 200 (no lastSyncTime): processed, nothing
    purged (which files it covers is unknown), with a warning."""
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT)),
        task("generate again", "generate", dict(LLS_ARGS, path=OUT)),
        task("upload", "upload", dict(BO_ARGS, src=OUT)),
        task("process", "process", dict(LLS_ARGS, src=ACK, path=OUT)),
    ])
    assert len(res.get("generate", "m")["files"]) == 3
    again = res.get("generate again", "m")
    assert not again["failed"] and not again["changed"] and again["message"] == "No new data is available.", again
    proc = res.get("process", "m")
    assert proc["processed"] and proc["last_sync_time"] is None and proc["purged"] == [], proc
    assert warned(res, "without saying its lastSyncTime"), res.output


def _local_time_names(lab, tmp_path):
    """File names in the server's local time (UTC-05:00). Read as UTC they look five hours older: before, process
    purged files the back office never received. Unset, nothing is purged; with time_zone, exactly the covered."""
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT), register="gen"),
        task("upload first", "upload", dict(BO_ARGS, src="{{ gen.files[0].path }}")),
        task("process as UTC", "process", dict(LLS_ARGS, src=ACK, path=OUT)),
        task("process in zone", "process", dict(LLS_ARGS, src=ACK, path=OUT, time_zone="-05:00")),
        task("upload rest", "upload", dict(BO_ARGS, src=OUT)),
        task("process rest", "process", dict(LLS_ARGS, src=ACK, path=OUT, time_zone="-05:00")),
    ])
    names = [f["name"] for f in res.get("generate", "m")["files"]]
    named = dt.datetime.strptime(names[0][:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
    behind = dt.datetime.now(dt.timezone.utc) - named
    assert dt.timedelta(hours=4) < behind < dt.timedelta(hours=6), names
    as_utc = res.get("process as UTC", "m")
    assert as_utc["purged"] == [] and warned(res, "another time zone"), as_utc
    assert [p.rsplit("/", 1)[1] for p in res.get("process in zone", "m")["purged"]] == names[:1]
    assert [p.rsplit("/", 1)[1] for p in res.get("process rest", "m")["purged"]] == names[1:]


def _backoffice_local_times(lab, tmp_path):
    """The back office's mismatch text in UTC+05:30. Read as UTC, the time it expects looks five and a half hours
    later than it is, later than the file it refused: the re-upload rule would take the missing message for an
    accepted one. With time_zone, expected_time is the real one, before the file's own time."""
    recovery = _mismatch_then_recovery(process_fails=False)[3:]  # process, force, drop, upload again, process again
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT), register="gen"),
        task("upload first", "upload", dict(BO_ARGS, src="{{ gen.files[0].path }}")),
        {"name": "lose", "ansible.builtin.file": {"path": "{{ gen.files[1].path }}", "state": "absent"}},
        task("upload", "upload", dict(BO_ARGS, src=OUT), ignore_errors=True),
        task("upload in zone", "upload", dict(BO_ARGS, src=OUT, time_zone="+05:30"), ignore_errors=True),
        *recovery,
    ])
    assert not res.get("process again", "m")["failed"]
    names = [f["name"] for f in res.get("generate", "m")["files"]]
    refused = dt.datetime.strptime(names[2][:15], "%Y%m%dT%H%M%S")
    as_utc, in_zone = (res.get(t, "m") for t in ("upload", "upload in zone"))
    assert as_utc["mismatch"] and in_zone["mismatch"] and as_utc["expected"] == in_zone["expected"], in_zone
    as_utc_time, zone_time = (dt.datetime.strptime(r["expected_time"], "%Y-%m-%dT%H:%M:%SZ") for r in (as_utc, in_zone))
    assert as_utc_time - zone_time == dt.timedelta(hours=5, minutes=30)
    assert zone_time < refused < as_utc_time, (names, as_utc, in_zone)


def _unregistered_device(lab, tmp_path):
    """The back office refuses the server itself: its text, a hint, no retry, no mismatch."""
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT)),
        task("upload", "upload", dict(BO_ARGS, src=OUT, retries=3), ignore_errors=True),
    ])
    up = res.get("upload", "m")
    assert up["failed"] and up["mismatch"] is False and up["accepted"] == [], up
    assert "is not registered with this back office" in up["msg"] and "Register the license server" in up["msg"]
    assert lab.state()["backoffice"]["requests"]["upload"] == 1  # refused once, never retried


def _other_force_query(lab, tmp_path):
    """A forced download asked another way: ?force=true is ignored (nothing comes again, the recovery would bring
    nothing back); with force_query as compat_check reads it from the vendor's tool, every record comes again."""
    res = run_tasks(tmp_path, lab, [
        task("generate", "generate", dict(LLS_ARGS, path=OUT)),
        task("force as guessed", "generate", dict(LLS_ARGS, path=OUT, force=True)),
        task("force as the tool asks", "generate", dict(LLS_ARGS, path=OUT, force=True,
                                                        force_query="forceResync=true")),
    ])
    first = res.get("generate", "m")["files"]
    assert len(first) == 3 and res.get("force as guessed", "m")["files"] == [], res.get("force as guessed", "m")
    again = res.get("force as the tool asks", "m")
    assert len(again["files"]) == 3 and len(again["superseded"]) == 3, again


MODULE_CHECKS = {"health-wrapped": _health_wrapped, "error-objects": _error_objects,
                 "mismatch-at-process": _mismatch_at_process, "no-disposition": _no_disposition,
                 "empty-200": _empty_200, "local-time-names": _local_time_names,
                 "backoffice-local-times": _backoffice_local_times,
                 "unregistered-device": _unregistered_device, "other-force-query": _other_force_query}
# Where the fleet meets the variant only when something goes wrong: a message lost between download and upload.
PROVOKE_MISMATCH = ("error-objects", "mismatch-at-process", "other-force-query", "backoffice-local-times")
# Where a second run meets the variant's "nothing new", or could loop on the recovery: it must change nothing.
RERUN = ("empty-200", "no-disposition", "mismatch-at-process")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant(lab_factory, tmp_path, variant):
    lab = lab_factory(3, "--variant", variant, "--records", "25", "--page-size", "10", "--security", "0.5",
                      "--https", "0.5")
    assert set(MODULE_CHECKS) <= set(VARIANTS)
    if variant in MODULE_CHECKS:
        MODULE_CHECKS[variant](lab, tmp_path)
    store = tmp_path / "store"
    if variant == "unregistered-device":
        refused = sync(lab, store, expect_rc=2)
        assert refused.failed() == {"lls001"}, refused
        assert "is not registered with this back office" in refused.out and "retrying" not in refused.out
        assert not list((store / "lls001" / "quarantine").iterdir())  # the server is refused, not its files
        assert sync_files(store / "lls001" / "outbox")
        lab.config("--register", "lls001")
    if variant in PROVOKE_MISMATCH:  # after a complete sync: the back office expects a recent time
        assert not sync(lab, store).failed()
        lab.activity(25, "lls002")
        sync(lab, store, "--tags", "collect")
        outbox = sorted((store / "lls002" / "outbox").glob("*.fnesync"))
        outbox[0].rename(tmp_path / outbox[0].name)  # lost in transit
    run = sync(lab, store)
    assert not run.failed(), run
    if variant in PROVOKE_MISMATCH:
        events = [e["event"] for e in ledger(store, "lls002")]
        assert "mismatch" in events and "recovered" in events and "quarantined" not in events, events
    lab.verify(complete=True)
    if variant in RERUN:
        rerun = sync(lab, store)
        assert rerun.changed() == set() and not rerun.failed(), rerun


@pytest.mark.slow
def test_mismatch_at_process_remote_topology(lab_factory, sshd, tmp_path):
    """The same for a server whose API only its own host reaches: process runs over SSH and reports the mismatch,
    the store records the acknowledgment as processed and the documented recovery runs in the same run."""
    lab = lab_factory(2, "--variant", "mismatch-at-process", "--records", "10", "--page-size", "5")
    folder = tmp_path / "host" / "fnesync"
    inv = write_inventory(lab, tmp_path / "inventory.json", {"lls002": {
        "fne_sync_topology": "remote", "fne_sync_remote_path": str(folder), "ansible_host": sshd["host"],
        "ansible_port": sshd["port"], "ansible_user": sshd["user"], "ansible_ssh_private_key_file": sshd["key"],
        "ansible_python_interpreter": PYTHON}})
    store = tmp_path / "store"
    fleet_playbook("sync", inv, store, "--tags", "collect")
    first = sorted((store / "lls002" / "outbox").glob("*.fnesync"))[0]
    first.unlink()
    (folder / first.name).unlink()
    result = fleet_playbook("sync", inv, store)
    assert not result.failed(), result
    events = [e["event"] for e in ledger(store, "lls002")]
    assert "recovered" in events and "quarantined" not in events, events
    lab.verify(complete=True)
