"""The role fne.offline_sync.cycle used directly (`roles:`, the `main` entry point), and where its variables are
validated: the play-wide ones once per run, the per-host ones for each host (a typo fails that host alone, also on
the first host of the play, the one a run_once task reads), the remote topology's connection through
module_defaults with the environment fallbacks intact."""

from __future__ import annotations

import json

import yaml
from fnetest import BIN, ansible_env, run
from test_sync_support import PYTHON, Result, hosts_of, lab_state, ledger, sync, write_inventory


def local_remote(tmp_path, host: str, **extra) -> dict:
    """A remote-topology host worked with connection local (the license server on the control node): the per-host
    tasks run as over SSH, without an sshd."""
    return {"fne_sync_topology": "remote", "fne_sync_remote_path": str(tmp_path / "hosts" / host / "fnesync"),
            "ansible_connection": "local", "ansible_python_interpreter": PYTHON, **extra}


def test_main_entry_point_runs_the_whole_cycle(lab_factory, tmp_path):
    """`roles: [fne.offline_sync.cycle]` on a mixed play: plan, the api phases in one controller task, the
    remote phases per host, the report; each phase's result is a public variable a later task can read."""
    lab = lab_factory(4, "--records", "12", "--page-size", "5", "--security", "0.5")
    inventory = write_inventory(lab, tmp_path / "inventory.json",
                                {host: local_remote(tmp_path, host) for host in ("lls001", "lls003")})
    results = ("results: cycle={{ fne_sync_cycle_result.hosts | sort | join(',') }}"
               " upload_remote={{ fne_sync_upload_remote_result.hosts | sort | join(',') }}"
               " remote={{ groups['fne_sync_remote'] | sort | join(',') }}")
    play = {"name": "The whole cycle", "hosts": "license_servers", "gather_facts": False,
            "roles": ["fne.offline_sync.cycle"],
            "post_tasks": [{"name": "Read the public results", "run_once": True,
                            "ansible.builtin.debug": {"msg": results}}]}
    playbook = tmp_path / "cycle.yml"
    playbook.write_text(json.dumps([play], indent=1))  # JSON is YAML
    store = tmp_path / "store"
    cmd = [str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory), "-e", f"fne_sync_store={store}"]
    first = Result(run(cmd, check=False, env=ansible_env(), timeout=900))
    assert first.proc.returncode == 0 and first.changed() == set(hosts_of(lab)), first
    assert "results: cycle=lls002,lls004 upload_remote=lls001,lls003 remote=lls001,lls003" in first.out, first
    assert "fleet: 4 server(s), 4 ok, 0 failed, 4 changed" in first.out, first
    lab.verify(complete=True)
    report = json.loads((store / "report.json").read_text())
    assert report["totals"]["records_this_run"] == 4 * 12, report["totals"]
    for host in ("lls001", "lls003"):
        assert [e["event"] for e in ledger(store, host)].count("fetched") == 3
        assert not list((tmp_path / "hosts" / host / "fnesync").glob("*.fnesync")), f"{host}: not purged"

    settled = lab_state(lab)
    second = Result(run(cmd, check=False, env=ansible_env(), timeout=900))
    assert second.proc.returncode == 0 and second.changed() == set(), second
    assert lab_state(lab) == settled


def test_play_wide_variables_are_validated_once_per_host_ones_per_host(lab_factory, tmp_path):
    """A typo in a play-wide variable stops the run before any server is contacted; a typo in a per-host variable
    of the first host of the play fails that host alone (the run_once validation must not read it from there)."""
    lab = lab_factory(3, "--records", "5")
    store = tmp_path / "store"
    before = lab_state(lab)
    typo = sync(lab, store, "-e", "fne_sync_auto_recover=ture", expect_rc=2)
    assert typo.failed() and not typo.changed(), typo  # the run_once validation fails; no host goes on
    assert "fne_sync_auto_recover" in typo.out and "ture" in typo.out, typo
    assert lab_state(lab) == before and not store.exists()

    inventory = write_inventory(lab, tmp_path / "inventory.json", {"lls001": {"fne_lls_validate_certs": "ture"}})
    from test_sync_support import playbook

    result = playbook("sync", inventory, store, expect_rc=2)
    assert result.failed() == {"lls001"}, result
    assert result.changed() == {"lls002", "lls003"}, result
    assert "fne_lls_validate_certs" in result.out, result
    assert not any(lab.state()["servers"]["lls001"]["requests"].values()), "lls001 was contacted"


def test_remote_connection_comes_from_module_defaults(lab_factory, tmp_path):
    """Remote-topology servers get their connection from their host variables through module_defaults: an unset
    one is omitted, so the module's environment fallback applies (FNE_LLS_URL here, the module shipped as over
    SSH); a typo in one fails that host alone, uncontacted."""
    lab = lab_factory(3, "--records", "7")
    servers = yaml.safe_load(lab.inventory.read_text())["all"]["children"]["license_servers"]["hosts"]
    url = servers["lls001"]["fne_lls_url"]
    inventory = write_inventory(lab, tmp_path / "inventory.json", {
        "lls001": local_remote(tmp_path, "lls001", fne_offline_sync_in_process=False),
        "lls002": local_remote(tmp_path, "lls002", fne_lls_validate_certs="ture"),
    })
    data = json.loads(inventory.read_text())
    del data["all"]["children"]["license_servers"]["hosts"]["lls001"]["fne_lls_url"]
    inventory.write_text(json.dumps(data, indent=1))
    store = tmp_path / "store"
    cmd = [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(inventory),
           "-e", f"fne_sync_store={store}"]
    result = Result(run(cmd, check=False, env=ansible_env(FNE_LLS_URL=url), timeout=900))
    assert result.proc.returncode == 2 and result.failed() == {"lls002"}, result
    assert result.changed() == {"lls001", "lls003"}, result
    assert "fne_lls_validate_certs" in result.out, result
    servers = lab.verify()["servers"]
    for host in ("lls001", "lls003"):
        assert servers[host]["in_backoffice"] == 7 and servers[host]["held"] == 0, servers[host]
    assert not any(lab.state()["servers"]["lls002"]["requests"].values()), "lls002 was contacted"
    assert [e["event"] for e in ledger(store, "lls001")].count("fetched") == 1
