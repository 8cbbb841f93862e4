"""docs/vault.md as written: encrypt the license servers' passwords with ansible-vault, then run by hand, from the
schedule role's wrapper and as an AWX job with a Vault credential; each against the lab, whose secured servers
accept nothing but the real password."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import test_ecosystem
import yaml
from fnetest import BIN, REPO, ansible_env, run
from test_ecosystem import _schedule, awx_slices, private_data_dir, runner
from test_examples import fenced, substitute

DOC = REPO / "docs" / "vault.md"


def doc_commands() -> list[str]:
    return [line for block in fenced(DOC, "sh") for line in block.splitlines() if line.strip()]


def shell(command: str, home: Path, table: dict[str, str]) -> str:
    """One documented command in bash, HOME the test's (~/.fne-vault-pass), names from the table."""
    env = ansible_env(HOME=str(home))
    return run(["bash", "-c", substitute(command, table)], env=env).stdout


def vaulted_inventory(lab, home: Path, path: Path) -> dict[str, str]:
    """The lab's inventory with every fne_lls_password replaced by what the documented encrypt_string prints;
    returns what it printed per host."""
    (encrypt,) = [c for c in doc_commands() if "encrypt_string" in c]
    text = lab.inventory.read_text()
    printed_per_host = {}
    for host, server in lab.info["servers"].items():
        printed = shell(encrypt, home, {"the-lls01-password": server["password"]})
        assert printed.startswith("fne_lls_password: !vault |") and server["password"] not in printed, printed
        indented = printed.strip().replace("\n", "\n    ")
        text, count = re.subn(rf"fne_lls_password: {re.escape(server['password'])}\n", f"{indented}\n", text)
        assert count == 1
        printed_per_host[host] = printed
    path.write_text(text)
    return printed_per_host


awx_jobs = test_ecosystem.awx_jobs  # the fixture, shared with the AWX tests


def test_vault_walkthrough(lab_factory, awx_jobs, tmp_path):  # noqa: F811 (the fixture above)
    lab = lab_factory(2, "--security", "--records", "5")
    home = tmp_path / "home"
    home.mkdir()
    setup = [c for c in doc_commands() if "fne-vault-pass" in c and "encrypt_string" not in c
             and "ansible-playbook" not in c and "sudo" not in c]
    for command in setup:
        shell(command, home, {})
    assert (home / ".fne-vault-pass").stat().st_mode & 0o777 == 0o600
    inventory = tmp_path / "inventory.yml"
    vaulted = vaulted_inventory(lab, home, inventory)
    store = tmp_path / "store"
    table = {"inventory.yml": str(inventory)}

    # 2. by hand, with the password file; without it the inventory cannot be read
    (by_hand,) = [c for c in doc_commands() if c.startswith("ansible-playbook")]
    denied = run(["bash", "-c", substitute(by_hand.split(" --vault")[0], table) + f" -e fne_sync_store={store}"],
                 env=ansible_env(HOME=str(home)), check=False)
    assert denied.returncode != 0 and "vault" in denied.stdout + denied.stderr
    shell(by_hand + f" -e fne_sync_store={store}", home, table)
    lab.verify(complete=True)  # the secured servers took the decrypted passwords

    # 3. the schedule role's wrapper, the password file named in its environment file
    (install,) = [c for c in doc_commands() if c.startswith("sudo install")]
    etc = tmp_path / "etc-fne"
    etc.mkdir()
    table.update({"/etc/fne-offline-sync/vault-pass": str(etc / "vault-pass"), "/var/lib/fne-sync": str(store)})
    shell(install.removeprefix("sudo ").replace("-o fnesync ", ""), home, table)  # no root, no fnesync user here
    (play,) = yaml.safe_load(fenced(DOC, "yaml")[1])
    role_vars = yaml.safe_load(substitute(yaml.safe_dump(play["roles"][0]["vars"]), table))
    environment = dict(role_vars["fne_sync_schedule_environment"],
                       ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"),
                       ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    _schedule(tmp_path, "cron", fne_sync_schedule_inventory=[str(inventory)],
              fne_sync_schedule_log_dir=str(tmp_path / "logs"), fne_sync_schedule_lock_file=str(tmp_path / "lock"),
              fne_sync_schedule_workdir=str(tmp_path), fne_sync_schedule_environment=environment)
    root = tmp_path / "root"
    wrapper = root / "usr" / "local" / "bin" / "fne-offline-sync"
    wrapper.write_text(wrapper.read_text().replace("env_file=/etc/", f"env_file={root}/etc/"))
    lab.activity(3)
    scheduled = subprocess.run([str(wrapper)], capture_output=True, text=True, check=False,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    assert scheduled.returncode == 0, scheduled.stdout[-5000:] + scheduled.stderr
    lab.verify(complete=True)

    # 4. AWX: the inventory imported from the project keeps the values encrypted (ansible-inventory's JSON form,
    # as AWX stores and serves them); the job asks for the vault password and the Vault credential answers
    # (ansible-runner's passwords, as AWX drives it)
    imported = json.loads(run([str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"]).stdout)
    awx_inventory = yaml.safe_load(lab.inventory.read_text())
    for host in vaulted:
        value = imported["_meta"]["hostvars"][host]["fne_lls_password"]
        assert set(value) == {"__ansible_vault"}, value
        awx_inventory["all"]["children"]["license_servers"]["hosts"][host]["fne_lls_password"] = value
    (awx_jobs / "awx_301" / "env").mkdir(parents=True)  # no credential writes it here
    pdd = private_data_dir(awx_jobs, 301, awx_slices(awx_inventory, 1)[0], {"fne_sync_store": str(store)}, [])
    (pdd / "env" / "cmdline").write_text("--ask-vault-pass")
    vault_password = (home / ".fne-vault-pass").read_text().strip()
    (pdd / "env" / "passwords").write_text(yaml.safe_dump({r"^Vault password:\s*?$": vault_password}))
    lab.activity(3)
    result = runner(pdd)
    assert result["rc"] == 0 and not result["failed"], result["stdout"][-8000:]
    assert not any(server["password"] in result["stdout"] for server in lab.info["servers"].values())
    lab.verify(complete=True)
