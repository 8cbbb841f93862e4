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
    assert set(result["samples"]) == {"collection", "summary", "remote", "builtin", "floor", "hostfloor", "sshfloor",
                                      "tool", "inprocess", "shipped"}
    for contender, by in result["samples"].items():
        for scenario in ("full", "quiet"):
            (sample,) = by[scenario]
            assert sample["wall_s"] > 0 and sample["cpu_s"] > 0 and sample["peak_mib"] > 10, (contender, sample)
    assert set(result["ratios"]) >= {"collection_vs_floor_full", "collection_quiet_vs_full",
                                     "builtin_vs_collection_full", "builtin_vs_summary_full", "summary_vs_floor_full",
                                     "summary_quiet_vs_full", "summary_per_server_ms", "remote_vs_collection_full",
                                     "remote_per_server_ms", "remote_vs_sshfloor_full", "remote_vs_sshfloor_quiet",
                                     "collection_vs_hostfloor_full", "tool_vs_collection_full", "shipped_vs_inprocess"}
    assert "| 2 | collection |" in proc.stdout and "collection / floor" in proc.stdout


def test_bench_runs_only_the_contenders_asked(tmp_path):
    """--contenders summary,floor (the 10,000-server run): only those run, the ratios between them are given, the
    others' columns say "not run"."""
    out = tmp_path / "bench.json"
    proc = run([sys.executable, str(BENCH), "--sizes", "2", "--reps", "1", "--records", "3", "--contenders",
                "summary,floor", "--address-octet", "171", "--out", str(out)], check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["samples"]) == {"summary", "floor"}
    assert set(result["ratios"]) == {"summary_vs_floor_full", "summary_vs_floor_quiet", "summary_quiet_vs_full",
                                     "summary_per_server_ms"}
    assert "| 2 | summary |" in proc.stdout and "| 2 | collection |" not in proc.stdout and "not run" in proc.stdout
