"""The collection in its ecosystem: execution environment, ansible-lint, ansible-test sanity, galaxy-importer, the
changelog, the schedule role, the AWX credential types, and AWX-like runs (ansible-runner, sliced jobs)."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fnetest import BIN, REPO, ansible_env, run
from jinja2.sandbox import ImmutableSandboxedEnvironment

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
VERSION = GALAXY["version"]
TARBALL = f"{GALAXY['namespace']}-{GALAXY['name']}-{VERSION}.tar.gz"

LLS_ENV = {"FNE_LLS_URL", "FNE_LLS_USERNAME", "FNE_LLS_PASSWORD", "FNE_LLS_CA_PATH"}
BACKOFFICE_ENV = {"FNE_BACKOFFICE_URL", "FNE_BACKOFFICE_CA_PATH"}


def tools_env(**extra: str) -> dict[str, str]:
    """ansible_env() plus this venv's bin first on PATH (ansible-lint and galaxy-importer call ansible-* by name)."""
    env = ansible_env(**extra)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


# Project tooling that is neither collection content nor the collection's tests (all in galaxy.yml build_ignore):
# the CI entry point, benchmark and helper scripts, and the lab, a Python package of its own (tests/lab/pyproject.toml).
NOT_COLLECTION = (".ci/", "benchmarks/", "tools/", "tests/lab/")


