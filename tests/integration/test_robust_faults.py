"""Fault matrix and hostile servers (issue 9): every lab fault kind on the license-server side (health, authorize,
generate, ack) and on the back-office side (upload), on one server and on many, driven through the real
`ansible-playbook fne.offline_sync.sync` against a lab with administrative security on.

Each case must show: the faulty servers fail alone, each with a message that names the request and the cause (the
others change or stay ok), `fnelab verify` finds nothing lost or duplicated, and once the faults are cleared a rerun
reaches `fnelab verify --complete`. Every run is also held to the hostile-server rules: nothing reaches the
"elsewhere" host redirects point to, no answer (endless, trickling, held) hangs the run (a run still going after
HANG seconds is killed and fails the test: a hang detector, not a timing assert), no temporary file or junk stays in
an outbox, a 200 page is never taken for a sync message, a token or an acknowledgment, and no password or token (as
`echo_token` echoes them) appears in the output (`-v`), the store, the ledger or the report.

Cost: one lab and two playbook runs cover the license server's three one-server columns of the matrix (one server
per fault kind and endpoint, every kind at once), another lab and two runs its many-servers column; the back office
is one target for the whole fleet, so its "one server" column runs with `fne_sync_workers=1` (uploads in inventory
order) and a queue of counted faults, each kind sized to exactly one server's requests. The refused files and
acknowledgments share one lab: first the refusals, then the recovery and a lost download, then the operator's release.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import reliability
from fnetest import BIN, REPO, ansible_env
from test_sync_support import Result, ledger, write_inventory

CALLBACKS = Path(__file__).parent / "callback_plugins"
HANG = 240          # seconds: a run still going after this hung (the slowest one needs ~50 s on a busy box)
DEADLINE = "3"      # fne_sync_timeout of the servers whose fault only a total deadline ends (trickle, hold)
TRICKLE = "2"       # seconds a byte: below the per-read timeout (DEADLINE); a 75-byte answer takes 150 s
HOLD = "60"         # a held request waits this long for a client that has long given up
FAST = ("-e", "fne_sync_retries=1", "-e", "fne_sync_max_retry_wait=5")
SYNC_NAME = re.compile(r"^\d{8}T\d{6}\.fnesync$")
PATHS = {"health": "/api/1.0/health", "authorize": "/api/1.0/instances/~/authorize",
         "generate": "/api/1.0/sync_message/offline", "ack": "/api/1.0/sync_ack/offline", "upload": "/deviceservices"}
HOSTILE = {"redirect", "redirect_same", "trickle", "endless", "giant_headers", "huge_header", "page200", "echo_token",
           "hold", "hold_after"}
SECRET_SHAPES = (re.compile(r"Bearer\s+(?!\*{8})[\w.~+/=-]{6,}"),          # a token that was not masked
                 re.compile(r'password\\?"\s*:\s*\\?"(?!\*{8})[^"\\]+'),          # an echoed authorize body
                 re.compile(r"elsewhere-token"))                            # what the elsewhere host hands out


@dataclass(frozen=True)
class Kind:
    """A lab fault: `spec` as `fnelab fault` takes it (KIND[=VALUE]); `ok`: the run must get through it."""

    spec: str
    count: int | None = None
    retry_after: str | None = None
    ok: bool = False

    @property
    def name(self) -> str:
        return self.spec.partition("=")[0]

    @property
    def label(self) -> str:
        return " ".join([self.spec, *([f"Retry-After {self.retry_after}"] if self.retry_after else []),
                         *([f"x{self.count}"] if self.count else [])])

    def options(self, endpoint: str | None) -> list[str]:
        """`fnelab fault` options (after KIND)."""
        out = ["--endpoint", endpoint] if endpoint else []
        out += ["--count", str(self.count)] if self.count else []
        return out + (["--retry-after", self.retry_after] if self.retry_after else [])

    def start_spec(self, target: str, endpoint: str | None) -> str:
        """`fnelab up --fault` form: TARGET:KIND[=VALUE][:COUNT][@ENDPOINT] (no Retry-After there)."""
        assert self.retry_after is None, self
        count = f":{self.count}" if self.count else ""
        return f"{target}:{self.spec}{count}" + (f"@{endpoint}" if endpoint else "")


# Every kind a request can meet, as one license-server endpoint meets it. The two benign ones: a slow answer within
# the timeout, and a 503 whose Retry-After (2 s, not the 1 s a plain retry waits) is honoured once.
LLS_KINDS = [
    Kind("latency=1", ok=True), Kind("status=503", count=1, retry_after="2", ok=True),
    Kind("status=500"), Kind("status=503", retry_after="2"), Kind("drop"), Kind("truncate"), Kind("html"),
    Kind("redirect=301"), Kind("redirect=302"), Kind("redirect=303"), Kind("redirect=307"), Kind("redirect=308"),
    Kind("redirect_same=307"), Kind("redirect_same=308"), Kind(f"trickle={TRICKLE}"), Kind("endless"),
    Kind("giant_headers"), Kind("huge_header"), Kind("page200"), Kind("page200=application/json"),
    Kind("page200=text/plain"), Kind("echo_token"), Kind("echo_token=401"), Kind(f"hold={HOLD}"),
    Kind(f"hold_after={HOLD}"),
]
DOWN = Kind("down")


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: `kind` on `host`, met first at `endpoint` (`where`: the fault's --endpoint filter,
    None for every request)."""

    host: str
    kind: Kind
    endpoint: str
    where: str | None
    scope: str

    @property
    def side(self) -> str:
        return "back office" if self.endpoint == "upload" else "license server"

    @property
    def part(self) -> str:
        return "hostile" if self.kind.name in HOSTILE else "fault"

    @property
    def id(self) -> str:
        """The case's name in the figures: the servers of one case share it."""
        where = "" if self.kind == DOWN else f" @ {self.where or 'every endpoint'}"
        return f"{self.kind.label}{where} ({self.side}, {self.scope})"

    @property
    def unconfirmed(self) -> bool:
        """A JSON 200 without lastSyncTime at sync_ack: the compatibility profile takes it as processed with the time
        unknown (a real server may confirm so). The server then holds its records until an acknowledgment it
        confirms with a time: new activity brings one."""
        return self.kind.spec == "page200=application/json" and self.endpoint == "ack"

    @property
    def ok(self) -> bool:
        return self.kind.ok or self.unconfirmed

    @property
    def step(self) -> str:
        """The step the failure must be reported by (a lost download or authorize answer: the recovery's upload)."""
        return {"ack": "acknowledge", "upload": "upload"}.get(self.endpoint, "(collect|upload)")


