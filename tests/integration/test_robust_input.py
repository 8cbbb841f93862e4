"""Bad input (issue 9): what a careless user can get wrong in a module option, a host variable, a play variable or
the store. Every case asserts the words that tell the user what to fix, and that nothing changed: the lab's state,
no request where none should be made, the files (tree_digest) and the store.

Module cases run in two ansible-playbook runs (two halves, side by side), one loop task per module on the
controller (the action plugin runs the module in the controller process); a sample runs shipped as well
(fne_offline_sync_in_process false: AnsibleModule in a process of its own). A case that names a license server
gets a lab server of its own, so a request it should not have made is traced back to it; the few that name the
real back office run one by one, each followed by a checkpoint of the lab's counters; the few whose arguments
hold a secret run one by one too (ansible prints a loop's items, and the output is searched for the secret).
Host-variable cases share one sync run, one bad variable per host.

Permission cases need an unprivileged user. As root, every ansible run of this file goes through
`unshare --map-user=1000`: in that user namespace the test's files belong to an ordinary user, and mode bits apply.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import reliability
import yaml
from fnetest import BIN, ansible_env, run
from test_modules_support import CALLBACKS, TOOLS, Results
from test_sync_support import Result, lab_state, tree_digest

UNSHARE = ["unshare", "--map-user=1000", "--map-group=1000"] if os.geteuid() == 0 else []
URL_SECRET = "Url-S3cret-9f2c"      # a password written into a URL: must never be echoed
WRONG_PASSWORD = "Wr0ng-Pa55-77ab"  # a refused password: must never be echoed either
NOT_LOST = ("force: true", "was lost")  # the wrong advice for an error where nothing reached a server


def clean_env(**extra: str) -> dict:
    """ansible_env() without FNE_* variables from the caller's environment (they are fallbacks of the options)."""
    env = {k: v for k, v in ansible_env(ANSIBLE_DEPRECATION_WARNINGS="False").items() if not k.startswith("FNE_")}
    env.update(extra)
    return env


