"""`make bench`: the sync cycle measured side by side with what it is meant to beat, on one lab per fleet size.

Contenders, each a process of its own so that all are measured the same way (wall time, the CPU time of the process
and everything it waited for, the peak memory of its largest process, from os.wait4):
  collection  ansible-playbook fne.offline_sync.sync (api topology), its store kept from run to run as a site's is;
  summary     the same in fleet-summary mode (-e fne_sync_host_results=false: one result for the fleet, no per-host
              task), on the same store;
  remote      the same playbook with every server in the remote topology (fne_sync_topology=remote): generate and
              process run on the server's host over real SSH (a private sshd on 127.0.0.1, each server a folder of
              its own, one SSH connection each, pipelining on), files fetched with their sha256; forks 20, on the
              same store; only up to --remote-max servers;
  builtin     a playbook of delegated ansible.builtin.uri tasks written as a competent user would (authorize where
              security is on, the lab's CA, one sync message per server, upload, acknowledgment), forks 20; only
              up to --builtin-max servers (it costs minutes at 200);
  floor       a thread pool making the same HTTP calls with requests, no Ansible: the cost no Ansible collection can
              go below;
  hostfloor   ansible-playbook over the same inventory with one static ansible.builtin.debug task per host and
              nothing else: Ansible's own price of a result per host, below which no per-host mode can go;
  sshfloor    ansible-playbook over the remote contender's inventory with one ansible.builtin.ping task per host
              and nothing else: Ansible's own price of one module run on each host over SSH, which a quiet night
              in the remote topology needs once (generate) and a full one twice (and process); only up to
              --remote-max servers;
  tool        the collection with the tool backend (fne_sync_backend=tool: a JVM start per step and server, the
              lab's stand-ins for the vendor's Java tools), per-host results, on the same store; only up to
              --tool-max servers;
  inprocess   one fne.offline_sync.server_info task per host, connection local: the action plugin runs the
              client in the controller's worker (docs/design.md);
  shipped     the same task with fne_offline_sync_in_process=false: an AnsiballZ module per host, as over any
              other connection; inprocess and shipped only up to --modules-max.
Scenarios: `full` (every server has --records new records: a whole cycle) and `quiet` (nothing new: the common
nightly case). Runs are interleaved (contender after contender, repetition after repetition) because the machine
is shared and noisy: read the ratios, not the seconds. Every full run is judged by `fnelab verify --complete`;
a violation fails the benchmark.

    .venv/bin/python benchmarks/bench.py [--sizes 10,100,200,1000] [--reps 3] [--out FILE.json] [--doc]

--doc rewrites the figures section of docs/performance.md from this run. `make test` runs it at a tiny size to
prove it works (tests/integration/test_bench.py); it never asserts a time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from fnelab.sshd import start_sshd  # the lab's sshd: the tests' remote-topology hosts too

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOC = REPO / "docs" / "performance.md"
DOC_BEGIN, DOC_END = "<!-- bench:begin -->", "<!-- bench:end -->"
CONTENDERS = ("collection", "summary", "remote", "builtin", "floor", "hostfloor", "sshfloor", "tool", "inprocess",
              "shipped")
SCENARIOS = ("full", "quiet")

# The builtin-only playbook: what a competent user writes without this collection (one page per server: the lab's
# page size exceeds the records per server).
BUILTIN_PLAYBOOK = """\
- hosts: license_servers
  gather_facts: false
  vars:
    work: "{{ bench_work }}/{{ inventory_hostname }}"
    ca: "{{ fne_lls_ca_path | default(omit) }}"
  tasks:
    - name: Working folder
      ansible.builtin.file: {path: "{{ work }}", state: directory, mode: "0700"}
      delegate_to: localhost
    - name: Authorize
      ansible.builtin.uri:
        url: "{{ fne_lls_url }}/api/1.0/instances/~/authorize"
        method: POST
        body_format: json
        body: {user: "{{ fne_lls_username }}", password: "{{ fne_lls_password }}"}
        ca_path: "{{ ca }}"
      register: auth
      no_log: true
      when: fne_lls_username is defined
      delegate_to: localhost
    - name: Download the sync message
      ansible.builtin.uri:
        url: "{{ fne_lls_url }}/api/1.0/sync_message/offline"
        method: POST
        headers: "{{ {'Authorization': 'Bearer ' ~ auth.json.token} if fne_lls_username is defined else {} }}"
        status_code: [200, 204]
        dest: "{{ work }}/message.fnesync"
        ca_path: "{{ ca }}"
      register: message
      delegate_to: localhost
    - name: Upload it to the back office
      ansible.builtin.uri:
        url: "{{ fne_backoffice_url }}"
        method: POST
        src: "{{ work }}/message.fnesync"
        headers: {Content-Type: application/octet-stream}
        dest: "{{ work }}/ack.bin"
        ca_path: "{{ fne_backoffice_ca_path }}"
      when: message.status == 200
      delegate_to: localhost
    - name: Hand the acknowledgment to the license server
      ansible.builtin.uri:
        url: "{{ fne_lls_url }}/api/1.0/sync_ack/offline"
        method: POST
        src: "{{ work }}/ack.bin"
        headers: "{{ {'Content-Type': 'application/octet-stream'} | combine({'Authorization': 'Bearer '
                     ~ auth.json.token} if fne_lls_username is defined else {}) }}"
        ca_path: "{{ ca }}"
      when: message.status == 200
      delegate_to: localhost