def expected(kind: Kind, endpoint: str, elsewhere: str) -> str:
    """What the failure message must say for this kind met at this endpoint (a regular expression)."""
    name, _eq, value = kind.spec.partition("=")
    media = value or "text/html"
    if name == "status":
        return rf"\[{value} fnelab\.injectedFault\] injected status {value}"
    if name == "echo_token":
        return rf"\[{value or 500} glsErr\.internal\] Internal error handling POST"
    if name == "page200":
        return {"generate": "answered 200 with JSON instead of a sync message" if "json" in media else
                rf"answered 200 with Content-Type {media} instead of a sync message",
                "authorize": r"answered without a (usable )?token" if "json" in media else
                rf"did not answer JSON with a token \(Content-Type {media}\)",
                "ack": r"answered without a lastSyncTime" if "json" in media else
                rf"did not answer JSON with the lastSyncTime \(Content-Type {media}\)",
                "upload": r"answered 200 with an HTML page instead of an acknowledgment" if "html" in media else
                rf"answered 200 with {media} text that names no LastSyncTime instead of an acknowledgment",
                }[endpoint]
    if name == "endless":
        return {"generate": r"larger than 1024 MiB: refused",
                "upload": r"larger than 64 MiB: refused"}.get(endpoint, r"larger than 1 MiB: refused")
    if name == "redirect":
        return rf"redirected \({value}\) to https?://{re.escape(elsewhere)}:\d+/\S*: redirects are not followed"
    if name == "redirect_same":
        return rf"redirected \({value}\) to https?://[\d.]+:\d+/r/\S*: redirects are not followed"
    return {"drop": r"lost\W.*Remote end closed connection without response",
            "truncate": r"truncated or broke off: IncompleteRead",
            "html": r"\b502\b.*502 Bad Gateway \(Content-Type text/html: a proxy or a wrong URL\?\)",
            "trickle": r"no complete answer within \d+s",
            # a held answer sends no byte: the per-read timeout (also fne_sync_timeout) may fire before the deadline
            "hold": r"no complete answer within \d+s|Read timed out", "giant_headers": r"got more than 100 headers",
            "hold_after": r"no complete answer within \d+s|Read timed out",
            "huge_header": r"got more than 65536 bytes when reading header line",
            "down": r"Cannot reach the (license server|back office) at https?://\S+: .+\. Check the URL"}[name]


