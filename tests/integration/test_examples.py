"""Every example a user may copy runs against the lab as written: each module's EXAMPLES, the README's ad-hoc
commands and module_defaults play, each role README's plays. Only names that cannot exist here are replaced (host
names, paths, secrets; the SUBSTITUTE table), so an example that stops working fails here. Also part of the
older-ansible-core subset of `make test` (Makefile CORE_TESTS)."""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from fnetest import BIN, REPO, ansible_env, run
from test_modules_support import CALLBACKS, TOOLS

MODULES = REPO / "plugins" / "modules"


def module_examples(module: str) -> str:
    """The EXAMPLES string of a module, read without importing it."""
    tree = ast.parse((MODULES / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXAMPLES":
            return node.value.value
    raise AssertionError(f"{module} has no EXAMPLES")


def fenced(markdown: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown.read_text(), re.M | re.S)


def lab_servers(lab) -> tuple[dict, dict]:
    """A server without security or HTTPS, and one with both (a 4-server lab with fractions has each kind)."""
    servers = lab.info["servers"].values()
    plain = next(s for s in servers if not s["security"] and not s["https"])
    secure = next(s for s in servers if s["security"] and s["https"])
    return plain, secure


def substitutions(lab, tmp_path: Path) -> dict[str, str]:
    """Example names -> the lab's (longest first when applied)."""
    plain, secure = lab_servers(lab)
    info = lab.info
    return {
        "http://lls01.example.com:7070": plain["url"], "http://lls01:7070": plain["url"],
        "https://lls02.example.com:1443": secure["url"], "https://lls01.example.com:1443": secure["url"],
        "username: admin": f"username: {secure['username']}",
        "https://SITEID.compliance.flexnetoperations.com/deviceservices": info["backoffice"]["url"],
        "https://SITE.compliance.flexnetoperations.com/deviceservices": info["backoffice"]["url"],
        "/etc/pki/fne-ca.pem": info["ca_path"], "/etc/pki/fne/ca.pem": info["ca_path"],
        "/opt/flexnetls/enterprise": str(TOOLS),
        "/var/tmp/": f"{tmp_path}/var/tmp/", "/var/lib/": f"{tmp_path}/var/lib/",
    }


def substitute(text: str, table: dict[str, str]) -> str:
    for name in sorted(table, key=len, reverse=True):
        text = text.replace(name, table[name])
    return text


def example_env(lab, **extra: str) -> dict[str, str]:
    """What a user's environment would hold: the documented fallbacks the examples lean on (the examples without
    a URL, the back office's private CA), and the test callback that records every task's result."""
    plain = lab_servers(lab)[0]
    return ansible_env(FNE_LLS_URL=plain["url"], FNE_BACKOFFICE_URL=lab.info["backoffice"]["url"],
                       FNE_BACKOFFICE_CA_PATH=lab.info["ca_path"], ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
                       ANSIBLE_CALLBACKS_ENABLED="fne_results", ANSIBLE_DEPRECATION_WARNINGS="False", **extra)


def run_plays(tmp_path: Path, name: str, plays: list[dict], inventory: Path, env: dict,
              *args: str) -> list[dict]:
    """Run the plays; fail on a non-zero exit; return every task result (fne_results callback)."""
    book, results = tmp_path / f"{name}.yml", tmp_path / f"{name}.jsonl"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(env, FNE_RESULTS_FILE=str(results))
    run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book), *args], env=env)
    return [json.loads(line) for line in results.read_text().splitlines()]


def assert_every_task_ran(tasks: list[dict], results: list[dict]) -> None:
    """Each named task of the example has a result and none failed (a rescued failure is reported as such)."""
    for example in tasks:
        if "name" in example and "block" not in example:
            statuses = {r["status"] for r in results if r["task"] == example["name"]}
            assert statuses and statuses <= {"ok"}, (example["name"], statuses, results)


# Modules in the order a user runs them (upload sends what generate wrote, process takes upload's ack), each
# with where its examples run: the controller, or a play over the lab's license servers.
MODULE_PLAYS = (("generate", "localhost"), ("upload", "localhost"), ("process", "localhost"),
                ("server_info", "license_servers"), ("fleet", "license_servers"), ("result", "license_servers"))


