# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Vendor-tool backend: runs the vendor's serverofflinesynctool / backofficeofflinesynctool and judges them by their
documented console lines into the same return values as the HTTP client. Private to the collection.

What the vendor documents is honoured exactly: `-authorize NAME PASSWORD` comes first, success is only ever the
documented console line (whatever the exit code: Java tools often exit 0 after printing an error), and HTTPS trust
is a JVM truststore (built here from ca_path, handed over in JAVA_TOOL_OPTIONS): a JVM ignores SSL_CERT_FILE.

The vendor tool takes the administrative password on its command line: while it runs, other users of the host can
read it in the process list. It never appears in a result, a log line or an error message of this collection (every
text taken from the tool is scrubbed of it).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shlex
import shutil
import ssl
import struct
import tempfile
import time
from datetime import tzinfo
from typing import Callable, Dict, Iterator, List, Optional, Tuple

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
    LostResponseError,
    MismatchError,
    SettingError,
    mismatch_times,
    scrub,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    list_sync_files,
    move_atomic,
    parse_time,
    sha256_file,
    zone_of,
)
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

SERVER_TOOL = "serverofflinesynctool"
BACKOFFICE_TOOL = "backofficeofflinesynctool"
# How installs name them: the admin guide's NAME.sh, a 2022.09 Linux install's bare NAME, NAME.bat on Windows.
TOOL_SUFFIXES = (".bat", ".cmd", "") if os.name == "nt" else (".sh", "")
STARTED = "OfflineSync utility started."
COMPLETED_RE = re.compile(r"^Sync completed for (\d+) device records\.$", re.M)
NOTHING_RE = re.compile(r"^" + re.escape(GENERATE_NOTHING) + "$", re.M)
PURGING_RE = re.compile(r"^Purging file (\S+)$")
# A JVM's own notes on stderr ("Picked up JAVA_TOOL_OPTIONS: ..."): not the tool speaking.
JVM_NOTE_RE = re.compile(r"^Picked up (JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS):")
# The acknowledgment's fields the back-office tool prints: LastSyncTime="Jan 13, 2019 10:52:45 AM" (quoted).
ACK_FIELD_RE = re.compile(r'^(MessageType|MessageTIme|MessageTime|LastSyncTime|SourceIDType|SourceID|SourceIds|'
                          r'TargetID|TargetIDType)=(.*)$')
# How the vendor's Java tools relay a REST error (public evidence, protocol.md).
SERVER_ANSWER_RE = re.compile(r"Server responded with a (\d{3})(?: and an error message of: key='([^']*)')?")
STAGING_PREFIX = ".fne-tool-"


# (argv, environment additions) -> (exit code, stdout + stderr as text)
RunCommand = Callable[[List[str], Dict[str, str]], Tuple[int, str]]


def tool_lines(output: str) -> List[str]:
    """The tool's own non-blank lines (without the JVM's notes), stripped."""
    return [line.strip() for line in output.splitlines() if line.strip() and not JVM_NOTE_RE.match(line.strip())]


def ack_fields(output: str) -> Dict[str, str]:
    """The acknowledgment fields the back-office tool printed, quotes removed."""
    fields = {}
    for line in tool_lines(output):
        match = ACK_FIELD_RE.match(line)
        if match:
            fields[match.group(1)] = match.group(2).strip().strip('"')
    return fields


def iso_time(text: Optional[str], zone: Optional[tzinfo] = None) -> Optional[str]:
    """A time the tool printed (the vendor's `Jan 13, 2019 10:52:45 AM`, read in `zone`, UTC by default) as ISO 8601
    in UTC, else None."""
    parsed = parse_time(text or "", zone)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else None