# ---- running the playbook -----------------------------------------------------------------------------------------
def _process_tree(root: int) -> list[int]:
    """root and every process below it (ansible's task workers sit in sessions of their own)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    tree = [root]
    for pid in tree:  # the list grows while it is walked
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


class Run:
    """One `ansible-playbook fne.offline_sync.PLAYBOOK` (sync by default) in the background, its output in files,
    each host's message from the fne_results callback."""

    counter = 0

    def __init__(self, lab, store: Path, *args: str, inventory: Path | None = None, playbook: str = "sync"):
        Run.counter += 1
        base = store.parent / f"run{Run.counter}"
        self.out, self.err, self.results = (Path(f"{base}.{s}") for s in ("out", "err", "results.jsonl"))
        env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="fne_results",
                          FNE_RESULTS_FILE=str(self.results))
        self.cmd = [str(BIN / "ansible-playbook"), f"fne.offline_sync.{playbook}",
                    "-i", str(inventory or lab.inventory), "-e", f"fne_sync_store={store}", *args]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=out, stderr=err, start_new_session=True)
        self.started = time.monotonic()
        self.result: Result | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        for _round in range(2):  # a worker may fork meanwhile
            for pid in _process_tree(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self, rc: int | None = 0) -> Run:
        """Wait for the end (HANG seconds after the start at the most: then it hung, is killed and fails the test)."""
        try:
            self.proc.wait(timeout=max(1.0, HANG - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the run hung: still going after {HANG}s, killed\n{self.text()[-8000:]}") from None
        self.result = Result(subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.out.read_text(),
                                                         self.err.read_text()))
        assert rc is None or self.proc.returncode == rc, (
            f"{' '.join(self.cmd)}: exit {self.proc.returncode}, wanted {rc}\n{self.result!r}\n{self.err.read_text()}")
        return self

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.out, self.err, self.results) if p.exists())

    def reported(self, hosts) -> Run:
        """Every host got its own result: the run went as far as its report (else nothing else can be judged)."""
        missing = [h for h in hosts if not self.message(h)]
        assert not missing, (f"no result for {len(missing)} host(s) ({', '.join(missing[:5])}...): the playbook "
                             f"itself failed before its report\n{self.out.read_text()[-6000:]}")
        return self

    def message(self, host: str) -> str:
        """The host's own result (the last task result whose message starts with its name)."""
        found = ""
        for line in self.results.read_text().splitlines() if self.results.exists() else []:
            entry = json.loads(line)
            msg = str(entry["result"].get("msg", ""))
            if entry["host"] == host and msg.startswith(f"{host}:"):
                found = msg
        return found


def sync(lab, store: Path, *args: str, rc: int | None = 0, inventory: Path | None = None,
         playbook: str = "sync") -> Run:
    return Run(lab, store, *args, inventory=inventory, playbook=playbook).finish(rc)


