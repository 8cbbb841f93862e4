"""Shared fixtures: a lab fleet per test, and a real sshd for the remote topology. Helpers are in fnetest.py."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest
from fnetest import FNELAB, Lab


def pytest_collection_modifyitems(items) -> None:
    """The tests marked slow (a minute or more) first: both workers then end together, instead of one idling while
    the other runs a long test it met last (CI's time on two cores)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_lab_counter = itertools.count(1)
_session_offset = random.SystemRandom().randrange(250)


@pytest.fixture(scope="session", autouse=True)
def vendor_tools_built() -> None:
    """The stand-in vendor tools (Java) are compiled before any test runs them, lab or not (a no-op when they are
    up to date; `make venv` could not compile them before `make system-deps` installed a JDK). Through the
    command line: the lab lives in .venv, also when an older ansible-core's venv runs the tests."""
    subprocess.run([str(FNELAB), "build-tools"], check=True, capture_output=True)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


@pytest.fixture
def lab_factory(tmp_path):
    """Start labs on a loopback range of their own (tests run in parallel); always shut them down."""
    labs: list[Lab] = []

    def make(servers: int, *options: str, name: str = "lab") -> Lab:
        # Several pytest sessions may share this machine (same xdist worker names): start from a random range
        # and move on when another session's lab holds the addresses.
        for attempt in range(5):
            base = f"127.{100 + _worker_index()}.{(next(_lab_counter) + _session_offset) % 250}.0"
            lab = Lab(tmp_path / name, base)
            labs.append(lab)
            try:
                return lab.up(servers, *options)
            except AssertionError as exc:
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise
                shutil.rmtree(lab.dir, ignore_errors=True)
        raise AssertionError("unreachable")

    yield make
    for lab in labs:
        lab.down()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 for this test session, accepting one generated key."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        pytest.fail("sshd is not installed: run `make system-deps` (openssh-server)")
    home = tmp_path_factory.mktemp("sshd")
    os.chmod(home, 0o700)
    host_key, client_key = home / "host_ed25519", home / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = home / "authorized_keys"
    shutil.copy(f"{client_key}.pub", authorized)
    authorized.chmod(0o600)
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd insists on
    port = _free_port()
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PidFile {home}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"MaxStartups 100:30:200\nMaxSessions 100\nSubsystem sftp internal-sftp\n"
        "AcceptEnv FNE_*\n")  # a license server host's own settings (ssh -o SetEnv=FNE_LLS_URL=...)
    with open(home / "sshd.log", "w") as log:
        proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=log)
    for _attempt in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {(home / 'sshd.log').read_text()}")
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    yield {"host": "127.0.0.1", "port": port, "user": user, "key": str(client_key), "log": home / "sshd.log"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
