"""Many clients at once, as the collection's thread pool is: full cycles on every server in parallel, with the
judge, `state` and `activity` running against the same database meanwhile. Bounded, loopback only."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from labhelp import Api, upload

SERVERS, THREADS, ROUNDS = 24, 16, 3


def _cycle(lab, name: str) -> int:
    """ROUNDS full download-upload-acknowledge cycles on one server, with new records between them."""
    api = Api(lab, name)
    uploaded = 0
    for _ in range(ROUNDS):
        ack = None
        for message in api.drain():
            r = upload(lab, message)
            assert r.status_code == 200, r.text
            ack, uploaded = r.content, uploaded + 1
        if ack is not None:
            r = api.ack(ack)
            assert r.status_code == 200 and r.json()["processed"], r.text
    return uploaded


def test_parallel_cycles_with_readers_and_writers(lab_factory):
    lab = lab_factory(SERVERS, "--security", "0.5", "--https", "0.5", "--records", "30", "--page-size", "7")
    stop = threading.Event()
    reader_errors: list[str] = []

    def readers() -> None:
        # the CLI's own connections (verify, state) and a writer through the control endpoint, in a loop
        while not stop.is_set():
            for args in (("verify", "--dir", str(lab.dir), "--json"), ("state", "--dir", str(lab.dir), "--json"),
                         ("activity", "--dir", str(lab.dir), "--records", "2")):
                proc = lab.cli(*args, check=False)
                if args[0] == "verify":
                    report = json.loads(proc.stdout) if proc.stdout else {}
                    if not report.get("ok"):  # mid-run the judge must never see a violation either
                        reader_errors.append(proc.stdout[-2000:] + proc.stderr[-2000:])
                elif proc.returncode != 0:
                    reader_errors.append(proc.stderr[-2000:])
                if "locked" in proc.stderr:
                    reader_errors.append(proc.stderr[-2000:])

    watcher = threading.Thread(target=readers)
    watcher.start()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            uploaded = sum(pool.map(lambda n: _cycle(lab, n), list(lab.info["servers"])))
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert not reader_errors, reader_errors[0]
    assert uploaded >= SERVERS * 5  # 30 records in pages of 7
    # one last round picks up the records `activity` added meanwhile; then everything is in the back office
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: _cycle(lab, n), list(lab.info["servers"])))
    assert "database is locked" not in (lab.dir / "lab.log").read_text()
    assert "Traceback" not in (lab.dir / "lab.log").read_text()
    lab.verify(complete=True)