def ansible(cmd: list[str], tmp: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """An ansible command, as an ordinary user (see the module docstring), with its temporary files in tmp (that
    user's home may not exist)."""
    env = dict(env or clean_env(), ANSIBLE_REMOTE_TMP=str(tmp / "ansible-remote"),
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"))
    return run([*UNSHARE, *cmd], check=False, env=env, timeout=600, cwd=cwd)


@pytest.fixture(scope="module", autouse=True)
def _unprivileged_runs_work():
    if UNSHARE:
        proc = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"running as root needs `unshare --map-user` for the permission cases: {proc}"


def failure_texts(out: str) -> dict[str, list[str]]:
    """host -> the error words of each of its failed tasks (msg and a validator's argument_errors); '*' -> the
    [ERROR] lines of ansible itself."""
    found: dict[str, list[str]] = defaultdict(list)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^fatal: \[([^\]]+)\]: FAILED! => ", out, re.M):
        host = match.group(1).split(" -> ")[0]
        try:
            data, _end = decoder.raw_decode(out, match.end())
        except ValueError:
            found[host].append(out[match.end():match.end() + 2000])
            continue
        found[host].append(" ".join([str(data.get("msg", ""))] + [str(e) for e in data.get("argument_errors") or []]))
    found["*"].extend(re.findall(r"^\[ERROR\]: (.*)$", out, re.M))
    return found


def sync_run(tmp: Path, inventory: Path, store: Path | str, *args: str, cwd: Path | None = None) -> Result:
    """The sync playbook; its output is also kept in tmp/sync.log."""
    result = Result(ansible([str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(inventory),
                             "-e", f"fne_sync_store={store}", *args], tmp, cwd=cwd))
    with open(tmp / "sync.log", "a") as log:
        log.write(result.out + result.proc.stderr)
    return result


def requests_of(state: dict) -> dict[str, dict]:
    return {**{name: server["requests"] for name, server in state["servers"].items()},
            "backoffice": state["backoffice"]["requests"]}


def server_pools(lab) -> dict[str, list[str]]:
    """The lab's servers by kind: plain (http, no security), secured (http, security), https (no security)."""
    pools: dict[str, list[str]] = {"plain": [], "secured": [], "https": []}
    for name, server in sorted(lab.info["servers"].items()):
        kind = "https" if server["https"] else "secured" if server["security"] else "plain"
        if not (server["https"] and server["security"]):
            pools[kind].append(name)
    return pools


# ---- module cases ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    module: str
    args: dict
    expect: tuple = ()           # every phrase must be in the error message
    server: str | None = None    # "plain" | "secured" | "https": a lab server of its own ({url} {host} {password})
    files: dict = field(default_factory=dict)  # path in the case's folder -> bytes | "dir" | "sync" (a real message)
    modes: dict = field(default_factory=dict)  # glob in the case's folder -> mode, set for the run only
    contacts: bool = False       # may reach a server (its answer is the error), but must change nothing
    backoffice: bool = False     # names the real back office: checked with a checkpoint of its own
    expect_any: tuple = ()       # at least one of these phrases
    forbid: tuple = ()           # none of these may be in the error message
    check_mode: bool = False
    shipped: bool = False       # also run shipped (AnsibleModule in its own process)
    creates: tuple = ()          # what it may leave: generate makes its (empty) folder before its first request


def C(id: str, module: str, args: dict, *expect: str, **kw) -> Case:  # noqa: A002, N802
    return Case(id, module, args, tuple(expect), **kw)


GEN = {"path": "{d}/out"}
URL_ERR = "must start with http:// or https://."
HOSTPORT_ERR = "has no valid host and port."
SPACE_ERR = ("holds a space, a control or an invisible character", HOSTPORT_ERR)
NUM = "timeout must be above 0 and at most 86400, not "
STR_FLOAT = "is of type str and we were unable to convert to float"
SYNC_SRC = {"src": "sync"}  # a folder holding one real sync message of the case's server

MODULE_CASES = [
    # URLs: refused before any request, whatever the module or backend
    C("url-ftp", "generate", {**GEN, "url": "ftp://{host}"}, "The license server URL 'ftp://", URL_ERR,
      server="plain"),
    C("url-no-scheme", "generate", {**GEN, "url": "{host}"}, URL_ERR, server="plain"),
    C("url-empty", "generate", {**GEN, "url": ""}, "The license server URL '' must start with http://"),
    C("url-bare-word", "server_info", {"url": "lls001"}, URL_ERR),
    C("url-port-letters", "generate", {**GEN, "url": "http://{host}x"}, HOSTPORT_ERR, server="plain"),
    C("url-port-too-big", "generate", {**GEN, "url": "http://127.0.0.1:99999"}, HOSTPORT_ERR),
    C("url-no-host", "generate", {**GEN, "url": "http://:7070"}, HOSTPORT_ERR),
    C("url-space", "generate", {**GEN, "url": "http://lls 01.example.com:7070"}, "The license server URL",
      expect_any=SPACE_ERR),
    C("url-header-injection", "generate", {**GEN, "url": "http://{host}\r\nX-Injected: 1"}, "The license server URL",
      expect_any=SPACE_ERR, server="plain"),
    C("url-ipv6-malformed", "generate", {**GEN, "url": "http://[::1:7070"}, "The license server URL", HOSTPORT_ERR),
    C("url-credentials", "generate", {**GEN, "url": "http://admin:" + URL_SECRET + "@{host}"},
      "carries credentials (user:password@)", "set username and password instead", server="plain"),
    C("url-credentials-server-info", "server_info", {"url": "http://admin:" + URL_SECRET + "@{host}"},
      "carries credentials", server="plain"),
    C("url-tool-ftp", "generate", {**GEN, "url": "ftp://{host}", "backend": "tool", "tool_path": "{tools}"},
      URL_ERR, server="plain"),
    C("url-tool-credentials", "generate", {**GEN, "url": "http://admin:" + URL_SECRET + "@{host}",
                                           "backend": "tool", "tool_path": "{tools}"},
      "carries credentials", server="plain"),
    C("url-https-to-plain-port", "generate", {**GEN, "url": "https://{host}", "retries": 0}, "TLS failure",
      server="plain", creates=("out/",)),
    C("url-http-to-tls-port", "generate", {**GEN, "url": "http://{host}", "retries": 0}, "https",
      server="https", creates=("out/",)),
    C("bo-url-ftp", "upload", {"url": "ftp://example.com/deviceservices", "src": "{d}/src"},
      "The back office URL 'ftp://", URL_ERR, files=SYNC_SRC, server="plain"),
    C("bo-url-credentials", "upload", {"url": "https://u:" + URL_SECRET + "@example.com/deviceservices",
                                       "src": "{d}/src"}, "carries credentials", files=SYNC_SRC, server="plain"),
    C("bo-url-no-host", "upload", {"url": "https:///deviceservices", "src": "{d}/src"}, HOSTPORT_ERR,
      files=SYNC_SRC, server="plain"),
    C("bo-url-tool-credentials", "upload", {"url": "https://u:" + URL_SECRET + "@{bo_host}/deviceservices",
                                            "src": "{d}/src", "backend": "tool", "tool_path": "{tools}"},
      "carries credentials", files=SYNC_SRC, server="plain", backoffice=True),
    # numbers: refused before any request
    C("timeout-negative", "generate", {**GEN, "url": "{url}", "timeout": -1}, NUM + "-1.0.", server="plain"),
    C("timeout-zero", "generate", {**GEN, "url": "{url}", "timeout": 0}, NUM + "0.0.", server="plain"),
    C("timeout-nan", "generate", {**GEN, "url": "{url}", "timeout": "nan"}, NUM + "nan.", server="plain"),
    C("timeout-inf", "generate", {**GEN, "url": "{url}", "timeout": "inf"}, NUM + "inf.", server="plain"),
    C("timeout-1e300", "generate", {**GEN, "url": "{url}", "timeout": 1e300}, NUM + "1e+300.", server="plain"),
    C("timeout-too-long", "server_info", {"url": "{url}", "timeout": 86401}, NUM + "86401.0.", server="plain"),
    C("timeout-word", "generate", {**GEN, "url": "{url}", "timeout": "soon"}, "argument 'timeout' " + STR_FLOAT,
      server="plain"),
    C("timeout-list", "generate", {**GEN, "url": "{url}", "timeout": [1]},
      "argument 'timeout' is of type list and we were unable to convert to float", server="plain"),
    C("timeout-upload-zero", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src", "timeout": 0},
      NUM + "0.0.", files=SYNC_SRC, server="plain", backoffice=True),
    C("retries-negative", "generate", {**GEN, "url": "{url}", "retries": -5},
      "retries must be at least 0 and at most 100, not -5.", server="plain"),
    C("retries-1000", "process", {"url": "{url}", "src": "{d}/ack.bin", "retries": 1000},
      "retries must be at least 0 and at most 100, not 1000.", files={"ack.bin": b"FNEACK1 junk"}, server="plain"),
    C("retries-word", "generate", {**GEN, "url": "{url}", "retries": "x"},
      "argument 'retries' is of type str and we were unable to convert to int", server="plain"),
    C("retries-fraction", "generate", {**GEN, "url": "{url}", "retries": 1.5},
      "argument 'retries' is of type float and we were unable to convert to int", server="plain"),
    C("max-retry-wait-negative", "generate", {**GEN, "url": "{url}", "max_retry_wait": -1},
      "max_retry_wait must be at least 0.0 and at most 86400, not -1.0.", server="plain"),
    C("max-retry-wait-huge", "server_info", {"url": "{url}", "max_retry_wait": 1e9},
      "max_retry_wait must be at least 0.0 and at most 86400, not 1000000000.0.", server="plain"),
    C("max-retry-wait-word", "generate", {**GEN, "url": "{url}", "max_retry_wait": "later"},
      "argument 'max_retry_wait' " + STR_FLOAT, server="plain"),
    # types and choices
    C("validate-certs-ture", "generate", {**GEN, "url": "{url}", "validate_certs": "ture"},
      "argument 'validate_certs' is of type str and we were unable to convert to bool", "'ture'", server="https"),
    C("validate-certs-upload-ture", "upload", {"url": "{bo}", "src": "{d}/src", "validate_certs": "ture"},
      "argument 'validate_certs' is of type str and we were unable to convert to bool", files=SYNC_SRC,
      server="plain"),
    C("backend-ssh", "generate", {**GEN, "url": "{url}", "backend": "ssh"},
      "value of backend must be one of: http, tool, got: ssh", server="plain"),
    C("backend-uppercase", "process", {"url": "{url}", "src": "{d}/ack.bin", "backend": "HTTP"},
      "value of backend must be one of: http, tool, got: HTTP", files={"ack.bin": b"x"}, server="plain"),
    C("force-maybe", "generate", {**GEN, "url": "{url}", "force": "maybe"},
      "argument 'force' is of type str and we were unable to convert to bool", server="plain"),
    # missing and unknown options
    C("generate-no-path", "generate", {"url": "{url}"}, "missing required arguments: path", server="plain"),
    C("upload-no-src", "upload", {"url": "{bo}"}, "missing required arguments: src"),
    C("upload-no-url", "upload", {"src": "{d}/src"}, "missing required arguments: url", files=SYNC_SRC,
      server="plain"),
    C("process-no-src", "process", {"url": "{url}", "path": "{d}"}, "one of the following is required: src, content",
      server="plain"),
    C("process-src-and-content", "process", {"url": "{url}", "src": "{d}/ack", "content": "QUNL"},
      "parameters are mutually exclusive: src|content", files={"ack": b"ACK"}, server="plain", shipped=True),
    C("process-content-not-base64", "process", {"url": "{url}", "content": "not base64!"}, "content is not base64",
      server="plain", shipped=True),
    C("process-content-empty", "process", {"url": "{url}", "content": ""}, "content is empty", server="plain"),
    C("unknown-option", "generate", {**GEN, "url": "{url}", "bogus": 1},
      "Unsupported parameters for (fne.offline_sync.generate) module: bogus", server="plain"),
    C("upload-takes-no-password", "upload", {"url": "{bo}", "src": "{d}/src", "password": WRONG_PASSWORD},
      "Unsupported parameters for (fne.offline_sync.upload) module: password", files=SYNC_SRC, server="plain"),
    C("upload-path-for-src", "upload", {"url": "{bo}", "src": "{d}/src", "path": "{d}/src"},
      "Unsupported parameters for (fne.offline_sync.upload) module: path", files=SYNC_SRC, server="plain"),
    C("username-without-password", "generate", {**GEN, "url": "{url}", "username": "admin"},
      "parameters are required together: username, password", server="secured"),
    C("password-without-username", "server_info", {"url": "{url}", "password": WRONG_PASSWORD},
      "parameters are required together: username, password", server="secured"),
    # files and folders
    C("generate-path-is-file", "generate", {"url": "{url}", "path": "{d}/afile"},
      "Cannot create the folder {d}/afile: File exists", files={"afile": b"x"}, server="plain"),
    C("generate-path-under-file", "generate", {"url": "{url}", "path": "{d}/afile/sub"},
      "Cannot create the folder {d}/afile/sub: Not a directory", files={"afile": b"x"}, server="plain"),
    C("generate-path-read-only", "generate", {"url": "{url}", "path": "{d}/ro"},
      "Cannot write to the folder {d}/ro: permission denied", files={"ro": "dir"}, modes={"ro": 0o500},
      server="plain"),
    C("generate-path-in-read-only", "generate", {"url": "{url}", "path": "{d}/ro/out"},
      "Cannot create the folder {d}/ro/out: Permission denied", files={"ro": "dir"}, modes={"ro": 0o500},
      server="plain"),
    C("generate-tool-path-read-only", "generate", {"url": "{url}", "path": "{d}/ro", "backend": "tool",
                                                   "tool_path": "{tools}"},
      "Cannot write to the folder {d}/ro: permission denied", files={"ro": "dir"}, modes={"ro": 0o500},
      server="plain"),
    C("upload-src-missing", "upload", {"url": "{bo}", "src": "{d}/nope"}, "src {d}/nope does not exist."),
    C("upload-src-unreadable-file", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src"},
      "Permission denied", files=SYNC_SRC, modes={"src/*.fnesync": 0o000}, server="plain", backoffice=True),
    C("upload-src-unreadable-folder", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src"},
      "Permission denied", files=SYNC_SRC, modes={"src": 0o000}, server="plain", backoffice=True),
    C("upload-dest-is-folder", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src", "dest": "{d}/adir"},
      "dest {d}/adir is a folder: name the acknowledgment file. Nothing was sent.", files={**SYNC_SRC, "adir": "dir"},
      server="plain", backoffice=True),
    C("upload-dest-under-file", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src",
                                           "dest": "{d}/afile/ack.bin"},
      "{d}/afile/ack.bin", files={**SYNC_SRC, "afile": b"x"}, server="plain", backoffice=True),
    C("upload-dest-read-only", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src",
                                          "dest": "{d}/ro/ack.bin"},
      "cannot be written to {d}/ro/ack.bin ({d}/ro is not a writable folder). Nothing was sent.",
      files={**SYNC_SRC, "ro": "dir"}, modes={"ro": 0o500},
      server="plain", backoffice=True),
    C("upload-tool-path-missing", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/src", "backend": "tool",
                                             "tool_path": "{d}/adir"},
      "The vendor tool backofficeofflinesynctool was not found in {d}/adir (looked for "
      "backofficeofflinesynctool.sh, backofficeofflinesynctool): set tool_path",
      files={**SYNC_SRC, "adir": "dir"}, server="plain", backoffice=True),
    C("process-src-missing", "process", {"url": "{url}", "src": "{d}/nope.bin"},
      "Cannot read the acknowledgment file {d}/nope.bin: No such file or directory", server="plain"),
    C("process-src-folder", "process", {"url": "{url}", "src": "{d}/adir"},
      "Cannot read the acknowledgment file {d}/adir: Is a directory", files={"adir": "dir"}, server="plain"),
    C("process-src-unreadable", "process", {"url": "{url}", "src": "{d}/ack.bin"},
      "Cannot read the acknowledgment file {d}/ack.bin: Permission denied", files={"ack.bin": b"FNEACK1"},
      modes={"ack.bin": 0o000}, server="plain"),
    C("process-tool-src-missing", "process", {"url": "{url}", "src": "{d}/nope.bin", "backend": "tool",
                                              "tool_path": "{tools}"},
      "Cannot read the acknowledgment file {d}/nope.bin", server="plain"),
    C("server-info-path-is-file", "server_info", {"url": "{url}", "path": "{d}/afile"}, "({d}/afile): Not a directory",
      files={"afile": b"x"}, server="plain", contacts=True),
    C("server-info-path-unreadable", "server_info", {"url": "{url}", "path": "{d}/adir"},
      "({d}/adir): Permission denied", files={"adir": "dir"}, modes={"adir": 0o000}, server="plain", contacts=True),
    C("ca-path-folder", "generate", {**GEN, "url": "{url}", "ca_path": "{d}/adir"},
      "ca_path {d}/adir is not a file: set it to the PEM file of the license server's CA.", files={"adir": "dir"},
      server="https"),
    C("ca-path-missing", "server_info", {"url": "{url}", "ca_path": "{d}/nope.pem"},
      "ca_path {d}/nope.pem is not a file", server="https"),
    C("ca-path-not-pem", "generate", {**GEN, "url": "{url}", "ca_path": "{d}/junk.pem"}, "TLS failure",
      expect_any=("no certificate or crl found", "PEM"), files={"junk.pem": b"not a certificate\n"}, server="https",
      creates=("out/",)),
    C("tool-path-without-tools", "generate", {**GEN, "url": "{url}", "backend": "tool", "tool_path": "{d}/adir"},
      "The vendor tool serverofflinesynctool was not found in {d}/adir (looked for "
      "serverofflinesynctool.sh, serverofflinesynctool): set tool_path", files={"adir": "dir"},
      server="plain"),
    C("tool-path-is-file", "generate", {**GEN, "url": "{url}", "backend": "tool", "tool_path": "{d}/afile"},
      "serverofflinesynctool was not found in {d}/afile", files={"afile": b"x"}, server="plain"),
    # reach a server (its answer is the error) and change nothing
    C("process-empty-ack", "process", {"url": "{url}", "src": "{d}/ack.bin"}, expect_any=("invalidSyncAck", "empty"),
      files={"ack.bin": b""}, server="plain", contacts=True),
    C("process-garbage-ack", "process", {"url": "{url}", "src": "{d}/ack.bin"}, "[400 glsErr.invalidSyncAck]",
      files={"ack.bin": bytes(range(256)) * 4}, server="plain", contacts=True),
    C("process-sync-message-as-ack", "process", {"url": "{url}", "src": "{d}/src/{sync}"},
      "[400 glsErr.invalidSyncAck]", files=SYNC_SRC, server="plain", contacts=True),
    C("process-tool-garbage-ack", "process", {"url": "{url}", "src": "{d}/ack.bin", "backend": "tool",
                                              "tool_path": "{tools}"},
      "glsErr.invalidSyncAck", files={"ack.bin": b"garbage"}, server="plain", contacts=True),
    C("upload-not-a-sync-file", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/notes.txt"},
      '"Invalid sync message"', files={"notes.txt": b"meeting notes\n"}, contacts=True),
    C("upload-garbage-with-sync-name", "upload", {"url": "{bo}", "ca_path": "{ca}", "src": "{d}/junk"},
      '"Invalid sync message"', files={"junk/20250101T000000.fnesync": b"FNESYNC1 garbage"}, contacts=True),
    C("wrong-password", "generate", {"url": "{url}", "path": "{d}", "username": "admin", "password": WRONG_PASSWORD},
      "[401 glsErr.userAuthFailed]", "check username and password", server="secured", contacts=True),
    C("no-credentials-secured", "generate", {"url": "{url}", "path": "{d}"},
      "The server has administrative security enabled: set username and password.", server="secured",
      contacts=True),
    C("url-is-the-back-office", "generate", {"url": "{bo_base}", "ca_path": "{ca}", "path": "{d}"},
      "[404]", "Is url the license server's base URL", contacts=True),
    C("bo-url-is-a-license-server", "upload", {"url": "{url}", "src": "{d}/src"},
      "[404]", "Is url the back office's deviceservices URL", files=SYNC_SRC, server="plain", contacts=True),
    C("check-mode-path-read-only", "generate", {"url": "{url}", "path": "{d}/ro/out"},
      "Cannot write to the folder {d}/ro/out", files={"ro": "dir"}, modes={"ro": 0o500}, server="plain",
      contacts=True, check_mode=True),
]

