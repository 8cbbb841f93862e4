#!/usr/bin/env python3
"""Controller cost per host: the in-process action path vs the shipped module, in the same run.

Starts a one-server lab, then runs `ansible-playbook` over N inventory hosts (all pointing at that server) with one
`fne.offline_sync.server_info` task, three ways:
  in-process      ansible_connection=local, the action plugin runs the client in the worker process
  shipped-local   ansible_connection=local with fne_offline_sync_in_process=false: AnsiballZ module per host
  shipped-ssh     ansible_connection=ssh to a private sshd on 127.0.0.1 (skipped when sshd is not installed)
and prints wall time and controller CPU (user+sys of ansible-playbook and everything it forks on this machine; for
ssh the module's own CPU is spent under sshd and is not counted) per host, and the ratios.

    .venv/bin/python benchmarks/modules_inprocess_vs_shipped.py [--hosts 20] [--repeat 3] [--forks 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"), ANSIBLE_NOCOWS="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               PATH=f"{BIN}{os.pathsep}{out.get('PATH', '')}")
    return out


def start_sshd(home: Path) -> tuple[subprocess.Popen, dict] | None:
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        return None
    host_key, client_key = home / "host_ed25519", home / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{client_key}.pub", home / "authorized_keys")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.makedirs("/run/sshd", exist_ok=True)
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {home}/authorized_keys\n"
        f"PidFile {home}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "MaxStartups 100:30:200\nMaxSessions 100\n")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(home / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    return proc, {"port": port, "user": user, "key": str(client_key)}


def measure(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--forks", type=int, default=5)
    parser.add_argument("--address-base", default="127.240.0.0")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fne-bench-"))
    lab_dir = work / "lab"
    subprocess.run([str(BIN / "fnelab"), "up", "--servers", "1", "--dir", str(lab_dir), "--address-base",
                    opts.address_base], check=True, capture_output=True)
    sshd = None
    try:
        url = json.loads((lab_dir / "lab.json").read_text())["servers"]["lls001"]["url"]
        (work / "sshd").mkdir()
        sshd = start_sshd(work / "sshd")
        hosts = {f"h{i:03d}": {"ansible_python_interpreter": sys.executable} for i in range(1, opts.hosts + 1)}
        (work / "local.yml").write_text(yaml.safe_dump(
            {"all": {"hosts": hosts, "vars": {"ansible_connection": "local", "fne_url": url}}}))
        variants = {"in-process": ("local.yml", []),
                    "shipped-local": ("local.yml", ["-e", "fne_offline_sync_in_process=false"])}
        if sshd:
            info = sshd[1]
            (work / "ssh.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": {
                "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": info["port"],
                "ansible_user": info["user"], "ansible_ssh_private_key_file": info["key"], "fne_url": url,
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}}))
            variants["shipped-ssh"] = ("ssh.yml", [])
        book = work / "play.yml"
        book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
            {"name": "info", "fne.offline_sync.server_info": {"url": "{{ fne_url }}"}}]}]))
        # The same playbook with no host: what ansible-playbook costs by itself, subtracted before dividing.
        (work / "none.yml").write_text(yaml.safe_dump({"all": {"hosts": {}}}))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        base: list[tuple[float, float]] = []
        for _ in range(opts.repeat):
            base.append(measure([str(BIN / "ansible-playbook"), "-i", str(work / "none.yml"), str(book)]))
            for name, (inv, extra) in variants.items():
                runs[name].append(measure([str(BIN / "ansible-playbook"), "-f", str(opts.forks), "-i",
                                           str(work / inv), str(book), *extra]))
        base_wall = statistics.median(w for w, _ in base)
        base_cpu = statistics.median(c for _, c in base)
        print(f"{opts.hosts} hosts x server_info, forks {opts.forks}, median of {opts.repeat}; "
              f"ansible-playbook with no host: {base_wall:.2f}s wall, {base_cpu:.2f}s CPU (subtracted)")
        print(f"{'path':<15}{'wall s':>9}{'CPU s':>9}{'wall/host ms':>15}{'CPU/host ms':>14}")
        per_host = {}
        for name, values in runs.items():
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            per_host[name] = ((wall - base_wall) / opts.hosts * 1000, (cpu - base_cpu) / opts.hosts * 1000)
            print(f"{name:<15}{wall:>9.2f}{cpu:>9.2f}{per_host[name][0]:>15.1f}{per_host[name][1]:>14.1f}")
        ref = per_host["in-process"]
        for name in runs:
            if name != "in-process":
                print(f"ratio {name} / in-process: wall {per_host[name][0] / ref[0]:.2f}x, "
                      f"controller CPU {per_host[name][1] / ref[1]:.2f}x")
    finally:
        if sshd:
            sshd[0].send_signal(signal.SIGTERM)
            sshd[0].wait(timeout=10)
        subprocess.run([str(BIN / "fnelab"), "down", "--dir", str(lab_dir)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