def java_truststore(pem_file: str, dest: str) -> None:
    """Write the certificates of a PEM file as a JKS truststore, the format every JVM reads (standard library only:
    the host that runs the tool may have nothing but Python and the vendor's JRE)."""
    try:
        with open(pem_file, encoding="ascii", errors="replace") as handle:
            pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", handle.read(), re.S)
    except OSError as exc:
        raise FneError(f"Cannot read ca_path {pem_file}: {exc.strerror or exc}") from None
    if not pems:
        raise FneError(f"ca_path {pem_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----).")
    body = struct.pack(">III", 0xFEEDFEED, 2, len(pems))
    now = int(time.time() * 1000)
    for index, pem in enumerate(pems):
        der = ssl.PEM_cert_to_DER_cert(pem)
        alias = f"fne-ca-{index}".encode()
        body += struct.pack(">IH", 2, len(alias)) + alias + struct.pack(">QH", now, 5) + b"X.509"
        body += struct.pack(">I", len(der)) + der
    # integrity digest keyed by a password; no password is handed to the JVM, so it is not checked (nothing secret)
    digest = hashlib.sha1("changeit".encode("utf-16-be") + b"Mighty Aphrodite" + body).digest()
    with open(dest, "wb") as handle:
        handle.write(body + digest)


def tool_command(tool_path: Optional[str], command: Optional[str], name: str) -> List[str]:
    """The exact command when one is set, else NAME.sh, NAME or NAME.bat in tool_path (or on PATH); SettingError
    naming the setting to fix when there is none."""
    option = "tool_server_command" if name == SERVER_TOOL else "tool_backoffice_command"
    if command:
        argv = shlex.split(command)
        found = shutil.which(argv[0]) if argv else None
        if not found:
            raise SettingError(f"The {name} command {command!r} was not found or is not executable.", option)
        return [found] + argv[1:]
    folder = os.path.expanduser(tool_path) if tool_path else None
    names = [name + suffix for suffix in TOOL_SUFFIXES]
    for candidate in names:
        path = os.path.join(folder, candidate) if folder else shutil.which(candidate)
        if path and os.path.isfile(path):
            # a script without its execute bit (copied from an archive, say) runs through the shell
            return [path] if os.access(path, os.X_OK) or path.endswith((".bat", ".cmd")) else ["/bin/sh", path]
    where = f"in {folder}" if folder else "on PATH"
    raise SettingError(f"The vendor tool {name} was not found {where} (looked for {', '.join(names)}): set "
                       "tool_path to the folder that holds it, or give the exact command.", "tool_path", option)


class _Tool:
    def __init__(self, conn: Connection, tool_path: Optional[str], command: Optional[str], name: str,
                 warn: Callable[[str], None], run_command: RunCommand):
        what = "back office" if name == BACKOFFICE_TOOL else "license server"
        check_connection(conn, what)
        if not conn.validate_certs and conn.url.strip().lower().startswith("https:"):
            raise FneError(f"validate_certs: false is refused with the tool backend ({what} {conn.url}): the vendor "
                           "documents no way to turn the Java tool's certificate check off. Set ca_path to the PEM "
                           "file of the CA: it is handed to the tool's JVM as a truststore.")
        self.conn = conn
        # the back office's times are in its zone (a mismatch the server tool relays is read as UTC, as with http)
        self.mismatch_zone = zone_of(conn.time_zone) if name == BACKOFFICE_TOOL else None
        self.warn = warn
        self.run_command = run_command
        self.argv = tool_command(tool_path, command, name)
        script = self.argv[1] if self.argv[0] == "/bin/sh" and len(self.argv) > 1 else self.argv[0]
        self.name = os.path.basename(script)  # what error messages call the tool

    @contextlib.contextmanager
    def _environment(self) -> Iterator[Dict[str, str]]:
        """JAVA_TOOL_OPTIONS naming a truststore made from ca_path (for this run only) when the URL is HTTPS."""
        if not (self.conn.ca_path and self.conn.url.strip().lower().startswith("https:")):
            yield {}
            return
        folder = tempfile.mkdtemp(prefix="fne-trust-")
        try:
            store = os.path.join(folder, "truststore.jks")
            java_truststore(self.conn.ca_path, store)
            options = f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStoreType=JKS"
            yield {"JAVA_TOOL_OPTIONS": " ".join(filter(None, (os.environ.get("JAVA_TOOL_OPTIONS"), options)))}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, args: List[str]) -> Tuple[int, str]:
        """Run the tool (`-authorize NAME PASSWORD` first, as documented); its exit code and output, scrubbed."""
        argv = list(self.argv)
        if self.conn.username:
            argv += ["-authorize", self.conn.username, self.conn.password or ""]
        argv += args
        with self._environment() as env:
            try:
                rc, output = self.run_command(argv, env)
            except OSError as exc:
                raise FneError(f"Cannot run {self.name}: {exc.strerror or exc}") from None
        return rc, scrub(output, self.conn.secrets())

    def judge(self, rc: int, output: str, succeeded: bool, what: str) -> None:
        """Success is the documented console line, never the exit code alone; anything else fails with the tool's
        own text."""
        if not succeeded:
            raise tool_error(output, what, self.name, rc, self.mismatch_zone)
        if rc != 0:
            self.warn(f"{self.name} exited {rc} after printing its documented success line; trusting the line.")


