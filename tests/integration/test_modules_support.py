"""Helpers for the module tests: inventories for both execution paths, playbook runs, their results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from fnetest import REPO, ansible_env, run

CALLBACKS = Path(__file__).parent / "callback_plugins"
TOOLS = REPO / "tests" / "lab" / "fnelab" / "tools"


def inventory(tmp_path: Path, lab, hosts: dict[str, dict], sshd: dict | None = None, name: str = "inv.yml") -> Path:
    """hosts: inventory name -> {"server": lab server name, "via": "local" | "ssh", extra vars...}.

    Each host gets its server's connection settings as fne_* variables and `out`, a folder of its own."""
    info = lab.info
    entries = {}
    for host, spec in hosts.items():
        spec = dict(spec)
        server = info["servers"][spec.pop("server", "lls001")]
        via = spec.pop("via", "local")
        entry = {"fne_url": server["url"], "out": str(tmp_path / "out" / host),
                 "fne_backoffice_url": info["backoffice"]["url"], "fne_backoffice_ca": info["backoffice"]["ca_path"],
                 "fne_username": server.get("username") if server.get("security") else None,
                 "fne_password": server.get("password") if server.get("security") else None,
                 "fne_ca": info["ca_path"] if server.get("https") else None}
        if via == "ssh":
            assert sshd is not None
            entry.update(ansible_connection="ssh", ansible_host=sshd["host"], ansible_port=sshd["port"],
                         ansible_user=sshd["user"], ansible_ssh_private_key_file=sshd["key"],
                         ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                         ansible_python_interpreter=sys.executable)
        else:
            entry.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
        entry.update(spec)
        entries[host] = entry
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"all": {"hosts": entries}}))
    return path


# Module arguments from the host's variables; `omit` keeps the env fallbacks usable.
LLS_ARGS = {"url": "{{ fne_url }}", "username": "{{ fne_username | default(omit, true) }}",
            "password": "{{ fne_password | default(omit, true) }}", "ca_path": "{{ fne_ca | default(omit, true) }}",
            "retries": 1, "max_retry_wait": 1}
BO_ARGS = {"url": "{{ fne_backoffice_url }}", "ca_path": "{{ fne_backoffice_ca }}", "retries": 1,
           "max_retry_wait": 1}


class Results:
    def __init__(self, proc, lines: list[dict]):
        self.proc = proc
        self.lines = lines

    @property
    def rc(self) -> int:
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def get(self, task: str, host: str) -> dict:
        found = [line for line in self.lines if line["task"] == task and line["host"] == host]
        assert found, f"no result for task {task!r} on {host}; have {[(x['task'], x['host']) for x in self.lines]}" \
                      f"\n{self.output[-5000:]}"
        status = found[-1]["status"]
        return found[-1]["result"] | {"_status": status, "failed": status == "failed"}


def playbook(tmp_path: Path, inv: Path, tasks: list[dict], *, args: tuple = (), check: bool = True,
             env: dict | None = None, name: str = "play") -> Results:
    """Run one play over all hosts of inv (gather_facts off) and return every task's result."""
    book = tmp_path / f"{name}.yml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    results = tmp_path / f"{name}.jsonl"
    if results.exists():
        results.unlink()
    environment = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="fne_results",
                              FNE_RESULTS_FILE=str(results), ANSIBLE_DEPRECATION_WARNINGS="False",
                              **(env or {}))
    proc = run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), str(book), *args],
               check=False, env=environment, timeout=300)
    lines = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if check:
        assert proc.returncode == 0, f"ansible-playbook exited {proc.returncode}\n{proc.stdout[-20000:]}\n" \
                                     f"{proc.stderr[-5000:]}"
    return Results(proc, lines)


def task(name: str, module: str, args: dict, **keywords) -> dict:
    return {"name": name, f"fne.offline_sync.{module}": args, **keywords}


def strip_volatile(result: dict) -> dict:
    """A result without what legitimately differs between two hosts or two runs."""
    drop = {"_status", "_ansible_no_log", "_ansible_verbose_always", "_ansible_delegated_vars", "ansible_facts",
            "_ansible_parsed", "warnings", "deprecations"}
    return {k: v for k, v in result.items() if k not in drop}


def sync_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.fnesync")) if folder.exists() else []


def all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
