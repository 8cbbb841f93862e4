"""Per-host settings: each host's variables are validated with Ansible's own validator; a host whose variables are
invalid fails alone, in words naming the variable, and is never contacted (a typo must not turn TLS off)."""

from __future__ import annotations

from test_sync_support import sync, write_inventory


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
