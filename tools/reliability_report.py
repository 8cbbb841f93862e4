"""docs/reliability.md from the figures the robustness suites record: each `reliability.record()` call
(tests/integration/reliability.py) appended one JSON line to the file FNE_RELIABILITY_OUT names. Per part: the
cases checked, the records checked, lost and duplicated, the secrets found, the fuzzing examples; with the date,
the commit, ansible-core and Python, and how to rerun each part.

    FNE_RELIABILITY_OUT=figures.jsonl .venv/bin/pytest ...   # the suites append their figures
    .venv/bin/python tools/reliability_report.py            # reads $FNE_RELIABILITY_OUT, writes docs/reliability.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "reliability.md"

# The parts in reliability.PARTS order, what each checks, and the command that reruns it.
PARTS = {
    "crash": ("SIGKILL of the playbook at every step boundary and inside every transfer, and of the lab; the rerun "
              "reaches `fnelab verify --complete`",
              ["tests/integration/test_robust_crash.py -k 'test_crash or test_lab_killed'"]),
    "fault": ("every lab fault on the license-server and back-office side, one server and many",
              ["tests/integration/test_robust_faults.py"]),
    "hostile": ("hostile servers: redirects, trickling and endless bodies, giant headers, 200 pages that are not "
                "what was asked",
                ["tests/integration/test_robust_faults.py", "tests/unit/test_client_hostile.py"]),
    "bad_input": ("bad settings and inventories, each with its exact error and nothing changed",
                  ["tests/integration/test_robust_input.py"]),
    "secrets": ("security on, both backends, -vvvv and ANSIBLE_DEBUG: the password and every token searched for "
                "everywhere", ["tests/integration/test_robust_secrets.py"]),
    "concurrency": ("runs at once on one store: each server locked, nothing done twice",
                    ["tests/integration/test_robust_crash.py -k test_concurrent"]),
    "store_loss": ("a crash, then the store (or a server's folder) wiped before the rerun",
                   ["tests/integration/test_robust_crash.py -k test_store_lost"]),
    "fuzz": ("hypothesis: headers, file names, JSON, acknowledgments, the mismatch text, times and URLs, and the "
             "real client against fuzzed answers", ["tests/unit/test_fuzz.py"]),
}
FIGURES = ("records_checked", "lost", "duplicated", "secrets_found", "examples")
HEADINGS = ("records checked", "lost", "duplicated", "secrets found", "examples")


def load(path: str) -> tuple[list[dict], int]:
    """The recorded lines, and how many could not be read (a line torn by a killed worker is skipped, counted)."""
    lines: list[dict] = []
    unreadable = 0
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                unreadable += 1
                continue
            if isinstance(line, dict) and isinstance(line.get("part"), str):
                lines.append(line)
            else:
                unreadable += 1
    return lines, unreadable


def summarize(lines: list[dict]) -> dict[str, dict]:
    """Per part: `cases` (distinct case names) and the sum of each figure; a figure no line carries is None."""
    parts: dict[str, dict] = {}
    for line in lines:
        entry = parts.setdefault(line["part"], {"cases": set(), **{figure: None for figure in FIGURES}})
        entry["cases"].add(str(line.get("case")))
        for figure in FIGURES:
            value = line.get(figure)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                entry[figure] = (entry[figure] or 0) + value
    return {part: {**entry, "cases": len(entry["cases"])} for part, entry in parts.items()}


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if float(value).is_integer() else f"{value:,.1f}"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def environment() -> dict:
    """The date, the commit (and whether the tree had local changes), ansible-core and Python."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    try:
        ansible = metadata.version("ansible-core")
    except metadata.PackageNotFoundError:
        ansible = "not installed"
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit, "ansible_core": ansible,
            "python": platform.python_version()}