def tool_error(output: str, what: str, name: str, rc: int, zone: Optional[tzinfo] = None) -> FneError:
    if MISMATCH_KEY in output:
        line = next((item for item in output.splitlines() if "Expected sync time" in item), "")
        expected, received = mismatch_times(line)
        text = f'"{MISMATCH_KEY}": "Expected sync time {expected}, got {received}"'
        return MismatchError(f"{what} failed: {text}", line, zone)
    lines = [line for line in tool_lines(output) if line != STARTED]
    tail = "\n".join(lines[-8:])
    answer = SERVER_ANSWER_RE.search(output)  # the REST error the tool relays: its status and key, as http reports
    return FneError(f"{what} failed: {name} (exit status {rc}) printed no documented success line: "
                    f"{tail or '(no output)'}", status=int(answer.group(1)) if answer else None,
                    key=answer.group(2) if answer else None)


class ToolLicenseServer:
    """The LicenseServerBackend (_backend.py), through serverofflinesynctool."""

    def __init__(self, conn: Connection, tool_path: Optional[str], warn: Callable[[str], None],
                 run_command: RunCommand, command: Optional[str] = None):
        self.conn = conn
        self.base = lls_base_url(conn.url)
        self.tool = _Tool(conn, tool_path, command, SERVER_TOOL, warn, run_command)

    def generate(self, path: str, force: bool = False) -> dict:
        path, result, replaceable = start_generate(path, force)
        files: list[dict] = result["files"]
        # The tool writes straight into its folder; give it a private one and move finished files atomically.
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path)
        what = f"Generating sync data from {self.base}"
        try:
            try:
                # A run killed before moving its files left them in its staging folder: records the server
                # already handed out. Take them first (they are older than anything this run downloads).
                for leftover in sorted(glob.glob(os.path.join(path, STAGING_PREFIX + "*"))):
                    if leftover != staging:
                        self._collect(leftover, result, replaceable)
                        _remove_empty(leftover)
                args = ["-url", self.base + SYNC_MESSAGE, "-generate", staging] + (["-force"] if force else [])
                rc, output = self.tool.run(args)
                completed = COMPLETED_RE.search(output)
                if not completed and not NOTHING_RE.search(output):
                    # The server may have handed out records the tool did not save: only a forced download is sure
                    # to bring them back (the fleet runs it), so this counts as a lost answer.
                    lost = LostResponseError(tool_error(output, what, self.tool.name, rc).msg,
                                             url=self.base + SYNC_MESSAGE)
                    try:
                        self._collect(staging, result, replaceable)
                    except FneError as exc:
                        lost.amend(exc.msg)
                    raise lost
                self._collect(staging, result, replaceable)
                self.tool.judge(rc, output, True, what)
            except FneError as exc:
                with contextlib.suppress(FneError):
                    self._collect(staging, result, replaceable)
                exc.amend(FORCE_HINT)
                result["changed"] = bool(files)
                exc.result = result
                raise
        finally:
            _remove_empty(staging)
        result["records"] = int(completed.group(1)) if completed else 0
        if len(files) == 1:
            files[0]["records"] = result["records"]
        result["changed"] = bool(files)
        result["message"] = GENERATE_SUCCESS.format(result["records"]) if files else GENERATE_NOTHING
        result["lines"] = tool_lines(output)
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
            raise FneError(f"{self.tool.name} wrote files whose names are not yyyyMMddTHHmmss.fnesync; they may hold "
                           f"records the server handed out, so they were kept (upload never sends them): "
                           f"{', '.join(unknown)}")
        if conflicts:
            raise conflicts[0]

    @staticmethod
    def _keep_unknown(staging: str, folder: str) -> list[str]:
        """Never delete what a tool wrote: whatever is left in its staging folder moves beside the sync files as
        NAME.unrecognized (never a sync name). Returns their new paths."""
        kept = []
        for name in sorted(os.listdir(staging)):
            dest, counter = os.path.join(folder, f"{name}.unrecognized"), 1
            while os.path.exists(dest):
                dest, counter = os.path.join(folder, f"{name}.{counter}.unrecognized"), counter + 1
            os.rename(os.path.join(staging, name), dest)
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
            rc, output = self.tool.run(["-url", self.base + SYNC_ACK, "-process", ack_file, folder or empty])
        finally:
            if empty:
                _remove_empty(empty)
        # The documented output is a line per purged file, nothing else: any other line is the tool's error (an
        # exit status 0 proves nothing), and a failed exit with nothing purged is a failure.
        lines = [line for line in tool_lines(output) if line != STARTED]
        purging = [line for line in lines if PURGING_RE.match(line)]
        self.tool.judge(rc, output, len(purging) == len(lines) and (rc == 0 or bool(purging)),
                        f"Processing the acknowledgment on {self.base}")
        purged = [os.path.join(folder, PURGING_RE.match(line).group(1)) for line in purging] if folder else []
        last = iso_time(ack_fields(output).get("LastSyncTime"), zone_of(self.conn.time_zone))
        msg = f"Processed the sync acknowledgment: last sync time {last or 'unknown (not printed by the tool)'}"
        msg += f"; purged {len(purged)} file(s)." if folder else "."
        return {"changed": True, "last_sync_time": last, "processed": True, "purged": purged,
                "lines": purging if folder else [], "message": msg}