"""

# Ansible's own price of one result per host: the cheapest per-host task there is (no template, no module run)
HOSTFLOOR_PLAYBOOK = """\
- hosts: license_servers
  gather_facts: false
  tasks:
    - name: One result per host
      ansible.builtin.debug: {msg: done}
"""

# Ansible's own price of one module run on each host over SSH: the cheapest module there is
SSHFLOOR_PLAYBOOK = """\
- hosts: license_servers
  gather_facts: false
  tasks:
    - name: One module run on each host
      ansible.builtin.ping:
"""

# The per-host module path, in process or shipped (the server's state: reads, changes nothing)
MODULE_PLAYBOOK = """\
- hosts: license_servers
  gather_facts: false
  tasks:
    - name: The server's state
      fne.offline_sync.server_info:
        url: "{{ fne_lls_url }}"
        username: "{{ fne_lls_username | default(omit) }}"
        password: "{{ fne_lls_password | default(omit) }}"
        ca_path: "{{ fne_lls_ca_path | default(omit) }}"
"""


def env() -> dict:
    out = dict(os.environ)
    out.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"), ANSIBLE_NOCOWS="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_DEPRECATION_WARNINGS="False", PATH=f"{BIN}{os.pathsep}{out.get('PATH', '')}")
    return out


def measured(cmd: list[str], log: Path) -> dict:
    """Run cmd to its end; its wall time, CPU time (itself and every process it waited for) and peak memory."""
    with log.open("w") as handle:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env())
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_mib": round(usage.ru_maxrss / 1024, 1)}  # Linux: ru_maxrss in KiB


class Lab:
    def __init__(self, work: Path, servers: int, records: int, base: str):
        self.dir, self.records = work / "lab", records
        self.fnelab = str(BIN / "fnelab")
        self.cli("up", "--servers", str(servers), "--security", "0.25", "--https", "0.25", "--address-base", base,
                 "--page-size", str(max(500, records)))
        self.inventory = self.dir / "inventory.yml"

    def cli(self, *args: str) -> str:
        return subprocess.run([self.fnelab, args[0], "--dir", str(self.dir), *args[1:]], check=True, env=env(),
                              capture_output=True, text=True).stdout

    def verify(self) -> None:
        proc = subprocess.run([self.fnelab, "verify", "--dir", str(self.dir), "--complete", "--json"], env=env(),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"fnelab verify --complete found a violation:\n{proc.stdout[-5000:]}")


def remote_inventory(lab: Lab, work: Path, sshd: dict) -> Path:
    """The lab's inventory with every server in the remote topology: its host is this machine over SSH."""
    import yaml

    inventory = yaml.safe_load(lab.inventory.read_text())
    for name, host in inventory["all"]["children"]["license_servers"]["hosts"].items():
        # one SSH master connection per server, as with hosts of their own (they all share one address here)
        host.update(fne_sync_topology="remote", fne_sync_remote_path=str(work / "hosts" / name),
                    ansible_host=sshd["host"], ansible_port=sshd["port"], ansible_user=sshd["user"],
                    ansible_ssh_private_key_file=sshd["key"], ansible_python_interpreter=sys.executable,
                    ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                    ansible_control_path_dir=str(work / "cp"), ansible_control_path=f"%(directory)s/{name}",
                    ansible_pipelining=True)  # as docs/performance.md recommends for the remote topology
    path = work / "remote.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def close_ssh(work: Path) -> None:
    """End the SSH master connections a remote run left (ControlPersist): the next run connects anew, as a
    nightly run does."""
    for control in (work / "cp").glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "unused"], capture_output=True,
                       check=False)


