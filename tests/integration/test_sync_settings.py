"""Per-host settings: each host's variables are validated with Ansible's own validator; a host whose variables are
invalid fails alone, in words naming the variable, and is never contacted (a typo must not turn TLS off)."""

from __future__ import annotations

import json

import yaml
from test_sync_support import playbook, sync, write_inventory


def test_an_invalid_host_variable_fails_that_host_alone(lab_factory, tmp_path):
    lab = lab_factory(4, "--https", "--records", "5")
    inventory = write_inventory(lab, tmp_path / "inventory.json", {
        "lls002": {"fne_lls_validate_certs": "ture"},   # a typo that a hand-made converter read as False
        "lls003": {"fne_sync_topology": "cloud"},
    })
    store = tmp_path / "store"
    result = sync(lab, store, "-i", str(inventory), expect_rc=2)
    assert result.failed() == {"lls002", "lls003"}, result
    assert result.changed() == {"lls001", "lls004"}, result
    assert "fne_lls_validate_certs" in result.out and "ture" in result.out, result
    assert "fne_sync_topology" in result.out and "cloud" in result.out, result
    state = lab.state()["servers"]
    for host in ("lls002", "lls003"):
        assert not any(state[host]["requests"].values()), f"{host} was contacted: {state[host]['requests']}"
        assert not (store / host / "outbox").exists()
    servers = lab.verify()["servers"]
    for host in ("lls001", "lls004"):
        assert servers[host]["in_backoffice"] == 5 and servers[host]["held"] == 0, servers[host]
    for host in ("lls002", "lls003"):
        assert servers[host]["in_backoffice"] == 0 and servers[host]["held"] == 5, servers[host]


def test_a_host_pattern_that_matches_nothing_fails_the_run(lab_factory, tmp_path):
    """Exit 0 having synchronized nothing would let a schedule report success forever."""
    lab = lab_factory(1, "--records", "1")
    flat = yaml.safe_load(lab.inventory.read_text())
    flat["all"]["hosts"] = flat["all"].pop("children")["license_servers"]["hosts"]  # no group license_servers
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    for inventory, args in ((lab.inventory, ["-e", "fne_sync_hosts=nosuchgroup"]), (tmp_path / "flat.json", [])):
        result = playbook("sync", inventory, tmp_path / "store", *args, expect_rc=2)
        assert "matches no host of the inventory" in result.out, result
    assert lab.verify()["servers"]["lls001"]["held"] == 1 and not (tmp_path / "store").exists()
