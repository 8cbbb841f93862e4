#!/usr/bin/env python3
"""Big files: the peak memory of generate, upload and process for a small and a big sync message, in process and
shipped.

One lab server; for each size (the message's filler, `fnelab activity --bulk-bytes`) and each path:
  in-process  ansible_connection=local, the action plugin runs the client in the worker process;
  shipped     the same with fne_offline_sync_in_process=false: the AnsiballZ module in a process of its own;
one ansible-playbook per step (generate, upload, process), each measured from os.wait4: wall time and the peak
memory (ru_maxrss) of the largest process of its tree (ansible-playbook, its workers, the shipped module). The lab's
own peak during each step is read from /proc (VmHWM, reset before the step) where the kernel allows it.
Every cycle is judged: the file on disk has the size and sha256 generate reported, the back office stored the same
sha256, process purged the file, and `fnelab verify --complete` holds.

    .venv/bin/python benchmarks/big_files.py [--sizes 1048576,4294967296] [--paths in-process,shipped]
                                             [--work DIR] [--out FILE.json]

The files go to a temporary folder on the file system with the most free space (or --work), removed at the end.
`make test` runs it at 1 and 8 MiB (tests/integration/test_big_files.py); it never asserts a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MiB = 1 << 20
STEPS = ("generate", "upload", "process")
PATHS = {"in-process": [], "shipped": ["-e", "fne_offline_sync_in_process=false"]}
WORKER = {"in-process": "worker_peak_mib", "shipped": "module_peak_mib"}  # the process doing the work on each path

# A callback that writes each task's result to FNE_RESULT_FILE: the step's result, read without a task of its own
# (a second task would ship a module too and add its own process to the measure).
CALLBACK = """
import json, os
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_file"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result):
        with open(os.environ["FNE_RESULT_FILE"], "w") as handle:
            json.dump(result._result, handle)
"""
TASKS = {
    "generate": {"fne.offline_sync.generate": {"url": "{{ fne_lls_url }}", "path": "{{ sync_dir }}"}},
    "upload": {"fne.offline_sync.upload": {"url": "{{ fne_backoffice_url }}", "ca_path": "{{ fne_backoffice_ca_path }}",
                                           "src": "{{ sync_dir }}", "dest": "{{ ack_file }}"}},
    "process": {"fne.offline_sync.process": {"url": "{{ fne_lls_url }}", "src": "{{ ack_file }}",
                                             "path": "{{ sync_dir }}"}},
}


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, **extra)
    out.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"), ANSIBLE_NOCOWS="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               PATH=f"{BIN}{os.pathsep}{out.get('PATH', '')}")
    return out


def roomiest(candidates: list[str]) -> str:
    """The candidate folder on the file system with the most free space."""
    return max((c for c in candidates if os.path.isdir(c)), key=lambda c: shutil.disk_usage(c).free)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hwm_mib(pid: int) -> float | None:
    """A process's peak resident memory (VmHWM) so far, None when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