def copy_collection(dest_root: Path, exclude: tuple[str, ...] = ()) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored) at a real collection path."""
    dest = dest_root / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if name.startswith(exclude):
            continue
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)])
    path = out / TARBALL
    assert path.is_file()
    return path


# -- execution environment ------------------------------------------------------------------------------------

def test_ee_build_context(tarball, tmp_path):
    """examples/execution-environment.yml gives a complete build context: Containerfile + _build/ files."""
    definition = yaml.safe_load((REPO / "examples" / "execution-environment.yml").read_text())
    assert definition["version"] == 3
    # The example ships the collection as the tarball `ansible-galaxy collection build` makes for this version.
    assert definition["additional_build_files"] == [{"src": TARBALL, "dest": "collections"}]
    assert definition["dependencies"]["galaxy"]["collections"] == [
        {"name": f"/build/collections/{TARBALL}", "type": "file"}]
    shutil.copy(REPO / "examples" / "execution-environment.yml", tmp_path)
    shutil.copy(tarball, tmp_path)
    context = tmp_path / "context"
    run([str(BIN / "ansible-builder"), "create", "--file", str(tmp_path / "execution-environment.yml"),
         "--context", str(context), "--output-filename", "Containerfile"], cwd=tmp_path)
    containerfile = (context / "Containerfile").read_text()
    assert f'ARG EE_BASE_IMAGE="{definition["images"]["base_image"]["name"]}"' in containerfile
    assert "ansible-core==2.21.5 ansible-runner==2.4.3" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    # the builder stage collects the collection's own requirements.txt / bindep.txt through introspection
    assert "introspect.py introspect --write-bindep" in containerfile
    build = context / "_build"
    assert (build / "collections" / TARBALL).read_bytes() == tarball.read_bytes()
    assert yaml.safe_load((build / "requirements.yml").read_text()) == definition["dependencies"]["galaxy"]
    for script in ("assemble", "install-from-bindep", "introspect.py", "check_galaxy", "check_ansible",
                   "pip_install", "entrypoint"):
        assert (build / "scripts" / script).is_file(), script


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_ee_introspect_lists_exactly_our_dependencies(tarball, tmp_path):
    """Installed as an EE build installs it, the collection declares exactly requirements.txt and bindep.txt."""
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
    collections = tmp_path / "collections"
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p", str(collections)])
    proc = run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(collections)])
    data = yaml.safe_load(proc.stdout)
    origin = "  # from collection fne.offline_sync"
    assert data["python"] == [line + origin for line in _requirement_lines(REPO / "requirements.txt")]
    assert data["system"] == [line + origin for line in _requirement_lines(REPO / "bindep.txt")]
    assert any(line.startswith("requests") for line in _requirement_lines(REPO / "requirements.txt"))


# -- lint, sanity, galaxy import, changelog ------------------------------------------------------------------

def test_ansible_lint_production_profile():
    """.ansible-lint asks for the production profile; the whole tree passes it."""
    config = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert config["profile"] == "production"
    proc = run([str(BIN / "ansible-lint"), "--nocolor"], check=False, cwd=REPO, env=tools_env(NO_COLOR="1"))
    assert proc.returncode == 0, f"ansible-lint failed:\n{proc.stdout[-15000:]}\n{proc.stderr[-5000:]}"
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout


# ansible-test bootstraps pip into each sanity virtual environment with a get-pip.py it downloads from
# ci-files.testing.ansible.com, which this network does not reach; it takes a copy from its cache instead. This
# stand-in installs pip with ensurepip, then the exact versions ansible-test asks for, from the package index.
GET_PIP_STAND_IN = textwrap.dedent('''\
    """Stand-in for get-pip.py: pip from ensurepip, then the requested packages from the package index."""
    import subprocess
    import sys

    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
''')


def _ansible_test_home() -> Path:
    """HOME for ansible-test: its sanity venvs are cached there between runs (inside .venv, so `make clean` goes)."""
    home = REPO / ".venv" / "ansible-test-home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    from ansible_test._internal.python_requirements import get_venv_packages  # noqa: PLC0415
    from ansible_test._internal.util import version_to_str  # noqa: PLC0415

    python = SimpleNamespace(version=version_to_str(sys.version_info[:2]))
    pip_version = get_venv_packages(python)["pip"]
    (cache / f"get_pip_{pip_version.replace('.', '_')}.py").write_text(GET_PIP_STAND_IN)
    return home


@pytest.mark.slow
def test_ansible_test_sanity(tmp_path):
    """`ansible-test sanity` on a copy of the tree at a real ansible_collections/fne/offline_sync path.

    --venv: every sanity test gets its own virtual environment with the exact tool versions ansible-test pins
    (downloaded from the package index once, cached in .venv/ansible-test-home). --python: the controller's
    Python (3.12 or 3.13); the module-side tests (compile, import) would otherwise ask for every Python from 3.9
    up, which this machine does not have.
    No test is skipped: none needs the network once the environments exist (pslint and shellcheck have no
    PowerShell or .sh files to check here). No tests/sanity/ignore file either: the tree is clean as it is.
    The copy leaves out NOT_COLLECTION: sanity holds collection content and its tests to Ansible's rules, which
    the CI script, the benchmarks and the lab (plain Python, not shipped) do not follow (shebangs, pylint names).
    """
    collection = copy_collection(tmp_path, exclude=NOT_COLLECTION)
    env = tools_env(HOME=str(_ansible_test_home()))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = run([str(BIN / "ansible-test"), "sanity", "--venv", "--python", python, "--color", "no"],
               check=False, cwd=collection, env=env, timeout=900)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("ERROR:", "FATAL:"))]
    assert proc.returncode == 0, "ansible-test sanity failed:\n" + "\n".join(errors[-200:])


def test_built_collection_holds_only_collection_content(tarball):
    """What `ansible-galaxy collection build` ships: no lab, no demo fleet (its inventory holds passwords), no
    caches, no development files."""
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = {name.split("/", 1)[0] for name in names}
    allowed = {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.rst", "LICENSE", "COPYING", ".ansible-lint",
               "awx", "bindep.txt", "changelogs", "docs", "examples", "meta", "playbooks", "plugins",
               "requirements.txt", "roles", "tests"}
    assert top <= allowed, sorted(top - allowed)
    assert all(name == "tests" or name.startswith("tests/sanity") for name in names if name.startswith("tests"))
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".sqlite", ".pem"))]


@pytest.mark.slow
def test_galaxy_importer(tarball, tmp_path):
    """galaxy-importer (as Galaxy / Automation Hub run it, minus the container) accepts the built collection with
    no ansible-lint finding and no warning."""
    config = tmp_path / "galaxy-importer.cfg"
    config.write_text(textwrap.dedent(f"""\
        [galaxy-importer]
        LOG_LEVEL_MAIN = INFO
        # Galaxy runs ansible-test in a container; the sanity test above runs it here.
        RUN_ANSIBLE_TEST = False
        RUN_ANSIBLE_DOC = True
        RUN_ANSIBLE_LINT = True
        OFFLINE_ANSIBLE_LINT = True
        CHECK_CHANGELOG = True
        CHECK_REQUIRED_TAGS = False
        ANSIBLE_LOCAL_TMP = {tmp_path / "ansible-tmp"}
        TMP_ROOT_DIR = {tmp_path}
        """))
    env = tools_env(GALAXY_IMPORTER_CONFIG=str(config), HOME=str(tmp_path))
    proc = run([sys.executable, "-m", "galaxy_importer.main", str(tarball)], check=False, env=env, timeout=600,
               cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"galaxy-importer failed:\n{output[-15000:]}"
    result = json.loads((tmp_path / "importer_result.json").read_text())
    assert result["metadata"]["namespace"] == "fne" and result["metadata"]["name"] == "offline_sync"
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "galaxy-importer warnings:\n" + "\n".join(warnings)
    names = {(c["content_type"], c["name"]) for c in result["contents"]}
    for module in ("generate", "upload", "process", "server_info"):
        assert ("module", module) in names
    assert ("role", "cycle") in names and ("role", "schedule") in names


def test_changelog(tmp_path):
    """Fragments lint clean, and a release of the current version renders a changelog from them."""
    run([str(BIN / "antsibull-changelog"), "lint"], cwd=REPO)
    run([str(BIN / "antsibull-changelog"), "lint-changelog-yaml", "changelogs/changelog.yaml"], cwd=REPO)
    collection = copy_collection(tmp_path)
    run([str(BIN / "antsibull-changelog"), "release", "--version", VERSION, "--date", "2026-11-25"],
        cwd=collection, env=tools_env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path)))
    rendered = (collection / "CHANGELOG.rst").read_text()
    assert f"v{VERSION}" in rendered and "Release Summary" in rendered and "Known Issues" in rendered
    changes = yaml.safe_load((collection / "changelogs" / "changelog.yaml").read_text())
    release = changes["releases"][VERSION]
    assert {m["name"] for m in release["modules"]} >= {"generate", "upload", "process", "server_info"}
    # a role is listed as new when its argument_specs entry point says `version_added: <this version>`
    roles = {p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()}
    assert {o["name"] for o in release.get("objects", {}).get("role", [])} == roles


# -- the cycle role: one source for the public variables -----------------------------------------------------

CYCLE = REPO / "roles" / "cycle"
# the cycle's entry points (a file tasks/NAME.yml each; the other task files are internal): the phases, each
# registering its result as fne_sync_<phase>_result, and the entry points made of them
CYCLE_PHASES = {"plan", "collect", "upload", "acknowledge", "recover", "collect_remote", "upload_remote",
                "acknowledge_remote", "recover_remote", "live"}
CYCLE_ENTRY_POINTS = CYCLE_PHASES | {"main", "api", "remote", "report", "status"}


def test_only_the_cycle_and_schedule_roles_exist():
    """collect, upload, acknowledge, recover and report are entry points of fne.offline_sync.cycle, not roles."""
    assert {p.name for p in (REPO / "roles").iterdir() if p.is_dir()} == {"cycle", "schedule"}
    proc = run([str(BIN / "ansible-doc"), "-t", "role", "-l", "fne.offline_sync"], env=ansible_env())
    listed = {line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("fne.offline_sync.")}
    assert listed == {"fne.offline_sync.cycle", "fne.offline_sync.schedule"}, proc.stdout


def test_cycle_role_doc_renders_every_entry_point():
    """`ansible-doc -t role fne.offline_sync.cycle` documents every entry point there is a task file for."""
    proc = run([str(BIN / "ansible-doc"), "-t", "role", "--json", "fne.offline_sync.cycle"], env=ansible_env())
    entry_points = json.loads(proc.stdout)["fne.offline_sync.cycle"]["entry_points"]
    assert set(entry_points) == CYCLE_ENTRY_POINTS
    assert {name for name in CYCLE_ENTRY_POINTS if (CYCLE / "tasks" / f"{name}.yml").is_file()} == CYCLE_ENTRY_POINTS
    for name, doc in entry_points.items():
        assert doc["short_description"] and doc["description"] and doc["options"], name
    assert entry_points["main"]["version_added"] == "0.1.0"  # the changelog lists the role as new from main
    text = run([str(BIN / "ansible-doc"), "-t", "role", "fne.offline_sync.cycle"], env=ansible_env()).stdout
    for name in CYCLE_ENTRY_POINTS:
        assert f"ENTRY POINT: {name} - " in text.replace("\x1b[1m", "").replace("\x1b[0m", ""), name


def _description(option: dict) -> str:
    text = option["description"]
    return " ".join(text) if isinstance(text, list) else text


def _cycle_specs() -> dict:
    return yaml.safe_load((CYCLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def test_cycle_role_entry_points_take_the_same_options():
    """Every entry point takes the same options; `plan`, which validates once per run (run_once, the first host's
    values), takes the play-wide ones and none of the per-host ones (each host's are validated where they are
    used, so that a typo fails that host alone)."""
    specs = _cycle_specs()
    options = specs["main"]["options"]
    for name, spec in specs.items():
        if name != "plan":
            assert spec["options"] == options, f"entry point {name} takes other options than main"
    play_wide = specs["plan"]["options"]
    assert all(play_wide[name] == options[name] for name in play_wide), "plan documents a play-wide option otherwise"
    per_host = set(options) - set(play_wide)
    assert {"fne_sync_topology", "fne_sync_timeout", "fne_sync_retries", "fne_sync_max_retry_wait", "fne_lls_url",
            "fne_lls_validate_certs", "fne_backoffice_url", "fne_backoffice_validate_certs"} <= per_host
    for name in per_host:
        assert _description(options[name]).startswith("Per host"), f"{name} is not documented as per host"
    for name in play_wide:
        assert not _description(play_wide[name]).startswith("Per host"), f"{name} is documented as per host"


def test_cycle_role_defaults_are_the_documented_ones():
    """defaults/main.yml holds the documented defaults, and the store default is written there only."""
    specs = _cycle_specs()
    options, play_wide = specs["main"]["options"], specs["plan"]["options"]
    defaults = yaml.safe_load((CYCLE / "defaults" / "main.yml").read_text())
    assert set(defaults) <= set(options), f"undocumented defaults: {set(defaults) - set(options)}"
    for name, value in defaults.items():
        if name == "fne_sync_store":  # an environment lookup, described rather than given as a default
            assert "FNE_SYNC_STORE" in value and "FNE_SYNC_STORE" in _description(options[name])
            assert "default" not in options[name]
        else:
            assert value == options[name].get("default"), f"{name}: defaults/main.yml {value!r}, spec default"
    # every play-wide option has its role default; per-host ones have none (the fleet reads hostvars, which never
    # hold role defaults), but the remote folder, which only the role's own per-host tasks read
    assert set(play_wide) <= set(defaults)
    assert set(defaults) - set(play_wide) == {"fne_sync_remote_path"}
    written = [p for p in REPO.glob("[rp]*/**/*.yml") if "'~/.local/share/fne_sync'" in p.read_text()]
    assert written == [CYCLE / "defaults" / "main.yml"], written


def test_cycle_role_tasks_read_documented_variables_and_hand_on_public_results():
    """Every variable the tasks read is documented; every result one entry point hands the next is a public
    variable named in that entry point's docs and the README; `__fne_*` variables stay inside the entry point that
    sets them (an internal task file may also read what every file that includes it sets); no playbook names one."""
    specs = _cycle_specs()
    options = specs["main"]["options"]
    tasks = {p.stem: p.read_text() for p in (CYCLE / "tasks").glob("*.yml")}
    constants_text = (CYCLE / "vars" / "main.yml").read_text()
    texts = [*tasks.values(), constants_text]
    used = {name for text in texts for name in re.findall(r"\b(fne_(?:sync|lls|backoffice)_\w+)", text)}
    registered = {name for text in texts for name in re.findall(r"register: (fne_\w+)", text)}
    # each result and the entry point whose docs name it: one per phase, and the api entry point's cycle task
    results = {f"fne_sync_{name}_result": name for name in CYCLE_PHASES} | {"fne_sync_cycle_result": "api"}
    assert registered == set(results)
    # not variables the role reads: the in-memory group of plan, the set_stats names of report, the failure remote
    # hands report (documented with the remote entry point)
    handed_on = {"fne_sync_remote", "fne_sync_report", "fne_sync_report_paths", "fne_sync_remote_failure"}
    undocumented = used - registered - handed_on - set(options)
    assert not undocumented, f"the tasks read undocumented variables: {undocumented}"
    readme = (CYCLE / "README.md").read_text()
    for result, entry_point in results.items():
        assert f"C({result})" in " ".join(specs[entry_point]["description"]), result
        assert f"`{result}`" in readme, result
    assert "C(fne_sync_remote_failure)" in " ".join(specs["remote"]["description"])
    assert "`fne_sync_remote_failure`" in readme

    def sets(text: str) -> set[str]:
        return set(re.findall(r"register: (__fne_\w+)", text)) | set(re.findall(r"^\s*(__fne_\w+):", text, re.M))

    constants = sets(constants_text)
    for name, text in tasks.items():
        allowed = sets(text) | constants
        if name not in CYCLE_ENTRY_POINTS:
            includers = [sets(other) for other in tasks.values() if f"{name}.yml" in other]
            assert includers, f"tasks/{name}.yml is neither an entry point nor included"
            allowed |= set.intersection(*includers)
        private = set(re.findall(r"__fne_\w+", text))
        assert private <= allowed, f"tasks/{name}.yml reads {private - allowed}, set elsewhere"
    for playbook in (REPO / "playbooks").glob("*.yml"):
        assert "__fne" not in playbook.read_text(), playbook


# -- the schedule role ----------------------------------------------------------------------------------------

def _schedule_book(tmp_path: Path) -> Path:
    playbook = tmp_path / "schedule.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Install the schedule
          hosts: localhost
          gather_facts: false
          roles:
            - role: fne.offline_sync.schedule
        """))
    return playbook