def render(summary: dict[str, dict], env: dict, unreadable: int = 0) -> str:
    parts = list(PARTS) + sorted(set(summary) - set(PARTS))  # a part this tool does not know yet still shows
    out = ["# Reliability figures", "",
           f"From one run of the robustness suites on {env['date']}: commit {env['commit']}, ansible-core "
           f"{env['ansible_core']}, Python {env['python']}. Written by `tools/reliability_report.py` from the "
           "figures the suites record (`tests/integration/reliability.py`); rerun it rather than edit this file.",
           "", "| part | what is checked | cases | " + " | ".join(HEADINGS) + " |",
           "|---|---|---:|" + "---:|" * len(HEADINGS)]
    totals = {figure: None for figure in FIGURES}
    total_cases = 0
    for part in parts:
        what = PARTS.get(part, ("", []))[0]
        entry = summary.get(part)
        if entry is None:
            out.append(f"| {part} | {what} | not run |" + " |" * len(HEADINGS))
            continue
        total_cases += entry["cases"]
        cells = []
        for figure in FIGURES:
            if entry[figure] is not None:
                totals[figure] = (totals[figure] or 0) + entry[figure]
            cells.append(_number(entry[figure]))
        out.append(f"| {part} | {what} | {entry['cases']:,} | " + " | ".join(cells) + " |")
    out.append(f"| **all** | | **{total_cases:,}** | "
               + " | ".join(f"**{_number(totals[figure])}**" for figure in FIGURES) + " |")
    out.append("")
    not_run = [part for part in parts if part not in summary]
    if not_run:
        out.append(f"Not run in this run: {', '.join(not_run)}.")
    bad = {figure: totals[figure] for figure in ("lost", "duplicated", "secrets_found") if totals[figure]}
    if bad:
        listed = ", ".join(f"{figure.replace('_', ' ')} {_number(value)}" for figure, value in bad.items())
        out.append(f"**Failures recorded:** {listed}.")
    elif summary:
        out.append("Across every part run: no record lost, none duplicated, no secret found.")
    if unreadable:
        out.append(f"{unreadable} recorded line(s) could not be read (torn by a killed worker?) and are not "
                   "counted.")
    out += ["", "`-` : the part does not measure that figure. Records checked, lost and duplicated are the lab's own "
            "count (`fnelab verify`) after the case's reruns; a lab that serves case after case (crash, store_loss) "
            "is judged whole each time, but its records count once, with the case that created them; examples "
            "are hypothesis examples run.", "",
            "## How to rerun each part", "",
            "`make reliability` runs every part and rewrites this file. One part, with its figures:", "",
            "```sh", "export FNE_RELIABILITY_OUT=$PWD/reliability.jsonl; rm -f $FNE_RELIABILITY_OUT"]
    for part in PARTS:
        for target in PARTS[part][1]:
            out.append(f".venv/bin/pytest {target}    # {part}")
    out += [".venv/bin/python tools/reliability_report.py   # writes docs/reliability.md", "```", ""]
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=os.environ.get("FNE_RELIABILITY_OUT"),
                        help="the JSON lines the suites appended (default: $FNE_RELIABILITY_OUT)")
    parser.add_argument("--output", default=str(OUTPUT), help="default: docs/reliability.md")
    parser.add_argument("--date", help="the run's date (default: today, UTC)")
    parser.add_argument("--commit", help="the commit tested (default: git rev-parse --short HEAD)")
    args = parser.parse_args(argv)
    if not args.input:
        parser.error("no figures: set FNE_RELIABILITY_OUT or pass --input")
    if not os.path.exists(args.input):
        lines, unreadable = [], 0  # no suite recorded anything: every part "not run"
    else:
        lines, unreadable = load(args.input)
    env = environment()
    env.update({key: value for key, value in (("date", args.date), ("commit", args.commit)) if value})
    text = render(summarize(lines), env, unreadable)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"{args.output}: {len(lines)} case line(s), parts run: {', '.join(sorted(summarize(lines))) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