# ---- what every case and every run is held to ---------------------------------------------------------------------
class Judge:
    """Collects every problem of a test, so that one run reports all of them; the servers with a problem are not
    counted in the figures."""

    def __init__(self, lab, store: Path):
        self.lab, self.store = lab, store
        self.problems: list[str] = []
        self.bad_hosts: set[str] = set()
        self.secrets_found = 0
        servers = lab.info["servers"]
        self.passwords = sorted({s["password"] for s in servers.values() if s.get("password")})
        self.secured = {h for h, s in servers.items() if s["security"]}
        self.elsewhere = lab.info["elsewhere"]["address"]

    def check(self, ok: bool, problem: str, host: str | None = None) -> bool:
        if not ok:
            self.problems.append(problem)
            if host:
                self.bad_hosts.add(host)
        return ok

    def verify(self, complete: bool = False, hosts=None) -> dict:
        """The lab's judge; each violation is a problem of its server (`hosts`: only theirs count)."""
        args = ["verify", "--dir", str(self.lab.dir), "--json"] + (["--complete"] if complete else [])
        report = json.loads(self.lab.cli(*args, check=False).stdout)
        for violation in report["violations"]:
            host = violation.partition(":")[0]
            if hosts is None or host in hosts:
                self.check(False, f"fnelab verify{' --complete' if complete else ''}: {violation}", host)
        return report

    def after_run(self, run: Run) -> None:
        """Nothing reached the elsewhere host, no junk in any outbox, no temporary file, no secret anywhere."""
        seen = json.loads(self.lab.cli("elsewhere", "--dir", str(self.lab.dir), "--json").stdout)["requests"]
        self.check(not seen, f"requests reached the elsewhere host: "
                             f"{[(r['method'], r['path'], sorted(r['headers'])) for r in seen][:5]}")
        for folder in sorted(self.store.glob("*/outbox")):
            junk = sorted(n for n in os.listdir(folder) if not SYNC_NAME.match(n))
            self.check(not junk, f"{folder}: junk left in the outbox: {junk}", folder.parent.name)
        temps = sorted(str(p.relative_to(self.store)) for p in self.store.rglob("*") if ".tmp" in p.name)
        self.check(not temps, f"temporary files left in the store: {temps}")
        texts = {"the playbook's output (-v) and results": run.text()}
        texts.update((f"the store's {p.relative_to(self.store)}", p.read_bytes().decode("latin-1"))
                     for p in self.store.rglob("*") if p.is_file())
        for where, text in texts.items():
            found = [pw for pw in self.passwords if pw in text]
            found += [m.group(0) for shape in SECRET_SHAPES for m in shape.finditer(text)]
            self.secrets_found += len(found)
            self.check(not found, f"{len(found)} secret(s) in {where}, e.g. {[f[:12] + '...' for f in found[:3]]}")

    def failed_alone(self, run: Run, cases: list[Case], hosts: list[str]) -> None:
        """The faulty servers failed, each with a clear message; every other server changed."""
        run.reported(hosts)
        failing = {c.host for c in cases if not c.ok}
        output = re.sub(r"\s+", " ", run.text())
        for case in cases:
            msg = run.message(case.host)
            if case.kind.retry_after:
                self.check(re.search(rf"{case.host}: POST \S*{re.escape(PATHS[case.endpoint])}\S* answered 503; "
                                     rf"retrying in {case.kind.retry_after}\.0s", output) is not None,
                           f"{case.id} on {case.host}: no retry after the Retry-After in the output", case.host)
            if case.ok:
                self.check(case.host not in run.result.failed(), f"{case.id} on {case.host}: the run should get "
                           f"through, it failed: {msg}", case.host)
                self.check(not case.unconfirmed or "without its last sync time" in msg,
                           f"{case.id} on {case.host}: the message should say the time is unknown: {msg!r}", case.host)
                continue
            self.check(case.host in run.result.failed(), f"{case.id} on {case.host}: not failed: {msg}", case.host)
            pattern = expected(case.kind, case.endpoint, self.elsewhere)
            self.check(re.match(rf"{case.host}: {case.step} failed: ", msg) is not None
                       and re.search(pattern, msg, re.S) is not None
                       and (case.kind == DOWN or PATHS[case.endpoint] in msg),
                       f"{case.id} on {case.host}: the message should say '{case.step} failed', name "
                       f"{PATHS[case.endpoint]} and match {pattern!r}; it is: {msg!r}", case.host)
            if case.endpoint == "authorize":
                # an authorize answer carries no records: losing one is no reason for a forced download
                self.check("handed out the records" not in msg, f"{case.id} on {case.host}: a lost authorize "
                           f"answer asks for a forced download (it never carries records): {msg!r}",
                           case.host)
            if case.kind.name == "echo_token" and case.endpoint != "upload" and case.host in self.secured:
                echoed = '"password": "********"' if case.endpoint == "authorize" else "Bearer ********"
                self.check(echoed in msg, f"{case.id} on {case.host}: the echo should be there, masked as "
                           f"{echoed}: {msg!r}", case.host)
        for host in sorted(set(hosts) - failing):
            self.check(host in run.result.changed() and host not in run.result.failed(),
                       f"{host} (no fault that stops it) should change: {run.message(host)!r}", host)

    def store_after_failure(self, cases: list[Case]) -> None:
        """A failed server's store holds what it held: no 200 page became a sync file, a token or an
        acknowledgment; no file counts as sent that the back office did not acknowledge."""
        for case in (c for c in cases if not c.ok):
            folder = self.store / case.host
            names = {f: sorted(os.listdir(folder / f)) if (folder / f).is_dir() else []
                     for f in ("outbox", "acks", "sent")}
            events = [e["event"] for e in ledger(self.store, case.host)]
            if case.endpoint in ("authorize", "generate"):
                want, what = not any(names.values()), "no sync file and no acknowledgment at all"
            elif case.endpoint == "ack":
                want = (not names["outbox"] and len(names["acks"]) == 1 and "processed" not in events
                        and not any(n.endswith(".ack") for n in names["sent"]))
                what = "its acknowledgment pending in acks/, nothing processed"
            else:
                want = (bool(names["outbox"]) and not names["acks"] and "acknowledged" not in events
                        and not any(n.endswith(".fnesync") for n in names["sent"]))
                what = "its files in outbox/, none in sent/, no acknowledgment"
            self.check(want, f"{case.id} on {case.host}: the store should hold {what}: {names}, ledger {events}",
                       case.host)

    def record(self, cases: list[Case], report: dict, shadows: list[Case] = ()) -> int:
        """reliability.record() once per case whose servers met every rule (the servers of a case share its id);
        `shadows`: cases on servers that other cases count already (their records are not counted twice).
        Returns how many cases were recorded."""
        by_id: dict[str, list[Case]] = {}
        for case in cases:
            by_id.setdefault(case.id, []).append(case)
        recorded = 0
        for case_id, group in by_id.items():
            if any(c.host in self.bad_hosts for c in group):
                continue
            servers = {c.host: report["servers"][c.host] for c in group}
            reliability.record(group[0].part, case_id, verified={"servers": servers},
                               secrets_found=self.secrets_found, servers=len(servers))
            recorded += 1
        for case_id in dict.fromkeys(c.id for c in shadows if c.host not in self.bad_hosts):
            reliability.record(next(c.part for c in shadows if c.id == case_id), case_id,
                               secrets_found=self.secrets_found, counted_with="the servers' own cases")
            recorded += 1
        return recorded

    def conclude(self) -> None:
        assert not self.problems, f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems)


