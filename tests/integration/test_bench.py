"""`make bench` works: the harness at a tiny size, every contender and scenario measured, every full run judged by
`fnelab verify --complete` (the harness exits non-zero on a violation). No time is asserted: figures belong to
docs/performance.md, measured side by side by `make bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fnetest import run

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


def test_bench_harness_measures_every_contender(tmp_path):
    out = tmp_path / "bench.json"
    proc = run([sys.executable, str(BENCH), "--sizes", "2", "--reps", "1", "--records", "3", "--builtin-max", "2",
                "--address-octet", "170", "--out", str(out)], check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["servers"] == 2
    assert set(result["samples"]) == {"collection", "summary", "builtin", "floor"}
    for contender, by in result["samples"].items():
        for scenario in ("full", "quiet"):
            (sample,) = by[scenario]
            assert sample["wall_s"] > 0 and sample["cpu_s"] > 0 and sample["peak_mib"] > 10, (contender, sample)
    assert set(result["ratios"]) >= {"collection_vs_floor_full", "quiet_vs_full", "builtin_vs_collection_full",
                                     "summary_vs_floor_full", "summary_quiet_vs_full"}
    assert "| 2 | collection |" in proc.stdout and "collection / floor" in proc.stdout