# also run shipped (AnsibleModule in its own process, as on a remote host): one of each kind of check
SHIPPED = {"url-ftp", "url-credentials", "url-tool-credentials", "url-http-to-tls-port", "timeout-nan",
           "validate-certs-ture", "unknown-option", "generate-path-read-only", "upload-dest-is-folder",
           "process-garbage-ack"}
for _case in MODULE_CASES:
    _case.shipped = _case.id in SHIPPED


def _fill(value, ctx: dict):
    if isinstance(value, str):
        for key, text in ctx.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, ctx) for v in value)
    return value


def _make_files(folder: Path, case: Case, url: str | None) -> list[tuple[Path, str]]:
    """The case's files; returns the folders that must receive a real sync message from `url`."""
    folder.mkdir(parents=True)
    wanted = []
    for rel, spec in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec in ("dir", "sync"):
            path.mkdir()
            if spec == "sync":
                wanted.append((path, url))
        else:
            path.write_bytes(spec)
    return wanted


def _hand_out(folder: Path, url: str) -> None:
    """One real message from the lab server at url, with the stand-in vendor tool."""
    run([str(TOOLS / "serverofflinesynctool.sh"), "-url", url, "-generate", str(folder)])
    assert len(list(folder.glob("*.fnesync"))) == 1, f"no message from {url} in {folder}"


