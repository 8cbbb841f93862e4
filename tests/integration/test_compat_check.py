"""The compatibility check (fne.offline_sync.compat_check, issue 10): the stand-in vendor tools run a real cycle
through the recording proxies, their answers are replayed to the HTTP client, and the check says "compatible" on
the default lab and names exactly the settings a variant's site needs (what the lab itself writes into its
inventory for that variant), or that the server must be registered at the back office."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from fnelab import variants
from fnetest import ansible_env
from test_examples import module_examples, run_plays, substitute
from test_modules_support import CALLBACKS
from test_sync_support import playbook

CHECKED = ("collect", "upload", "acknowledge")


def check(lab, inventory: Path, host: str, out: Path, expect_rc: int = 0):
    """The playbook for one server; (its output, that run's folder: transcript.json, settings.yml, store)."""
    result = playbook("compat_check", inventory, out / "store", "--limit", host, "-e", f"fne_sync_compat_out={out}",
                      "-e", f"fne_sync_tool_path={lab.info['tools']}", expect_rc=expect_rc)
    runs = sorted(out.glob(f"{host}-*"))
    return result, runs[-1] if runs else None


def verdicts(folder: Path) -> dict[str, dict]:
    return {v["step"]: v for v in json.loads((folder / "transcript.json").read_text())["verdicts"]}


def test_compatible_on_the_default_lab_with_a_transcript_free_of_secrets(lab_factory, tmp_path):
    lab = lab_factory(2, "--security", "--https", "--records", "6")
    out = tmp_path / "compat"
    refused = playbook("compat_check", lab.inventory, tmp_path / "store", "-e", f"fne_sync_compat_out={out}",
                       expect_rc=2)
    assert "add --limit NAME (2 matched)" in refused.out and not out.exists(), refused

    result, folder = check(lab, lab.inventory, "lls001", out)
    for step in CHECKED:
        assert f'"{step}: compatible"' in result.out, result
    assert "Nothing to set" in result.out and not (folder / "settings.yml").exists()
    servers = lab.verify()["servers"]
    assert servers["lls001"]["in_backoffice"] == 6 and servers["lls001"]["held"] == 0, servers["lls001"]
    assert servers["lls002"]["in_backoffice"] == 0  # one server only

    transcript = json.loads((folder / "transcript.json").read_text())
    tool, client = transcript["license_server"], transcript["http_client"]
    assert [e["path"] for e in tool][:2] == ["/api/1.0/instances/~/authorize", "/api/1.0/sync_message/offline"]
    assert tool[1]["query"] == ["force"] and tool[1]["response"]["content_type"] == "application/octet-stream"
    assert {e["response"]["sha256"] for e in tool if e["path"].endswith("offline") and e["response"]["bytes"]} <= \
        {e["response"]["sha256"] for e in client}
    text = (folder / "transcript.json").read_text()
    secrets = [s["password"] for s in lab.info["servers"].values()] + ["Bearer", "token\":"]
    assert not [s for s in secrets if s in text], "a secret in the transcript"

    # the module's EXAMPLES, as a user would run them for the other server
    tasks = yaml.safe_load(substitute(module_examples("compat_check"), {"/var/lib/fne_sync/compat": str(out)}))
    play = {"name": "compat_check EXAMPLES", "hosts": "lls002", "gather_facts": False, "tasks": tasks,
            "vars": {"fne_sync_tool_path": lab.info["tools"]}}
    env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="fne_results")
    results = run_plays(tmp_path, "compat_check", [play], lab.inventory, env)
    shown = next(r for r in results if r["task"] == tasks[1]["name"])["result"]["msg"]
    assert shown == [f"{step}: compatible" for step in CHECKED] + ["No setting needed"], shown

    # a back-office zone set where the back office is in UTC: named too (the re-upload rule compares exactly)
    lab.activity(3, "lls002")
    data = yaml.safe_load(lab.inventory.read_text())
    data["all"]["children"]["license_servers"]["vars"]["fne_backoffice_time_zone"] = "+05:30"
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(yaml.safe_dump(data))
    _result, folder = check(lab, wrong, "lls002", out)
    upload = verdicts(folder)["upload"]
    assert not upload["compatible"] and upload["settings"] == {"fne_backoffice_time_zone": "UTC"}, upload


def test_names_what_each_variant_needs(lab_factory, tmp_path):
    """One lab plays four variants: a forced download asked another way, file names in local time, a back office
    that shows its times in its own zone and does not know lls001. Without the lab's settings, the check names
    them (exactly what the lab writes for these variants) and the registration; with them, it says compatible."""
    played = ["other-force-query", "local-time-names", "backoffice-local-times", "unregistered-device"]
    lab = lab_factory(3, "--security", "0.5", "--https", "0.5", "--records", "6",
                      *[a for v in played for a in ("--variant", v)])
    wanted = variants.settings(played)
    assert set(wanted) == {"fne_lls_force_query", "fne_lls_time_zone", "fne_backoffice_time_zone"}, wanted
    data = yaml.safe_load(lab.inventory.read_text())
    for name in wanted:
        del data["all"]["children"]["license_servers"]["vars"][name]
    bare = tmp_path / "bare.yml"
    bare.write_text(yaml.safe_dump(data))
    out = tmp_path / "compat"

    _result, folder = check(lab, bare, "lls003", out)
    found = verdicts(folder)
    assert not found["collect"]["compatible"] and "asks a forced download with ?forceResync=true" in \
        found["collect"]["detail"], found
    assert not found["upload"]["compatible"] and "UTC+05:30" in found["upload"]["detail"], found
    assert not found["acknowledge"]["compatible"] and "UTC-05:00" in found["acknowledge"]["detail"], found
    assert yaml.safe_load((folder / "settings.yml").read_text()) == {"lls003": wanted}

    result, folder = check(lab, bare, "lls001", out)
    found = verdicts(folder)
    assert not found["upload"]["compatible"] and "register it there" in found["upload"]["detail"], found
    assert "is not registered with this back office" in found["upload"]["detail"], found
    assert found["acknowledge"]["compatible"] is None, found  # not reached

    result, folder = check(lab, lab.inventory, "lls002", out)
    assert all(v["compatible"] for v in verdicts(folder).values()), result
    servers = lab.verify()["servers"]  # nothing lost or twice; the checked, registered servers synchronized
    assert all(servers[h]["held"] == 0 and servers[h]["in_backoffice"] == 6 for h in ("lls002", "lls003")), servers
