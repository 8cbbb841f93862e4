"""`fnelab`: start, stop, drive and judge the simulated fleet."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import fleet, javatools, variants
from .faults import ENDPOINTS, Fault, FaultError, parse_kind, parse_start_spec
from .state import State, connect, snapshot
from .wire import Ack, WireError, decode_file

START_TIMEOUT = 120.0


def fail(message: str, code: int = 1) -> int:
    print(f"fnelab: {message}", file=sys.stderr)
    return code


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def alive(pid: int) -> bool:
    """pid is a live process: not gone and not a zombie (a killed lab whose parent, often a container's PID 1,
    never reaps it stays a zombie that `kill -0` still finds)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill -0
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be greater than 0")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def _byte_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _is_lab_process(pid: int) -> bool:
    """pid runs `fnelab.server` (a pid file that outlived its lab, e.g. across a machine restart, may name an
    unrelated process by now)."""
    try:
        return b"fnelab.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc: trust the pid


def _pid(directory: Path) -> int | None:
    """The running lab's pid, or None (a stale pid file, a dead or zombie lab process, or a pid now used by
    another program, is ignored)."""
    try:
        pid = int((directory / "lab.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and _is_lab_process(pid) else None


def _control_url(directory: Path) -> str:
    return json.loads((directory / "lab.json").read_text())["control_url"]


def control(directory: Path, path: str, body: dict | None = None, timeout: float = 30) -> dict:
    """Call the running lab's control endpoint; raises RuntimeError with its error text."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(_control_url(directory) + path, data=data,
                                 headers={"Content-Type": "application/json"}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
    except OSError as exc:
        raise RuntimeError(f"the lab in {directory} does not answer ({exc}); is it up?") from None


def needs_lab(command):
    """For commands on an existing lab: resolve --dir, and fail when DIR holds no lab (so commands never create
    an empty database)."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        args.dir = args.dir.resolve()
        if not (args.dir / "lab.sqlite").exists():
            return fail(f"no lab in {args.dir} (`fnelab up --servers N --dir {args.dir}` creates one)")
        return command(args)
    return run


def _log_tail(directory: Path, lines: int = 15) -> str:
    try:
        return "\n".join((directory / "lab.log").read_text().splitlines()[-lines:])
    except OSError:
        return "(no lab.log)"


# --- commands ---------------------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.umask(0o077)  # lab.sqlite holds the test credentials and the CA key (the lab process inherits this)
    if (pid := _pid(directory)) is not None:
        return fail(f"a lab is already running in {directory} (pid {pid}); `fnelab down --dir {directory}` first")
    for spec in args.fault:
        try:
            parse_start_spec(spec)
        except FaultError as exc:
            return fail(str(exc), 2)
    try:
        wanted = variants.check(args.variant)
    except variants.VariantError as exc:
        return fail(str(exc), 2)
    started = time.monotonic()
    state = State(directory / "lab.sqlite")
    try:
        new = not state.servers()
        if new:
            if args.servers is None or args.servers < 1:
                return fail("--servers N (at least 1) is needed to create a lab", 2)
            # --security/--https alone mean "all servers"; absent, "none"
            fleet.create(state, args.servers, args.address_base or "127.77.0.0", args.security, args.https)
            state.put(page_size=args.page_size or 500, token_ttl=args.token_ttl or 300,
                      reupload=args.reupload or "accept", variants=json.dumps(wanted))
            if args.records:
                state.add_records(args.records)
        else:
            count = len(state.servers())
            if args.servers is not None and args.servers != count:
                print(f"fnelab: restarting the existing {count}-server lab in {directory} "
                      f"(--servers {args.servers} ignored)", file=sys.stderr)
            if args.address_base and args.address_base != state.get("address_base"):
                return fail(f"the lab in {directory} uses address base {state.get('address_base')}", 2)
            if args.variant and wanted != state.variants():
                return fail(f"the lab in {directory} plays the variants {state.variants() or 'none'}; a variant is "
                            "chosen when a lab is created", 2)
            live = {k: v for k, v in (("page_size", args.page_size), ("token_ttl", args.token_ttl),
                                      ("reupload", args.reupload)) if v is not None}
            if live:
                state.put(**live)
        fleet.ensure_tls(state, directory)
        try:
            javatools.install(directory / "tools", state.variants())  # the stand-in vendor tools, as installed
        except javatools.BuildError as exc:
            return fail(str(exc))
        info = fleet.write_files(state, directory)
    finally:
        state.close()
    cmd = [sys.executable, "-m", "fnelab.server", "--dir", str(directory)]
    for spec in args.fault:
        cmd += ["--fault", spec]
    with open(directory / "lab.log", "ab") as logf:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                 cwd=directory)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if child.poll() is not None:
            return fail(f"the lab process exited with status {child.returncode} during start; "
                        f"{directory / 'lab.log'}:\n{_log_tail(directory)}")
        try:
            status = control(directory, "/status", timeout=2)
            if status.get("pid") == child.pid:
                break
        except RuntimeError:
            pass
        if time.monotonic() > deadline:
            child.kill()
            return fail(f"the lab did not answer within {START_TIMEOUT:.0f}s; {directory / 'lab.log'}:\n"
                        f"{_log_tail(directory)}")
        time.sleep(0.05)
    servers = info["servers"]
    print(f"fnelab: {len(servers)} license servers up ({sum(s['security'] for s in servers.values())} secured, "
          f"{sum(s['https'] for s in servers.values())} HTTPS), back office {info['backoffice']['url']}, "
          f"pid {child.pid}, in {time.monotonic() - started:.2f}s; inventory {directory / 'inventory.yml'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    pid = _pid(directory)
    if pid is None:
        print(f"fnelab: no lab running in {directory}")
        return 0
    try:
        control(directory, "/shutdown", {}, timeout=5)
    except RuntimeError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"fnelab: lab in {directory} stopped")
            return 0
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return fail(f"the lab (pid {pid}) did not stop within 30s; killed")


def cmd_status(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    pid = _pid(directory)
    status: dict = {"running": False, "dir": str(directory)}
    if pid is not None:
        try:
            status = {"running": True, "dir": str(directory), **control(directory, "/status", timeout=5)}
        except RuntimeError as exc:
            status = {"running": False, "dir": str(directory), "pid": pid, "error": str(exc)}
    if args.json:
        print(json.dumps(status, indent=2))
    elif status["running"]:
        print(f"fnelab: running (pid {status['pid']}), {status['servers']} servers, down: "
              f"{', '.join(status['down']) or 'none'}, faults: {json.dumps(status['faults']) or 'none'}, "
              f"config: {json.dumps(status['config'])}")
    else:
        print(f"fnelab: not running in {directory}")
    return 0 if status["running"] else 3


@needs_lab
def cmd_activity(args: argparse.Namespace) -> int:
    directory = args.dir
    names = [n for n in (args.servers or "").split(",") if n] or None
    if _pid(directory) is None:  # lab down: write the journal directly (the lab is the only other writer)
        state = State(directory / "lab.sqlite")
        try:
            known = {s.name: s.id for s in state.servers()}
            if names and (unknown := [n for n in names if n not in known]):
                return fail(f"no such servers: {', '.join(unknown)}")
            ids = [known[n] for n in names] if names else None
            made = state.add_records(args.records, ids)
            if args.bulk_bytes is not None:
                state.set_bulk(args.bulk_bytes, ids)
        finally:
            state.close()
    else:
        try:
            made = control(directory, "/activity", {"records": args.records, "servers": names,
                                                    "bulk_bytes": args.bulk_bytes})["created"]
        except RuntimeError as exc:
            return fail(str(exc))
    print(f"fnelab: {made} new records")
    return 0


@needs_lab
def cmd_fault(args: argparse.Namespace) -> int:
    directory = args.dir
    try:
        if args.clear:
            if args.kind:
                return fail("--clear takes no KIND", 2)
            control(directory, "/clear", {"target": args.target})
            print(f"fnelab: faults cleared on {args.target or 'every target'}")
            return 0
        if not args.target or not args.kind:
            return fail("fault needs --target NAME|backoffice and a KIND (or --clear)", 2)
        kind, value = parse_kind(args.kind)
        Fault(kind, value, args.count, args.endpoint, args.retry_after)  # validate before sending
        control(directory, "/fault", {"target": args.target, "kind": kind, "value": value, "count": args.count,
                                      "endpoint": args.endpoint, "retry_after": args.retry_after})
    except (FaultError, RuntimeError) as exc:
        return fail(str(exc))
    print(f"fnelab: fault {args.kind} on {args.target}")
    return 0


def _held(directory: Path, target: str | None, endpoint: str | None) -> list[dict]:
    return [h for h in control(directory, "/held")["held"] if target in (None, h["target"])
            and endpoint in (None, h["endpoint"])]


@needs_lab
def cmd_held(args: argparse.Namespace) -> int:
    """The requests a hold/hold_after fault keeps waiting; with --wait, wait until one (matching) is held, so a
    test acts exactly while a transfer is in progress."""
    deadline = time.monotonic() + (args.wait or 0)
    try:
        while not (held := _held(args.dir, args.target, args.endpoint)) and time.monotonic() < deadline:
            time.sleep(0.05)
    except RuntimeError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(held, indent=2))
    else:
        for h in held:
            print(f"{h['id']}: {h['target']} {h['endpoint']} {h['method']} {h['path']} held {h['placement']} the "
                  f"work for {h['seconds']:.1f}s, client {'connected' if h['connected'] else 'gone'}")
    if not held and args.wait:
        return fail(f"nothing held within {args.wait:g}s")
    return 0


def _tell(directory: Path, path: str, body: dict, say: Callable[[dict], str]) -> int:
    """One control call as a whole command: print say(answer), or fail with the lab's error."""
    try:
        answer = control(directory, path, body)
    except RuntimeError as exc:
        return fail(str(exc))
    print(say(answer))
    return 0


@needs_lab
def cmd_release(args: argparse.Namespace) -> int:
    body = {"target": args.target, "endpoint": args.endpoint, "id": args.id, "all": args.all}
    return _tell(args.dir, "/release", body,
                 lambda a: f"fnelab: released {len(a['released'])} held request(s) {a['released']}")


@needs_lab
def cmd_elsewhere(args: argparse.Namespace) -> int:
    """What the elsewhere host was sent (redirect faults). Only --json shows the headers and bodies, which hold
    whatever credentials a client leaked; the plain listing says whether an Authorization header came."""
    if args.clear:
        return _tell(args.dir, "/elsewhere/clear", {},
                     lambda a: f"fnelab: elsewhere record cleared ({a['cleared']} requests)")
    try:
        record = control(args.dir, "/elsewhere")
    except RuntimeError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"elsewhere {record['http']} {record['https']}: {len(record['requests'])} requests")
    for r in record["requests"]:
        auth = any(name.lower() == "authorization" for name in r["headers"])
        print(f"{r['time']} {r['method']} {r['scheme']} {r['path']} body {r['body_length']} bytes"
              f"{' (JSON)' if r['json'] is not None else ''}, Authorization {'present' if auth else 'absent'}")
    return 0