def _set_modes(folder: Path, modes: dict, saved: dict) -> None:
    for pattern, mode in modes.items():
        for path in sorted(folder.glob(pattern)):
            saved[path] = path.stat().st_mode & 0o7777
            path.chmod(mode)


def _judge(case: Case, result: dict | None) -> list[str]:
    """What is wrong with one case's result (nothing: an empty list)."""
    if result is None:
        return ["no result"]
    msg = str(result.get("msg", ""))
    if not result.get("failed"):
        return [f"did not fail: {json.dumps(result)[:400]}"]
    found = []
    missing = [p for p in case.expect if p not in msg]
    if missing:
        found.append(f"{missing} not in {msg!r}")
    if case.expect_any and not any(p in msg for p in case.expect_any):
        found.append(f"none of {list(case.expect_any)} in {msg!r}")
    forbid = case.forbid + (URL_SECRET, WRONG_PASSWORD, "Traceback") + (() if case.contacts else NOT_LOST)
    present = [p for p in forbid if p in msg]
    if present:
        found.append(f"{present} in {msg!r}")
    if not case.contacts and result.get("lost_response"):
        found.append("reported as a lost answer although nothing reached a server")
    return found


def _tree_changes(before: dict, after: dict, prefix: str) -> list[str]:
    return sorted(k for k in set(before) | set(after) if k.startswith(prefix) and before.get(k) != after.get(k))