def clean_rerun(judge: Judge, lab, store: Path, unconfirmed=()) -> dict:
    """Clear every fault; one rerun must synchronize the fleet (no server fails) and pass `verify --complete`
    (`unconfirmed`: servers that first get new activity, whose acknowledgment covers what they still hold).
    Returns that verify report."""
    lab.clear_faults()
    if unconfirmed:
        lab.activity(1, *unconfirmed)
    run = sync(lab, store, "-v", rc=None).reported(sorted(lab.info["servers"]))
    judge.after_run(run)
    for host in sorted(run.result.failed()):
        judge.check(False, f"the rerun without faults failed {host}: {run.message(host)!r}", host)
    return judge.verify(complete=True)


def with_faults(up, faults: list[tuple[str, Kind, str | None]]):
    """`up(*options)` starts a lab with the faults, all but those with a Retry-After given to it in one command;
    (target, kind, endpoint filter) each."""
    lab = up(*[a for target, kind, where in faults if not kind.retry_after
               for a in ("--fault", kind.start_spec(target, where))])
    for target, kind, where in faults:
        if kind.retry_after:
            lab.fault(target, kind.spec, *kind.options(where))
    return lab


def start_lab(lab_factory, n: int, options: list[str], faults: list[tuple[str, Kind, str | None]]):
    return with_faults(lambda *starts: lab_factory(n, *options, *starts), faults)


# ---- the license-server side ------------------------------------------------------------------------------------
def lls_matrix(lab, tmp_path, cases: list[Case], shadows: list[Case] = ()) -> Judge:
    """Run with the faults, check, clear, rerun, record. `shadows`: faults that must change nothing."""
    hosts = sorted(lab.info["servers"])
    store = tmp_path / "store"
    slow = {c.host: {"fne_sync_timeout": DEADLINE} for c in cases if c.kind.name in ("trickle", "hold", "hold_after")}
    inventory = write_inventory(lab, tmp_path / "inventory.json", slow)
    judge = Judge(lab, store)
    run = sync(lab, store, "-v", *FAST, "-e", f"fne_sync_workers={len(hosts) + 8}", rc=2, inventory=inventory)
    judge.after_run(run)
    judge.failed_alone(run, cases, hosts)
    judge.store_after_failure(cases)
    judge.verify()
    report = clean_rerun(judge, lab, store, [c.host for c in cases if c.unconfirmed])
    judge.record(cases, report, shadows)
    return judge


@pytest.mark.slow
def test_license_server_one_server_per_kind_and_endpoint(lab_factory, tmp_path):
    """The one-server columns of the matrix in one fleet: every kind on one server each at authorize, at generate
    (with `down`, which takes the whole server) and at ack; two servers without a fault. Every server also has a
    health fault, every kind in turn: the cycle never asks for health, so each server still fails exactly where its
    own fault says and the two without one change."""
    columns = [(endpoint, kind) for endpoint in ("authorize", "generate", "ack")
               for kind in LLS_KINDS + ([DOWN] if endpoint == "generate" else [])]
    n = len(columns) + 2
    hosts = [f"lls{i:03d}" for i in range(1, n + 1)]
    cases = [Case(hosts[i], k, e, None if k == DOWN else e, "one server") for i, (e, k) in enumerate(columns)]
    quiet = list(dict.fromkeys(Kind(k.spec) for k in LLS_KINDS))  # health is never asked: no count, no wait
    shadows = [Case(h, quiet[i % len(quiet)], "health", "health", "one server") for i, h in enumerate(hosts)]
    lab = start_lab(lab_factory, n, ["--security", "--https", "0.5", "--records", "10"],
                    [(c.host, c.kind, c.where) for c in cases + shadows])
    lls_matrix(lab, tmp_path, cases, shadows).conclude()


@pytest.mark.slow
def test_license_server_many_servers_every_endpoint(lab_factory, tmp_path):
    """Many servers: every kind on two servers at once, on every request they get (no endpoint filter); half the
    fleet is secured, so one of the two meets it at authorize, the other at generate; two servers without a fault.
    Which servers are secured comes from a first start of the lab (its state keeps them), the faults from the
    second."""
    kinds = [*LLS_KINDS, DOWN]
    n = 2 * len(kinds) + 2
    fleet = lab_factory(n, "--security", "0.5", "--https", "0.5", "--records", "10")
    servers = fleet.info["servers"]
    secured = sorted(h for h, s in servers.items() if s["security"])
    plain = sorted(h for h, s in servers.items() if not s["security"])
    cases = [Case(group[i], k, endpoint, None, "many servers")
             for i, k in enumerate(kinds) for group, endpoint in ((secured, "authorize"), (plain, "generate"))]
    fleet.down()
    lab = with_faults(lambda *starts: fleet.up(n, *starts), [(c.host, c.kind, c.where) for c in cases])
    lls_matrix(lab, tmp_path, cases).conclude()