def _remove_empty(folder: str) -> None:
    """Remove a staging folder only when empty: what a tool left there is the next run's to take."""
    with contextlib.suppress(OSError):
        os.rmdir(folder)


class ToolBackOffice:
    """The BackOfficeBackend (_backend.py), through backofficeofflinesynctool (one file per call, so that the
    acknowledgment of everything accepted is kept when a later file fails)."""

    def __init__(self, conn: Connection, tool_path: Optional[str], warn: Callable[[str], None],
                 run_command: RunCommand, command: Optional[str] = None):
        self.conn = Connection(**{**conn.__dict__, "username": None, "password": None})
        self.url = conn.url.strip()
        self.warn = warn
        self.tool = _Tool(self.conn, tool_path, command, BACKOFFICE_TOOL, warn, run_command)
        self.last_ack: Dict[str, str] = {}  # the acknowledgment fields the tool printed for the last accepted file

    def upload_file(self, file: str) -> bytes:
        staging = tempfile.mkdtemp(prefix=".fne-ack-", dir=os.path.dirname(os.path.abspath(file)))
        out = os.path.join(staging, "syncack.bin")
        try:
            rc, output = self.tool.run(["-url", self.url, "-out", out, file])
            written = os.path.isfile(out)
            self.tool.judge(rc, output, UPLOAD_SUCCESS in tool_lines(output) and written,
                            f"Upload of {file} to {self.url}")
            with open(out, "rb") as handle:
                ack = handle.read()
            os.unlink(out)
        finally:
            _remove_empty(staging)
        self.last_ack = ack_fields(output)
        return ack

    @property
    def last_sync_time(self) -> Optional[str]:
        """The LastSyncTime of the last acknowledgment as the tool printed it (in the back office's zone), ISO."""
        return iso_time(self.last_ack.get("LastSyncTime"), zone_of(self.conn.time_zone))

    def upload(self, src: str, dest: str = "syncack.bin") -> dict:
        self.last_ack = {}
        result = upload_files(self.upload_file, src, dest, self.url, self.warn)
        if self.last_ack:
            result.update(ack_fields=self.last_ack, last_sync_time=self.last_sync_time)
        return result
