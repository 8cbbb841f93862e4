"""Crash matrix, lost stores and concurrent runs (issue 9): SIGKILL the sync playbook at every step boundary and
inside every transfer, SIGKILL the lab itself, wipe the store between the crash and the rerun, run the playbook
twice at once; after each, the reruns must reach `fnelab verify --complete` (nothing lost, nothing duplicated,
everything in the back office and purged) with a consistent store. One gap no client can close by itself: a store
lost after the back office accepted a file but before the server processed its acknowledgment (the acknowledgment
was only in the lost store). There the rerun must fail that server saying how to close it, and the test does what
an operator does: fetch the back office's latest acknowledgment (its web page; `fnelab backoffice-ack` plays it),
process it with fne.offline_sync.process, run the sync again.

Placement is deterministic: the lab holds the chosen request open (`hold`: before the work, `hold_after`: the work
committed, the answer not sent) and the test kills while it waits. The crashed run uses `fne_sync_workers=1`, so the
requests come in a known order: per step lls001, lls002, lls003; a case's backlog is three pages a server (12
records, page size 5), so the back office's uploads 1-3 are lls001's files, 4-6 lls002's, 7-9 lls003's.

The labs are shared per xdist worker (module fixture `fleet`): a case starts from a fleet that the previous case
left complete, adds the backlog, crashes, recovers. A case that fails leaves the fleet dirty and the next case
starts a new one.

Killing the playbook: ansible-core runs each task in a worker process that calls setsid() (its own session and
process group), so `os.killpg` of the playbook's group alone leaves the worker, which does the actual work, running
to the end of its task. `kill_run` (test_sync_support) freezes (SIGSTOP) the playbook and every descendant, then
SIGKILLs them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import reliability
import yaml
from fnetest import BIN, Lab, ansible_env, run
from test_sync_support import Result, kill_run, ledger, sync

HOSTS = ("lls001", "lls002", "lls003")
BACKLOG = 12          # records a server per case: pages of 5, 5 and 2
PAGE_SIZE = "5"
FOLDERS = ("outbox", "acks", "sent", "superseded", "quarantine")
STORE_NAME = re.compile(r"^(\d{8}T\d{6})(?:\.\d+)?(\.fnesync|\.ack)$")  # "NAME.1.fnesync": a clash on a move


# ---- the shared fleet ---------------------------------------------------------------------------------------
def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


class Fleet:
    """A lab of three secured servers and a store that has synchronized them all, reused case after case."""

    def __init__(self, root: Path):
        self.root = root
        self.lab: Lab | None = None
        self.store = root / "none"
        self.clean = False
        self.labs = 0
        self.runs = 0
        self.created = 0  # records created by the current case

    def _new(self) -> None:
        self.close()
        self.labs += 1
        for attempt in range(8):  # other sessions on this machine may hold a range: take another
            base = f"127.{130 + _worker_index()}.{random.SystemRandom().randrange(1, 250)}.0"
            lab = Lab(self.root / f"lab{self.labs}-{attempt}", base)
            try:
                lab.up(len(HOSTS), "--security", "--page-size", PAGE_SIZE, "--records", "3")
                break
            except AssertionError as exc:
                if "Address already in use" not in str(exc) or attempt == 7:
                    raise
        self.lab, self.store = lab, self.root / f"store{self.labs}"
        first = sync(lab, self.store)
        assert not first.failed(), first
        lab.verify(complete=True)

    def close(self) -> None:
        if self.lab is not None:
            self.lab.cli("down", "--dir", str(self.lab.dir), check=False)
            self.lab = None

    @contextlib.contextmanager
    def case(self, reupload: str = "accept"):
        """A complete fleet with a new backlog on every server; left clean only when the case passes."""
        if not self.clean or self.lab is None:
            self._new()
        self.clean = False
        control(self.lab, "/clear", {"target": None})
        control(self.lab, "/config", {"reupload": reupload})
        control(self.lab, "/activity", {"records": BACKLOG, "servers": None})
        self.created = BACKLOG * len(HOSTS)
        yield self.lab
        self.clean = True

    def start(self, *args: str) -> tuple[subprocess.Popen, Path]:
        """The sync playbook in a session of its own, output to a log file (a pipe nobody reads would fill)."""
        self.runs += 1
        log = self.root / f"run{self.runs}.log"
        cmd = [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(self.lab.inventory),
               "-e", f"fne_sync_store={self.store}", *args]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, env=ansible_env(PYTHONUNBUFFERED="1"), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    shared = Fleet(tmp_path_factory.mktemp("crash"))
    yield shared
    shared.close()


# ---- the lab's control endpoint (what `fnelab held/release/fault` use; a command costs ~1 s on a busy box) ------
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy from the environment


def control(lab: Lab, path: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(lab.info["control_url"].rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def held(lab: Lab, where: str, endpoint: str) -> list[dict]:
    return [h for h in control(lab, "/held")["held"] if h["target"] == where and h["endpoint"] == endpoint]


# ---- crash points -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """Where a run dies: the nth request of `endpoint` on `where` (a server or the back office), held before the
    work (`hold`), after it (`hold_after`) or mid-body (`trickle`: the answer's body comes a byte at a time); or
    `where="report"`: as the report step starts (the acknowledge step is over)."""

    where: str
    endpoint: str = ""
    kind: str = "hold"
    nth: int = 1


POINTS = {
    # step boundaries: the first request of the next step held before its work (nothing of that step done)
    "between-plan-collect": Point("lls001", "authorize"),
    "between-collect-upload": Point("backoffice", "upload"),
    "between-upload-acknowledge": Point("lls001", "ack"),
    "between-acknowledge-report": Point("report"),
    # inside every transfer, on the middle server (lls001 done, lls003 not yet)
    "authorize-before": Point("lls002", "authorize"),
    "authorize-after": Point("lls002", "authorize", "hold_after"),
    "generate-page1-before": Point("lls002", "generate"),
    "generate-page1-after": Point("lls002", "generate", "hold_after"),
    "generate-page1-body": Point("lls002", "generate", "trickle"),
    "generate-page2-before": Point("lls002", "generate", "hold", 2),
    "generate-page2-after": Point("lls002", "generate", "hold_after", 2),
    "generate-lastpage-after": Point("lls002", "generate", "hold_after", 3),
    "upload-before": Point("backoffice", "upload", "hold", 4),       # lls002's first file
    "upload-after": Point("backoffice", "upload", "hold_after", 4),
    "upload-last-after": Point("backoffice", "upload", "hold_after", 9),  # the run's newest file (lls003's last)
    "ack-before": Point("lls002", "ack"),
    "ack-after": Point("lls002", "ack", "hold_after"),
}
# docs/design.md, re-upload rule, known limit: with a `reject` back office, the newest file accepted without its
# acknowledgment is covered only by the acknowledgment of the next message (new activity).
NEEDS_ACTIVITY = {("upload-last-after", "reject")}


def handed_out(lab: Lab, server: str) -> int:
    """How many sync messages the server has handed out (the lab counts one before its body is sent)."""
    state = json.loads(lab.cli("state", "--dir", str(lab.dir), "--json").stdout)
    return state["servers"][server]["messages_handed_out"]


def arm(lab: Lab, point: Point) -> int:
    """Set the point's fault; for a trickled body, returns how many messages its server had handed out before."""
    if point.where == "report":
        return 0
    before = handed_out(lab, point.where) if point.kind == "trickle" else 0
    kind, value = ("trickle", "0.5") if point.kind == "trickle" else (point.kind, None)
    control(lab, "/fault", {"target": point.where, "kind": kind, "value": value, "count": point.nth,
                            "endpoint": point.endpoint})
    return before


def _running(proc: subprocess.Popen, log: Path, what: str) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-6000:]}")