@needs_lab
def cmd_config(args: argparse.Namespace) -> int:
    directory = args.dir
    body = {"reupload": args.reupload, "page_size": args.page_size, "token_ttl": args.token_ttl,
            "register": args.register}
    if _pid(directory) is None:
        if args.register:
            return fail("--register needs the lab running")
        state = State(directory / "lab.sqlite")
        state.put(**{k: v for k, v in body.items() if v is not None})
        state.close()
        print("fnelab: configuration saved (lab not running)")
        return 0
    try:
        print(json.dumps(control(directory, "/config", body)["config"]))
    except RuntimeError as exc:
        return fail(str(exc))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        print("\n".join(decode_file(args.file)))
    except (OSError, WireError) as exc:
        return fail(f"{args.file}: {exc}")
    return 0


def _flush(directory: Path) -> None:
    if _pid(directory) is not None:
        with contextlib.suppress(RuntimeError):
            control(directory, "/flush", {}, timeout=5)


@needs_lab
def cmd_backoffice_ack(args: argparse.Namespace) -> int:
    """The back office's latest acknowledgment for one server, as its web page offers it for download: what an
    operator fetches when the acknowledgment the back office sent never reached the server."""
    _flush(args.dir)
    db = connect(args.dir / "lab.sqlite", readonly=True)
    try:
        row = db.execute("SELECT b.last_sync_time, s.host_id FROM servers s JOIN bo_hosts b ON b.host_id = s.host_id "
                         "WHERE s.name=?", (args.server,)).fetchone()
    finally:
        db.close()
    if row is None:
        return fail(f"the back office holds nothing of {args.server!r}")
    Path(args.out).write_bytes(Ack(row[1], row[0], int(time.time())).encode())
    print(f"fnelab: wrote the back office's acknowledgment for {args.server} to {args.out}")
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    directory = args.dir
    _flush(directory)
    db = connect(directory / "lab.sqlite", readonly=True)
    snap = snapshot(db)
    db.close()
    if args.json:
        print(json.dumps(snap, indent=2))
        return 0
    print(f"{'server':8} {'host id':12} {'created':>8} {'cursor':>8} {'held':>8} {'acked':>8}  "
          f"{'last ack':20}  requests")
    for name, s in snap["servers"].items():
        print(f"{name:8} {s['host_id']:12} {s['created']:8} {s['cursor']:8} {s['held']:8} {s['acked_seq']:8}  "
              f"{s['last_ack_time'] or '-':20}  {json.dumps(s['requests'])}")
    bo = snap["backoffice"]
    print(f"back office: {bo['messages_accepted']} messages accepted, {bo['records']} records, "
          f"requests {json.dumps(bo['requests'])}")
    return 0