def wait_held(lab, run: Run, endpoint: str, number: int, target: str | None = None) -> None:
    """Return once `number` requests to `endpoint` (of `target`) wait in the lab."""
    args = ["held", "--dir", str(lab.dir), "--endpoint", endpoint, "--json"] + (["--target", target] if target else [])
    deadline = time.monotonic() + 120
    while len(waiting := json.loads(lab.cli(*args).stdout)) < number:
        assert run.running(), f"the run ended before {number} {endpoint} request(s) were held:\n{run.text()[-6000:]}"
        assert time.monotonic() < deadline, f"only {waiting} of {number} {endpoint} requests were held"
        time.sleep(0.2)


def test_tokens_expire_mid_run(lab_factory, tmp_path):
    """expire_tokens while requests are under way (the lab holds them: the expiry lands inside the transfer):
    lls001's token dies between its authorize answer and its first use, lls002's while its download waits, every
    server's while its acknowledgment waits. Each request is refused 401 once, the client authorizes again, and the
    run completes: nothing fails, nothing is lost or duplicated."""
    hosts = ["lls001", "lls002", "lls003", "lls004"]
    faults = [("lls001", Kind(f"hold_after={HOLD}", 1), "authorize"), ("lls002", Kind(f"hold={HOLD}", 1), "generate")]
    faults += [(h, Kind(f"hold={HOLD}", 1), "ack") for h in hosts]
    lab = start_lab(lab_factory, len(hosts), ["--security", "--https", "0.5", "--records", "10"], faults)
    store = tmp_path / "store"
    judge = Judge(lab, store)
    run = Run(lab, store, "-v", "-e", "fne_sync_timeout=90")
    try:
        for host, endpoint in (("lls001", "authorize"), ("lls002", "generate")):
            wait_held(lab, run, endpoint, 1, host)
            lab.fault(host, "expire_tokens")
            lab.cli("release", "--dir", str(lab.dir), "--target", host, "--endpoint", endpoint)
        wait_held(lab, run, "ack", len(hosts))
        for host in hosts:
            lab.fault(host, "expire_tokens")
        lab.cli("release", "--dir", str(lab.dir), "--endpoint", "ack", "--all")
    except BaseException:
        run.kill()
        raise
    run.finish(0).reported(hosts)
    judge.after_run(run)
    judge.check(run.result.changed() == set(hosts) and not run.result.failed(),
                f"with tokens expiring mid-request every server should change, none fail: {run.result!r}")
    report = judge.verify(complete=True)
    expire = Kind("expire_tokens", ok=True)
    cases = [Case("lls001", expire, "authorize", "authorize", "one server"),
             Case("lls002", expire, "generate", "generate", "one server")]
    judge.record(cases + [Case(h, expire, "ack", "ack", "every server") for h in hosts], report)
    judge.conclude()


# ---- the back-office side -----------------------------------------------------------------------------------------
# One server each: the fleet uploads in inventory order with fne_sync_workers=1, so a queue of counted faults on the
# back office meets lls001's requests, then lls002's... Each count is what one server sends: one request, or two
# when the answer is lost (the fleet uploads a file again once after a lost answer). Every upload of the run also
# waits 0.2 s (latency: the whole fleet, and it must change nothing).
BO_QUEUE = [
    Kind("status=500", 1), Kind("status=503", 2), Kind("drop", 2), Kind("truncate", 2), Kind("html", 2),
    Kind("redirect=301", 1), Kind("redirect=302", 1), Kind("redirect=303", 1), Kind("redirect=307", 1),
    Kind("redirect=308", 1), Kind("redirect_same=302", 1), Kind("redirect_same=307", 1), Kind("endless", 2),
    Kind("page200", 2), Kind("page200=application/json", 2), Kind("page200=text/plain", 2), Kind("echo_token", 1),
    Kind("echo_token=401", 1),
    Kind("status=503", count=1, retry_after="2", ok=True),   # queued last: a Retry-After is not given to `up`
]
BO_LATENCY = Kind("latency=0.2", ok=True)


