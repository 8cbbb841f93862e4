"""Faults the lab injects, on both execution paths: retried where safe, clear errors otherwise, nothing lost."""

from __future__ import annotations

from test_modules_support import BO_ARGS, LLS_ARGS, all_files, inventory, playbook, task

BOTH = {"inproc": {"server": "lls001", "via": "local"}, "shipped": {"server": "lls002", "via": "ssh"}}


def fault_both(lab, kind: str, *options: str) -> None:
    for spec in BOTH.values():
        lab.fault(spec["server"], kind, *options)


def finish_cycle(tmp_path, inv, name: str = "finish", force: bool = False) -> None:
    """generate (forced when records were lost in transit) -> upload -> process; the lab then says complete."""
    playbook(tmp_path, inv, [
        task("generate", "generate", dict(LLS_ARGS, path="{{ out }}", force=force)),
        task("upload", "upload", dict(BO_ARGS, src="{{ out }}")),
        task("process", "process", dict(LLS_ARGS, src="{{ out }}/syncack.bin", path="{{ out }}")),
    ], name=name)


def test_503_with_retry_after_is_retried(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--records", "12", "--security", "1")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    fault_both(lab, "status=503", "--retry-after", "1", "--count", "1", "--endpoint", "generate")
    res = playbook(tmp_path, inv, [task("generate", "generate", dict(LLS_ARGS, path="{{ out }}", retries=2))])
    for host in BOTH:
        assert res.get("generate", host)["records"] == 12
    assert res.output.count("answered 503; retrying in 1.0s (retry 1 of 2)") >= 2, res.output


def test_lost_response_is_not_retried_and_force_recovers(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--records", "15", "--page-size", "10")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    fault_both(lab, "drop", "--count", "1", "--endpoint", "generate")
    res = playbook(tmp_path, inv, [task("generate", "generate", dict(LLS_ARGS, path="{{ out }}", retries=3),
                                        ignore_errors=True)])
    for host, spec in BOTH.items():
        gen = res.get("generate", host)
        assert gen["failed"] and gen["lost_response"] is True and gen["error"]["type"] == "LostResponseError"
        assert "force: true" in gen["msg"] and "handed out" in gen["msg"], gen["msg"]
        assert all_files(tmp_path / "out" / host) == []
        assert lab.state()["servers"][spec["server"]]["requests"]["generate"] == 1  # not retried
    finish_cycle(tmp_path, inv, force=True)
    lab.verify(complete=True)


def test_truncated_or_html_answer_leaves_no_file(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--records", "5")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    gen = task("generate", "generate", dict(LLS_ARGS, path="{{ out }}"), ignore_errors=True)
    for kind, expect in (("truncate", "truncated"), ("html", "text/html")):
        fault_both(lab, kind, "--count", "1", "--endpoint", "generate")
        res = playbook(tmp_path, inv, [gen], name=kind)
        for host in BOTH:
            result = res.get("generate", host)
            assert result["failed"] and result["lost_response"] is True and expect in result["msg"], result["msg"]
            assert result["files"] == [] and all_files(tmp_path / "out" / host) == []
    finish_cycle(tmp_path, inv, force=True)
    lab.verify(complete=True)


def test_expired_token_is_renewed(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--records", "3", "--page-size", "1", "--security", "1", "--token-ttl", "1")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    fault_both(lab, "latency=0.7", "--endpoint", "generate")
    res = playbook(tmp_path, inv, [task("generate", "generate", dict(LLS_ARGS, path="{{ out }}"))])
    state = lab.state()["servers"]
    for host, spec in BOTH.items():
        assert res.get("generate", host)["records"] == 3
        assert state[spec["server"]]["requests"]["authorize"] >= 2
    lab.clear_faults()
    finish_cycle(tmp_path, inv)
    lab.verify(complete=True)


def test_clear_errors(lab_factory, sshd, tmp_path):
    lab = lab_factory(2, "--records", "5", "--security", "1")
    inv = inventory(tmp_path, lab, BOTH, sshd)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    wrong = "Wr0ng-Pa55word-xyz"
    res = playbook(tmp_path, inv, [
        task("bad password", "generate", dict(LLS_ARGS, path="{{ out }}", password=wrong), ignore_errors=True),
        task("no credentials", "generate", {"url": "{{ fne_url }}", "path": "{{ out }}"}, ignore_errors=True),
        task("wrong base", "generate", dict(LLS_ARGS, url="{{ fne_url }}/lls", path="{{ out }}"),
             ignore_errors=True),
        task("bad folder", "generate", dict(LLS_ARGS, path=f"{blocker}/sub"), ignore_errors=True),
        task("no src", "upload", dict(BO_ARGS, src="{{ out }}/missing"), ignore_errors=True),
        task("unknown option", "server_info", dict(LLS_ARGS, bogus=1), ignore_errors=True),
    ], args=("-vvv",), name="errors")
    for host in BOTH:
        bad = res.get("bad password", host)
        assert bad["failed"] and "glsErr.userAuthFailed" in bad["msg"] and "/authorize" in bad["msg"]
        assert "username and password" in res.get("no credentials", host)["msg"]
        assert "base URL" in res.get("wrong base", host)["msg"] and "404" in res.get("wrong base", host)["msg"]
        assert "Cannot create the folder" in res.get("bad folder", host)["msg"]
        assert "does not exist" in res.get("no src", host)["msg"]
        assert "Unsupported parameters for (fne.offline_sync.server_info) module: bogus" in \
            res.get("unknown option", host)["msg"]
    assert wrong not in res.output
    assert lab.info["servers"]["lls001"]["password"] not in res.output

    fault_both(lab, "down")
    res = playbook(tmp_path, inv, [task("down", "generate", dict(LLS_ARGS, path="{{ out }}"), ignore_errors=True),
                                   task("info", "server_info", LLS_ARGS)], name="down")
    for host in BOTH:
        down = res.get("down", host)
        assert down["failed"] and "Cannot reach the license server at http" in down["msg"], down["msg"]
        assert res.get("info", host)["reachable"] is False
    assert res.output.count("retrying in") >= 2  # a connection that could not be made is retried, with a warning
    lab.clear_faults()
    finish_cycle(tmp_path, inv)
    lab.verify(complete=True)
