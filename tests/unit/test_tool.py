"""The tool backend's rules, with real programs standing in for a vendor tool (shell scripts that print what a real
tool might): where the tools are found, the documented order of arguments, judging by console lines whatever the
exit code, the password kept out of every text, the JVM truststore from ca_path."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.module_utils import _tool as tool  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._connection import Connection  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError, MismatchError  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._action import run_command  # noqa: E402

SECRET = "s3cret-pw"


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


warnings: list[str] = []


def server(folder: Path, url: str = "http://lls.example:7070", **conn) -> tool.ToolLicenseServer:
    return tool.ToolLicenseServer(Connection(url, **conn), str(folder), warnings.append, run_command)


def test_tools_are_found_with_sh_then_bare_else_the_error_names_what_was_looked_for(tmp_path):
    bare = script(tmp_path, "serverofflinesynctool", "exit 0")
    assert server(tmp_path).tool.argv == [str(bare)]  # a 2022.09 Linux install: no .sh
    with_sh = script(tmp_path, "serverofflinesynctool.sh", "exit 0")
    assert server(tmp_path).tool.argv == [str(with_sh)]  # the admin guide's name first
    with pytest.raises(FneError) as err:
        tool.ToolBackOffice(Connection("https://bo.example/deviceservices"), str(tmp_path), warnings.append,
                            run_command)
    assert "backofficeofflinesynctool.sh, backofficeofflinesynctool" in err.value.msg and str(tmp_path) in err.value.msg


def test_an_exact_command_overrides_the_lookup(tmp_path):
    wrapper = script(tmp_path, "site-wrapper", 'echo "OfflineSync utility started."; echo "No new data is available."')
    lls = tool.ToolLicenseServer(Connection("http://lls.example:7070"), None, warnings.append, run_command,
                                 f"{wrapper} --site-option")
    assert lls.tool.argv == [str(wrapper), "--site-option"] and lls.tool.name == "site-wrapper"
    assert lls.generate(str(tmp_path / "out"))["message"] == "No new data is available."
    with pytest.raises(FneError, match="not found or is not executable"):
        tool.ToolLicenseServer(Connection("http://lls.example:7070"), None, warnings.append, run_command,
                               str(tmp_path / "missing"))


def test_validate_certs_false_is_refused_for_https(tmp_path):
    script(tmp_path, "serverofflinesynctool", "exit 0")
    with pytest.raises(FneError, match="validate_certs: false is refused with the tool backend"):
        server(tmp_path, "https://lls.example:1443", validate_certs=False)
    server(tmp_path, "http://lls.example:7070", validate_certs=False)  # no certificate to check


def test_authorize_comes_first_and_the_password_never_shows(tmp_path):
    """An exit status 0 after an unknown line is a failure, in the tool's own words, without the password."""
    script(tmp_path, "serverofflinesynctool", 'echo "OfflineSync utility started."; echo "args: $*"; exit 0')
    lls = server(tmp_path, username="admin", password=SECRET)
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"ack")
    with pytest.raises(FneError) as err:
        lls.process(str(ack), str(tmp_path / "out"))
    assert f"args: -authorize admin ******** -url http://lls.example:7070/api/1.0/sync_ack/offline -process {ack}" \
        in err.value.msg
    assert SECRET not in err.value.msg and "exit status 0" in err.value.msg


def test_a_relayed_rest_error_keeps_its_status_and_key(tmp_path):
    """As the vendor's tools print it: the fleet sets a refused file aside on a 400 whichever backend heard it."""
    script(tmp_path, "serverofflinesynctool", 'echo "OfflineSync utility started."\n'
           "echo \"Server responded with a 400 and an error message of: key='glsErr.invalidSyncAck' message='bad' "
           "arguments=[]\"")
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"ack")
    with pytest.raises(FneError) as err:
        server(tmp_path).process(str(ack))
    assert (err.value.status, err.value.key) == (400, "glsErr.invalidSyncAck") and "message='bad'" in err.value.msg