def _case_results(res: Results) -> dict[tuple[str, str], dict]:
    """(case id, host) -> that case's result: a loop task's items carry the id, a single task is named after it."""
    out: dict[tuple[str, str], dict] = {}
    for line in res.lines:
        result = dict(line["result"], failed=line["status"] == "failed")
        if "results" in result:
            for item in result["results"]:
                if isinstance(item.get("item"), dict) and not item.get("skipped"):
                    # the callback's dump drops an item's `failed`; only a failure carries `msg` (a module's own
                    # success result never does: it says `message`)
                    out[item["item"]["id"], line["host"]] = dict(item, failed=bool(item.get("failed")) or "msg" in item)
        elif line["status"] != "skipped":
            out[line["task"], line["host"]] = result
    return out


def _module_tasks(cases: list[Case], checkpoint: dict) -> list[dict]:
    """The play: the cases that name the real back office one by one, each followed by a checkpoint; the cases
    whose arguments hold a secret one by one (ansible prints a loop's items); the rest in one loop per module."""
    def single(case: Case) -> dict:
        return {"name": case.id, f"fne.offline_sync.{case.module}": case.args, "ignore_errors": True,
                "check_mode": case.check_mode, "when": f"inventory_hostname == 'inproc' or {case.shipped}"}

    tasks = [dict(checkpoint, name="checkpoint start")]
    for case in [c for c in cases if c.backoffice]:
        tasks += [single(case), dict(checkpoint, name=f"checkpoint {case.id}")]
    secret = [c for c in cases if not c.backoffice and (URL_SECRET in str(c.args) or WRONG_PASSWORD in str(c.args))]
    tasks += [single(c) for c in secret if not c.contacts]
    groups: dict[tuple, list[Case]] = defaultdict(list)
    for case in cases:
        if not case.backoffice and case not in secret:
            groups[case.contacts, case.module, case.check_mode].append(case)
    for (_contacts, module, check_mode), members in sorted(groups.items()):
        tasks.append({"name": f"{module} cases", f"fne.offline_sync.{module}": "{{ item.args }}",
                      "loop": [{"id": c.id, "shipped": c.shipped, "args": c.args} for c in members],
                      "loop_control": {"label": "{{ item.id }}"}, "ignore_errors": True, "check_mode": check_mode,
                      "when": "inventory_hostname == 'inproc' or item.shipped"})
    tasks += [single(c) for c in secret if c.contacts]
    return tasks


