"""The four modules against a real lab fleet, run by real ansible-playbook, on both execution paths:
in-process on the controller (connection local) and shipped over real SSH (the sshd fixture)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from fnetest import REPO, ansible_env, run
from test_modules_support import (
    BO_ARGS,
    LLS_ARGS,
    TOOLS,
    all_files,
    inventory,
    playbook,
    strip_volatile,
    sync_files,
    task,
)

MODULES = ("generate", "upload", "process", "server_info")
REPO_MODULES = REPO / "plugins" / "modules"
LLS, BO = LLS_ARGS, BO_ARGS
BOTH = {"inproc": {"server": "lls001", "via": "local"}, "shipped": {"server": "lls002", "via": "ssh"}}


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    proc = run([str(Path(sys.executable).parent / "ansible-doc"), f"fne.offline_sync.{module}"], env=ansible_env())
    assert "EXAMPLES:" in proc.stdout and "RETURN VALUES:" in proc.stdout, proc.stdout[:2000]
    assert "ERROR" not in proc.stderr


def test_server_info_same_on_both_paths(lab_factory, sshd, tmp_path):
    """Security and HTTPS on, env fallbacks, check mode, no_log scrubbing: the two paths give the same result."""
    lab = lab_factory(1, "--security", "1", "--https", "1")
    server = lab.info["servers"]["lls001"]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "20250101T000000.fnesync").write_bytes(b"x" * 10)
    inv = inventory(tmp_path, lab, {"inproc": {"via": "local", "out": str(shared)},
                                    "shipped": {"via": "ssh", "out": str(shared)}}, sshd)
    env_vars = {"FNE_LLS_URL": server["url"], "FNE_LLS_USERNAME": server["username"],
                "FNE_LLS_PASSWORD": server["password"], "FNE_LLS_CA_PATH": lab.info["ca_path"]}
    tasks = [
        task("args", "server_info", dict(LLS_ARGS, path="{{ out }}")),
        task("env", "server_info", {"path": "{{ out }}"}, environment=env_vars),
        task("check", "server_info", dict(LLS_ARGS, path="{{ out }}"), check_mode=True),
    ]
    res = playbook(tmp_path, inv, tasks, args=("-v",), env={"ANSIBLE_INJECT_INVOCATION": "1"})
    for name in ("args", "env", "check"):
        inproc, shipped = res.get(name, "inproc"), res.get(name, "shipped")
        assert inproc["reachable"] and inproc["security"] and inproc["https"] and inproc["authorized"], inproc
        assert inproc["host_id"] == server["host_id"]
        assert inproc["pending_count"] == 1 and inproc["pending"][0]["sync_time"] == "2025-01-01T00:00:00Z"
        assert strip_volatile(inproc) == strip_volatile(shipped)
        if name != "env":
            assert inproc["invocation"]["module_args"]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert server["password"] not in res.output


@pytest.mark.parametrize("backend", ["http", "tool"])
def test_full_cycle_both_paths(lab_factory, sshd, tmp_path, backend):
    lab = lab_factory(2, "--security", "0.5", "--https", "0.5", "--page-size", "10", "--records", "25")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    extra = {"backend": backend, "tool_path": str(TOOLS)} if backend == "tool" else {}
    lls = dict(LLS_ARGS, **extra)
    bo = dict(BO_ARGS, **extra)
    before = lab.state()["servers"]

    # Check mode first: nothing changes on the servers or on disk.
    res = playbook(tmp_path, inv, [
        task("generate", "generate", dict(lls, path="{{ out }}"), check_mode=True),
        task("upload", "upload", dict(bo, src="{{ out }}"), check_mode=True, ignore_errors=True),
    ], name="check")
    after = lab.state()["servers"]
    for host, spec in BOTH.items():
        assert res.get("generate", host)["changed"] is False and res.get("generate", host)["files"] == []
        assert res.get("generate", host)["waiting"] == []
        assert after[spec["server"]]["cursor"] == before[spec["server"]]["cursor"] == 0
        assert not (tmp_path / "out" / host).exists()

    res = playbook(tmp_path, inv, [
        task("generate", "generate", dict(lls, path="{{ out }}")),
        task("again", "generate", dict(lls, path="{{ out }}")),
        task("upload check", "upload", dict(bo, src="{{ out }}"), check_mode=True),
        task("info", "server_info", dict(lls, path="{{ out }}")),
    ], name="generate")
    for host in BOTH:
        folder = tmp_path / "out" / host
        gen = res.get("generate", host)
        assert gen["changed"] and gen["records"] == 25 and gen["message"] == "Sync completed for 25 device records."
        assert [f["name"] for f in gen["files"]] == sync_files(folder) and len(gen["files"]) == 3
        assert all_files(folder) == sync_files(folder)  # no temporary file left behind
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for entry in gen["files"]:
            data = Path(entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
            assert stat.S_IMODE(Path(entry["path"]).stat().st_mode) == 0o600
        if backend == "http":
            assert sum(f["records"] for f in gen["files"]) == 25
        again = res.get("again", host)
        assert again["changed"] is False and again["message"] == "No new data is available."
        # what waits in the folder, hashed on the host: the remote topology fetches from this list
        assert [{k: f[k] for k in ("path", "name", "size", "sha256")} for f in gen["files"]] == gen["waiting"]
        assert again["waiting"] == gen["waiting"] and again["files"] == []
        check = res.get("upload check", host)
        assert check["changed"] and check["files"] == [f["path"] for f in gen["files"]] and check["ack"] is None
        assert res.get("info", host)["pending_count"] == 3
    assert set(res.get("generate", "inproc")) == set(res.get("generate", "shipped"))

    res = playbook(tmp_path, inv, [
        task("upload", "upload", dict(bo, src="{{ out }}")),
        task("process check", "process", dict(lls, src="{{ out }}/syncack.bin", path="{{ out }}"),
             check_mode=True),
        # the acknowledgment sent along from the control node (the remote topology's way), then where it is
        task("process", "process", dict(lls, src="{{ out }}/syncack.bin", path="{{ out }}", remote_src=False)),
        task("process again", "process", dict(lls, src="{{ out }}/syncack.bin", path="{{ out }}")),
    ], name="upload")
    for host in BOTH:
        folder = tmp_path / "out" / host
        up = res.get("upload", host)
        assert up["changed"] and up["mismatch"] is False and len(up["accepted"]) == 3
        assert up["message"] == "Successfully sent sync data and received a sync acknowledgment."
        assert up["ack"] == str(folder / "syncack.bin")
        check = res.get("process check", host)
        assert check["changed"] and check["purged"] == [] and len(check["candidates"]) == 3
        proc = res.get("process", host)
        assert proc["purged"] == up["accepted"]
        assert proc["lines"] == [f"Purging file {Path(p).name}" for p in up["accepted"]]
        if backend == "http":
            assert proc["last_sync_time"].startswith("20")
        else:  # the back-office tool prints the acknowledgment's fields (LastSyncTime="Jan 13, 2019 10:52:45 AM")
            newest = datetime.strptime(Path(up["accepted"][-1]).name[:15], "%Y%m%dT%H%M%S")
            assert up["last_sync_time"] == newest.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert up["ack_fields"]["TargetID"] == lab.info["servers"][BOTH[host]["server"]]["host_id"]
            assert up["ack_fields"]["MessageType"] == "Server sync acknowledgment"
        assert all_files(folder) == ["syncack.bin"]
        assert res.get("process again", host)["purged"] == []
    report = lab.verify(complete=True)
    assert report["servers"]["lls001"]["in_backoffice"] == 25


def test_generate_returns_the_bytes_that_fit(lab_factory, sshd, tmp_path):
    """return_content: each waiting file's bytes (base64), oldest first while they fit in 1 MiB in all; a file
    beyond has none (the remote topology fetches it). The same on both paths."""
    lab = lab_factory(2, "--records", "12", "--page-size", "5")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    for host in BOTH:  # an older file of more than 1 MiB, waiting from an earlier run
        folder = tmp_path / "out" / host
        folder.mkdir(parents=True)
        (folder / "20200101T000000.fnesync").write_bytes(b"x" * (1024 * 1024 + 1))
    res = playbook(tmp_path, inv, [task("generate", "generate", dict(LLS, path="{{ out }}", return_content=True))])
    for host in BOTH:
        waiting = res.get("generate", host)["waiting"]
        assert len(waiting) == 4 and "content" not in waiting[0], waiting[0].keys()
        for entry in waiting[1:]:
            data = base64.b64decode(entry["content"])
            assert data == Path(entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]


def _ssh_commands(output: str, task_name: str) -> int:
    """How many commands a task ran over SSH (its round trips to the host), from -vvv output."""
    section = output.split(f"TASK [{task_name}]", 1)[1].split("TASK [", 1)[0]
    return section.count("SSH: EXEC")


def test_process_sends_the_acknowledgment_along(lab_factory, sshd, tmp_path):
    """remote_src=false over SSH: an acknowledgment on the control node travels in the module's arguments, one round
    trip to the host (with pipelining); one over 1 MiB through the module's temporary folder. content takes the bytes
    as slurp returns them; bad content or both sources fail before anything is sent."""
    lab = lab_factory(2, "--records", "5")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (1024 * 1024 + 1))
    ack = "{{ out }}/syncack.bin"
    shipped = "inventory_hostname == 'shipped'"
    res = playbook(tmp_path, inv, [
        task("generate", "generate", dict(LLS, path="{{ out }}")),
        task("upload", "upload", dict(BO, src="{{ out }}")),
        {"name": "slurp", "ansible.builtin.slurp": {"src": ack}, "register": "slurped", "delegate_to": "localhost"},
        task("inline", "process", dict(LLS, src=ack, path="{{ out }}", remote_src=False), when=shipped),
        task("content", "process", dict(LLS, content="{{ slurped.content }}", path="{{ out }}"),
             when="inventory_hostname == 'inproc'"),
        task("big", "process", dict(LLS, src=str(big), remote_src=False), when=shipped, ignore_errors=True),
        task("not base64", "process", dict(LLS, content="not base64!"), ignore_errors=True),
        task("both", "process", dict(LLS, src=ack, content="{{ slurped.content }}"), ignore_errors=True),
    ], args=("-vvv",), env={"ANSIBLE_PIPELINING": "True"})
    for host, name in (("shipped", "inline"), ("inproc", "content")):
        up, proc = res.get("upload", host), res.get(name, host)
        assert proc["processed"] and proc["purged"] == up["accepted"] and len(up["accepted"]) == 1, proc
        assert sync_files(tmp_path / "out" / host) == []
    assert _ssh_commands(res.output, "inline") == 1  # the module alone: no folder, transfer or clean-up
    big_run = res.get("big", "shipped")
    # sent along the other way (a temporary folder and the transfer first), it reached the server, which refused it
    assert big_run["failed"] and big_run["error"]["key"] == "glsErr.invalidSyncAck", big_run
    assert _ssh_commands(res.output, "big") == 6  # home, folder, transfer, permissions, module, clean-up
    for host in BOTH:
        assert "content is not base64" in res.get("not base64", host)["msg"]
        assert "mutually exclusive: src|content" in res.get("both", host)["msg"]
    assert lab.verify(complete=True)["ok"]


def test_https_without_ca_fails_with_hint(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--https", "1")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    args = {"url": "{{ fne_url }}", "retries": 0, "path": "{{ out }}"}
    res = playbook(tmp_path, inv, [
        task("generate", "generate", args, ignore_errors=True),
        task("info", "server_info", args),
        task("with ca", "server_info", dict(args, ca_path="{{ fne_ca }}")),
    ], check=False)
    for host in BOTH:
        gen = res.get("generate", host)
        assert gen["failed"] and "TLS failure" in gen["msg"] and "ca_path" in gen["msg"], gen
        assert "https://" in gen["msg"]
        info = res.get("info", host)
        assert info["reachable"] is False and "ca_path" in info["error"]
        assert res.get("with ca", host)["reachable"] is True
        assert sync_files(tmp_path / "out" / host) == []


@pytest.mark.parametrize("backend", ["http", "tool"])
def test_mismatch_keeps_ack_then_documented_recovery(lab_factory, sshd, tmp_path, backend):
    lab = lab_factory(2, "--page-size", "10", "--records", "30", "--security", "0.5")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    extra = {"backend": backend, "tool_path": str(TOOLS)} if backend == "tool" else {}
    LLS_ARGS = dict(LLS, **extra)  # noqa: N806
    BO_ARGS = dict(BO, **extra)  # noqa: N806
    playbook(tmp_path, inv, [task("generate", "generate", dict(LLS_ARGS, path="{{ out }}"))], name="gen")
    held = tmp_path / "held"
    held.mkdir()
    names = {}
    for host in BOTH:
        folder = tmp_path / "out" / host
        names[host] = sync_files(folder)
        assert len(names[host]) == 3
        (folder / names[host][1]).rename(held / f"{host}-{names[host][1]}")  # the middle message goes missing

    res = playbook(tmp_path, inv, [task("upload", "upload", dict(BO_ARGS, src="{{ out }}"), ignore_errors=True)],
                   name="upload", check=False)
    for host in BOTH:
        folder = tmp_path / "out" / host
        up = res.get("upload", host)
        assert up["failed"] and up["mismatch"] is True, up
        assert '"Mismatched or out of order time stamp in sync message": "Expected sync time ' in up["msg"]
        assert up["expected"] and up["received"] and up["expected"] != up["received"]
        assert up["accepted"] == [str(folder / names[host][0])]
        assert up["ack"] == str(folder / "syncack.bin") and (folder / "syncack.bin").exists()
        assert up["changed"] is True

    # The documented recovery: process what was acknowledged, force a download, upload, process.
    res = playbook(tmp_path, inv, [
        task("process", "process", dict(LLS_ARGS, src="{{ out }}/syncack.bin", path="{{ out }}")),
        task("force", "generate", dict(LLS_ARGS, path="{{ out }}", force=True), register="forced"),
        {"name": "drop superseded", "ansible.builtin.file": {"path": "{{ item }}", "state": "absent"},
         "loop": "{{ forced.superseded }}"},
        task("upload", "upload", dict(BO_ARGS, src="{{ out }}")),
        task("process 2", "process", dict(LLS_ARGS, src="{{ out }}/syncack.bin", path="{{ out }}")),
    ], name="recover")
    for host in BOTH:
        folder = tmp_path / "out" / host
        assert res.get("process", host)["purged"] == [str(folder / names[host][0])]
        forced = res.get("force", host)
        assert forced["superseded"] == [str(folder / names[host][2])] and forced["records"] == 20
        assert res.get("upload", host)["mismatch"] is False
        assert all_files(folder) == ["syncack.bin"]
    lab.verify(complete=True)


def test_execution_path_choice(lab_factory, sshd, tmp_path):
    """In process for connection local and delegate_to localhost; shipped over SSH or when switched off."""
    lab = lab_factory(2)
    inv = inventory(tmp_path, lab, BOTH, sshd)
    endpoint = dict(LLS_ARGS, url="{{ fne_url }}/api/1.0/sync_message/offline")  # the vendor tool's URL form
    res = playbook(tmp_path, inv, [
        task("local", "server_info", endpoint, when="inventory_hostname == 'inproc'"),
        task("delegated", "server_info", endpoint, delegate_to="localhost",
             when="inventory_hostname == 'shipped'"),
    ], args=("-vvv",), name="inproc")
    assert "AnsiballZ_server_info" not in res.output
    assert res.get("local", "inproc")["reachable"] and res.get("delegated", "shipped")["reachable"]
    assert res.get("local", "inproc")["url"] == lab.info["servers"]["lls001"]["url"]

    res = playbook(tmp_path, inv, [task("info", "server_info", endpoint)], args=("-vvv",), name="shipped",
                   env={"ANSIBLE_PIPELINING": "False"})
    assert res.output.count("AnsiballZ_server_info.py") >= 1
    switched = playbook(tmp_path, inv, [task("info", "server_info", endpoint, vars={
        "fne_offline_sync_in_process": False})], args=("-vvv", "--limit", "inproc"), name="switched")
    assert "AnsiballZ_server_info" in switched.output
    assert strip_volatile(switched.get("info", "inproc")) == strip_volatile(
        playbook(tmp_path, inv, [task("info", "server_info", endpoint)], args=("--limit", "inproc"),
                 name="again").get("info", "inproc"))
    assert res.get("info", "shipped")["reachable"]


@pytest.mark.parametrize("mode", ["accept", "reject"])
def test_reupload_of_accepted_files(lab_factory, sshd, tmp_path, mode):
    """The back office's answer to an exact re-upload is unknown: the module is right with either answer."""
    lab = lab_factory(2, "--records", "5", "--reupload", mode)
    inv = inventory(tmp_path, lab, BOTH, sshd)
    upload = task("upload", "upload", dict(BO_ARGS, src="{{ out }}"), ignore_errors=True)
    playbook(tmp_path, inv, [task("generate", "generate", dict(LLS_ARGS, path="{{ out }}")), upload], name="first")
    acks = {host: (tmp_path / "out" / host / "syncack.bin").read_bytes() for host in BOTH}
    res = playbook(tmp_path, inv, [upload, task("process", "process", dict(
        LLS_ARGS, src="{{ out }}/syncack.bin", path="{{ out }}"))], name="again")
    for host in BOTH:
        again = res.get("upload", host)
        if mode == "accept":
            assert again["changed"] and not again["failed"] and len(again["accepted"]) == 1
        else:
            assert again["failed"] and again["mismatch"] and again["accepted"] == [] and again["ack"] is None
            assert (tmp_path / "out" / host / "syncack.bin").read_bytes() == acks[host]  # the earlier ack is kept
        assert len(res.get("process", host)["purged"]) == 1
    lab.verify(complete=True)