def test_backoffice_one_server_per_kind(lab_factory, tmp_path):
    """The back office answers one server's upload with each kind in turn: that server fails alone, its file kept
    in outbox/ (a proxy's 200 page is no acknowledgment: nothing in sent/ or acks/); the server whose 503 is retried
    after its Retry-After and the two after the queue change."""
    n = len(BO_QUEUE) + 2
    hosts = [f"lls{i:03d}" for i in range(1, n + 1)]
    lab = start_lab(lab_factory, n, ["--security", "--https", "0.5", "--records", "10"],
                    [("backoffice", k, "upload") for k in BO_QUEUE] + [("backoffice", BO_LATENCY, "upload")])
    cases = [Case(hosts[i], k, "upload", "upload", "one server") for i, k in enumerate(BO_QUEUE)]
    cases += [Case(h, BO_LATENCY, "upload", "upload", "every server") for h in hosts[len(BO_QUEUE):]]
    store = tmp_path / "store"
    judge = Judge(lab, store)
    run = sync(lab, store, "-v", *FAST, "-e", "fne_sync_workers=1", rc=2)
    left = json.loads(lab.cli("status", "--dir", str(lab.dir), "--json").stdout)["faults"].get("backoffice", [])
    assert [f["kind"] for f in left] == ["latency"], (
        f"the queue of faults was not met one server after the other as planned (left: {left}), so no finding of "
        f"this run can be trusted:\n{run.result!r}")
    judge.after_run(run)
    judge.failed_alone(run, cases, hosts)
    judge.store_after_failure(cases)
    judge.verify()
    report = clean_rerun(judge, lab, store)
    judge.record(cases, report)
    judge.conclude()


# For every server at once: the kinds that change how an answer comes (they cannot be queued: each applies to every
# request while it lasts), the whole back office down, and a 503 whose Retry-After is honoured before each server
# gives up. One run per kind on the same fleet: the first also downloads, the others only upload what waits.
BO_FOR_ALL = {
    "deadlines": [Kind(f"trickle={TRICKLE}"), Kind(f"hold={HOLD}"), Kind(f"hold_after={HOLD}")],
    "headers-down-retry": [Kind("giant_headers"), Kind("huge_header"), DOWN, Kind("status=503", retry_after="2")],
}


@pytest.mark.parametrize("group", BO_FOR_ALL)
def test_backoffice_every_server(lab_factory, tmp_path, group):
    hosts = ["lls001", "lls002", "lls003"]
    lab = lab_factory(len(hosts), "--security", "--https", "0.5", "--records", "10")
    store = tmp_path / "store"
    judge = Judge(lab, store)
    cases: list[Case] = []
    for number, kind in enumerate(BO_FOR_ALL[group]):
        where = None if kind == DOWN else "upload"
        lab.fault("backoffice", kind.spec, *kind.options(where))
        these = [Case(h, kind, "upload", where, "every server") for h in hosts]
        deadline = ("-e", f"fne_sync_timeout={DEADLINE}") if kind.name in ("trickle", "hold", "hold_after") else ()
        run = sync(lab, store, "-v", *FAST, *deadline, *(("--tags", "upload") if number else ()), rc=2)
        judge.after_run(run)
        judge.failed_alone(run, these, hosts)
        judge.store_after_failure(these)
        judge.verify()
        lab.clear_faults()
        cases += these
    report = clean_rerun(judge, lab, store)
    judge.record(cases, report)
    judge.conclude()


# ---- content the other side refuses (400, 409, 422): set aside, and then? ---------------------------------------
SET_ASIDE = r"list or release it with the (fne\.offline_sync\.\w+) playbook"
ACK_IN_QUARANTINE = (r"An acknowledgment this license server refused is in quarantine: release it once the server "
                     r"takes it \((fne\.offline_sync\.\w+) with fne_sync_release=true\), then run the sync again")