def reach(lab: Lab, store: Path, point: Point, proc: subprocess.Popen, log: Path, seconds: float = 120,
          handed: int = 0) -> None:
    """Return once the run is exactly at `point` (the earlier matching requests held and let go one by one;
    `handed`: what `arm` returned)."""
    deadline = time.monotonic() + seconds
    if point.where == "report":
        while not re.search(r"^TASK \[[^\]]*report", log.read_text(), re.M | re.I):
            _running(proc, log, "the report step")
            assert time.monotonic() < deadline, "the report step never started"
            time.sleep(0.02)
        return
    if point.kind == "trickle":
        # the server handed the message out: its body is on the way, a byte every 0.5 s (a sync message has more
        # than 40 bytes, so the 20 s after this are mid-body; the client saves nothing before the body is whole)
        while handed_out(lab, point.where) <= handed:
            _running(proc, log, "the download body started")
            assert time.monotonic() < deadline, "the server never handed out the trickled message"
            time.sleep(0.2)
        time.sleep(1)
        _running(proc, log, "the download body was on its way")
        return
    for number in range(1, point.nth + 1):
        while not (waiting := held(lab, point.where, point.endpoint)):
            _running(proc, log, f"{point.endpoint} request {number} on {point.where} was held")
            assert time.monotonic() < deadline, f"{point.endpoint} request {number} on {point.where} never came"
            time.sleep(0.02)
        assert len(waiting) == 1 and waiting[0]["connected"], waiting
        if number < point.nth:
            control(lab, "/release", {"id": waiting[0]["id"]})