def test_no_log_values_are_scrubbed_alike(lab_factory, sshd, tmp_path):
    """A no_log value inside any returned string is masked the same way on both paths (AnsibleModule's rules)."""
    lab = lab_factory(2)
    secret = "zz-Secr3tValue"
    folder = tmp_path / secret
    folder.mkdir()
    (folder / "20250101T000000.fnesync").write_bytes(b"x")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    res = playbook(tmp_path, inv, [task("info", "server_info", {"url": "{{ fne_url }}", "username": "admin",
                                                                "password": secret, "path": str(folder)})],
                   env={"ANSIBLE_INJECT_INVOCATION": "1"})
    for host in BOTH:
        info = res.get("info", host)
        assert info["pending"][0]["path"] == f"{tmp_path}/********/20250101T000000.fnesync"
        assert info["invocation"]["module_args"]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        assert info["authorized"] is False and secret not in json.dumps(info)
    assert secret not in res.output


def test_module_defaults_group(lab_factory, sshd, tmp_path):
    """`group/fne.offline_sync.fne` reaches every module on both paths. The group holds what all four modules take
    (url means a license server to three of them and the back office to upload, so it is set per module)."""
    lab = lab_factory(2, "--records", "4")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    url_only = {"url": "{{ fne_url }}", "ca_path": "{{ fne_ca | default(omit, true) }}"}
    res = playbook(tmp_path, inv, [{
        "name": "defaults",
        "module_defaults": {"group/fne.offline_sync.fne": {
            "backend": "tool", "tool_path": str(TOOLS), "retries": 1, "max_retry_wait": 1}},
        "block": [task("generate", "generate", dict(url_only, path="{{ out }}")),
                  task("info", "server_info", dict(url_only, path="{{ out }}"))],
    }])
    for host in BOTH:
        generated = res.get("generate", host)
        # Only the tool backend returns the tool's lines: the group's backend and tool_path were applied.
        assert generated["records"] == 4 and "OfflineSync utility started." in generated["lines"], generated
        assert res.get("info", host)["pending_count"] == len(generated["files"])


