"""The documented administrator workflow, driven by the stand-in vendor tools (Java programs, run as subprocesses
by absolute path)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fnelab.wire import Ack, parse_file_name, vendor_time
from labhelp import ACK, GENERATE, backoffice_tool, decode, run_tool, server_tool

STARTED = "OfflineSync utility started."
UPLOADED = "Successfully sent sync data and received a sync acknowledgment."


def test_three_step_cycle_on_every_kind_of_server(lab_factory, work):
    lab = lab_factory(4, "--security", "0.5", "--https", "0.5", "--records", "25", "--page-size", "10")
    assert {(s["security"], s["https"]) for s in lab.info["servers"].values()} == {
        (False, False), (False, True), (True, False), (True, True)}
    for name in lab.info["servers"]:
        path = work / name
        gen = server_tool(lab, name, "-generate", str(path), cwd=work)
        assert gen.returncode == 0, gen.stderr
        assert gen.stdout.splitlines() == [STARTED, "Sync completed for 25 device records."]
        files = sorted(p.name for p in path.iterdir())
        assert len(files) == 3 and all(parse_file_name(f) for f in files)

        up = backoffice_tool(lab, "-out", str(work / f"{name}.ack"), str(path), cwd=work)
        assert up.returncode == 0, up.stderr
        ack = Ack.decode((work / f"{name}.ack").read_bytes())
        assert ack.target_id == lab.info["servers"][name]["host_id"]
        assert ack.last_sync_time == parse_file_name(files[-1])
        # the acknowledgment's fields follow, times quoted in the vendor's format
        assert up.stdout.splitlines() == [
            STARTED, UPLOADED, 'MessageType="Server sync acknowledgment"',
            f'MessageTIme="{vendor_time(ack.message_time)}"', f'LastSyncTime="{vendor_time(ack.last_sync_time)}"',
            "SourceIDType=String", "SourceID=BACK_OFFICE", "SourceIds=BACK_OFFICE", f"TargetID={ack.target_id}",
            "TargetIDType=Ethernet"]

        proc = server_tool(lab, name, "-process", str(work / f"{name}.ack"), str(path), cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [STARTED] + [f"Purging file {f}" for f in files]
        assert list(path.iterdir()) == []

        again = server_tool(lab, name, "-generate", str(path), cwd=work)
        assert again.stdout.splitlines() == [STARTED, "No new data is available."]
    report = lab.verify(complete=True)
    assert all(c["in_backoffice"] == 25 and c["held"] == 0 for c in report["servers"].values())


def test_default_ack_file_and_single_file_path(lab_factory, work):
    lab = lab_factory(1, "--records", "3", "--page-size", "2")
    assert server_tool(lab, "lls001", "-generate", "out", cwd=work).returncode == 0  # relative PATH, from cwd
    first, second = sorted((work / "out").iterdir())
    up = backoffice_tool(lab, str(first), cwd=work)  # PATH may be one file; -out defaults to ./syncack.bin
    assert up.returncode == 0, up.stderr
    assert decode_ack_lines(lab, work / "syncack.bin")[0] == 'MessageType="Server sync acknowledgment"'
    proc = server_tool(lab, "lls001", "-process", "syncack.bin", "out", cwd=work)
    assert proc.stdout.splitlines() == [STARTED, f"Purging file {first.name}"]  # only what the ack covers
    assert sorted(p.name for p in (work / "out").iterdir()) == [second.name]
    lab.verify()


def decode_ack_lines(lab, path) -> list[str]:
    return lab.cli("decode", str(path)).stdout.splitlines()


def test_decode_prints_the_documented_fields(lab_factory, work):
    lab = lab_factory(1, "--records", "1")
    server_tool(lab, "lls001", "-generate", "out", cwd=work)
    backoffice_tool(lab, "out", cwd=work)
    lines = decode_ack_lines(lab, work / "syncack.bin")
    keys = [line.split("=", 1)[0] for line in lines]
    assert keys == ["MessageType", "MessageTIme", "LastSyncTime", "SourceIDType", "SourceID", "SourceIds",
                    "TargetID", "TargetIDType"]
    assert lines[0] == 'MessageType="Server sync acknowledgment"'
    assert lines[3:] == ["SourceIDType=String", "SourceID=BACK_OFFICE", "SourceIds=BACK_OFFICE",
                         f"TargetID={lab.info['servers']['lls001']['host_id']}", "TargetIDType=Ethernet"]
    msg_lines = lab.cli("decode", str(next((work / "out").iterdir()))).stdout.splitlines()
    assert "RecordCount=1" in msg_lines
    bad = lab.cli("decode", str(lab.dir / "ca.pem"), check=False)
    assert bad.returncode != 0 and "neither" in bad.stderr


def test_lost_download_response_then_force_recovery(lab_factory, work):
    """A lost download response leaves a hole the server believes delivered; the back office says so; -force
    fills it."""
    lab = lab_factory(1, "--records", "30", "--page-size", "10")
    out = work / "out"
    lab.fault("lls001", "drop", "--count", "1", "--endpoint", "generate")
    first = server_tool(lab, "lls001", "-generate", str(out), cwd=work)
    assert first.returncode != 0 and first.stderr and not list(out.iterdir())  # page 1 (records 1-10) lost
    assert lab.state()["servers"]["lls001"]["cursor"] == 10  # ... but the server handed it out
    retry = server_tool(lab, "lls001", "-generate", str(out), cwd=work)
    assert retry.returncode == 0, retry.stderr
    assert retry.stdout.splitlines() == [STARTED, "Sync completed for 20 device records."]
    files = sorted(out.iterdir())
    held_back = decode(files[0].read_bytes())
    assert held_back.first_seq == 11

    up = backoffice_tool(lab, "-out", "syncack.bin", str(out), cwd=work)
    assert up.returncode != 0
    assert up.stderr.strip().splitlines()[-1] == (
        f'"Mismatched or out of order time stamp in sync message": "Expected sync time '
        f'{vendor_time(0)}, got {vendor_time(held_back.from_time)}"')
    assert not (work / "syncack.bin").exists()  # nothing accepted: no acknowledgment to process
    superseded = work / "superseded"
    superseded.mkdir()
    for f in files:
        shutil.move(str(f), superseded)
    forced = server_tool(lab, "lls001", "-generate", str(out), cwd=work, force=True)
    assert forced.stdout.splitlines() == [STARTED, "Sync completed for 30 device records."]
    assert backoffice_tool(lab, "-out", "syncack.bin", str(out), cwd=work).returncode == 0
    assert server_tool(lab, "lls001", "-process", "syncack.bin", str(out), cwd=work).returncode == 0
    lab.verify(complete=True)


def test_mismatch_midway_then_force_recovery(lab_factory, work):
    """The documented recovery, step by step: process the ack so far, -force, upload, process."""
    lab = lab_factory(1, "--records", "30", "--page-size", "10")
    out = work / "out"
    assert server_tool(lab, "lls001", "-generate", str(out), cwd=work).returncode == 0  # pages 1-10, 11-20, 21-30
    files = sorted(out.iterdir())
    lost = files[1]
    lost.unlink()  # the second file never reaches the upload machine
    up = backoffice_tool(lab, "-out", "syncack.bin", str(out), cwd=work)
    assert up.returncode != 0
    t1, t2 = parse_file_name(files[0].name), parse_file_name(lost.name)
    assert up.stderr.strip().splitlines()[-1] == (
        f'"Mismatched or out of order time stamp in sync message": '
        f'"Expected sync time {vendor_time(t1)}, got {vendor_time(t2)}"')
    assert "Successfully" not in up.stdout

    # 1. process the acknowledgment received so far: only what reached the back office is purged
    proc = server_tool(lab, "lls001", "-process", "syncack.bin", str(out), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [STARTED, f"Purging file {files[0].name}"]
    state = lab.state()["servers"]["lls001"]
    assert state["held"] == 20 and state["acked_seq"] == 10
    # 2. without -force the server believes it handed everything out
    nothing = server_tool(lab, "lls001", "-generate", str(out), cwd=work)
    assert nothing.stdout.splitlines() == [STARTED, "No new data is available."]
    # the stale third file would be out of order now; set it aside (the collection keeps it as superseded)
    superseded = work / "superseded"
    superseded.mkdir()
    shutil.move(str(files[2]), superseded)
    forced = server_tool(lab, "lls001", "-generate", str(out), cwd=work, force=True)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == [STARTED, "Sync completed for 20 device records."]
    # 3. upload, 4. process
    up = backoffice_tool(lab, "-out", "syncack.bin", str(out), cwd=work)
    assert up.returncode == 0, up.stderr
    proc = server_tool(lab, "lls001", "-process", "syncack.bin", str(out), cwd=work)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
    assert list(out.iterdir()) == []
    lab.verify(complete=True)


def test_tool_errors(lab_factory, work):
    lab = lab_factory(2, "--security", "0.5", "--https", "0.5", "--records", "2")
    secure = next(n for n, s in lab.info["servers"].items() if s["security"])
    no_auth = server_tool(lab, secure, "-generate", "out", cwd=work, auth=False)
    assert no_auth.returncode != 0 and "glsErr.notAuthorized" in no_auth.stderr
    info = lab.info["servers"][secure]
    bad = server_tool(lab, secure, "-generate", "out", "-authorize", "admin", "wrong", cwd=work, auth=False)
    assert bad.returncode != 0 and "glsErr.userAuthFailed" in bad.stderr
    assert info["password"] not in bad.stderr + bad.stdout
    usage = server_tool(lab, secure, "-bogus", cwd=work)
    assert usage.returncode != 0 and "unknown option" in usage.stderr
    missing = backoffice_tool(lab, str(work / "nope"), cwd=work)
    assert missing.returncode != 0 and "no such file" in missing.stderr
    plain = next(n for n, s in lab.info["servers"].items() if not s["security"])
    wrong = run_tool(lab, "serverofflinesynctool.sh", "-url", lab.info["servers"][plain]["url"] + ACK, "-generate",
                     "out", cwd=work)
    assert wrong.returncode != 0 and "not the /api/1.0/sync_message/offline endpoint" in wrong.stderr
    base = run_tool(lab, "serverofflinesynctool.sh", "-url", lab.info["servers"][plain]["url"], "-generate", "out",
                    cwd=work)
    assert base.returncode == 0, base.stderr


def test_tools_trust_the_jre_truststore_not_ssl_cert_file(lab_factory, work):
    """A JVM ignores SSL_CERT_FILE and friends: only the truststore handed to it makes the lab CA trusted."""
    lab = lab_factory(1, "--https", "--records", "1")
    url = lab.info["servers"]["lls001"]["url"] + GENERATE
    ca = str(lab.dir / "ca.pem")
    pem_only = {"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}
    untrusted = run_tool(lab, "serverofflinesynctool.sh", "-url", url, "-generate", "out", cwd=work, ca=False,
                         env=pem_only)
    assert untrusted.returncode != 0 and "PKIX path building failed" in untrusted.stderr
    assert not (work / "out").exists() or not list((work / "out").iterdir())
    assert server_tool(lab, "lls001", "-generate", "out", cwd=work).returncode == 0
    untrusted = run_tool(lab, "backofficeofflinesynctool.sh", "-url", lab.info["backoffice"]["url"], "out",
                         cwd=work, ca=False, env=pem_only)
    assert untrusted.returncode != 0 and "PKIX path building failed" in untrusted.stderr


def test_unwritable_paths_are_error_messages_not_tracebacks(lab_factory, work):
    lab = lab_factory(1, "--records", "1")
    assert server_tool(lab, "lls001", "-generate", "out", cwd=work).returncode == 0
    up = backoffice_tool(lab, "-out", str(work / "no" / "such" / "folder" / "ack.bin"), "out", cwd=work)
    assert up.returncode == 1 and up.stderr.splitlines()[-1].startswith("ERROR: ")
    assert "Exception in thread" not in up.stderr
    assert "NoSuchFileException" in up.stderr
    (work / "blocker").write_text("a file where a folder should be")
    gen = server_tool(lab, "lls001", "-generate", str(work / "blocker" / "out"), cwd=work)
    assert gen.returncode == 1 and gen.stderr.splitlines()[-1].startswith("ERROR: ")
    assert "Exception in thread" not in gen.stderr


def test_variants_install_the_tools_without_sh_and_exiting_zero(lab_factory, work):
    """exit-zero-tools and tools-without-sh: the same Java program, installed as a 2022.09 Linux install names it and
    exiting 0 after an error; the lab's tools folder (`fnelab tools-path --dir`) holds them."""
    lab = lab_factory(1, "--security", "--records", "3", "--variant", "exit-zero-tools",
                      "--variant", "tools-without-sh")
    tools = Path(lab.cli("tools-path", "--dir", str(lab.dir)).stdout.strip())
    assert tools == Path(lab.info["tools"]) and sorted(p.name for p in tools.iterdir()) == [
        "backofficeofflinesynctool", "serverofflinesynctool"]
    info = lab.info["servers"]["lls001"]
    url = info["url"] + GENERATE
    bad = run_tool(lab, "serverofflinesynctool", "-authorize", "admin", "wrong", "-url", url, "-generate", "out",
                   cwd=work, tools=tools)
    assert bad.returncode == 0 and "glsErr.userAuthFailed" in bad.stderr  # an error, and yet exit status 0
    assert bad.stdout.splitlines() == [STARTED]
    good = run_tool(lab, "serverofflinesynctool", "-authorize", "admin", info["password"], "-url", url, "-generate",
                    "out", cwd=work, tools=tools)
    assert good.returncode == 0 and good.stdout.splitlines() == [STARTED, "Sync completed for 3 device records."]
    default = lab_factory(1, "--records", "1", name="default")
    assert sorted(p.name for p in Path(default.info["tools"]).iterdir()) == [
        "backofficeofflinesynctool.sh", "serverofflinesynctool.sh"]
    listing = default.cli("variants").stdout
    assert "exit-zero-tools" in listing and "tools-without-sh" in listing