def _schedule_vars(tmp_path: Path, method: str, **variables) -> dict:
    return {"fne_sync_schedule_root": str(tmp_path / "root"), "fne_sync_schedule_method": method,
            "fne_sync_schedule_inventory": ["/etc/fne/inventory.yml", "/etc/fne/more inventory.yml"],
            "fne_sync_schedule_ansible_playbook": str(BIN / "ansible-playbook"), **variables}


def _schedule(tmp_path: Path, method: str, check: bool = False, **variables) -> subprocess.CompletedProcess:
    return run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,", str(_schedule_book(tmp_path)),
                "-e", json.dumps(_schedule_vars(tmp_path, method, **variables)), *(["--check"] if check else [])],
               env=tools_env())


def _recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    line = next(x for x in proc.stdout.splitlines() if x.startswith("localhost") and "ok=" in x)
    return {k: int(v) for k, v in (part.split("=") for part in line.split(":", 1)[1].split())}


def test_schedule_role_systemd(tmp_path):
    secret = "pa$$ 'word\""
    env_vars = {"FNE_LLS_USERNAME": "admin", "FNE_LLS_PASSWORD": secret}
    root = tmp_path / "root"
    # check mode first: reports changes, writes nothing
    checked = _schedule(tmp_path, "systemd", check=True, fne_sync_schedule_environment=env_vars)
    assert _recap(checked)["changed"] > 0 and not root.exists()
    first = _schedule(tmp_path, "systemd", fne_sync_schedule_environment=env_vars,
                      fne_sync_schedule_on_calendar="Mon..Fri *-*-* 03:30:00",
                      fne_sync_schedule_randomized_delay=600)
    assert secret not in first.stdout  # the environment file task hides its values
    units = root / "etc" / "systemd" / "system"
    service = (units / "fne-offline-sync.service").read_text()
    timer = (units / "fne-offline-sync.timer").read_text()
    assert "Type=oneshot" in service and "ExecStart=/usr/local/bin/fne-offline-sync" in service
    assert "SuccessExitStatus=75" in service and "User=root" in service
    assert "OnCalendar=Mon..Fri *-*-* 03:30:00" in timer and "Persistent=true" in timer
    assert "RandomizedDelaySec=600" in timer and "WantedBy=timers.target" in timer
    assert not (root / "etc" / "cron.d" / "fne-offline-sync").exists()
    environment = root / "etc" / "fne-offline-sync" / "environment"
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    sourced = subprocess.run(["bash", "-c", f'set -a; . "{environment}"; printf %s "$FNE_LLS_PASSWORD"'],
                             capture_output=True, text=True, check=True).stdout
    assert sourced == secret
    # idempotent
    assert _recap(_schedule(tmp_path, "systemd", fne_sync_schedule_environment=env_vars,
                            fne_sync_schedule_on_calendar="Mon..Fri *-*-* 03:30:00",
                            fne_sync_schedule_randomized_delay=600))["changed"] == 0
    analyze = shutil.which("systemd-analyze")
    if analyze and Path("/usr/lib/systemd/system/sysinit.target").exists():
        # verify inside the rendered root (ExecStart must exist there), with the system's own units beside ours
        shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
        proc = subprocess.run([analyze, "verify", f"--root={root}", str(units / "fne-offline-sync.timer"),
                               str(units / "fne-offline-sync.service")], capture_output=True, text=True, check=False)
        ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "fne-offline-sync" in line]
        assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr
        subprocess.run([analyze, "calendar", "Mon..Fri *-*-* 03:30:00"], check=True, capture_output=True)
    # absent removes everything but the logs
    _schedule(tmp_path, "systemd", fne_sync_schedule_state="absent")
    assert not (units / "fne-offline-sync.timer").exists() and not environment.exists()
    assert not (root / "usr" / "local" / "bin" / "fne-offline-sync").exists()