@pytest.mark.parametrize("part", [0, 1])
def test_module_options(lab_factory, tmp_path, part):
    """Every module option wrong: the exact error, no request where none should be made, nothing changed on the
    servers or on disk, no secret echoed. In the controller process, and for a sample also shipped. In two halves
    that run side by side."""
    half = (len(MODULE_CASES) + 1) // 2
    module_cases = MODULE_CASES[half * part:half * (part + 1)]
    lab = lab_factory(70, "--security", "0.1", "--https", "0.1", "--records", "2")
    info = lab.info
    pools = server_pools(lab)
    bo = info["backoffice"]["url"]
    work = tmp_path / "w"
    assert len({c.id for c in MODULE_CASES}) == len(MODULE_CASES), "duplicate case ids"
    servers: dict[str, str] = {}
    messages: list[tuple[Path, str]] = []
    contexts: dict[str, dict] = {}
    for case in module_cases:
        ctx = contexts[case.id] = {"d": str(work / case.id), "bo": bo, "bo_host": bo.split("//")[1].split("/")[0],
                                   "bo_base": bo.rsplit("/", 1)[0], "ca": info["ca_path"], "tools": str(TOOLS)}
        if case.server:
            servers[case.id] = name = pools[case.server].pop(0)
            ctx.update(url=info["servers"][name]["url"], host=info["servers"][name]["url"].split("//")[1])
        messages += _make_files(work / case.id, case, ctx.get("url"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: _hand_out(*job), messages))
    cases = []
    for case in module_cases:
        ctx = contexts[case.id]
        syncs = sorted((work / case.id).glob("src/*.fnesync"))
        ctx["sync"] = syncs[0].name if syncs else ""
        cases.append(dataclasses.replace(case, expect=_fill(case.expect, ctx), expect_any=_fill(case.expect_any, ctx),
                                         args=_fill(case.args, ctx)))
    checkpoint = {"ansible.builtin.command": {"argv": [str(BIN / "fnelab"), "state", "--dir", str(lab.dir), "--json"]},
                  "run_once": True, "changed_when": False}
    book = tmp_path / "cases.yml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                                     "tasks": _module_tasks(cases, checkpoint)}], sort_keys=False))
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "inproc": local, "shipped": dict(local, fne_offline_sync_in_process=False)}}}))

    before_requests, before_lab, before_tree = requests_of(lab.state()), lab_state(lab), tree_digest(work)
    saved: dict[Path, int] = {}
    for case in cases:
        _set_modes(work / case.id, case.modes, saved)
    results = tmp_path / "results.jsonl"
    proc = ansible([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book), "--forks", "2"], tmp_path,
                   clean_env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="fne_results",
                             FNE_RESULTS_FILE=str(results)))
    for path, mode in saved.items():
        path.chmod(mode)
    res = Results(proc, [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else [])
    after_requests, after_lab, after_tree = requests_of(lab.state()), lab_state(lab), tree_digest(work)
    assert proc.returncode == 0, f"the run itself failed:\n{res.output[-5000:]}"

    bo_requests: dict[str, int] = {}  # requests the back office counted during each case that names it
    previous = json.loads(res.get("checkpoint start", "inproc")["stdout"])
    for case in [c for c in cases if c.backoffice]:
        now = json.loads(res.get(f"checkpoint {case.id}", "inproc")["stdout"])
        bo_requests[case.id] = sum(now["backoffice"]["requests"].values()) - sum(
            previous["backoffice"]["requests"].values())
        previous = now

    by_case = _case_results(res)
    problems: dict[str, list[str]] = {}
    for case in cases:
        shared = []
        name = servers.get(case.id)
        if name and not case.contacts and after_requests[name] != before_requests[name]:
            shared.append(f"requests reached {name}: {before_requests[name]} -> {after_requests[name]}")
        if name and after_lab["servers"][name] != before_lab["servers"][name]:
            shared.append(f"{name} changed: {before_lab['servers'][name]} -> {after_lab['servers'][name]}")
        if bo_requests.get(case.id):
            shared.append(f"{bo_requests[case.id]} request(s) reached the back office")
        changed = [p for p in _tree_changes(before_tree, after_tree, case.id + "/")
                   if p not in {f"{case.id}/{rel}" for rel in case.creates}]
        if changed:
            shared.append(f"files changed: {changed}")
        for path in ("inproc", "shipped") if case.shipped else ("inproc",):
            problems[f"module/{path}/{case.id}"] = _judge(case, by_case.get((case.id, path))) + shared
    if after_lab["backoffice"] != before_lab["backoffice"]:
        problems["module#backoffice"] = [f"the back office changed: {before_lab['backoffice']} -> "
                                         f"{after_lab['backoffice']}"]
    problems["module#output"] = [f"{secret} is in the output" for secret in (URL_SECRET, WRONG_PASSWORD)
                                 if secret in res.output]
    _report(problems)


def _report(problems: dict[str, list[str]]) -> None:
    """Record every clean case; fail with every case that is not."""
    for case, found in problems.items():
        if not found and "#" not in case:  # '#': a check over all cases, not a case
            reliability.record("bad_input", case)
    failing = {case: found for case, found in problems.items() if found}
    assert not failing, f"{len(failing)} case(s) wrong:\n" + "\n".join(
        f"{case}: {'; '.join(found)}" for case, found in sorted(failing.items()))


# ---- the sync playbook: host variables ---------------------------------------------------------------------------
@dataclass
class HostCase:
    id: str
    kind: str                  # the lab server the host names: plain | secured | https
    vars: dict
    expect: tuple
    remote: bool = False       # fne_sync_topology remote: the modules run on the host (connection local here)
    connects: bool = False     # a scheme that does not fit the port shows only when connecting (still no request)
    name: str = "{server}"     # the inventory name (a host name with '/')


def H(id: str, kind: str, variables: dict, *expect: str, **kw) -> HostCase:  # noqa: A002, N802
    return HostCase(id, kind, variables, expect, **kw)


NOT_BOOL = "is of type str and we were unable to convert to bool"
HOST_CASES = [
    H("validate-certs-ture", "https", {"fne_lls_validate_certs": "ture"},
      "argument 'fne_lls_validate_certs' " + NOT_BOOL),
    H("backoffice-validate-certs-word", "plain", {"fne_backoffice_validate_certs": "yes please"},
      "argument 'fne_backoffice_validate_certs' " + NOT_BOOL),
    H("topology-cloud", "plain", {"fne_sync_topology": "cloud"},
      "value of fne_sync_topology must be one of: api, remote, got: cloud"),
    H("timeout-word", "plain", {"fne_sync_timeout": "soon"}, "argument 'fne_sync_timeout' " + STR_FLOAT),
    H("timeout-negative", "plain", {"fne_sync_timeout": -1}, "fne_sync_timeout", "-1"),
    H("timeout-zero", "plain", {"fne_sync_timeout": 0}, "fne_sync_timeout"),
    H("timeout-nan", "plain", {"fne_sync_timeout": "nan"}, "fne_sync_timeout", "nan"),
    H("timeout-1e300", "plain", {"fne_sync_timeout": 1e300}, "fne_sync_timeout"),
    H("retries-word", "plain", {"fne_sync_retries": "x"},
      "argument 'fne_sync_retries' is of type str and we were unable to convert to int"),
    H("retries-1000", "plain", {"fne_sync_retries": 1000}, "fne_sync_retries", "1000"),
    H("retries-negative", "plain", {"fne_sync_retries": -5}, "fne_sync_retries", "-5"),
    H("max-retry-wait-negative", "plain", {"fne_sync_max_retry_wait": -1}, "fne_sync_max_retry_wait"),
    H("backend-ssh", "plain", {"fne_sync_backend": "ssh"},
      "value of fne_sync_backend must be one of: http, tool, got: ssh"),
    H("url-ftp", "plain", {"fne_lls_url": "ftp://{host}"}, "fne_lls_url", URL_ERR),
    H("url-no-scheme", "plain", {"fne_lls_url": "{host}"}, "fne_lls_url", URL_ERR),
    H("url-space", "plain", {"fne_lls_url": "http://lls 01:7070"}, "fne_lls_url", "space"),
    H("url-bad-port", "plain", {"fne_lls_url": "http://{host}x"}, "fne_lls_url", HOSTPORT_ERR),
    H("url-credentials", "plain", {"fne_lls_url": "http://admin:" + URL_SECRET + "@{host}"}, "fne_lls_url",
      "carries credentials"),
    H("url-credentials-tool", "plain", {"fne_lls_url": "http://admin:" + URL_SECRET + "@{host}",
                                        "fne_sync_backend": "tool", "fne_sync_tool_path": "{tools}"},
      "fne_lls_url", "carries credentials"),
    H("backoffice-url-ftp", "plain", {"fne_backoffice_url": "ftp://{bo_host}/deviceservices"}, "fne_backoffice_url",
      URL_ERR),
    H("username-without-password", "secured", {"fne_lls_password": None}, "fne_lls_password"),
    H("tool-path-without-tools", "plain", {"fne_sync_backend": "tool", "fne_sync_tool_path": "{empty}"},
      "serverofflinesynctool was not found in {empty}"),
    H("url-http-to-tls-port", "https", {"fne_lls_url": "http://{host}"}, "https", connects=True),
    H("url-https-to-plain-port", "plain", {"fne_lls_url": "https://{host}"}, "TLS failure", connects=True),
    H("host-name-with-slash", "plain", {}, "invalid server name for the store: 'dc1/", name="dc1/{server}"),
]
REMOTE_CASES = [
    H("remote-validate-certs-ture", "plain", {"fne_lls_validate_certs": "ture"},
      "argument 'fne_lls_validate_certs' " + NOT_BOOL, remote=True),
    H("remote-url-ftp", "plain", {"fne_lls_url": "ftp://{host}"}, URL_ERR, remote=True),
    H("remote-timeout-zero", "plain", {"fne_sync_timeout": 0}, NUM + "0.0.", remote=True),
]


def _store_texts(store: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(store.rglob("*")) if p.is_file())


def test_host_variables(lab_factory, tmp_path):
    """One bad host variable per host, in one sync run: each such host fails alone in words naming what to fix,
    is never contacted, gets nothing in the store; the good hosts are synchronized."""
    _host_cases(lab_factory(40, "--security", "0.1", "--https", "0.1", "--records", "3"), tmp_path, HOST_CASES)


def test_remote_host_variables(lab_factory, tmp_path):
    """The same for remote-topology hosts (their modules validate): each fails alone, and the api-topology hosts
    of the fleet are still synchronized and reported, also when every remote-topology host fails."""
    _host_cases(lab_factory(6, "--records", "3"), tmp_path, REMOTE_CASES)


def _host_cases(lab, tmp_path: Path, host_cases: list[HostCase]) -> None:
    info, pools = lab.info, server_pools(lab)
    data = yaml.safe_load(lab.inventory.read_text())
    hosts = data["all"]["children"]["license_servers"]["hosts"]
    good = [pools["plain"].pop(0), pools["plain"].pop(0)]
    (tmp_path / "empty").mkdir()
    names: dict[str, tuple[str, str]] = {}  # case -> (inventory name, lab server)
    expects: dict[str, tuple] = {}
    for case in host_cases:
        server = pools[case.kind].pop(0)
        ctx = {"server": server, "host": info["servers"][server]["url"].split("//")[1], "tools": str(TOOLS),
               "bo_host": info["backoffice"]["url"].split("//")[1].split("/")[0], "empty": str(tmp_path / "empty")}
        name = _fill(case.name, ctx)
        entry = dict(hosts.pop(server), **_fill(case.vars, ctx))
        if case.remote:
            entry.update(fne_sync_topology="remote", ansible_connection="local",
                         ansible_python_interpreter=sys.executable,
                         fne_sync_remote_path=str(tmp_path / "remote" / case.id))
        hosts[name] = entry
        names[case.id] = (name, server)
        expects[case.id] = _fill(case.expect, ctx)
    for server in [s for s in list(hosts) if s in info["servers"] and s not in good
                   and s not in {srv for _n, srv in names.values()}]:
        del hosts[server]  # the servers no case uses stay out of the run
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(data, indent=1))
    store = tmp_path / "store"
    before_requests, before_lab = requests_of(lab.state()), lab_state(lab)
    result = sync_run(tmp_path, inventory, store)
    after_requests, after_lab = requests_of(lab.state()), lab_state(lab)
    texts = failure_texts(result.out)
    store_text = _store_texts(store)

    problems: dict[str, list[str]] = {}
    for case in host_cases:
        name, server = names[case.id]
        text = " | ".join(texts.get(name, []))
        found = []
        if name not in result.failed():
            found.append(f"{name} did not fail: {result.recap.get(name)}")
        missing = [p for p in expects[case.id] if p not in text]
        if missing:
            found.append(f"{missing} not in {text[:600]!r}")
        present = [p for p in NOT_LOST + (URL_SECRET,) if p in text]
        if present:
            found.append(f"{present} in {text[:600]!r}")
        if after_requests[server] != before_requests[server]:
            found.append(f"{server} was contacted: {after_requests[server]}")
        if after_lab["servers"][server] != before_lab["servers"][server]:
            found.append(f"{server} changed: {after_lab['servers'][server]}")
        if case.connects:
            if (store / name / "needs_force").exists():
                found.append("marked for a forced download it does not need")
        elif "/" not in name and (store / name).exists():
            found.append(f"store changed: {sorted(tree_digest(store / name))}")
        if case.remote and (tmp_path / "remote" / case.id).exists():
            found.append("the remote path was created")
        problems[f"host/{case.id}"] = found
    servers = lab.verify()["servers"]
    problems["host#good"] = [f"{s}: not synchronized: {result.recap.get(s)} {servers[s]}" for s in good
                             if s not in result.changed() - result.failed() or servers[s]["in_backoffice"] != 3]
    problems["host#secret"] = [f"{URL_SECRET} in the {where}" for where, text in
                               (("output", result.out + result.proc.stderr), ("store", store_text))
                               if URL_SECRET in text]
    if result.proc.returncode != 2:
        problems["host#exit"] = [f"exit status {result.proc.returncode}, wanted 2 (some hosts failed)"]
    missing = {name for name, _server in names.values()} - set(result.recap)
    if missing:
        problems["host#recap"] = [f"not in the recap: {sorted(missing)}; the run ended with:\n{result.out[-1500:]}"]
    report = json.loads((store / "report.json").read_text()) if (store / "report.json").exists() else {}
    if set(report.get("servers") or ()) != set(hosts):
        problems["host#report"] = [f"report.json lists {sorted(report.get('servers') or ())}"]
    _report(problems)


