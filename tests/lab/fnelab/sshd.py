"""A private OpenSSH server on 127.0.0.1 that accepts one generated key: the license server hosts of the remote
topology, for the tests (tests/conftest.py) and the benchmarks (benchmarks/bench.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def start_sshd(home: Path) -> tuple[subprocess.Popen, dict]:
    """sshd with its keys, configuration and log in ``home``; the process and how to log in (host, port, user,
    key, log). RuntimeError when sshd is not installed or does not start."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        raise RuntimeError("sshd is not installed: run `make system-deps` (openssh-server)")
    os.chmod(home, 0o700)
    host_key, client_key = home / "host_ed25519", home / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = home / "authorized_keys"
    shutil.copy(f"{client_key}.pub", authorized)
    authorized.chmod(0o600)
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd insists on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PidFile {home}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "MaxStartups 100:30:200\nMaxSessions 100\nSubsystem sftp internal-sftp\n"
        "AcceptEnv FNE_*\n")  # a license server host's own settings (ssh -o SetEnv=FNE_LLS_URL=...)
    log = home / "sshd.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=handle)
    for _attempt in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not start: {log.read_text()}")
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return proc, {"host": "127.0.0.1", "port": port, "user": user, "key": str(client_key), "log": log}
