"""The supported ansible-core range is said in four places and tested by one Makefile list: they must agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def minors_make_test_runs() -> list[str]:
    """The ansible-core minors `make test` runs on: the Makefile's CORES and .venv's pin."""
    makefile = (REPO / "Makefile").read_text()
    cores = re.search(r"^CORES := (.*)$", makefile, re.M)[1].split()
    newest = re.search(r"^ansible-core==(\d+\.\d+)\.", (REPO / "requirements-dev.txt").read_text(), re.M)[1]
    return [core.split(":")[0].rsplit(".", 1)[0] for core in cores] + [newest]


def test_every_minor_from_the_floor_to_the_newest_is_tested():
    minors = minors_make_test_runs()
    numbers = [int(minor.split(".")[1]) for minor in minors]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), minors
    floor, newest = minors[0], minors[-1]
    assert yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["requires_ansible"] == f">={floor}.0"
    assert f"**ansible-core {floor} to {newest}**" in (REPO / "README.md").read_text()
    assert f"ansible-core {floor} - {newest}" in (REPO / "docs" / "design.md").read_text()
    for role in ("cycle", "schedule"):
        meta = yaml.safe_load((REPO / "roles" / role / "meta" / "main.yml").read_text())
        assert str(meta["galaxy_info"]["min_ansible_version"]) == floor, role
