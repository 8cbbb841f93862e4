# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each module does: its argument spec (the connection table plus its own options), its work in normal and
check mode, and the one path from a client exception to a failure result. Used by the modules (on any host) and by
the action plugins (in the controller process). Private to the collection."""

from __future__ import annotations

import base64
import binascii
import copy
import os
import tempfile
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.fne.offline_sync.plugins.module_utils._backend import back_office, license_server
from ansible_collections.fne.offline_sync.plugins.module_utils._client import LicenseServer
from ansible_collections.fne.offline_sync.plugins.module_utils._connection import (
    connection_from_params,
    lls_base_url,
    module_spec,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError, LostResponseError, MismatchError
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    list_sync_files,
    sha256_file,
    sync_time_of,
    zone_of,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._folder import resolve_upload
from ansible_collections.fne.offline_sync.plugins.module_utils._http import HAS_REQUESTS, REQUESTS_IMPORT_ERROR
from ansible_collections.fne.offline_sync.plugins.module_utils._tool import RunCommand

# The most bytes that travel inside a module's arguments or result instead of as a file transfer: process's
# acknowledgment sent along (remote_src=false), generate's waiting files in all (return_content). Sync files and
# acknowledgments are a few KiB; a larger one goes the transfer's way.
INLINE_MAX = 1024 * 1024

MODULE_SPECS: dict = {
    "generate": dict(module_spec("lls"), path=dict(type="path", required=True), force=dict(type="bool", default=False),
                     return_content=dict(type="bool", default=False)),
    "upload": dict(module_spec("backoffice"), src=dict(type="path", required=True),
                   dest=dict(type="path", default="syncack.bin")),
    "process": dict(module_spec("lls"), src=dict(type="path"), content=dict(type="str"), path=dict(type="path"),
                    remote_src=dict(type="bool", default=True)),
    "server_info": dict(module_spec("lls"), path=dict(type="path")),
}

MODULE_OPTIONS: dict = {
    name: dict(required_together=[["username", "password"]] if "username" in spec else [])
    for name, spec in MODULE_SPECS.items()
}
MODULE_OPTIONS["process"].update(mutually_exclusive=[["src", "content"]], required_one_of=[["src", "content"]])


def argument_spec(name: str) -> dict:
    """The full argument spec of one module (a deep copy: AnsibleModule mutates what it gets)."""
    return copy.deepcopy(MODULE_SPECS[name])


def _check_folder(path: str) -> None:
    """In check mode: fail as the real run would when the folder cannot be created or written; create nothing."""
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise FneError(f"Cannot write to the folder {path} ({probe} is not a writable folder).")


def _generate(params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    if check_mode:
        # Asking for records hands them out (the server advances its cursor), so check mode cannot know whether
        # any are pending: it checks the server answers (and the credentials) and that the folder is usable.
        lls = LicenseServer(connection_from_params(params), warn)
        lls.health()
        lls.check_authorization()
        _check_folder(params["path"])
        result = {"changed": False, "records": 0, "files": [], "folder": os.path.abspath(params["path"]),
                  "message": f"Check mode: the license server at {lls.base} answers; no records were requested "
                             "(a request hands them out), so whether new data is pending is unknown."}
    else:
        result = license_server(params, warn, run_command).generate(params["path"], force=params["force"])
    result["waiting"] = _waiting(params["path"], result["files"], INLINE_MAX if params["return_content"] else 0)
    return result


def _waiting(folder: str, written: list, budget: int = 0) -> list:
    """Every sync file in folder after the run, oldest first, with its sha256: what a remote-topology run fetches,
    known from the one task that ran on the host (no second task to list and hash). With a budget, each file that
    still fits in it carries its bytes too (base64): the run takes it without a fetch."""
    known = {f["path"]: f["sha256"] for f in written}
    waiting = []
    for path in list_sync_files(folder):
        entry = {"path": path, "name": os.path.basename(path), "size": os.path.getsize(path),
                 "sha256": known.get(path) or sha256_file(path)}
        if entry["size"] <= budget:
            with open(path, "rb") as handle:
                entry["content"] = base64.b64encode(handle.read()).decode("ascii")
            budget -= entry["size"]
        waiting.append(entry)
    return waiting


def _upload(params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    if check_mode:
        files, dest = resolve_upload(params["src"], params["dest"])
        return {"changed": bool(files), "ack": None, "accepted": [], "files": files, "ack_dest": dest,
                "message": f"Check mode: would send {len(files)} file(s) to {params['url']} and write the "
                           f"acknowledgment to {dest}."}
    result = back_office(params, warn, run_command).upload(params["src"], params["dest"])
    result.setdefault("mismatch", False)
    return result


def _process(params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    if params.get("content") is not None:
        return _process_content(params, check_mode, warn, run_command)
    src = os.path.abspath(params["src"])
    if check_mode:
        if not os.path.isfile(src) or not os.access(src, os.R_OK):
            raise FneError(f"Cannot read the acknowledgment file {src}.")
        return {"changed": True, "last_sync_time": None, "purged": [], "lines": [],
                "candidates": list_sync_files(params["path"]) if params.get("path") else [],
                "message": "Check mode: the acknowledgment was not sent; which files it covers is known only from "
                           "the server's answer, so nothing is reported as purged (candidates lists the sync files "
                           "it could cover)."}
    return license_server(params, warn, run_command).process(src, params.get("path"))


def _process_content(params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    """The acknowledgment given as base64 (``content``): written to a private temporary file, processed from there
    as ``src`` would be (the vendor tool reads a file), removed afterwards."""
    try:
        data = base64.b64decode(params["content"], validate=True)
    except (binascii.Error, ValueError):
        raise FneError("content is not base64: give the acknowledgment's bytes base64-encoded (as "
                       "ansible.builtin.slurp returns a file), or its file as src.") from None
    if not data:
        raise FneError("content is empty: an acknowledgment has bytes.")
    fd, path = tempfile.mkstemp(prefix="fne-ack-", suffix=".bin")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return _process(dict(params, src=path, content=None), check_mode, warn, run_command)
    finally:
        os.unlink(path)


def _server_info(params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    # Always over HTTP: the vendor tool has no health command.
    lls = LicenseServer(connection_from_params(params), warn)
    result: dict = {"changed": False}
    try:
        result.update(lls.health())
        result["error"] = None
    except FneError as exc:
        result.update(reachable=False, url=lls_base_url(params["url"]), status=None, version=None,
                      instance_id=None, host_id=None, host_id_type=None, database=None, security=None,
                      https=None, health=None, error=exc.msg)
    result["authorized"] = None
    if result["reachable"] and params.get("username"):
        try:
            result["authorized"] = lls.check_authorization()
        except FneError as exc:
            result["authorized"] = False
            result["error"] = exc.msg
    pending: list = []
    if params.get("path"):
        for file in list_sync_files(params["path"]):
            when = sync_time_of(file, zone_of(params.get("time_zone")))
            pending.append({"path": file, "name": os.path.basename(file), "size": os.path.getsize(file),
                            "sync_time": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None})
    result["pending"] = pending
    result["pending_count"] = len(pending)
    return result


RUNNERS: dict = {"generate": _generate, "upload": _upload, "process": _process, "server_info": _server_info}


def execute(name: str, params: dict, check_mode: bool, warn: Callable[[str], None], run_command: RunCommand) -> dict:
    """Run one module's work; raises FneError (with .result holding what to report alongside the failure).
    run_command runs the vendor tool (backend=tool): AnsibleModule.run_command in a module, a subprocess call in
    the controller process."""
    if not HAS_REQUESTS:
        raise FneError("The Python library requests is required on the host that runs this module (pip install "
                       "requests).")
    if params.get("validate_certs") is False and str(params.get("url") or "").startswith("https:"):
        warn(f"validate_certs is false: the certificate of {params['url']} is not checked, so anyone between this host "
             "and the server can read the credentials and the records; set ca_path to the private CA instead.")
    try:
        return RUNNERS[name](params, check_mode, warn, run_command)
    except OSError as exc:  # a local file problem the client did not foresee: the same failure path, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        raise FneError(f"{name} failed on a local file{where}: {exc.strerror or exc}") from None


def failure_result(exc: FneError) -> dict:
    """What a failure returns besides msg: the partial result and the error's facts."""
    result = dict(exc.result)
    result.setdefault("changed", bool(result.get("files") if "records" in result else result.get("accepted")))
    result["error"] = {"type": type(exc).__name__, "url": exc.url, "status": exc.status, "key": exc.key}
    if isinstance(exc, LostResponseError):
        result["lost_response"] = True
    if isinstance(exc, MismatchError):
        result.update(mismatch=True, expected=exc.expected, received=exc.received)
    return result


def module_run_command(module: Any) -> RunCommand:
    def run(argv: list, environ_update: dict) -> tuple:
        rc, out, err = module.run_command(argv, environ_update=environ_update, check_rc=False)
        return rc, out + err
    return run


def run_module(name: str, module: Any = None) -> None:
    """main() of every module (module: an AnsibleModule already built with argument_spec(name), else built here)."""
    if module is None:
        module = AnsibleModule(argument_spec=argument_spec(name), supports_check_mode=True, **MODULE_OPTIONS[name])
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    try:
        result = execute(name, module.params, module.check_mode, module.warn, module_run_command(module))
    except FneError as exc:
        module.fail_json(msg=exc.msg, exception=None, **failure_result(exc))
    module.exit_json(**result)
