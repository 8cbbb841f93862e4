"""Helpers for the sync integration tests (no tests here): run the playbooks against a lab, read the recap, kill
a run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from fnetest import BIN, ansible_env, run

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)


class Result:
    def __init__(self, proc):
        self.proc = proc
        self.out = proc.stdout
        self.recap = {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
                      for m in RECAP.findall(proc.stdout)}

    def changed(self) -> set[str]:
        return {h for h, r in self.recap.items() if r["changed"]}

    def failed(self) -> set[str]:
        return {h for h, r in self.recap.items() if r["failed"] or r["unreachable"]}

    def __repr__(self) -> str:
        return f"<Result rc={self.proc.returncode}\n{self.out[-15000:]}\n{self.proc.stderr[-5000:]}>"


def playbook(name: str, inventory: Path, store: Path, *args: str, expect_rc: int | None = 0,
             env: dict | None = None) -> Result:
    cmd = [str(BIN / "ansible-playbook"), f"fne.offline_sync.{name}", "-i", str(inventory),
           "-e", f"fne_sync_store={store}", *args]
    proc = run(cmd, check=False, env=env or ansible_env(), timeout=900)
    result = Result(proc)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f"{' '.join(cmd)}: exit {proc.returncode}, wanted {expect_rc}\n{result!r}"
    return result


def sync(lab, store: Path, *args: str, **kwargs) -> Result:
    return playbook("sync", lab.inventory, store, *args, **kwargs)


def lab_state(lab) -> dict:
    """The lab's state without its request counters (reads are allowed to count)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "requests"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(lab.state())


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under root with its content hash: to prove nothing changed."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def ledger(store: Path, host: str) -> list[dict]:
    path = store / host / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def hosts_of(lab) -> list[str]:
    return sorted(lab.info["servers"])


def write_inventory(lab, path: Path, overrides: dict[str, dict]) -> Path:
    """The lab's inventory with per-host variables added (YAML is a superset of JSON)."""
    import yaml  # ansible-core depends on PyYAML

    data = yaml.safe_load(lab.inventory.read_text())
    hosts = data["all"]["children"]["license_servers"]["hosts"]
    for host, extra in overrides.items():
        hosts[host].update(extra)
    path.write_text(json.dumps(data, indent=1))
    return path


def _descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc (the parent is field 4 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL an ansible-playbook run started with start_new_session=True: its process group and every process
    below it, all frozen (SIGSTOP) first so that none forks, answers or finishes in between. A killpg of the
    playbook's group alone is not enough: ansible-core's task workers call setsid() (a session and process group
    of their own), and the worker, which does the actual work, would run on to the end of its task."""
    frozen: set[int] = set()
    while new := [p for p in _descendants(proc.pid) if p not in frozen]:
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen.update(new)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


PYTHON = sys.executable