def let_go(lab: Lab, point: Point) -> None:
    """After the kill: the lab has seen the client go (a held request released now is not carried out), then no
    fault is left and nothing stays held."""
    if point.kind in ("hold", "hold_after") and point.where != "report":
        deadline = time.monotonic() + 15
        while any(h["connected"] for h in held(lab, point.where, point.endpoint)):
            assert time.monotonic() < deadline, "the lab still sees the killed client connected"
            time.sleep(0.05)
    control(lab, "/clear", {"target": None})
    control(lab, "/release", {"all": True})


def crash(fleet: Fleet, point: Point) -> None:
    """One run of the sync playbook, SIGKILLed at `point`."""
    handed = arm(fleet.lab, point)
    proc, log = fleet.start("-e", "fne_sync_workers=1")
    try:
        reach(fleet.lab, fleet.store, point, proc, log, handed=handed)
    finally:
        kill_run(proc)
    let_go(fleet.lab, point)


def kill_lab(lab: Lab) -> None:
    """SIGKILL the lab process (it keeps its state in SQLite), then start it again on the same folder."""
    pid = control(lab, "/status")["pid"]
    assert int((lab.dir / "lab.pid").read_text()) == pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _alive(pid):
        assert time.monotonic() < deadline, f"the killed lab (pid {pid}) is still running"
        time.sleep(0.05)
    lab.up(len(HOSTS))


def _alive(pid: int) -> bool:
    """Not gone and not a zombie (nobody may reap the killed lab)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ---- after the crash --------------------------------------------------------------------------------------------
def check_store(store: Path) -> None:
    """The end state of a finished sync: no temporary file anywhere, no file in two places (nor twice in one, as
    a move clash), nothing waiting in outbox/, acks/ or quarantine/, no recovery pending."""
    temps = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name.endswith(".tmp"))
    assert not temps, f"temporary files left in the store: {temps}"
    for host in HOSTS:
        places: dict[str, list[str]] = {}
        for folder in FOLDERS:
            path = store / host / folder
            for name in sorted(os.listdir(path)) if path.is_dir() else []:
                match = STORE_NAME.match(name)
                assert match, f"{host}/{folder}/{name}: not a name the store gives"
                places.setdefault(match[1] + match[2], []).append(f"{folder}/{name}")
        twice = {name: where for name, where in places.items() if len(where) > 1}
        assert not twice, f"{host}: the same file in more than one place: {twice}"
        left = [w for where in places.values() for w in where if not w.startswith(("sent/", "superseded/"))]
        assert not left, f"{host}: still pending after the reruns: {left}"
        assert not (store / host / "needs_force").exists(), f"{host}: a recovery is still pending"
        incoming = store / host / ".incoming"
        assert not incoming.exists() or not os.listdir(incoming), f"{host}: files left in .incoming/"
        uploaded = [e["file"] for e in ledger(store, host) if e["event"] == "uploaded"]
        assert len(uploaded) == len(set(uploaded)), f"{host}: a file uploaded twice: {uploaded}"


def failures(result: Result) -> dict[str, str]:
    """Each failed host's message, as the playbook printed it."""
    return dict(re.findall(r"^fatal: \[(\S+)\].*?\"msg\": \"(.*?)\"\n", result.out, re.M | re.S))