def test_the_back_office_tool_times_are_read_in_its_zone(tmp_path):
    """The mismatch and the acknowledgment's LastSyncTime the back-office tool prints, in UTC+05:30: read in the
    back office's time_zone, they are the real times; the license server's tool keeps reading as UTC."""
    message = tmp_path / "20190124T110500.fnesync"
    message.write_bytes(b"m")
    script(tmp_path, "backofficeofflinesynctool", 'echo "OfflineSync utility started."\n'
           'echo \'"Mismatched or out of order time stamp in sync message": "Expected sync time Jan 24, 2019 4:34:09 '
           'PM, got Jan 24, 2019 4:30:00 PM"\'; exit 1')
    bo = Connection("https://bo.example/deviceservices", time_zone="+05:30")
    back_office = tool.ToolBackOffice(bo, str(tmp_path), warnings.append, run_command)
    with pytest.raises(MismatchError) as err:
        back_office.upload_file(str(message))
    assert err.value.expected_time == dt.datetime(2019, 1, 24, 11, 4, 9, tzinfo=dt.timezone.utc)
    out = 'while [ "$1" != -out ]; do shift; done; echo ack > "$2"'
    script(tmp_path, "backofficeofflinesynctool", f'{out}\necho "Successfully sent sync data and received a sync '
           'acknowledgment."\necho \'LastSyncTime="Jan 24, 2019 4:35:00 PM"\'')
    assert back_office.upload_file(str(message)) == b"ack\n"
    assert back_office.last_sync_time == "2019-01-24T11:05:00Z"
    assert tool.tool_error(err.value.msg, "x", "serverofflinesynctool", 1).expected_time.hour == 16  # UTC


def test_processing_is_judged_by_its_purging_lines(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"ack")
    script(tmp_path, "serverofflinesynctool", f'echo "Picked up JAVA_TOOL_OPTIONS: -Dx=y" >&2\n'
           f'echo "OfflineSync utility started."; rm "{out}/20250101T000000.fnesync"\n'
           'echo "Purging file 20250101T000000.fnesync"; exit 3')
    (out / "20250101T000000.fnesync").write_bytes(b"m")
    warnings.clear()
    done = server(tmp_path).process(str(ack), str(out))  # the documented lines win over the exit status
    assert done["purged"] == [str(out / "20250101T000000.fnesync")] and "exited 3" in warnings[-1]
    script(tmp_path, "serverofflinesynctool", 'echo "OfflineSync utility started."; exit 1')
    with pytest.raises(FneError, match=r"exit status 1\) printed no documented success line: \(no output\)"):
        server(tmp_path).process(str(ack), str(out))  # a failed exit that purged nothing


def test_a_download_without_its_documented_line_is_a_lost_answer_and_keeps_what_the_tool_wrote(tmp_path):
    script(tmp_path, "serverofflinesynctool", 'echo "OfflineSync utility started."\n'  # -url URL -generate DIR
           'echo data > "$4/20250101T000000.fnesync"; echo partial > "$4/20250101T000001.fnesync.part"\n'
           'echo "java.net.SocketException: Connection reset"; exit 0')
    out = tmp_path / "out"
    with pytest.raises(tool.LostResponseError) as err:
        server(tmp_path).generate(str(out))
    assert "Connection reset" in err.value.msg and "force: true" in err.value.msg
    assert "20250101T000001.fnesync.part.unrecognized" in err.value.msg  # kept, and named
    assert [f["name"] for f in err.value.result["files"]] == ["20250101T000000.fnesync"]
    kept = sorted(p.name for p in out.iterdir())
    assert kept == ["20250101T000000.fnesync", "20250101T000001.fnesync.part.unrecognized"]


def test_the_truststore_from_ca_path_is_one_a_jvm_reads(tmp_path):
    import trustme  # the lab's CA maker (tests/lab)

    ca_a, ca_b = trustme.CA(), trustme.CA()
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca_a.cert_pem.bytes() + ca_b.cert_pem.bytes())
    store = tmp_path / "trust.jks"
    tool.java_truststore(str(pem), str(store))
    listing = subprocess.run(["keytool", "-list", "-keystore", str(store), "-storepass", "changeit"],
                             capture_output=True, text=True, check=True).stdout
    assert "Your keystore contains 2 entries" in listing and listing.count("trustedCertEntry") == 2
    (tmp_path / "empty.pem").write_text("no certificate here")
    with pytest.raises(FneError, match="holds no PEM certificate"):
        tool.java_truststore(str(tmp_path / "empty.pem"), str(store))