# ---- the sync playbook: play variables and host patterns -------------------------------------------------------------
PLAY_CASES = {
    "workers-zero": (["-e", "fne_sync_workers=0"], "fne_sync_workers"),
    "workers-negative": (["-e", "fne_sync_workers=-1"], "fne_sync_workers"),
    "workers-word": (["-e", "fne_sync_workers=many"],
                     "argument 'fne_sync_workers' is of type str and we were unable to convert to int"),
    "lock-timeout-negative": (["-e", "fne_sync_lock_timeout=-1"], "fne_sync_lock_timeout"),
    "auto-recover-ture": (["-e", "fne_sync_auto_recover=ture"], "argument 'fne_sync_auto_recover' " + NOT_BOOL),
    "store-empty": (["-e", "fne_sync_store="], "fne_sync_store"),
    "hosts-no-such-group": (["-e", "fne_sync_hosts=nosuchgroup"], "nosuchgroup"),
    "inventory-without-license-servers": ([], "license_servers"),
}


@pytest.mark.parametrize("case", sorted(PLAY_CASES))
def test_play_variables_and_patterns(lab_factory, tmp_path, case):
    """A play-wide variable out of range, or a host pattern that matches nothing: the run fails (exit status not 0:
    a schedule must not report success forever) in words naming it, before any server is touched."""
    lab = lab_factory(2, "--records", "3")
    args, phrase = PLAY_CASES[case]
    inventory = lab.inventory
    if case == "inventory-without-license-servers":
        data = yaml.safe_load(lab.inventory.read_text())
        data["all"]["children"] = {"site_a": data["all"]["children"].pop("license_servers")}
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps(data))
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    cwd.mkdir()
    before_requests, before_lab = requests_of(lab.state()), lab_state(lab)
    result = sync_run(tmp_path, inventory, store, *args, cwd=cwd)
    errors = " | ".join(text for texts in failure_texts(result.out + result.proc.stderr).values() for text in texts)
    found = []
    if result.proc.returncode == 0:
        found.append("exit status 0")
    if phrase not in errors:
        found.append(f"{phrase!r} not in the errors {errors[:800]!r}")
    after_requests = requests_of(lab.state())
    if after_requests != before_requests:
        found.append(f"servers were contacted: {after_requests}")
    if lab_state(lab) != before_lab:
        found.append("the lab changed")
    if store.exists() or any(cwd.iterdir()):
        found.append(f"a store was written: {sorted(tree_digest(store))} {sorted(tree_digest(cwd))}")
    _report({f"play/{case}": found})


# ---- the store ---------------------------------------------------------------------------------------------------
STORE_WIDE = {"path-is-a-file": ("not a directory", "not a folder"),
              "read-only": ("permission denied", "not a writable folder")}