@needs_lab
def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    report = verify(args.dir / "lab.sqlite", complete=args.complete)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        keys = ["created", "held", "in_backoffice", "missing", "duplicated", "out_of_order"]
        if args.complete:
            keys += ["not_uploaded", "not_purged"]
        print(f"{'server':8} " + " ".join(f"{k:>13}" for k in keys))
        for name, counts in report["servers"].items():
            print(f"{name:8} " + " ".join(f"{counts[k]:>13}" for k in keys))
        for v in report["violations"]:
            print(f"VIOLATION: {v}")
        print("verify: OK" if report["ok"] else f"verify: FAILED ({len(report['violations'])} violations)")
    return 0 if report["ok"] else 1


def cmd_variants(args: argparse.Namespace) -> int:
    for v in variants.VARIANTS.values():
        needs = ", ".join(f"{k}={v!r}" for k, v in v.settings.items()) or "nothing (detected)"
        print(f"{v.name:24} {v.summary}\n{'':24} inventory: {needs}")
    return 0


def cmd_tools_path(args: argparse.Namespace) -> int:
    """The default stand-in tools (NAME.sh), or with --dir the lab's own copy, shaped by its variants."""
    if args.dir is None:
        print(javatools.TOOLS)
        return 0
    tools = args.dir.resolve() / "tools"
    if not tools.is_dir():
        return fail(f"no lab tools in {tools} (`fnelab up` installs them)")
    print(tools)
    return 0