def generate_examples(lab, tmp_path: Path, play: dict, env: dict, table: dict) -> list[dict]:
    """generate's examples are alternatives (a first download, a forced one, another backend): each one runs on
    its own after new records arrived, in a /var/tmp of its own but the first (the folder the later modules'
    examples work on)."""
    plain, secure = lab_servers(lab)
    plain_name = next(name for name, server in lab.info["servers"].items() if server["url"] == plain["url"])
    results = []
    for index in range(len(play["tasks"])):
        lab.activity(2, plain_name)
        own = table if index == 0 else dict(table, **{"/var/tmp/": f"{tmp_path}/example{index}/"})
        task = yaml.safe_load(substitute(module_examples("generate"), own))[index]
        results += run_plays(tmp_path, f"generate{index}", [dict(play, tasks=[task])], lab.inventory, env,
                             "-e", json.dumps({"vault_lls_password": secure["password"]}))
    return results


def test_module_examples(lab_factory, tmp_path):
    lab = lab_factory(4, "--security", "0.5", "--https", "0.5", "--records", "5")
    table = substitutions(lab, tmp_path)
    secure = lab_servers(lab)[1]
    folder = tmp_path / "var" / "tmp" / "fnesync"
    env = example_env(lab)
    for module, hosts in MODULE_PLAYS:
        if module == "upload":  # the example's one file, by a name generate really wrote
            table["20140613T105312.fnesync"] = sorted(folder.glob("*.fnesync"))[0].name
        tasks = yaml.safe_load(substitute(module_examples(module), table))
        play = {"name": f"{module} EXAMPLES", "hosts": hosts, "gather_facts": False, "tasks": tasks}
        if module == "generate":
            results = generate_examples(lab, tmp_path, play, env, table)
        else:
            results = run_plays(tmp_path, module, [play], lab.inventory, env,
                                "-e", json.dumps({"vault_lls_password": secure["password"]}))
        assert_every_task_ran(tasks, results)
        if module == "generate":
            others = [list((tmp_path / f"example{i}").glob("*/*.fnesync")) for i in range(1, len(tasks))]
            downloads = [list(folder.glob("*.fnesync")), *others]
            assert all(downloads), downloads
        if module == "upload":
            assert (folder / "syncack.bin").exists() and (tmp_path / "var" / "tmp" / "acks" / "lls01.bin").exists()
        if module == "process":
            purged = [r for r in results if r["task"] == "Process the acknowledgment and purge the files it covers"]
            assert purged[0]["result"]["changed"], purged
        if module == "server_info":
            checked = {r["host"] for r in results if r["task"] == "Fail on unreachable servers"}
            assert checked == set(lab.info["servers"]), checked
        if module == "fleet":  # the dry run of the cycle: each server through the three phases, nothing done
            (dry,) = [r for r in results if r["task"].startswith("What collect, upload and acknowledge would do")]
            entries = dry["result"]["hosts"]
            assert len(entries) == 4 and all([p["step"] for p in e["phases"]] == ["collect", "upload", "acknowledge"]
                                             and "would upload" in e["msg"] for e in entries.values()), entries
        if module == "result":  # the fleet examples collected every server's records; these were uploaded
            report = [r for r in results if r["task"] == "Report each server's result on its own host"]
            assert len(report) == 4 and all(r["status"] == "ok" and r["result"]["changed"] for r in report), report


