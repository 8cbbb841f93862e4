# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Vendor-tool backend: runs serverofflinesynctool.sh / backofficeofflinesynctool.sh and parses their documented
output into the same return values as the HTTP client. Private to the collection.

The vendor tool takes the administrative password on its command line (`-authorize NAME PASSWORD`): while it runs,
other users of the host can read it in the process list. It never appears in a result, a log line or an error
message of this collection (every text taken from the tool is scrubbed of it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import (
    SYNC_ACK,
    SYNC_MESSAGE,
    Connection,
    check_connection,
    lls_base_url,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import (
    FORCE_HINT,
    MISMATCH_KEY,
    FneError,
    MismatchError,
    mismatch_times,
    scrub,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import list_sync_files, move_atomic, sha256_file
from ansible_collections.fne.offline_sync.plugins.module_utils._folder import (
    GENERATE_NOTHING,
    GENERATE_SUCCESS,
    UPLOAD_SUCCESS,
    conflict_path,
    name_conflict,
    start_generate,
    take_replaced,
    upload_files,
)

SERVER_TOOL = "serverofflinesynctool.sh"
BACKOFFICE_TOOL = "backofficeofflinesynctool.sh"
COMPLETED_RE = re.compile(r"Sync completed for (\d+) device records\.")
PURGING_RE = re.compile(r"Purging file (\S+)")
STAGING_PREFIX = ".fne-tool-"
LAST_SYNC_RE = re.compile(r"[Ll]ast ?[Ss]ync ?[Tt]ime\W+(\S+)")


# (argv, environment additions) -> (exit code, stdout + stderr as text)
RunCommand = Callable[[List[str], Dict[str, str]], Tuple[int, str]]


class _Tool:
    def __init__(self, conn: Connection, tool_path: Optional[str], script: str, warn: Callable[[str], None],
                 run_command: RunCommand):
        check_connection(conn, "back office" if script == BACKOFFICE_TOOL else "license server")
        self.conn = conn
        self.warn = warn
        self.run_command = run_command
        folder = os.path.expanduser(tool_path) if tool_path else None
        candidate = os.path.join(folder, script) if folder else shutil.which(script)
        if not candidate or not os.path.isfile(candidate):
            where = f" in {folder}" if folder else " on PATH"
            raise FneError(f"The vendor tool {script} was not found{where}: set tool_path to the folder that holds it.")
        self.command = candidate

    def run(self, args: list[str], what: str) -> str:
        """Run the tool; return its output (stdout and stderr), scrubbed. A failure raises FneError."""
        argv = ["/bin/sh", self.command] if not os.access(self.command, os.X_OK) else [self.command]
        argv += args
        if self.conn.username:
            argv += ["-authorize", self.conn.username, self.conn.password or ""]
        env: Dict[str, str] = {}
        if self.conn.ca_path:
            # The stand-in and curl/python-based wrappers honour these; the vendor's Java tool uses its truststore.
            env.update(SSL_CERT_FILE=self.conn.ca_path, REQUESTS_CA_BUNDLE=self.conn.ca_path,
                       FNE_CA_PATH=self.conn.ca_path, FNE_TOOL_CA_PATH=self.conn.ca_path)
        if not self.conn.validate_certs:
            env["FNE_INSECURE"] = "1"
        try:
            rc, output = self.run_command(argv, env)
        except OSError as exc:
            raise FneError(f"Cannot run {self.command}: {exc.strerror or exc}") from None
        output = scrub(output, self.conn.secrets())
        if rc != 0:
            raise tool_error(output, what, self.command, rc)
        return output


def tool_error(output: str, what: str, command: str, rc: int) -> FneError:
    if MISMATCH_KEY in output:
        line = next((item for item in output.splitlines() if "Expected sync time" in item), "")
        expected, received = mismatch_times(line)
        text = f'"{MISMATCH_KEY}": "Expected sync time {expected}, got {received}"'
        return MismatchError(f"{what} failed: {text}", expected, received)
    tail = "\n".join(line for line in output.strip().splitlines()[-8:])
    return FneError(f"{what} failed: {os.path.basename(command)} exited {rc}: {tail or '(no output)'}")


class ToolLicenseServer:
    """The LicenseServerBackend (_backend.py), through serverofflinesynctool.sh."""

    def __init__(self, conn: Connection, tool_path: Optional[str], warn: Callable[[str], None],
                 run_command: RunCommand):
        self.conn = conn
        self.base = lls_base_url(conn.url)
        self.tool = _Tool(conn, tool_path, SERVER_TOOL, warn, run_command)

    def generate(self, path: str, force: bool = False) -> dict:
        path, result, replaceable = start_generate(path, force)
        files: list[dict] = result["files"]
        # The tool writes straight into its folder; give it a private one and move finished files atomically.
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path)
        try:
            try:
                # A run killed before moving its files left them in its staging folder: records the server
                # already handed out. Take them first (they are older than anything this run downloads).
                for leftover in sorted(glob.glob(os.path.join(path, STAGING_PREFIX + "*"))):
                    if leftover != staging:
                        self._collect(leftover, result, replaceable)
                        shutil.rmtree(leftover, ignore_errors=True)
                args = ["-url", self.base + SYNC_MESSAGE, "-generate", staging] + (["-force"] if force else [])
                output = self.tool.run(args, f"Generating sync data from {self.base}")
                self._collect(staging, result, replaceable)
            except FneError as exc:
                with contextlib.suppress(FneError):
                    self._collect(staging, result, replaceable)
                exc.amend(FORCE_HINT)
                result["changed"] = bool(files)
                exc.result = result
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        match = COMPLETED_RE.search(output)
        result["records"] = int(match.group(1)) if match else 0
        if len(files) == 1:
            files[0]["records"] = result["records"]
        result["changed"] = bool(files)
        result["message"] = GENERATE_SUCCESS.format(result["records"]) if files else GENERATE_NOTHING
        result["lines"] = [line for line in output.splitlines() if line.strip()]
        return result

    def _collect(self, staging: str, result: dict, replaceable: set) -> None:
        """Move the tool's finished files into path; never over an existing file but a superseded one (a different
        message under a taken name is kept beside it, then reported once every file is safe)."""
        conflicts = []
        for tmp in list_sync_files(staging):
            final = os.path.join(result["folder"], os.path.basename(tmp))
            digest = sha256_file(tmp)
            if final in replaceable:
                take_replaced(result, replaceable, final)
            elif os.path.exists(final):
                if sha256_file(final) != digest:
                    kept = conflict_path(final, digest)
                    move_atomic(tmp, kept)
                    conflicts.append(name_conflict(self.base + SYNC_MESSAGE, final, kept))
                    continue
                os.unlink(tmp)  # the very same message is already there
            if os.path.exists(tmp):
                move_atomic(tmp, final)
            result["files"].append({"path": final, "name": os.path.basename(final),
                                    "size": os.path.getsize(final), "sha256": digest, "records": None})
        unknown = self._keep_unknown(staging, result["folder"])
        if unknown:
            raise FneError(f"{os.path.basename(self.tool.command)} wrote files whose names are not "
                           f"yyyyMMddTHHmmss.fnesync; they may hold records the server handed out, so they were kept "
                           f"(upload never sends them): {', '.join(unknown)}")
        if conflicts:
            raise conflicts[0]

    @staticmethod
    def _keep_unknown(staging: str, folder: str) -> list[str]:
        """Never delete what a tool wrote: files left in its staging folder move beside the sync files as
        NAME.unrecognized (never a sync name). Returns their new paths."""
        kept = []
        for name in sorted(os.listdir(staging)):
            src = os.path.join(staging, name)
            if not os.path.isfile(src):
                continue
            dest, counter = os.path.join(folder, f"{name}.unrecognized"), 1
            while os.path.exists(dest):
                dest, counter = os.path.join(folder, f"{name}.{counter}.unrecognized"), counter + 1
            move_atomic(src, dest)
            kept.append(dest)
        return kept

    def process(self, ack_file: str, path: Optional[str] = None) -> dict:
        ack_file = os.path.abspath(os.path.expanduser(ack_file))
        if not os.path.isfile(ack_file):
            raise FneError(f"Cannot read the acknowledgment file {ack_file}: no such file")
        empty = None
        folder = os.path.abspath(os.path.expanduser(path)) if path else None
        if folder is None:
            empty = tempfile.mkdtemp(prefix="fne-tool-")
        try:
            output = self.tool.run(["-url", self.base + SYNC_ACK, "-process", ack_file, folder or empty],
                                   f"Processing the acknowledgment on {self.base}")
        finally:
            if empty:
                shutil.rmtree(empty, ignore_errors=True)
        lines = [line.strip() for line in output.splitlines() if PURGING_RE.search(line)]
        purged = [os.path.join(folder, PURGING_RE.search(line).group(1)) for line in lines] if folder else []
        match = LAST_SYNC_RE.search(output)
        last = match.group(1).rstrip(".") if match else None
        msg = f"Processed the sync acknowledgment: last sync time {last or 'unknown (not printed by the tool)'}"
        msg += f"; purged {len(purged)} file(s)." if folder else "."
        return {"changed": True, "last_sync_time": last, "processed": True, "purged": purged if folder else [],
                "lines": lines if folder else [], "message": msg}


class ToolBackOffice:
    """The BackOfficeBackend (_backend.py), through backofficeofflinesynctool.sh (one file per call, so that the
    acknowledgment of everything accepted is kept when a later file fails)."""

    def __init__(self, conn: Connection, tool_path: Optional[str], warn: Callable[[str], None],
                 run_command: RunCommand):
        self.conn = Connection(**{**conn.__dict__, "username": None, "password": None})
        self.url = conn.url.strip()
        self.warn = warn
        self.tool = _Tool(self.conn, tool_path, BACKOFFICE_TOOL, warn, run_command)

    def upload_file(self, file: str) -> bytes:
        staging = tempfile.mkdtemp(prefix=".fne-ack-", dir=os.path.dirname(os.path.abspath(file)))
        try:
            out = os.path.join(staging, "syncack.bin")
            output = self.tool.run(["-url", self.url, "-out", out, file],
                                   f"Upload of {file} to {self.url}")
            if UPLOAD_SUCCESS not in output or not os.path.isfile(out):
                raise FneError(f"Upload of {file} to {self.url}: the tool did not report an acknowledgment: "
                               f"{output.strip()[-500:]}")
            with open(out, "rb") as handle:
                return handle.read()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def upload(self, src: str, dest: str = "syncack.bin") -> dict:
        return upload_files(self.upload_file, src, dest, self.url, self.warn)