def test_refused_files_and_acks_are_set_aside_then_synchronized(lab_factory, tmp_path):
    """The back office refuses one server's file with 400, the next one's with 409, the next one's with 422 (queued,
    fne_sync_workers=1); three servers refuse their acknowledgment (400, 422, 400); one server has no fault. Each
    refused file or acknowledgment is set aside in quarantine/ and named in the message with the playbook that lists
    and releases it; nothing is lost.

    A set-aside file marks its store for the documented recovery: the next run (faults cleared) downloads its records
    again with a forced download, and those servers are complete without the operator. A set-aside acknowledgment
    stays until the operator releases it; meanwhile the report counts it. lls007 then also loses a download answer
    (new records): its forced download starts before what the back office holds (the server never processed the
    set-aside acknowledgment), and the mismatch points at the quarantined acknowledgment and the release.

    Then the operator does what those messages say (faults gone, new records on lls007): the quarantine playbook with
    fne_sync_release=true puts every quarantined file back, and one sync completes the whole fleet (the released
    sync files, whose records the recovery already brought, change nothing)."""
    hosts = [f"lls{i:03d}" for i in range(1, 8)]
    refusals = {"lls001": ("upload", "400"), "lls002": ("upload", "409"), "lls003": ("upload", "422"),
                "lls004": ("ack", "400"), "lls005": ("ack", "422"), "lls007": ("ack", "400")}
    files = sorted(h for h, (e, _code) in refusals.items() if e == "upload")
    acks = sorted(h for h, (e, _code) in refusals.items() if e == "ack")
    lab = start_lab(lab_factory, len(hosts), ["--security", "--https", "0.5", "--records", "10"],
                    [("backoffice" if e == "upload" else h, Kind(f"status={code}", 1), e)
                     for h, (e, code) in refusals.items()])
    store = tmp_path / "store"
    judge = Judge(lab, store)
    run = sync(lab, store, "-v", *FAST, "-e", "fne_sync_workers=1", rc=2).reported(hosts)
    judge.after_run(run)
    judge.check(run.result.failed() == set(refusals) and "lls006" in run.result.changed(),
                f"the refusing servers should fail alone: failed {sorted(run.result.failed())}")
    kept: dict[str, str] = {}
    commands = set()
    for host, (endpoint, code) in refusals.items():
        msg = run.message(host)
        aside = store / host / "quarantine"
        names = sorted(os.listdir(aside)) if aside.is_dir() else []
        kept[host] = names[0] if names else "(none)"
        command = re.search(SET_ASIDE, msg)
        commands.update([command.group(1)] if command else [])
        judge.check(len(names) == 1 and names[0].endswith(".fnesync" if endpoint == "upload" else ".ack")
                    and f"[{code} fnelab.injectedFault]" in msg and f"{names[0]} was set aside as {aside / names[0]}"
                    in msg and command is not None and "quarantined" in [e["event"] for e in ledger(store, host)],
                    f"{host}: refused {code} at {endpoint}: should be set aside, named with the playbook that lists "
                    f"and releases it, and in the ledger: {names}, {msg!r}", host)
    judge.verify()

    # the next run, faults cleared: the set-aside files' records come again; lls007 loses a download answer
    lab.clear_faults()
    lab.activity(3, "lls007")
    lab.fault("lls007", "drop", "--endpoint", "generate", "--count", "1")
    second = sync(lab, store, "-v", *FAST, rc=2).reported(hosts)
    judge.after_run(second)
    judge.check(second.result.failed() == {"lls007"} and set(files) <= second.result.changed(),
                f"after the refusals only lls007 (its download answer lost) should fail, the servers whose file was "
                f"set aside should change (their records downloaded again): failed {sorted(second.result.failed())}, "
                f"changed {sorted(second.result.changed())}")
    hint = re.search(ACK_IN_QUARANTINE, second.message("lls007"))
    commands.update([hint.group(1)] if hint else [])
    judge.check(hint is not None, f"lls007: the mismatch after its forced download should point at its quarantined "
                                  f"acknowledgment and its release: {second.message('lls007')!r}", "lls007")
    for host in acks:  # idle: the report's line, which counts what waits in quarantine
        if host != "lls007":
            judge.check("1 file(s) quarantined" in second.message(host), f"{host}: the report should say that a "
                        f"file is quarantined: {second.message(host)!r}", host)
    judge.verify()
    judge.verify(complete=True, hosts=files + ["lls006"])  # no operator needed for a set-aside sync file
    judge.check(commands == {"fne.offline_sync.quarantine"} and (REPO / "playbooks" / "quarantine.yml").is_file(),
                f"the messages should name the fne.offline_sync.quarantine playbook (playbooks/quarantine.yml), "
                f"they name {sorted(commands)}")

    # the operator: faults gone (new records on lls007), release what is quarantined, sync
    lab.clear_faults()
    lab.activity(2, "lls007")
    release = sync(lab, store, "-v", "-e", "fne_sync_release=true", playbook="quarantine").reported(hosts)
    judge.after_run(release)
    judge.check(release.result.changed() == set(refusals) and not release.result.failed(),
                f"the release should change the servers with a quarantined file: {release.result!r}")
    for host in refusals:
        home, aside = ("outbox" if kept[host].endswith(".fnesync") else "acks"), store / host / "quarantine"
        judge.check(f"released from quarantine: {kept[host]}" in release.message(host)
                    and (store / host / home / kept[host]).is_file() and not (aside.is_dir() and os.listdir(aside)),
                    f"{host}: {kept[host]} should be released to {home}/: {release.message(host)!r}", host)
    report = clean_rerun(judge, lab, store)
    judge.record([Case(h, Kind(f"status={code}"), e, e, "one server") for h, (e, code) in refusals.items()
                  if h != "lls007"], report)
    judge.record([Case("lls007", Kind("status=400"), "ack", "ack", "one server, then a lost download answer")], report)
    judge.conclude()
