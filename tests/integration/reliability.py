"""Figures for docs/reliability.md. The robustness suites (tests/integration/test_robust_*.py) call record() for
every case they check; with FNE_RELIABILITY_OUT naming a file (`make reliability`) each call appends one JSON line,
and tools/reliability_report.py turns the lines into the document. Without it, record() does nothing."""

from __future__ import annotations

import fcntl
import json
import os

PARTS = ("crash", "fault", "hostile", "bad_input", "secrets", "concurrency", "store_loss", "fuzz")


def record(part: str, case: str, *, verified: dict | None = None, secrets_found: int = 0, **figures) -> None:
    """One checked case. `verified`: a `fnelab verify --json` report, whose per-server counts give the records
    checked, lost and duplicated; `case_records`: the records this case created, counted as its records checked
    when its lab served earlier cases too (their records count with them, once)."""
    assert part in PARTS, part
    if verified is not None:
        servers = verified["servers"].values()
        figures.update(records_checked=figures.get("case_records", sum(s["created"] for s in servers)),
                       lost=sum(s["missing"] for s in servers),
                       duplicated=sum(s["duplicated"] for s in servers))
    path = os.environ.get("FNE_RELIABILITY_OUT")
    if not path:
        return
    line = json.dumps({"part": part, "case": case, "secrets_found": secrets_found, **figures}, sort_keys=True)
    with open(path, "a", encoding="utf-8") as handle:  # pytest-xdist workers append to one file
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line + "\n")