class WorkPeak(threading.Thread):
    """The peak memory of the processes doing a step's work, polled from /proc while the step runs: ru_maxrss only
    knows the largest process of the tree, ansible-playbook itself, which hides a smaller shipped module. `module`:
    the AnsiballZ module process (shipped); `worker`: the others below ansible-playbook (the forked worker that runs
    the action plugin in process)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.done = root, threading.Event()
        self.peaks = {"module": 0.0, "worker": 0.0}

    def run(self) -> None:
        while not self.done.wait(0.05):
            todo = [self.root]
            while todo:
                pid = todo.pop()
                with contextlib.suppress(OSError):
                    for task in Path(f"/proc/{pid}/task").iterdir():
                        todo += [int(c) for c in (task / "children").read_text().split()]
                    if pid != self.root:
                        kind = "module" if b"AnsiballZ_" in Path(f"/proc/{pid}/cmdline").read_bytes() else "worker"
                        self.peaks[kind] = max(self.peaks[kind], hwm_mib(pid) or 0.0)


def measured(cmd: list[str], log: Path, environ: dict[str, str]) -> dict:
    """Run cmd to its end: its wall time, the peak memory of the largest process of its tree and of its workers."""
    with log.open("w") as handle:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=environ)
        work = WorkPeak(proc.pid)
        work.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        work.done.set()
        work.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed; see {log}:\n{log.read_text()[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
            **{f"{kind}_peak_mib": mib for kind, mib in work.peaks.items()}}


def playbook(step: str) -> list:
    return [{"hosts": "lls001", "gather_facts": False, "tasks": [{"name": step, **TASKS[step]}]}]


class Run:
    def __init__(self, work: Path, address_base: str):
        self.work = work
        self.lab = work / "lab"
        self.fnelab = str(BIN / "fnelab")
        self.cli("up", "--servers", "1", "--address-base", address_base)
        info = json.loads((self.lab / "lab.json").read_text())
        self.lab_pid = int((self.lab / "lab.pid").read_text())
        self.sync_dir, self.ack = work / "sync", work / "ack.bin"
        import yaml

        inventory = yaml.safe_load((self.lab / "inventory.yml").read_text())
        inventory["all"]["children"]["license_servers"]["vars"].update(
            ansible_connection="local", ansible_python_interpreter=sys.executable, sync_dir=str(self.sync_dir),
            ack_file=str(self.ack))
        self.inventory = work / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump(inventory))
        for step in STEPS:
            (work / f"{step}.yml").write_text(yaml.safe_dump(playbook(step)))
        (work / "callbacks").mkdir()
        (work / "callbacks" / "result_file.py").write_text(CALLBACK)
        self.bo_url = info["backoffice"]["url"]

    def cli(self, *args: str) -> str:
        return subprocess.run([self.fnelab, args[0], "--dir", str(self.lab), *args[1:]], check=True, env=env(),
                              capture_output=True, text=True).stdout

    def step(self, step: str, extra: list[str]) -> tuple[dict, dict]:
        result = self.work / f"{step}.json"
        environ = env(ANSIBLE_CALLBACK_PLUGINS=str(self.work / "callbacks"), ANSIBLE_CALLBACKS_ENABLED="result_file",
                      FNE_RESULT_FILE=str(result))
        with contextlib.suppress(OSError):  # the lab's peak from here on (where the kernel allows the reset)
            Path(f"/proc/{self.lab_pid}/clear_refs").write_text("5")
        sample = measured([str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(self.work / f"{step}.yml"),
                           *extra], self.work / f"{step}.log", environ)
        sample["lab_peak_mib"] = hwm_mib(self.lab_pid)
        return sample, json.loads(result.read_text())

    def cycle(self, size: int, extra: list[str]) -> dict:
        """One message of `size` bytes of filler through generate, upload and process; each step measured and the
        whole judged (sys.exit on a wrong result)."""
        self.cli("activity", "--records", "2", "--bulk-bytes", str(size))
        samples: dict = {}
        samples["generate"], generated = self.step("generate", extra)
        (entry,) = generated["files"]
        file = Path(entry["path"])
        on_disk = {"size": file.stat().st_size, "sha256": sha256_file(file)}
        if on_disk != {"size": entry["size"], "sha256": entry["sha256"]} or on_disk["size"] <= size:
            sys.exit(f"generate reported {entry}, the file holds {on_disk} (filler {size} bytes)")
        samples["upload"], uploaded = self.step("upload", extra)
        if uploaded["accepted"] != [str(file)]:
            sys.exit(f"upload accepted {uploaded['accepted']}, not {file}")
        db = sqlite3.connect(f"file:{self.lab / 'lab.sqlite'}?mode=ro", uri=True)
        try:
            (stored,) = db.execute("SELECT sha256 FROM bo_messages ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            db.close()
        if stored != on_disk["sha256"]:
            sys.exit(f"the back office stored sha256 {stored}, the file is {on_disk['sha256']}")
        samples["process"], processed = self.step("process", extra)
        if processed["purged"] != [str(file)] or file.exists():
            sys.exit(f"process purged {processed['purged']}, not {file}")
        verdict = json.loads(subprocess.run([self.fnelab, "verify", "--dir", str(self.lab), "--complete", "--json"],
                                            env=env(), capture_output=True, text=True, check=False).stdout)
        if not verdict["ok"]:
            sys.exit(f"fnelab verify --complete: {verdict['violations']}")
        return {"file_bytes": on_disk["size"], "sha256": on_disk["sha256"], "steps": samples}

    def down(self) -> None:
        subprocess.run([self.fnelab, "down", "--dir", str(self.lab)], env=env(), capture_output=True, check=False)


def size_label(size: int) -> str:
    return f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MiB:g} MiB"


def table(report: dict) -> str:
    sizes = report["sizes"]
    small, big = size_label(sizes[0]), size_label(sizes[-1])
    labels = [size_label(s) for s in sizes]
    rows = [f"| step | path | {' | '.join(f'largest process, {label}' for label in labels)} | {big} − {small} | "
            f"{' | '.join(f'working process, {label}' for label in labels)} | {big} − {small} | "
            f"{' | '.join(f'wall, {label}' for label in labels)} | lab, {big} |",
            "|---|---|" + "---:|" * (3 * len(sizes) + 3)]
    for step in STEPS:
        for path in report["paths"]:
            by = [report["cycles"][path][str(s)]["steps"][step] for s in sizes]
            growth = report["differences"][path][step]
            lab = by[-1]["lab_peak_mib"]
            rows.append(" | ".join([
                f"| {step}", path, *(f"{b['peak_mib']:.0f} MiB" for b in by), f"{round(growth['largest']):+d} MiB",
                *(f"{b[WORKER[path]]:.0f} MiB" for b in by), f"{round(growth['working']):+d} MiB",
                *(f"{b['wall_s']:.1f} s" for b in by), "-" if lab is None else f"{lab:.0f} MiB"]) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=f"{MiB},{4 << 30}", help="filler bytes per message, comma-separated "
                        "(the first is the reference the others are compared with)")
    parser.add_argument("--paths", default=",".join(PATHS), help="in-process, shipped")
    parser.add_argument("--work", help="a folder for the lab and the files (default: a temporary folder on the "
                        "file system with the most free space)")
    parser.add_argument("--address-base", default="127.180.0.0")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    if len(sizes) < 2 or any(p not in PATHS for p in paths) or not paths:
        parser.error("--sizes needs at least two sizes; --paths is in-process and/or shipped")
    parent = args.work or roomiest([tempfile.gettempdir(), "/var/tmp", str(REPO / ".venv")])
    needed = max(sizes) * 2 + (1 << 30)  # the message, a temporary copy while it downloads, and room
    free = shutil.disk_usage(parent).free
    if free < needed:
        sys.exit(f"{parent} has {free / (1 << 30):.1f} GiB free; {needed / (1 << 30):.1f} GiB are needed")
    work = Path(tempfile.mkdtemp(prefix="fne-big-files-", dir=parent))
    started = datetime.now(timezone.utc)
    load = os.getloadavg()[0]
    run = None
    try:
        run = Run(work, args.address_base)
        cycles = {path: {str(size): run.cycle(size, PATHS[path]) for size in sizes} for path in paths}
    finally:
        if run is not None:
            run.down()
        shutil.rmtree(work, ignore_errors=True)
    from ansible.release import __version__ as ansible_version

    report = {
        "sizes": sizes, "paths": paths, "cycles": cycles,
        # the last size against the first: the largest process (ru_maxrss) and the one doing the work
        "differences": {path: {step: {what: round(cycles[path][str(sizes[-1])]["steps"][step][key]
                                                  - cycles[path][str(sizes[0])]["steps"][step][key], 1)
                                      for what, key in (("largest", "peak_mib"), ("working", WORKER[path]))}
                               for step in STEPS} for path in paths},
        "correct": True,  # every cycle was judged above (sys.exit otherwise)
        "environment": {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
                        "ansible_core": ansible_version, "cpus": os.cpu_count(), "load_before": round(load, 2),
                        "work_parent": parent, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
    }
    print(table(report))
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