def test_schedule_role_cron(tmp_path):
    units = tmp_path / "root" / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in ("fne-sync-eu.timer", "fne-sync-eu.service"):  # left by an earlier systemd install
        (units / unit).write_text("[Unit]\n")
    _schedule(tmp_path, "cron", fne_sync_schedule_name="fne-sync-eu", fne_sync_schedule_user="fnesync",
              fne_sync_schedule_cron={"minute": "*/30", "hour": "1-5"})
    root = tmp_path / "root"
    lines = [x for x in (root / "etc" / "cron.d" / "fne-sync-eu").read_text().splitlines()
             if x and not x.startswith("#") and "=" not in x.split()[0]]
    assert lines == ["*/30 1-5 * * * fnesync /usr/local/bin/fne-sync-eu --quiet"]
    assert not list(units.iterdir())  # one scheduler at a time
    wrapper = (root / "usr" / "local" / "bin" / "fne-sync-eu").read_text()
    assert wrapper.startswith("#!/bin/bash\n# Ansible managed")
    assert "-i /etc/fne/inventory.yml" in wrapper and "-i '/etc/fne/more inventory.yml'" in wrapper
    subprocess.run(["bash", "-n", str(root / "usr" / "local" / "bin" / "fne-sync-eu")], check=True)


@pytest.mark.parametrize(("calendar", "line"), [
    ("*-*-* 01:30:00", "30 1 * * *"), ("01:30", "30 1 * * *"), ("Mon..Fri *-*-* 03:05", "5 3 * * 1-5"),
    ("Sat,Sun 23:00:00", "0 23 * * 6,7"), ("daily", "0 0 * * *"), ("hourly", "0 * * * *"),
    ("*-*-* 02:15:30", None), ("*-*-01 04:00:00", None), ("Mon *-*-* 00/2:00", None)])
