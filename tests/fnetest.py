"""Shared test helpers: real ansible runs and the `Lab` wrapper of the `fnelab` command line.

Imported by tests as `from fnetest import ...` (a unique name: `conftest` is ambiguous, the lab has its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The lab is installed in .venv only: the venvs of older ansible-core versions (.venv/cores/X.Y) run their tests
# against it.
FNELAB = REPO / ".venv" / "bin" / "fnelab"


def ansible_env(**extra: str) -> dict[str, str]:
    """Environment for ansible commands: this checkout as the collection, no cowsay, no host key prompts."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"),
        ANSIBLE_NOCOWS="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run(cmd: list[str], *, check: bool = True, env: dict | None = None, timeout: float = 600,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or ansible_env(), timeout=timeout, cwd=cwd,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-20000:]}\n--- stderr\n{proc.stderr[-10000:]}")
    return proc


class Lab:
    """A running lab fleet, driven through the real `fnelab` command line."""

    def __init__(self, directory: Path, address_base: str):
        self.dir = directory
        self.address_base = address_base

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([str(FNELAB), *args], check=check)

    def up(self, servers: int, *options: str) -> Lab:
        self.cli("up", "--servers", str(servers), "--dir", str(self.dir), "--address-base", self.address_base,
                 *options)
        return self

    def down(self) -> None:
        self.cli("down", "--dir", str(self.dir))  # a lab that does not stop cleanly is a lab bug

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def info(self) -> dict:
        return json.loads((self.dir / "lab.json").read_text())

    def activity(self, records: int, *servers: str) -> None:
        args = ["activity", "--dir", str(self.dir), "--records", str(records)]
        if servers:
            args += ["--servers", ",".join(servers)]
        self.cli(*args)

    def fault(self, target: str, kind: str, *options: str) -> None:
        self.cli("fault", "--dir", str(self.dir), "--target", target, kind, *options)

    def clear_faults(self, target: str | None = None) -> None:
        self.cli("fault", "--dir", str(self.dir), "--clear", *(["--target", target] if target else []))

    def config(self, *options: str) -> None:
        self.cli("config", "--dir", str(self.dir), *options)

    def state(self) -> dict:
        return json.loads(self.cli("state", "--dir", str(self.dir), "--json").stdout)

    def verify(self, complete: bool = False) -> dict:
        """Run the lab's judge; fail the test on any violation, return its per-server report."""
        args = ["verify", "--dir", str(self.dir), "--json"] + (["--complete"] if complete else [])
        proc = self.cli(*args, check=False)
        assert proc.returncode == 0, f"fnelab verify found violations:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)
