"""Shared fixtures: a lab fleet per test, and a real sshd for the remote topology. Helpers are in fnetest.py."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess

import pytest
from fnelab.sshd import start_sshd
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


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 for this test session, accepting one generated key."""
    try:
        proc, login = start_sshd(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield login
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