def verify_complete(lab: Lab) -> dict | None:
    """The judge's report when the fleet is complete, else None."""
    proc = run([str(BIN / "fnelab"), "verify", "--dir", str(lab.dir), "--complete", "--json"], check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def rerun_until_complete(fleet: Fleet, case: str, *, documented_limit: bool = False) -> tuple[dict, int]:
    """Rerun the sync: the first rerun may do the documented recovery, a second one must leave the fleet complete.
    Returns the final verify report and the number of reruns."""
    lab, store = fleet.lab, fleet.store
    reruns = [sync(lab, store, expect_rc=None)]
    report = None
    if documented_limit:
        lab.verify()  # nothing lost meanwhile: the newest accepted file's records are still held by the server
        control(lab, "/activity", {"records": 2, "servers": None})
        fleet.created += 2 * len(HOSTS)
        reruns.append(sync(lab, store, expect_rc=None))
    elif reruns[0].proc.returncode or not (report := verify_complete(lab)):
        reruns.append(sync(lab, store, expect_rc=None))
    last: Result = reruns[-1]
    assert last.proc.returncode == 0 and not last.failed(), f"{case}: the last rerun failed: {last!r}"
    if len(reruns) > 1 or report is None:
        report = lab.verify(complete=True)
    check_store(store)
    return report, len(reruns)


# ---- the crash matrix ---------------------------------------------------------------------------------------------
# every point with an `accept` back office; the points where the back office already holds a file the rerun sends
# again also with `reject` (docs/design.md, re-upload rule); the run's newest file only there (its known limit)
CRASH_CASES = ([(name, "accept") for name in POINTS if name != "upload-last-after"]
               + [("upload-after", "reject"), ("upload-last-after", "reject")])


@pytest.mark.parametrize(("name", "reupload"), CRASH_CASES, ids=[f"{n}-{r}" for n, r in CRASH_CASES])
def test_crash(fleet, name, reupload):
    """SIGKILL the playbook at the point; the reruns complete the work."""
    with fleet.case(reupload):
        crash(fleet, POINTS[name])
        fleet.lab.verify()  # the crash itself loses nothing
        report, reruns = rerun_until_complete(fleet, name, documented_limit=(name, reupload) in NEEDS_ACTIVITY)
    reliability.record("crash", f"playbook SIGKILL at {name} ({reupload})", verified=report, reruns=reruns,
                       case_records=fleet.created)


LAB_KILLS = {
    "lab-kill-generate-page2-after": Point("lls002", "generate", "hold_after", 2),
    "lab-kill-upload-after": Point("backoffice", "upload", "hold_after", 4),
    "lab-kill-ack-before": Point("lls002", "ack"),
}


@pytest.mark.parametrize("name", LAB_KILLS)
def test_lab_killed_mid_run(fleet, name):
    """SIGKILL the lab (every server and the back office at once) while it holds a request, start it again from
    its SQLite state while the run goes on; the run and the reruns complete the work."""
    point = LAB_KILLS[name]
    with fleet.case():
        arm(fleet.lab, point)
        proc, log = fleet.start("-e", "fne_sync_workers=1")
        try:
            reach(fleet.lab, fleet.store, point, proc, log)
            kill_lab(fleet.lab)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                kill_run(proc)
        fleet.lab.verify()
        report, reruns = rerun_until_complete(fleet, name)
    reliability.record("crash", f"lab SIGKILL at {name.removeprefix('lab-kill-')}", verified=report,
                       reruns=reruns, case_records=fleet.created, crashed_run_exit=proc.returncode)


# ---- a lost store -------------------------------------------------------------------------------------------------
# (crash point, what is wiped: one server's folder or the whole store, back office re-upload mode)
STORE_LOSS = [
    ("between-plan-collect", "store", "accept"),
    ("generate-page1-after", "lls002", "reject"),
    ("generate-lastpage-after", "lls002", "accept"),
    ("upload-before", "lls002", "reject"),
    ("upload-after", "lls002", "accept"),
    ("upload-after", "lls002", "reject"),
    ("ack-before", "lls002", "accept"),
    ("ack-after", "lls002", "reject"),
    ("between-acknowledge-report", "store", "accept"),
    ("between-acknowledge-report", "store", "reject"),
]
# The back office accepted a file of the wiped server (lls002's first, upload 4) whose acknowledgment the server
# never processed: only the back office still has it. The forced download starts at the server's last acknowledged
# sync, the back office expects a later time, and no client can close that gap by itself.
ACK_LOST = {("upload-after", "lls002", "accept"), ("upload-after", "lls002", "reject"),
            ("ack-before", "lls002", "accept")}
# What the failed server's message must say: the acknowledgment was lost, where to get it, what to do with it.
ACK_LOST_WORDS = ("acknowledgment never reached the license server",
                  "download this server's latest acknowledgment from the back office (its web page offers it)",
                  "process it with fne.offline_sync.process", "then run the sync again")


def acknowledgment_gap(lab: Lab, host: str) -> tuple[str | None, str | None]:
    """The server's last acknowledged sync time and the back office's last accepted one for it."""
    state = lab.state()
    return (state["servers"][host]["last_ack_time"],
            state["backoffice"]["last_sync_times"].get(lab.info["servers"][host]["host_id"]))


def process_backoffice_ack(fleet: Fleet, host: str) -> dict:
    """What the operator does: download the server's latest acknowledgment from the back office's web page (the
    lab's `backoffice-ack`), then process it with the module, with that server's values from the inventory."""
    lab = fleet.lab
    ack = fleet.root / f"backoffice-ack-{host}-{fleet.runs}.bin"
    run([str(BIN / "fnelab"), "backoffice-ack", "--dir", str(lab.dir), "--server", host, "--out", str(ack)])
    hostvars = yaml.safe_load(lab.inventory.read_text())["all"]["children"]["license_servers"]["hosts"][host]
    options = {"url": hostvars["fne_lls_url"], "src": str(ack)}
    options.update({name: hostvars[f"fne_lls_{name}"] for name in ("username", "password", "ca_path")
                    if hostvars.get(f"fne_lls_{name}")})
    proc = run([str(BIN / "ansible"), "localhost", "-m", "fne.offline_sync.process",
                "-a", " ".join(f"{k}={shlex.quote(v)}" for k, v in options.items())], check=False)
    assert proc.returncode == 0, f"processing the back office's acknowledgment failed:\n{proc.stdout}\n{proc.stderr}"
    answer = json.loads(proc.stdout.split("=>", 1)[1])
    assert answer["changed"] and answer["last_sync_time"], answer
    return answer


def rerun_after_lost_ack(fleet: Fleet, host: str, case: str) -> tuple[dict, int]:
    """The rerun fails `host` alone, naming the lost acknowledgment and the back office's web page; nothing is lost
    meanwhile. The operator processes the back office's acknowledgment; the next run leaves the fleet complete.
    Returns the final verify report and the number of reruns."""
    lab, store = fleet.lab, fleet.store
    first = sync(lab, store, expect_rc=2)
    assert first.failed() == {host}, f"{case}: the rerun should fail {host} alone: {first!r}"
    message = failures(first).get(host, "")
    missing = [words for words in ACK_LOST_WORDS if words not in message]
    assert not missing, f"{case}: {host}'s message does not say {missing}: {message!r}\n{first!r}"
    lab.verify()  # nothing lost meanwhile: the server keeps its records
    server_time, backoffice_time = acknowledgment_gap(lab, host)
    assert backoffice_time and server_time != backoffice_time, (server_time, backoffice_time)
    process_backoffice_ack(fleet, host)
    assert acknowledgment_gap(lab, host) == (backoffice_time, backoffice_time), "the acknowledgment was not taken"
    last = sync(lab, store)  # exit 0, or the assertion shows the run
    assert not last.failed(), f"{case}: the run after the operator's step failed: {last!r}"
    report = lab.verify(complete=True)
    check_store(store)
    return report, 2


@pytest.mark.parametrize(("name", "wipe", "reupload"), STORE_LOSS, ids=["-".join(c) for c in STORE_LOSS])
def test_store_lost_after_crash(fleet, name, wipe, reupload):
    """SIGKILL at the point, then the store is gone (an AWX job's fresh container): first contact forces a
    download since the last acknowledged sync, so records handed out to the lost store come back. Where the lost
    store held the only copy of an acknowledgment the back office sent (ACK_LOST), the operator's documented step
    closes the gap."""
    case = f"{name}, {wipe} wiped"
    with fleet.case(reupload):
        crash(fleet, POINTS[name])
        shutil.rmtree(fleet.store if wipe == "store" else fleet.store / wipe)
        if (name, wipe, reupload) in ACK_LOST:
            report, reruns = rerun_after_lost_ack(fleet, wipe, case)
        else:
            report, reruns = rerun_until_complete(fleet, case)
    reliability.record("store_loss", f"SIGKILL at {name}, {'whole store' if wipe == 'store' else wipe} wiped "
                       f"({reupload})", verified=report, reruns=reruns, case_records=fleet.created,
                       operator_processed_ack=(name, wipe, reupload) in ACK_LOST)


# ---- concurrent runs ----------------------------------------------------------------------------------------------
def finish(proc: subprocess.Popen, log: Path) -> Result:
    proc.wait(timeout=600)
    return Result(subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), ""))


