"""Big files: the lab's big messages hold together, and the big-file benchmark (benchmarks/big_files.py) works at a
tiny size: every step and path measured, every cycle judged (the harness exits non-zero on a wrong size, sha256,
purge or `fnelab verify --complete`). No figure is asserted: they belong to docs/performance.md."""

from __future__ import annotations

import json
import random
import sys

import requests
from fnetest import FNELAB, REPO, run

sys.path.insert(0, str(REPO / ".venv" / "collections"))
from ansible_collections.fne.offline_sync.plugins.module_utils import _client as client  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._connection import Connection  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._files import sha256_file  # noqa: E402

BENCH = REPO / "benchmarks" / "big_files.py"
MiB = 1 << 20


def test_a_big_message_streams_and_the_back_office_checks_every_byte(lab_factory, tmp_path):
    lab = lab_factory(1)
    lab.cli("activity", "--dir", str(lab.dir), "--records", "2", "--bulk-bytes", str(3 * MiB + 5))
    info = lab.info
    answer = requests.post(info["servers"]["lls001"]["url"] + "/api/1.0/sync_message/offline", timeout=60)
    message = answer.content
    assert answer.status_code == 200 and len(message) == int(answer.headers["Content-Length"]) > 3 * MiB + 5
    file = tmp_path / "m.fnesync"
    file.write_bytes(message)
    assert "Filler=3145733" in run([str(FNELAB), "decode", str(file)]).stdout.splitlines()

    def upload(body: bytes) -> requests.Response:
        return requests.post(info["backoffice"]["url"], data=body, verify=info["backoffice"]["ca_path"], timeout=60,
                             headers={"Content-Type": "application/octet-stream"})

    middle = len(message) // 2
    for bad, why in ((message[:middle] + bytes([message[middle] ^ 1]) + message[middle + 1:], "does not verify"),
                     (message[:-1], "wrong length"), (message + b"x", "wrong length")):
        refused = upload(bad)
        assert refused.status_code == 400 and why in refused.text, refused.text
    assert lab.state()["backoffice"]["messages_accepted"] == 0
    assert upload(message).status_code == 200
    state = lab.state()
    assert state["backoffice"]["messages_accepted"] == 1 and state["backoffice"]["records"] == 2
    # the next message is a small one again: the filler goes with one message only
    lab.activity(1)
    answer = requests.post(info["servers"]["lls001"]["url"] + "/api/1.0/sync_message/offline", timeout=60)
    assert answer.content.startswith(b"FNESYNC1") and len(answer.content) < 4096


def test_a_message_with_its_length_announced_is_taken_beyond_the_cap_of_an_unannounced_one(lab_factory, tmp_path,
                                                                                           monkeypatch):
    """A sync message streams to disk: with its Content-Length (where the body ends) it is taken at any size the
    folder has room for; MAX_MESSAGE (lowered to 2 MiB here) caps only an answer that could be endless."""
    monkeypatch.setattr(client, "MAX_MESSAGE", 2 * MiB)
    lab = lab_factory(1)
    lab.cli("activity", "--dir", str(lab.dir), "--records", "3", "--bulk-bytes", str(3 * MiB))
    result = client.LicenseServer(Connection(url=lab.info["servers"]["lls001"]["url"])).generate(str(tmp_path))
    (entry,) = result["files"]
    assert result["records"] == 3 and entry["size"] > 3 * MiB and sha256_file(entry["path"]) == entry["sha256"]
    assert lab.state()["servers"]["lls001"]["cursor"] == 3


def test_big_files_harness_measures_every_step_and_path(tmp_path):
    out = tmp_path / "big.json"
    sizes = [MiB, 8 * MiB]
    proc = run([sys.executable, str(BENCH), "--sizes", ",".join(map(str, sizes)), "--work", str(tmp_path),
                "--address-base", f"127.181.{random.randrange(250)}.0", "--out", str(out)], check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["sizes"] == sizes and report["paths"] == ["in-process", "shipped"] and report["correct"] is True
    for path in report["paths"]:
        seen = []
        for size in sizes:
            cycle = report["cycles"][path][str(size)]
            assert cycle["file_bytes"] > size and len(cycle["sha256"]) == 64
            assert set(cycle["steps"]) == {"generate", "upload", "process"}
            for sample in cycle["steps"].values():
                working = sample["worker_peak_mib" if path == "in-process" else "module_peak_mib"]
                assert sample["wall_s"] > 0 and sample["peak_mib"] >= working and sample["peak_mib"] > 10, sample
                seen.append(working)
        # the working process is polled: on a loaded machine a short step's worker can end between two polls
        assert max(seen) > 10, (path, seen)
        assert set(report["differences"][path]) == {"generate", "upload", "process"}
        assert all(set(by) == {"largest", "working"} for by in report["differences"][path].values())
    assert "| generate | in-process |" in proc.stdout and "| process | shipped |" in proc.stdout
    assert not list(tmp_path.glob("fne-big-files-*")), "the work folder is removed"
