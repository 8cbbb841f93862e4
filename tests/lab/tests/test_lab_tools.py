"""The documented administrator workflow, driven by the stand-in vendor tools (subprocesses, absolute paths)."""

from __future__ import annotations

import shutil

from fnelab.wire import Ack, parse_file_name, vendor_time
from labhelp import ACK, GENERATE, backoffice_tool, decode, run_tool, server_tool

STARTED = "OfflineSync utility started."


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
        assert up.stdout.splitlines() == [STARTED, "Successfully sent sync data and received a sync acknowledgment."]
        ack = Ack.decode((work / f"{name}.ack").read_bytes())
        assert ack.target_id == lab.info["servers"][name]["host_id"]
        assert ack.last_sync_time == parse_file_name(files[-1])

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


def test_tools_need_the_lab_ca_for_https(lab_factory, work):
    lab = lab_factory(1, "--https", "--records", "1")
    url = lab.info["servers"]["lls001"]["url"] + GENERATE
    untrusted = run_tool(lab, "serverofflinesynctool.sh", "-url", url, "-generate", "out", cwd=work, ca=False)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert server_tool(lab, "lls001", "-generate", "out", cwd=work).returncode == 0
    untrusted = run_tool(lab, "backofficeofflinesynctool.sh", "-url", lab.info["backoffice"]["url"], "out",
                         cwd=work, ca=False)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_unwritable_paths_are_error_messages_not_tracebacks(lab_factory, work):
    lab = lab_factory(1, "--records", "1")
    assert server_tool(lab, "lls001", "-generate", "out", cwd=work).returncode == 0
    up = backoffice_tool(lab, "-out", str(work / "no" / "such" / "folder" / "ack.bin"), "out", cwd=work)
    assert up.returncode == 1 and up.stderr.startswith("ERROR: ") and "Traceback" not in up.stderr
    assert "No such file or directory" in up.stderr
    (work / "blocker").write_text("a file where a folder should be")
    gen = server_tool(lab, "lls001", "-generate", str(work / "blocker" / "out"), cwd=work)
    assert gen.returncode == 1 and "Traceback" not in gen.stderr