def assert_only_locked(result: Result) -> None:
    """A concurrent run may fail a server only because the other run holds it."""
    for host, msg in failures(result).items():
        assert "locked by another run" in msg, f"{host} failed for another reason: {msg}\n{result!r}"
    assert result.proc.returncode in (0, 2), result


def uploads_and_accepted(lab: Lab) -> tuple[int, int]:
    backoffice = lab.state()["backoffice"]
    return backoffice["requests"].get("upload", 0), backoffice["messages_accepted"]


def test_concurrent_runs_lock_each_server(fleet):
    """Run A is held inside lls002's download (it holds lls002's lock only); run B (lock timeout 1 s) meanwhile
    synchronizes lls001 and lls003 and fails lls002 with "locked by another run"; run C (`--limit lls002`, the
    default 5 s) starts while A still holds lls002 and waits for it. Nothing is uploaded twice, a rerun completes."""
    point = Point("lls002", "generate")
    with fleet.case():
        lab = fleet.lab
        before = uploads_and_accepted(lab)
        arm(lab, point)
        run_a, log_a = fleet.start("-e", "fne_sync_workers=1")  # held in lls002: done with lls001, lls003 not begun
        try:
            reach(lab, fleet.store, point, run_a, log_a)
            b = finish(*fleet.start("-e", "fne_sync_lock_timeout=1"))
            assert b.failed() == {"lls002"} and "locked by another run" in b.out, b
            assert_only_locked(b)
            run_c, log_c = fleet.start("--limit", "lls002")
            try:
                while not re.search(r"^TASK \[[^\]]*(download|collect)", log_c.read_text(), re.M | re.I):
                    _running(run_c, log_c, "its collect step")
                    time.sleep(0.05)
                time.sleep(1)  # C now waits for the lock A holds
                control(lab, "/release", {"all": True})
                c = finish(run_c, log_c)
            finally:
                if run_c.poll() is None:
                    kill_run(run_c)
            a = finish(run_a, log_a)
        finally:
            if run_a.poll() is None:
                kill_run(run_a)
        for result in (a, c):
            assert result.proc.returncode == 0 and not result.failed(), result
        lab.verify()
        report, reruns = rerun_until_complete(fleet, "concurrent runs")
        after = uploads_and_accepted(lab)
        assert after[0] - before[0] == after[1] - before[1], f"a file was uploaded twice: {before} -> {after}"
    reliability.record("concurrency", "held run + run with lock timeout 1 s + --limit run waiting",
                       verified=report, reruns=reruns, case_records=fleet.created)


def test_concurrent_runs_free(fleet):
    """Two sync runs on the same store and fleet at once, and a third with --limit, with a slow back office:
    each server is worked by one run at a time (the others wait or fail it as locked); nothing is lost,
    duplicated or uploaded twice, and a rerun completes."""
    with fleet.case():
        lab = fleet.lab
        before = uploads_and_accepted(lab)
        control(lab, "/fault", {"target": "backoffice", "kind": "latency", "value": "0.3", "endpoint": "upload"})
        runs = [fleet.start(), fleet.start(), fleet.start("--limit", "lls001,lls003")]
        results = [finish(*r) for r in runs]
        for result in results:
            assert_only_locked(result)
        control(lab, "/clear", {"target": None})
        lab.verify()
        report, reruns = rerun_until_complete(fleet, "free concurrent runs")
        after = uploads_and_accepted(lab)
        assert after[0] - before[0] == after[1] - before[1], f"a file was uploaded twice: {before} -> {after}"
    reliability.record("concurrency", "two full runs and a --limit run at once", verified=report, reruns=reruns,
                       case_records=fleet.created,
                       locked_failures=sum(len(r.failed()) for r in results))