@pytest.mark.parametrize("kind", sorted(STORE_WIDE))
def test_store_unusable(lab_factory, tmp_path, kind):
    """fne_sync_store names a file, or a folder the user cannot write: every host fails with the store's error in
    words (the recap shows each), nothing there changes, no server is contacted."""
    lab = lab_factory(3, "--records", "3")
    store = tmp_path / "store"
    if kind == "path-is-a-file":
        store.write_text("not a folder\n")
    else:
        store.mkdir(mode=0o500)
    before_requests, before_lab = requests_of(lab.state()), lab_state(lab)
    try:
        result = sync_run(tmp_path, lab.inventory, store)
    finally:
        store.chmod(0o700)
    texts = failure_texts(result.out)
    found = []
    for host in sorted(lab.info["servers"]):
        text = " | ".join(texts.get(host, []))
        if host not in result.failed():
            found.append(f"{host} is not failed in the recap: {result.recap.get(host)}")
        if str(store) not in text or not any(phrase in text.lower() for phrase in STORE_WIDE[kind]):
            found.append(f"{host}: the store's error is not in {text[:400]!r}")
    if "[Errno" in result.out:
        found.append("a raw [Errno NN] in the output")
    if result.proc.returncode == 0:
        found.append("exit status 0")
    if (store.read_text() != "not a folder\n") if store.is_file() else list(store.iterdir()):
        found.append("the store changed")
    if requests_of(lab.state()) != before_requests or lab_state(lab) != before_lab:
        found.append("servers were contacted")
    _report({f"store/{kind}": found})


def test_store_folder_of_one_host_is_a_file(lab_factory, tmp_path):
    """STORE/lls001 is a file: lls001 fails alone naming it, is never contacted; the others are synchronized."""
    lab = lab_factory(3, "--records", "3")
    store = tmp_path / "store"
    store.mkdir()
    (store / "lls001").write_text("a file\n")
    before_requests, before_lab = requests_of(lab.state()), lab_state(lab)
    result = sync_run(tmp_path, lab.inventory, store)
    text = " | ".join(failure_texts(result.out).get("lls001", []))
    found = [] if result.failed() == {"lls001"} else [f"lls001 alone should fail: {result.recap}"]
    if f"{store}/lls001" not in text:
        found.append(f"the error does not name {store}/lls001: {text[:400]!r}")
    if result.changed() != {"lls002", "lls003"}:
        found.append(f"lls002 and lls003 should be synchronized: {result.recap}")
    if requests_of(lab.state())["lls001"] != before_requests["lls001"] or \
            lab_state(lab)["servers"]["lls001"] != before_lab["servers"]["lls001"]:
        found.append("lls001 was contacted")
    if (store / "lls001").read_text() != "a file\n":
        found.append("the file changed")
    _report({"store/host-folder-is-a-file": found})


def test_store_folders_of_one_host_unwritable(lab_factory, tmp_path):
    """acks/ unwritable (lls001), outbox/ unwritable (lls002): each fails alone in words; lls002 is never contacted;
    lls001's accepted acknowledgment is kept and named, nothing is lost; once fixed as the message says, the next
    run completes."""
    lab = lab_factory(3, "--records", "3")
    store = tmp_path / "store"
    folders = [store / "lls001" / "acks", store / "lls002" / "outbox"]
    for folder in folders:
        folder.mkdir(parents=True)
        folder.chmod(0o500)
    before_requests, before_lab = requests_of(lab.state()), lab_state(lab)
    try:
        result = sync_run(tmp_path, lab.inventory, store)
    finally:
        for folder in folders:
            folder.chmod(0o700)
    texts = {host: " | ".join(found) for host, found in failure_texts(result.out).items()}
    kept = re.search(r"it was saved as (\S+): move it to (\S+), then run again", texts.get("lls001", ""))
    problems = {
        "store/acks-unwritable": [] if kept and f"could not be written to {store}/lls001/acks/" in texts["lls001"]
        else [f"lls001: {texts.get('lls001')}"],
        "store/outbox-unwritable": [] if f"Cannot write to the folder {store}/lls002/outbox: permission denied"
        in texts.get("lls002", "") else [f"lls002: {texts.get('lls002')}"],
    }
    if result.failed() != {"lls001", "lls002"} or result.changed() - result.failed() != {"lls003"}:
        problems["store/acks-unwritable"].append(f"lls001 and lls002 alone should fail: {result.recap}")
    if requests_of(lab.state())["lls002"] != before_requests["lls002"] or \
            lab_state(lab)["servers"]["lls002"] != before_lab["servers"]["lls002"]:
        problems["store/outbox-unwritable"].append("lls002 was contacted")
    lab.verify()  # nothing lost: the accepted file's acknowledgment is kept
    if kept:
        Path(kept.group(1)).rename(kept.group(2))
    again = sync_run(tmp_path, lab.inventory, store)
    if again.failed() or again.proc.returncode != 0:
        problems["store/acks-unwritable"].append(f"the next run failed: {again!r}"[:3000])
    lab.verify(complete=True)
    _report(problems)


def test_a_bad_host_variable_leaves_no_trace(lab_factory, tmp_path):
    """A store that has never seen a server downloads with force on first contact (records handed out to a lost
    store come again). A first run that failed on a bad host variable must leave no trace that would make the
    next one, the variable fixed, skip that: every record reaches the back office."""
    lab = lab_factory(1, "--records", "5")
    url = lab.info["servers"]["lls001"]["url"]
    run([str(TOOLS / "serverofflinesynctool.sh"), "-url", url, "-generate", str(tmp_path / "lost")])  # then lost
    data = yaml.safe_load(lab.inventory.read_text())
    data["all"]["children"]["license_servers"]["hosts"]["lls001"]["fne_sync_timeout"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    store = tmp_path / "store"
    first = sync_run(tmp_path, bad, store)
    found = [] if first.failed() == {"lls001"} else [f"the bad variable did not fail lls001: {first.recap}"]
    if (store / "lls001").exists():
        found.append(f"the failed run left {sorted(tree_digest(store / 'lls001'))}")
    second = sync_run(tmp_path, lab.inventory, store)
    if second.failed():
        found.append(f"the fixed run failed: {second.recap}")
    servers = lab.verify()["servers"]
    if servers["lls001"]["in_backoffice"] != 5:
        found.append(f"records handed out before the store was lost stay on the server: {servers['lls001']}")
    _report({"host/bad-variable-leaves-no-trace": found})