def test_module_defaults_lls_and_backoffice_groups(lab_factory, sshd, tmp_path):
    """`group/fne.offline_sync.lls` sets a license server's url and credentials once for generate, process and
    server_info; `group/fne.offline_sync.backoffice` sets upload's url. Tasks name no connection option at all."""
    lab = lab_factory(2, "--records", "5", "--security", "--https")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    res = playbook(tmp_path, inv, [{
        "name": "defaults",
        "module_defaults": {
            "group/fne.offline_sync.lls": dict(LLS),
            "group/fne.offline_sync.backoffice": dict(BO),
        },
        "block": [task("info", "server_info", {}),
                  task("generate", "generate", {"path": "{{ out }}"}),
                  task("upload", "upload", {"src": "{{ out }}"}),
                  task("process", "process", {"src": "{{ out }}/syncack.bin", "path": "{{ out }}"})],
    }])
    for host in BOTH:
        assert res.get("info", host)["authorized"] is True
        assert res.get("generate", host)["records"] == 5
        assert res.get("process", host)["purged"]
    lab.verify(complete=True)


def test_returned_keys_are_documented(lab_factory, tmp_path):
    """Every key a module returns is in its RETURN, and every RETURN key marked `always` is returned."""
    lab = lab_factory(1, "--records", "3")
    inv = inventory(tmp_path, lab, {"inproc": {"via": "local"}})
    res = playbook(tmp_path, inv, [
        task("server_info", "server_info", dict(LLS, path="{{ out }}")),
        task("generate", "generate", dict(LLS, path="{{ out }}")),
        task("generate_check", "generate", dict(LLS, path="{{ out }}"), check_mode=True),
        task("upload_check", "upload", dict(BO, src="{{ out }}"), check_mode=True),
        task("upload", "upload", dict(BO, src="{{ out }}")),
        task("process_check", "process", dict(LLS, src="{{ out }}/syncack.bin", path="{{ out }}"), check_mode=True),
        task("process", "process", dict(LLS, src="{{ out }}/syncack.bin", path="{{ out }}")),
        task("generate_failed", "generate", dict(LLS, url="{{ fne_url }}/x", path="{{ out }}"), ignore_errors=True),
        task("upload_failed", "upload", dict(BO, src="{{ out }}/missing"), ignore_errors=True),
    ])
    standard = {"changed", "failed", "msg", "invocation", "warnings", "deprecations", "_status"}
    for name in ("server_info", "generate", "upload", "process"):
        source = (REPO_MODULES / f"{name}.py").read_text()
        documented = yaml.safe_load(source.split('RETURN = r"""', 1)[1].split('"""', 1)[0])
        always = {key for key, doc in documented.items() if doc.get("returned") == "always"}
        for variant in (name, f"{name}_check", f"{name}_failed"):
            try:
                result = res.get(variant, "inproc")
            except AssertionError:
                continue
            keys = {key for key in result if not key.startswith("_ansible")} - standard
            assert keys <= set(documented), (variant, keys - set(documented))
            if not result["failed"]:
                assert always - {"changed"} <= keys, (variant, always - keys)
