"""One home for each concern, held by tests: the connection table is the one source of the modules' options, the
fleet's host variables and their docs; module_utils imports run downhill and never reach controller code."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.action import fleet as fleet_action  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _connection as connection  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._modules import MODULE_SPECS  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet  # noqa: E402

COLLECTION = "ansible_collections.fne.offline_sync.plugins"
MODULE_SIDES = {"generate": "lls", "process": "lls", "server_info": "lls", "upload": "backoffice"}


def module_doc_options(name: str) -> dict:
    """A module's documented options, with the collection's doc fragments merged in (as ansible-doc does)."""
    doc = yaml.safe_load(importlib.import_module(f"{COLLECTION}.modules.{name}").DOCUMENTATION)
    options: dict = {}
    for fragment in doc.get("extends_documentation_fragment", []):
        if not fragment.startswith("fne.offline_sync."):
            continue
        file, _dot, attribute = fragment[len("fne.offline_sync."):].partition(".")
        holder = importlib.import_module(f"{COLLECTION}.doc_fragments.{file}").ModuleDocFragment
        options.update(yaml.safe_load(getattr(holder, attribute.upper() or "DOCUMENTATION")).get("options") or {})
    options.update(doc.get("options") or {})
    return options


@pytest.mark.parametrize("name", sorted(MODULE_SIDES))
def test_module_docs_name_every_environment_fallback_of_the_table(name):
    """validate-modules (ansible-test sanity) holds types and defaults to the spec; this holds the env text."""
    options = module_doc_options(name)
    for setting in connection.SIDES[MODULE_SIDES[name]]:
        assert setting.option in MODULE_SPECS[name] and setting.option in options
        text = " ".join(options[setting.option]["description"])
        if setting.env:
            assert f"E({setting.env})" in text, f"{name}: {setting.option} does not document {setting.env}"


def role_option_sets() -> list[tuple[str, dict]]:
    """(role:entry point, options) of every role entry point that documents the fleet's host variables."""
    found = []
    for spec_file in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        for entry, spec in yaml.safe_load(spec_file.read_text())["argument_specs"].items():
            if "fne_lls_url" in (spec.get("options") or {}):
                found.append((f"{spec_file.parts[-3]}:{entry}", spec["options"]))
    return found


def test_role_argument_specs_document_every_host_variable_as_the_table_types_it():
    sets = role_option_sets()
    assert sets, "no role documents the fleet's host variables"
    for where, options in sets:
        for var, entry in fleet.HOST_SPEC.items():
            assert var in options, f"{where} does not document {var}"
            doc = options[var]
            assert doc.get("type", "str") == entry["type"], f"{where}: {var} type"
            assert doc.get("default") == entry.get("default"), f"{where}: {var} default"
            assert doc.get("choices") == entry.get("choices"), f"{where}: {var} choices"
            env = (entry.get("fallback") or (None, [None]))[1][0]
            text = " ".join(doc["description"]) if isinstance(doc["description"], list) else doc["description"]
            assert env is None or env in text, f"{where}: {var} does not name {env}"


def test_fleet_docs_name_every_host_variable_and_step():
    doc = yaml.safe_load(importlib.import_module(f"{COLLECTION}.modules.fleet").DOCUMENTATION)
    text = " ".join(doc["description"])
    for var in fleet.HOST_SPEC:
        assert f"C({var})" in text, f"the fleet docs do not name {var}"
    assert fleet_action.ARGUMENT_SPEC["step"]["choices"] == ["cycle"] + list(fleet.STEPS) + ["report"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_module_utils_imports_run_downhill_and_never_reach_controller_code():
    folder = REPO / "plugins" / "module_utils"
    graph = {}
    for path in folder.glob("*.py"):
        imports = _imports(path)
        assert not any("plugin_utils" in name or name.startswith("ansible.plugins") for name in imports), path.name
        assert all(not name.startswith(".") for name in imports), f"{path.name}: one import style (absolute)"
        graph[path.stem] = {name.rsplit(".", 1)[-1] for name in imports
                            if name.startswith(f"{COLLECTION}.module_utils")}

    def reaches(start: str, target: str, seen: set) -> bool:
        return any(dep == target or (dep not in seen and reaches(dep, target, seen | {dep})) for dep in graph[start])

    cycles = [name for name in graph if reaches(name, name, set())]
    assert not cycles, f"module_utils import cycles through {cycles}"


def test_design_layout_names_every_utility_file():
    """docs/design.md's layout is the map a reader uses to find each concern's one file: it names every one."""
    layout = (REPO / "docs" / "design.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    files = sorted(path.name for folder in ("module_utils", "plugin_utils")
                   for path in (REPO / "plugins" / folder).glob("_*.py"))
    assert [name for name in files if f"  {name} " not in layout] == []