def commands(contender: str, lab: Lab, work: Path, workers: int) -> list[str]:
    if contender in ("collection", "summary", "remote", "tool"):
        inventory = work / "remote.yml" if contender == "remote" else lab.inventory
        return [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(inventory),
                "-e", f"fne_sync_store={work / 'store'}", "-e", f"fne_sync_workers={workers}",
                "-e", f"fne_sync_host_results={contender != 'summary'}",
                *(["--forks", "20"] if contender == "remote" else []),
                *(["-e", "fne_sync_backend=tool", "-e", f"fne_sync_tool_path={lab.cli('tools-path').strip()}"]
                  if contender == "tool" else [])]
    if contender in ("inprocess", "shipped"):
        playbook = work / "module.yml"
        playbook.write_text(MODULE_PLAYBOOK)
        return [str(BIN / "ansible-playbook"), "-i", str(lab.inventory), "-c", "local", str(playbook),
                *(["-e", "fne_offline_sync_in_process=false"] if contender == "shipped" else [])]
    if contender == "hostfloor":
        playbook = work / "hostfloor.yml"
        playbook.write_text(HOSTFLOOR_PLAYBOOK)
        return [str(BIN / "ansible-playbook"), "-i", str(lab.inventory), str(playbook)]
    if contender == "sshfloor":
        playbook = work / "sshfloor.yml"
        playbook.write_text(SSHFLOOR_PLAYBOOK)
        return [str(BIN / "ansible-playbook"), "-i", str(work / "remote.yml"), "--forks", "20", str(playbook)]
    if contender == "builtin":
        playbook = work / "builtin.yml"
        playbook.write_text(BUILTIN_PLAYBOOK)
        return [str(BIN / "ansible-playbook"), "-i", str(lab.inventory), "--forks", "20", str(playbook),
                "-e", f"bench_work={work / 'builtin'}"]
    return [sys.executable, __file__, "floor", "--inventory", str(lab.inventory), "--workers", str(workers),
            "--work", str(work / "floor")]


def bench_size(servers: int, args: argparse.Namespace, index: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"fne-bench-{servers}-"))
    lab = Lab(work, servers, args.records, f"127.{args.address_octet + index}.0.0")
    largest = {"builtin": args.builtin_max, "remote": args.remote_max, "sshfloor": args.remote_max,
               "tool": args.tool_max, "inprocess": args.modules_max, "shipped": args.modules_max}
    contenders = [c for c in args.contenders if servers <= largest.get(c, servers)]
    samples: dict = {c: {s: [] for s in SCENARIOS} for c in contenders}
    sshd = None
    try:
        if {"remote", "sshfloor"} & set(contenders):
            (work / "sshd").mkdir()
            try:
                sshd = start_sshd(work / "sshd")
            except RuntimeError as exc:
                sys.exit(f"the remote and sshfloor contenders need sshd: {exc}")
            remote_inventory(lab, work, sshd[1])
        # the collection's first contact with a server downloads everything since its last acknowledged sync
        # (the store was empty): once, before measuring, as a site's first run
        measured(commands("summary", lab, work, args.workers), work / "warmup.log")
        for rep in range(args.reps):
            for contender in contenders:
                cmd = commands(contender, lab, work, args.workers)
                # the host floors talk to no server, server_info syncs nothing: nothing to create, nothing to judge
                syncs = contender not in ("hostfloor", "sshfloor", "inprocess", "shipped")
                if syncs:
                    lab.cli("activity", "--records", str(args.records))
                samples[contender]["full"].append(measured(cmd, work / f"{contender}-full-{rep}.log"))
                close_ssh(work)
                if syncs:
                    lab.verify()
                samples[contender]["quiet"].append(measured(cmd, work / f"{contender}-quiet-{rep}.log"))
                close_ssh(work)
    finally:
        if sshd:
            sshd[0].terminate()
            sshd[0].wait()
        subprocess.run([lab.fnelab, "down", "--dir", str(lab.dir)], env=env(), capture_output=True, check=False)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    medians = {c: {s: {k: statistics.median(x[k] for x in runs) for k in runs[0]} for s, runs in by.items()}
               for c, by in samples.items()}
    wall = {c: {s: m["wall_s"] for s, m in by.items()} for c, by in medians.items()}
    ratios = {}  # each where its contenders ran (--contenders)
    if "floor" in wall:
        for contender in ("collection", "summary"):
            if contender in wall:
                ratios[f"{contender}_vs_floor_full"] = wall[contender]["full"] / wall["floor"]["full"]
                ratios[f"{contender}_vs_floor_quiet"] = wall[contender]["quiet"] / wall["floor"]["quiet"]
    for contender in ("collection", "summary", "remote"):
        if contender in wall:
            ratios[f"{contender}_quiet_vs_full"] = wall[contender]["quiet"] / wall[contender]["full"]
            ratios[f"{contender}_per_server_ms"] = 1000 * wall[contender]["full"] / servers
    if "remote" in wall and "collection" in wall:  # both with per-host results
        ratios["remote_vs_collection_full"] = wall["remote"]["full"] / wall["collection"]["full"]
    if "remote" in wall and "sshfloor" in wall:
        ratios["remote_vs_sshfloor_full"] = wall["remote"]["full"] / wall["sshfloor"]["full"]
        ratios["remote_vs_sshfloor_quiet"] = wall["remote"]["quiet"] / wall["sshfloor"]["quiet"]
    if "hostfloor" in wall and "collection" in wall:
        ratios["collection_vs_hostfloor_full"] = wall["collection"]["full"] / wall["hostfloor"]["full"]
    if "tool" in wall and "collection" in wall:  # both with per-host results
        ratios["tool_vs_collection_full"] = wall["tool"]["full"] / wall["collection"]["full"]
        ratios["tool_vs_collection_quiet"] = wall["tool"]["quiet"] / wall["collection"]["quiet"]
    if "inprocess" in wall and "shipped" in wall:
        ratios["shipped_vs_inprocess"] = wall["shipped"]["full"] / wall["inprocess"]["full"]
    for contender in ("collection", "summary"):  # the 40x goal, with and without per-host results
        if "builtin" in wall and contender in wall:
            ratios[f"builtin_vs_{contender}_full"] = wall["builtin"]["full"] / wall[contender]["full"]
    return {"servers": servers, "median": medians, "ratios": {k: round(v, 2) for k, v in ratios.items()},
            "samples": samples}