def cmd_build_tools(args: argparse.Namespace) -> int:
    try:
        print(f"fnelab: stand-in vendor tools compiled in {javatools.build()}")
    except javatools.BuildError as exc:
        return fail(str(exc))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fnelab", description="A simulated fleet of FlexNet Embedded license servers "
                                                          "and a back office.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help_: str, needs_dir: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(func=func)
        if needs_dir:
            sp.add_argument("--dir", required=True, type=Path)
        return sp

    up = command("up", cmd_up, "start the fleet (or restart it from DIR's state)")
    up.add_argument("--servers", type=int)
    up.add_argument("--security", type=_fraction, nargs="?", const=1.0, default=0.0, metavar="FRACTION")
    up.add_argument("--https", type=_fraction, nargs="?", const=1.0, default=0.0, metavar="FRACTION")
    up.add_argument("--address-base", default=None)
    up.add_argument("--page-size", type=_positive(int))
    up.add_argument("--records", type=int, default=0, help="records created on each server of a new lab")
    up.add_argument("--token-ttl", type=_positive(float))
    up.add_argument("--reupload", choices=("accept", "reject"))
    up.add_argument("--fault", action="append", default=[], metavar="NAME:KIND[=VALUE][:COUNT]")
    up.add_argument("--variant", action="append", default=[], metavar="NAME",
                    help="answer as this plausible real product does (repeatable; `fnelab variants` lists them)")
    st = command("status", cmd_status, "is the lab running")
    st.add_argument("--json", action="store_true")
    command("down", cmd_down, "stop the lab cleanly")
    act = command("activity", cmd_activity, "create new transaction records")
    act.add_argument("--records", type=int, required=True)
    act.add_argument("--servers", help="NAME,NAME (all servers by default)")
    act.add_argument("--bulk-bytes", type=_byte_count, metavar="N",
                     help="the next message of each server carries N bytes of filler (a big file, streamed; 0: none)")
    fa = command("fault", cmd_fault, "inject or clear a fault, live")
    fa.add_argument("kind", nargs="?", metavar="KIND[=VALUE]")
    fa.add_argument("--target", metavar="NAME|backoffice")
    fa.add_argument("--count", type=int)
    fa.add_argument("--endpoint", choices=ENDPOINTS)
    fa.add_argument("--retry-after")
    fa.add_argument("--clear", action="store_true")
    he = command("held", cmd_held, "list the requests a hold/hold_after fault keeps waiting")
    he.add_argument("--target", metavar="NAME|backoffice")
    he.add_argument("--endpoint", choices=ENDPOINTS)
    he.add_argument("--wait", type=_positive(float), metavar="SECONDS", help="wait until one is held (else exit 1)")
    he.add_argument("--json", action="store_true")
    re_ = command("release", cmd_release, "let a held request go on (the oldest matching one, or --all)")
    re_.add_argument("--target", metavar="NAME|backoffice")
    re_.add_argument("--endpoint", choices=ENDPOINTS)
    re_.add_argument("--id", type=int)
    re_.add_argument("--all", action="store_true")
    el = command("elsewhere", cmd_elsewhere, "what the elsewhere host (redirect faults) was sent")
    el.add_argument("--json", action="store_true")
    el.add_argument("--clear", action="store_true")
    co = command("config", cmd_config, "change live settings")
    co.add_argument("--reupload", choices=("accept", "reject"))
    co.add_argument("--page-size", type=_positive(int))
    co.add_argument("--token-ttl", type=_positive(float))
    co.add_argument("--register", metavar="NAME", help="the back office learns this server (unregistered-device)")
    de = command("decode", cmd_decode, "print a message or acknowledgment as Key=Value lines", needs_dir=False)
    de.add_argument("file")
    bo_ack = command("backoffice-ack", cmd_backoffice_ack, "write the back office's latest acknowledgment for a "
                     "server (what its web page offers to download)")
    bo_ack.add_argument("--server", required=True)
    bo_ack.add_argument("--out", required=True)
    sta = command("state", cmd_state, "per-server state")
    sta.add_argument("--json", action="store_true")
    ve = command("verify", cmd_verify, "judge: nothing lost, nothing twice, in order")
    ve.add_argument("--complete", action="store_true")
    ve.add_argument("--json", action="store_true")
    command("variants", cmd_variants, "list the variants a new lab can play", needs_dir=False)
    tp = command("tools-path", cmd_tools_path, "print the folder of the stand-in vendor tools (--dir: the lab's own "
                 "copy, shaped by its variants)", needs_dir=False)
    tp.add_argument("--dir", type=Path)
    command("build-tools", cmd_build_tools, "compile the stand-in vendor tools (a Java program)", needs_dir=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