def test_schedule_role_cron_follows_on_calendar(tmp_path, calendar, line):
    """Where cron replaces systemd, the timer's OnCalendar is translated exactly, or the role refuses it."""
    proc = _schedule(tmp_path, "cron", check=False, fne_sync_schedule_on_calendar=calendar) if line else run(
        [str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,", str(_schedule_book(tmp_path)),
         "-e", json.dumps(_schedule_vars(tmp_path, "cron", fne_sync_schedule_on_calendar=calendar))],
        check=False, env=tools_env())
    cron = tmp_path / "root" / "etc" / "cron.d" / "fne-offline-sync"
    if line:
        entries = [x for x in cron.read_text().splitlines() if x and not x.startswith("#") and "=" not in x.split()[0]]
        assert entries == [f"{line} root /usr/local/bin/fne-offline-sync --quiet"], entries
    else:
        assert proc.returncode != 0 and not cron.exists(), proc.stdout
        assert f"fne_sync_schedule_on_calendar '{calendar}' has no exact cron equivalent" in proc.stdout
        assert "fne_sync_schedule_cron" in proc.stdout


def test_schedule_role_rejects_bad_input(tmp_path):
    playbook = tmp_path / "bad.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Bad input
          hosts: localhost
          gather_facts: false
          roles:
            - role: fne.offline_sync.schedule
              vars:
                fne_sync_schedule_inventory: [/etc/fne/inventory.yml]
                fne_sync_schedule_name: "fne.sync"
                fne_sync_schedule_root: "{{ playbook_dir }}/root"
        """))
    proc = run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,", str(playbook)], check=False,
               env=tools_env())
    assert proc.returncode != 0 and "fne_sync_schedule_name must be letters" in proc.stdout
    playbook.write_text(playbook.read_text().replace('fne_sync_schedule_name: "fne.sync"',
                                                     "fne_sync_schedule_method: anacron"))
    proc = run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,", str(playbook)], check=False,
               env=tools_env())
    assert proc.returncode != 0 and "fne_sync_schedule_method" in proc.stdout and "anacron" in proc.stdout


def test_schedule_wrapper_runs_the_sync(lab_factory, tmp_path):
    """The installed wrapper as the timer runs it: fne.offline_sync.sync against the lab with the environment
    file's settings, one log per run, a second run kept out by the lock (exit 75), old logs pruned."""
    lab = lab_factory(2, "--records", "20", name="scheduled")
    logs, lock, store = tmp_path / "logs", tmp_path / "sync.lock", tmp_path / "store"
    _schedule(tmp_path, "cron", fne_sync_schedule_inventory=[str(lab.inventory)],
              fne_sync_schedule_log_dir=str(logs), fne_sync_schedule_lock_file=str(lock),
              fne_sync_schedule_log_keep=2, fne_sync_schedule_workdir=str(tmp_path),
              fne_sync_schedule_environment={"FNE_SYNC_STORE": str(store),
                                             "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
                                             "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    root = tmp_path / "root"
    wrapper = root / "usr" / "local" / "bin" / "fne-offline-sync"
    # the files were rendered under a prefix: point the wrapper at the environment file there
    text = wrapper.read_text()
    assert "env_file=/etc/fne-offline-sync/environment\n" in text
    wrapper.write_text(text.replace("env_file=/etc/", f"env_file={root}/etc/"))
    # cron's environment: next to nothing
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    quiet = subprocess.run([str(wrapper), "--quiet"], capture_output=True, text=True, env=env, check=False)
    (first_log,) = logs.glob("fne-offline-sync-*.log")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", first_log.read_text()[-5000:]
    assert "PLAY RECAP" in first_log.read_text() and "exit code 0" in first_log.read_text()
    assert (store / "lls001").is_dir() and (store / "lls002").is_dir()
    lab.verify(complete=True)
    # a run while another holds the lock does nothing and says so
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = subprocess.run([str(wrapper)], capture_output=True, text=True, env=env, check=False)
    assert busy.returncode == 75 and "another run holds" in busy.stderr
    lab.activity(5)
    loud = subprocess.run([str(wrapper)], capture_output=True, text=True, env=env, check=False)
    assert loud.returncode == 0 and "PLAY RECAP" in loud.stdout
    assert len(list(logs.glob("fne-offline-sync-*.log"))) == 2  # log_keep=2: the oldest went
    lab.verify(complete=True)
    # a failing run: cron mails one line
    lab.fault("backoffice", "down")
    lab.activity(5)
    failed = subprocess.run([str(wrapper), "--quiet"], capture_output=True, text=True, env=env, check=False)
    assert failed.returncode not in (0, 75) and failed.stdout == ""
    assert failed.stderr.startswith("fne-offline-sync: fne.offline_sync.sync failed with exit code")


# -- AWX credential types -------------------------------------------------------------------------------------

def load_credential_type(name: str) -> dict:
    return yaml.safe_load((REPO / "awx" / "credential_types" / f"{name}.yml").read_text())


def awx_inject(credential_type: dict, inputs: dict, private_data_dir: Path) -> dict[str, str]:
    """Render a credential type's injectors the way AWX does (awx/main/models/credential.py, inject_credential):
    an empty or missing input is undefined, every file injector is written to PDD/env/, every env injector is set."""
    fields = {f["id"]: f for f in credential_type["inputs"]["fields"]}
    assert set(inputs) <= set(fields)
    tower = SimpleNamespace()
    namespace: dict = {"tower": tower}
    namespace.update({k: v for k, v in inputs.items() if v != ""})
    sandbox = ImmutableSandboxedEnvironment()
    (private_data_dir / "env").mkdir(parents=True, exist_ok=True)
    for label, template in credential_type["injectors"].get("file", {}).items():
        fd, path = tempfile.mkstemp(dir=private_data_dir / "env")
        with os.fdopen(fd, "w") as f:
            f.write(sandbox.from_string(template).render(**namespace))
        os.chmod(path, 0o600)
        if "." not in label:
            tower.filename = path
        else:
            if not hasattr(tower, "filename"):
                tower.filename = SimpleNamespace()
            setattr(tower.filename, label.split(".", 1)[1], path)
    return {var: sandbox.from_string(template).render(**namespace)
            for var, template in credential_type["injectors"]["env"].items()}


@pytest.mark.parametrize("name, expected_env", [("fne_license_server", LLS_ENV),
                                                ("fne_backoffice", BACKOFFICE_ENV)])
def test_awx_credential_type_definitions(name, expected_env, tmp_path):
    credential_type = load_credential_type(name)
    assert set(credential_type) == {"name", "description", "kind", "inputs", "injectors"}
    assert credential_type["kind"] == "cloud"
    fields = {f["id"]: f for f in credential_type["inputs"]["fields"]}
    for field in fields.values():
        assert {"id", "label", "type"} <= set(field) and field["type"] == "string"
    assert set(credential_type["inputs"].get("required", [])) <= set(fields)
    if "password" in fields:
        assert fields["password"].get("secret") is True
    assert fields["ca"].get("multiline") is True
    # env injectors only (AWX refuses ANSIBLE_* and friends there), exactly the variables the modules read
    assert set(credential_type["injectors"]) == {"env", "file"}
    assert set(credential_type["injectors"]["env"]) == expected_env
    assert set(credential_type["injectors"]["file"]) == {"template.ca"}
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    full = {k: ("https://x.invalid:7070" if k == "url" else pem if k == "ca" else f"v-{k}") for k in fields}
    env = awx_inject(credential_type, full, tmp_path / "full")
    ca_var = next(v for v in expected_env if v.endswith("_CA_PATH"))
    assert Path(env[ca_var]).read_text() == pem and Path(env[ca_var]).parent == tmp_path / "full" / "env"
    assert env[next(v for v in expected_env if v.endswith("_URL"))] == "https://x.invalid:7070"
    # optional fields left empty render as empty strings: the modules must take an empty FNE_* as unset
    minimal = {k: full[k] for k in credential_type["inputs"].get("required", [])}
    env = awx_inject(credential_type, minimal, tmp_path / "minimal")
    assert env[ca_var] == ""
    assert set(env) == expected_env


# -- AWX-like runs: ansible-runner, private data dirs, job slicing ----------------------------------------------


def awx_slices(inventory: dict, count: int) -> list[dict]:
    """Slice an inventory as AWX does (Inventory.get_script_data): hosts ordered by name, slice k (1-based) gets
    hosts[k-1::count]; every group is kept, with only that slice's hosts; group vars stay."""
    groups: dict[str, dict] = {}
    hostvars: dict[str, dict] = {}

    def walk(name: str, node: dict) -> None:
        node = node or {}
        groups[name] = {"hosts": sorted(node.get("hosts") or {}), "vars": node.get("vars") or {},
                        "children": sorted(node.get("children") or {})}
        for host, hvars in (node.get("hosts") or {}).items():
            hostvars.setdefault(host, {}).update(hvars or {})
        for child, sub in (node.get("children") or {}).items():
            walk(child, sub)

    walk("all", inventory["all"])
    hosts = sorted(hostvars)
    slices = []
    for k in range(1, count + 1):
        mine = set(hosts[k - 1::count])
        data: dict = {"_meta": {"hostvars": {h: hostvars[h] for h in sorted(mine)}}}
        for name, group in groups.items():
            data[name] = {"hosts": [h for h in group["hosts"] if h in mine], "vars": group["vars"],
                          "children": group["children"]}
        slices.append(data)
    return slices


@pytest.fixture
def awx_jobs():
    """Where the jobs' private data dirs go: short paths under /tmp as AWX makes them (/tmp/awx_<id>_xxxx), since
    each job's SSH control sockets live in its private data dir and a socket path may not exceed 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="awx_"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def private_data_dir(root: Path, job_id: int, inventory: dict, survey: dict, credentials: list[tuple[str, dict]],
                     limit: str | None = None) -> Path:
    """A private data dir laid out as AWX lays it out for ansible-runner."""
    pdd = root / f"awx_{job_id}"
    shutil.copytree(REPO / "awx" / "project", pdd / "project")
    (pdd / "inventory").mkdir(parents=True)
    hosts = pdd / "inventory" / "hosts"  # AWX writes an executable inventory script
    hosts.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(json.dumps(inventory))})\n")
    hosts.chmod(0o700)
    env: dict[str, str] = {}
    for name, inputs in credentials:
        env.update(awx_inject(load_credential_type(name), inputs, pdd))
    (pdd / "cp").mkdir()
    env.update(
        JOB_ID=str(job_id), AWX_HOST="https://awx.example.invalid", ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
        ANSIBLE_PARAMIKO_RECORD_HOST_KEYS="False", ANSIBLE_SSH_CONTROL_PATH_DIR=str(pdd / "cp"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOWS="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False",
    )
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(env))
    # AWX's own variables are safe; every string a survey answer carries is marked !unsafe
    lines = [f"awx_job_id: {job_id}", "awx_job_launch_type: scheduled", "awx_job_template_name: fne offline sync",
             f"tower_job_id: {job_id}"]
    for key, value in survey.items():
        lines.append(f"{key}: !unsafe {json.dumps(value)}" if isinstance(value, str) else
                     f"{key}: {json.dumps(value)}")
    (pdd / "env" / "extravars").write_text("\n".join(lines) + "\n")
    if limit:
        (pdd / "env" / "cmdline").write_text(f"--limit {limit}")
    return pdd


def runner(pdd: Path, playbook: str = "sync.yml") -> dict:
    """`ansible-runner run` as AWX starts a job (process isolation off: the EE is this venv). Returns rc, the
    hosts each event names, failures, and set_stats data."""
    env = ansible_env()
    for key in [k for k in env if k.startswith("ANSIBLE_")]:
        del env[key]  # only what AWX puts in env/envvars
    proc = subprocess.run([str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", "job"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    artifacts = pdd / "artifacts" / "job"
    events = [json.loads(p.read_text()) for p in sorted((artifacts / "job_events").glob("*.json"))]
    for event in events:  # a prompt's echo (the Vault password) is a verbose event without data
        event.setdefault("event_data", {})
    hosts = {e["event_data"]["host"] for e in events if e["event_data"].get("host")}
    failed = [e for e in events if e["event"] in ("runner_on_failed", "runner_on_unreachable")
              and not e["event_data"].get("ignore_errors")]
    stats = next((e["event_data"] for e in events if e["event"] == "playbook_on_stats"), {})
    stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else proc.stdout
    return {"rc": int((artifacts / "rc").read_text()), "hosts": hosts, "failed": failed, "stats": stats,
            "stdout": stdout}


def assert_report_covers(result: dict, hosts: set[str]) -> None:
    """The summary a job hands to the next workflow node (set_stats) speaks of exactly this job's hosts."""
    report = result["stats"].get("artifact_data", {}).get("fne_sync_report")
    assert report, f"no set_stats fne_sync_report in the stats event: {result['stats']}"
    assert set(report["servers"]) == hosts and report["totals"]["failed"] == 0, report["totals"]


def store_snapshot(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): p.read_bytes().hex() if p.is_file() else "dir"
            for p in sorted(store.rglob("*")) if not p.name.startswith(".lock")}


def strip_secrets(inventory: dict, *keys: str) -> dict:
    inventory = json.loads(json.dumps(inventory))
    group = inventory["all"]["children"]["license_servers"]
    for hvars in group["hosts"].values():
        for key in keys:
            hvars.pop(key, None)
    for key in keys:
        group.get("vars", {}).pop(key, None)
    return inventory


def test_awx_job_with_injected_credentials(lab_factory, awx_jobs, tmp_path):
    """One job, everything from credential types: the inventory carries only each server's URL."""
    lab = lab_factory(1, "--security", "--https", "--records", "40", name="awx1")
    info = lab.info
    (server,) = info["servers"].values()
    ca = Path(info["ca_path"]).read_text()
    inventory = strip_secrets(yaml.safe_load(lab.inventory.read_text()), "fne_lls_username", "fne_lls_password",
                              "fne_lls_ca_path", "fne_backoffice_url", "fne_backoffice_ca_path")
    store = tmp_path / "store"
    credentials = [("fne_license_server", {"username": server["username"], "password": server["password"],
                                           "ca": ca}),
                   ("fne_backoffice", {"url": info["backoffice"]["url"], "ca": ca})]
    pdd = private_data_dir(awx_jobs, 101, awx_slices(inventory, 1)[0], {"fne_sync_store": str(store)}, credentials)
    result = runner(pdd)
    assert result["rc"] == 0 and not result["failed"], result["stdout"][-8000:]
    assert server["password"] not in result["stdout"]
    assert_report_covers(result, set(info["servers"]))
    lab.verify(complete=True)


@pytest.mark.slow
def test_awx_sliced_job(lab_factory, sshd, awx_jobs, tmp_path):
    """A sliced job template: two slices one after the other, then two slices at once (each with its own SSH
    control path, as AWX gives every job), then an empty slice. Half the fleet is remote-topology (real SSH)."""
    lab = lab_factory(6, "--security", "0.5", "--https", "0.5", "--records", "30", name="awxslice")
    info = lab.info
    ca = Path(info["ca_path"]).read_text()
    # per-host admin logins stay in the inventory (vaulted host vars in real life); the back office comes from
    # its credential type
    inventory = strip_secrets(yaml.safe_load(lab.inventory.read_text()), "fne_backoffice_url",
                              "fne_backoffice_ca_path")
    for host in ("lls001", "lls002", "lls003"):
        inventory["all"]["children"]["license_servers"]["hosts"][host].update(
            fne_sync_topology="remote", fne_sync_remote_path=str(tmp_path / "hosts" / host / "fnesync"),
            ansible_host=sshd["host"], ansible_port=sshd["port"], ansible_user=sshd["user"],
            ansible_ssh_private_key_file=sshd["key"], ansible_python_interpreter=sys.executable)
    store = tmp_path / "store"
    # a survey: integers stay integers, every string (a multiple-choice answer too) comes as !unsafe
    survey = {"fne_sync_store": str(store), "fne_sync_workers": 2, "fne_sync_auto_recover": "true"}
    credentials = [("fne_backoffice", {"url": info["backoffice"]["url"], "ca": ca})]
    names = sorted(info["servers"])

    # one after the other: each slice changes only its own hosts' part of the store
    for k, data in enumerate(awx_slices(inventory, 2), start=1):
        mine = set(names[k - 1::2])
        assert set(data["_meta"]["hostvars"]) == mine
        before = store_snapshot(store) if store.exists() else {}
        result = runner(private_data_dir(awx_jobs, 200 + k, data, survey, credentials))
        assert result["rc"] == 0 and not result["failed"], result["stdout"][-8000:]
        assert result["hosts"] <= mine | {"localhost"}, result["hosts"]
        after = store_snapshot(store)
        touched = {path.split("/", 1)[0] for path in set(before) | set(after) if before.get(path) != after.get(path)}
        # the fleet's report files, rewritten by every run (every slice): report.{json,html}, reports/, metrics;
        # the folder of the journals of downloads in flight (each run's own file, gone at its end)
        assert touched - {"report.json", "report.html", "reports", "fne_sync.prom", ".in_flight"} == mine, \
            (k, touched)
        assert not list((store / ".in_flight").iterdir()), "a finished run left its journal"
        assert_report_covers(result, mine)
    lab.verify(complete=True)

    # two slices at once, on fresh activity, in fleet-summary mode (the survey's multiple choice, !unsafe "false")
    lab.activity(25)
    slices = awx_slices(inventory, 2)
    pdds = [private_data_dir(awx_jobs, 300 + k, data, dict(survey, fne_sync_host_results="false"), credentials)
            for k, data in enumerate(slices, start=1)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(runner, pdds))
    for k, result in enumerate(results, start=1):
        mine = set(names[k - 1::2])
        assert result["rc"] == 0 and not result["failed"], result["stdout"][-8000:]
        assert result["hosts"] <= mine | {"localhost"}, result["hosts"]
        assert f"{len(mine)} server(s): {len(mine)} ok ({len(mine)} changed), 0 failed" in result["stdout"], \
            result["stdout"][-8000:]
        assert_report_covers(result, mine)
    lab.verify(complete=True)
    # no file was handled by two slices: every sync file was fetched once, into its own server's store
    for name in names:
        events = [json.loads(line) for line in (store / name / "ledger.jsonl").read_text().splitlines()]
        fetched = [e["file"] for e in events if e["event"] == "fetched"]
        assert len(fetched) == len(set(fetched)), (name, fetched)

    # an empty slice (a group whose hosts all went to other slices) is a successful no-op
    empty = {"_meta": {"hostvars": {}}, "all": {"hosts": [], "vars": {}, "children": ["license_servers"]},
             "license_servers": {"hosts": [], "vars": slices[0]["license_servers"]["vars"], "children": []}}
    before = store_snapshot(store)
    result = runner(private_data_dir(awx_jobs, 400, empty, survey, credentials))
    assert result["rc"] == 0 and not result["failed"], result["stdout"][-8000:]
    assert store_snapshot(store) == before


def test_awx_force_resync_job_needs_a_limit(lab_factory, awx_jobs, tmp_path):
    """The forced-resync job template prompts for a limit: without one the playbook refuses, with one it works
    only the named server."""
    lab = lab_factory(2, "--records", "20", name="awxforce")
    info = lab.info
    inventory = strip_secrets(yaml.safe_load(lab.inventory.read_text()), "fne_backoffice_url",
                              "fne_backoffice_ca_path")
    survey = {"fne_sync_store": str(tmp_path / "store")}
    credentials = [("fne_backoffice", {"url": info["backoffice"]["url"], "ca": Path(info["ca_path"]).read_text()})]
    data = awx_slices(inventory, 1)[0]
    refused = runner(private_data_dir(awx_jobs, 501, data, survey, credentials), "force_resync.yml")
    assert refused["rc"] != 0 and "--limit" in refused["stdout"]
    assert not (tmp_path / "store" / "lls001").exists() and not (tmp_path / "store" / "lls002").exists()
    done = runner(private_data_dir(awx_jobs, 502, data, survey, credentials, limit="lls002"), "force_resync.yml")
    assert done["rc"] == 0 and not done["failed"], done["stdout"][-8000:]
    assert done["hosts"] <= {"lls002", "localhost"}
    assert not (tmp_path / "store" / "lls001").exists()
    lab.verify()