def table(results: list[dict]) -> str:
    lines = ["| servers | contender | full: wall | full: CPU | full: peak MiB | quiet: wall | quiet: CPU |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for res in results:
        for contender, by in res["median"].items():
            full, quiet = by["full"], by["quiet"]
            lines.append(f"| {res['servers']:,} | {contender} | {full['wall_s']:.1f} s | {full['cpu_s']:.1f} s | "
                         f"{full['peak_mib']:.0f} | {quiet['wall_s']:.1f} s | {quiet['cpu_s']:.1f} s |")
    lines += ["", "| servers | " + " | ".join(title for _key, title, _fmt in RATIO_COLUMNS) + " |",
              "|---:|" + "---:|" * len(RATIO_COLUMNS)]
    for res in results:
        r = res["ratios"]
        cells = [fmt.format(r[key]) if key in r else "not run" for key, _title, fmt in RATIO_COLUMNS]
        lines.append(f"| {res['servers']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (ratio, column title, format) of the ratio table; "not run" where a contender did not run at that size
RATIO_COLUMNS = (("collection_vs_floor_full", "collection / floor, full", "{:.1f}×"),
                 ("collection_vs_floor_quiet", "collection / floor, quiet", "{:.1f}×"),
                 ("collection_quiet_vs_full", "quiet / full", "{:.0%}"),
                 ("summary_vs_floor_full", "summary / floor, full", "{:.1f}×"),
                 ("summary_quiet_vs_full", "summary: quiet / full", "{:.0%}"),
                 ("collection_vs_hostfloor_full", "collection / hostfloor, full", "{:.1f}×"),
                 ("builtin_vs_collection_full", "builtin / collection", "{:.1f}×"),
                 ("builtin_vs_summary_full", "builtin / summary", "{:.1f}×"),
                 ("remote_vs_collection_full", "remote / api topology, full", "{:.1f}×"),
                 ("remote_vs_sshfloor_full", "remote / sshfloor, full", "{:.1f}×"),
                 ("remote_vs_sshfloor_quiet", "remote / sshfloor, quiet", "{:.1f}×"),
                 ("tool_vs_collection_full", "tool / http backend, full", "{:.1f}×"),
                 ("tool_vs_collection_quiet", "tool / http backend, quiet", "{:.1f}×"),
                 ("shipped_vs_inprocess", "module: shipped / in process", "{:.1f}×"),
                 ("collection_per_server_ms", "collection per server", "{:.0f} ms"),
                 ("summary_per_server_ms", "summary per server", "{:.0f} ms"))


def write_doc(report: dict) -> None:
    text = DOC.read_text()
    head, rest = text.split(DOC_BEGIN, 1)
    _old, tail = rest.split(DOC_END, 1)
    meta = report["meta"]
    figures = (f"\nOne run of `{meta['command']}` on {meta['date']} (commit {meta['commit']}, ansible-core "
               f"{meta['ansible_core']}, Python {meta['python']}, {meta['cpus']} CPUs, load average "
               f"{meta['load_before']} before the run; medians of {meta['reps']} interleaved repetitions, "
               f"{meta['records']} new records per server in a full run):\n\n{table(report['results'])}\n\n")
    DOC.write_text(head + DOC_BEGIN + figures + DOC_END + tail)


# ---- the floor: the same HTTP calls from a thread pool, no Ansible -----------------------------------------------
def floor(args: argparse.Namespace) -> int:
    import requests  # the controller's own requests, as the collection uses it
    import yaml

    group = yaml.safe_load(Path(args.inventory).read_text())["all"]["children"]["license_servers"]
    backoffice, bo_ca = group["vars"]["fne_backoffice_url"], group["vars"]["fne_backoffice_ca_path"]
    work = Path(args.work)
    local = threading.local()

    def one(name: str, host: dict) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        verify = host.get("fne_lls_ca_path", True)
        headers = {}
        if host.get("fne_lls_username"):
            answer = session.post(host["fne_lls_url"] + "/api/1.0/instances/~/authorize", verify=verify, timeout=30,
                                  json={"user": host["fne_lls_username"], "password": host["fne_lls_password"]})
            answer.raise_for_status()
            headers["Authorization"] = "Bearer " + answer.json()["token"]
        sent = 0
        while True:
            message = session.post(host["fne_lls_url"] + "/api/1.0/sync_message/offline", headers=headers,
                                   verify=verify, timeout=30)
            message.raise_for_status()
            if message.status_code == 204:
                return sent
            path = work / name / f"{sent}.fnesync"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(message.content)
            with path.open("rb") as body:
                ack = session.post(backoffice, data=body, verify=bo_ca, timeout=30,
                                   headers={"Content-Type": "application/octet-stream"})
            ack.raise_for_status()
            done = session.post(host["fne_lls_url"] + "/api/1.0/sync_ack/offline", data=ack.content, verify=verify,
                                timeout=30, headers=dict(headers, **{"Content-Type": "application/octet-stream"}))
            done.raise_for_status()
            sent += 1

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(one, name, host) for name, host in group["hosts"].items()]
        messages = sum(f.result() for f in futures)
    print(f"floor: {len(futures)} servers, {messages} messages")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    fl = sub.add_parser("floor", help="(internal) the floor contender")
    fl.add_argument("--inventory", required=True)
    fl.add_argument("--workers", type=int, default=16)
    fl.add_argument("--work", required=True)
    parser.add_argument("--sizes", default="10,100,200,1000", help="fleet sizes, comma separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--records", type=int, default=20, help="new records per server in a full run")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--builtin-max", type=int, default=200, help="largest fleet the builtin playbook runs on")
    parser.add_argument("--remote-max", type=int, default=200,
                        help="largest fleet the remote topology and sshfloor run on")
    parser.add_argument("--tool-max", type=int, default=10, help="largest fleet the tool backend runs on")
    parser.add_argument("--modules-max", type=int, default=100,
                        help="largest fleet the inprocess and shipped module tasks run on")
    parser.add_argument("--contenders", type=lambda text: [c for c in CONTENDERS if c in text.split(",")],
                        default=list(CONTENDERS), help="comma separated, of " + ", ".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=REPO / ".venv" / "bench" / "last.json")
    parser.add_argument("--doc", action="store_true", help="write the figures into docs/performance.md")
    parser.add_argument("--keep", action="store_true", help="keep each size's lab, store and logs")
    parser.add_argument("--address-octet", type=int, default=160,
                        help="the labs listen on 127.N.0.0/16, 127.N+1.0.0/16, ... (away from the tests' labs)")
    args = parser.parse_args()
    if args.command == "floor":
        return floor(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    given = " ".join(sys.argv[1:])  # what reproduces the run: make bench with the same BENCH_ARGS
    made = "make bench" + (f' BENCH_ARGS="{given}"' if given else "")
    meta = {"command": made if os.environ.get("FNE_BENCH_MAKE") else " ".join(["bench.py", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True, check=False).stdout.strip(),
            "ansible_core": re.search(r"core ([\d.]+)", subprocess.run(
                [str(BIN / "ansible"), "--version"], capture_output=True, text=True, check=True).stdout).group(1),
            "python": platform.python_version(), "cpus": os.cpu_count(), "reps": args.reps,
            "records": args.records, "load_before": round(os.getloadavg()[0], 1)}
    results = [bench_size(n, args, i) for i, n in enumerate(sizes)]
    report = {"meta": meta, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    print(f"\nJSON: {args.out}")
    if args.doc:
        write_doc(report)
        print(f"figures written into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
