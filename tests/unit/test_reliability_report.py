"""tools/reliability_report.py: the figures the suites record become docs/reliability.md's table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import reliability  # noqa: E402


def _tool():
    spec = importlib.util.spec_from_file_location("reliability_report", REPO / "tools" / "reliability_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _tool()


def _row(text: str, part: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {part} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_the_table_sums_each_part_and_says_which_were_not_run(tmp_path, monkeypatch):
    figures = tmp_path / "figures.jsonl"
    monkeypatch.setenv("FNE_RELIABILITY_OUT", str(figures))
    servers = {"lls01": {"created": 12, "missing": 0, "duplicated": 0},
               "lls02": {"created": 30, "missing": 0, "duplicated": 0}}
    # Through the suites' own recorder: the file holds what they write.
    reliability.record("crash", "SIGKILL at collect", verified={"servers": servers}, reruns=1)
    reliability.record("crash", "SIGKILL at upload", verified={"servers": {"lls01": servers["lls01"]}})
    reliability.record("fault", "gateway 502", verified={"servers": servers}, secrets_found=0, servers=2)
    reliability.record("secrets", "vvvv tool backend", secrets_found=2)
    reliability.record("fuzz", "parse_time", examples=300)
    reliability.record("fuzz", "parse_time", examples=100)  # a second xdist worker: same target, more examples
    reliability.record("fuzz", "generate", examples=25)
    with open(figures, "a", encoding="utf-8") as handle:
        handle.write('{"part": "bad_input", "case": "torn li\n')  # a worker killed mid-write
    out = tmp_path / "docs" / "reliability.md"

    assert report.main(["--output", str(out), "--date", "2026-01-02", "--commit", "abc1234"]) == 0
    text = out.read_text()

    headings = _row(text, "part")
    assert headings[2:] == ["cases", "records checked", "lost", "duplicated", "secrets found", "examples"]
    assert _row(text, "crash")[2:] == ["2", "54", "0", "0", "0", "-"]
    assert _row(text, "fault")[2:] == ["1", "42", "0", "0", "0", "-"]
    assert _row(text, "secrets")[2:] == ["1", "-", "-", "-", "2", "-"]
    assert _row(text, "fuzz")[2:] == ["2", "-", "-", "-", "0", "425"]
    for part in ("hostile", "bad_input", "concurrency", "store_loss"):
        assert _row(text, part)[2] == "not run"
    assert _row(text, "**all**")[2:] == ["**6**", "**96**", "**0**", "**0**", "**2**", "**425**"]
    assert "Not run in this run: hostile, bad_input, concurrency, store_loss." in text
    assert "**Failures recorded:** secrets found 2." in text
    assert "1 recorded line(s) could not be read" in text
    assert "2026-01-02" in text and "commit abc1234" in text and "ansible-core " in text and "Python 3." in text


def test_how_to_rerun_names_every_part_and_suite(tmp_path):
    figures = tmp_path / "figures.jsonl"
    figures.write_text(json.dumps({"part": "fuzz", "case": "scrub", "examples": 100, "secrets_found": 0}) + "\n")
    out = tmp_path / "reliability.md"
    report.main(["--input", str(figures), "--output", str(out), "--date", "2026-01-02", "--commit", "abc1234"])
    text = out.read_text()
    rerun = text.split("## How to rerun each part", 1)[1]
    assert "`make reliability` runs every part" in rerun
    for suite in ("tests/integration/test_robust_crash.py", "tests/integration/test_robust_faults.py",
                  "tests/integration/test_robust_input.py", "tests/integration/test_robust_secrets.py",
                  "tests/unit/test_fuzz.py", "tests/unit/test_client_hostile.py"):
        assert f".venv/bin/pytest {suite}" in rerun
    for part in reliability.PARTS:
        assert f"# {part}" in rerun and _row(text, part)
    assert "Across every part run: no record lost, none duplicated, no secret found." in text


def test_no_figures_at_all_is_every_part_not_run(tmp_path):
    out = tmp_path / "reliability.md"
    report.main(["--input", str(tmp_path / "missing.jsonl"), "--output", str(out), "--date", "2026-01-02"])
    text = out.read_text()
    assert all(_row(text, part)[2] == "not run" for part in reliability.PARTS)
    assert "Failures recorded" not in text and "Across every part" not in text


def test_no_input_named_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("FNE_RELIABILITY_OUT", raising=False)
    with pytest.raises(SystemExit):
        report.main(["--output", str(tmp_path / "x.md")])


def test_the_tool_knows_every_part_the_recorder_accepts():
    assert tuple(report.PARTS) == reliability.PARTS