def readme_commands() -> list[list[str]]:
    """The README's ad-hoc `ansible ... -m fne.offline_sync.*` commands, continuation lines joined."""
    commands = []
    for block in fenced(REPO / "README.md", "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("ansible ") and "-m fne.offline_sync." in line:
                commands.append(shlex.split(line, comments=True))
    return commands


def test_readme_ad_hoc_and_module_defaults(lab_factory, sshd, tmp_path):
    """The README's ad-hoc commands in order (generate, upload, process on the controller; generate on the
    license server host over SSH, the server's URL from that host's environment), then its module_defaults play."""
    lab = lab_factory(4, "--security", "0.5", "--https", "0.5", "--records", "5")
    table = substitutions(lab, tmp_path)
    plain, secure = lab_servers(lab)
    commands = readme_commands()
    assert [c[:4] for c in commands] == [["ansible", "localhost", "-m", f"fne.offline_sync.{m}"]
                                         for m in ("generate", "upload", "process")] + \
        [["ansible", "lls01", "-m", "fne.offline_sync.generate"]], commands
    inventory = tmp_path / "hosts.yml"
    # On the host the module's url defaults to FNE_LLS_URL or http://localhost:7070: the host's environment, set
    # by SSH (the test sshd accepts FNE_*), in an SSH connection of its own (a master connection another test left
    # to the same sshd would carry its session without this SetEnv).
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"lls01": {
        "ansible_control_path_dir": str(tmp_path / "cp"),
        "ansible_host": sshd["host"], "ansible_port": sshd["port"], "ansible_user": sshd["user"],
        "ansible_ssh_private_key_file": sshd["key"], "ansible_python_interpreter": str(BIN / "python"),
        "ansible_ssh_common_args": f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                   f"-o SetEnv=FNE_LLS_URL={plain['url']}"}}}}))
    env = example_env(lab)
    env.pop("FNE_LLS_URL")  # the ad-hoc commands name their URL
    folder = tmp_path / "var" / "tmp" / "fnesync"
    outputs = []
    for command in commands:
        if command[1] == "lls01":  # new records for the host's own server, downloaded into a new folder
            folder.rename(folder.with_name("fnesync-done"))
            lab.activity(3, next(name for name, s in lab.info["servers"].items() if s["url"] == plain["url"]))
        argv = [str(BIN / "ansible"), *(substitute(arg, table) for arg in command[1:]), "-i", str(inventory)]
        outputs.append(run(argv, env=env).stdout)
    assert all(out.startswith(("localhost | CHANGED", "lls01 | CHANGED")) for out in outputs), outputs
    assert not list(folder.with_name("fnesync-done").glob("*.fnesync")), "process purged nothing"
    assert (tmp_path / "var" / "tmp" / "syncack.bin").exists() and list(folder.glob("*.fnesync"))
    folder.rename(folder.with_name("fnesync-ssh"))

    plays = [yaml.safe_load(substitute(block, table))[0] for block in fenced(REPO / "README.md", "yaml")
             if "module_defaults" in block]
    assert len(plays) == 1, plays
    results = run_plays(tmp_path, "module_defaults", plays, inventory, env,
                        "-e", json.dumps({"vault_lls_password": secure["password"]}))
    results = [r for r in results if r["task"] != "Gathering Facts"]
    assert [r["status"] for r in results] == ["ok"] * 3, results
    assert all(r["result"]["changed"] for r in results), results
    assert not list(folder.glob("*.fnesync")) and (folder / "syncack.bin").exists(), "process purged nothing"


@pytest.mark.parametrize("block", range(2))
def test_cycle_role_readme_examples(lab_factory, tmp_path, block):
    lab = lab_factory(4, "--security", "0.5", "--https", "0.5", "--records", "5")
    plays = yaml.safe_load(fenced(REPO / "roles" / "cycle" / "README.md", "yaml")[block])
    store = tmp_path / "store"
    run_plays(tmp_path, "cycle", plays, lab.inventory, example_env(lab), "-e", f"fne_sync_store={store}")
    lab.verify(complete=True)
    for host in lab.info["servers"]:
        assert list((store / host / "sent").glob("*.fnesync")), host


def test_schedule_role_readme_example(tmp_path):
    """On this machine systemd is not the service manager: the example's 01:30 timer becomes a 01:30 cron entry."""
    (play,) = yaml.safe_load(fenced(REPO / "roles" / "schedule" / "README.md", "yaml")[0])
    root = tmp_path / "root"
    extra = {"fne_sync_schedule_root": str(root), "vault_fne_lls_password": "secret",
             "ansible_become": False}  # a rendering run into root/ (as the role's tests do) needs no root
    env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="fne_results")
    run_plays(tmp_path, "schedule", [play], Path("/dev/null"), env, "-i", "localhost,", "-e", json.dumps(extra))
    cron = (root / "etc" / "cron.d" / "fne-offline-sync").read_text().splitlines()
    assert "30 1 * * * fnesync /usr/local/bin/fne-offline-sync --quiet" in cron, cron
