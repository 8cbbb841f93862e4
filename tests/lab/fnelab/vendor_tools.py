"""Stand-ins for the vendor's command-line tools, with their documented options and console messages.

  serverofflinesynctool.sh -url URL -generate PATH [-force] [-authorize NAME PASSWORD]
  serverofflinesynctool.sh -url URL -process FILE PATH [-authorize NAME PASSWORD]
  backofficeofflinesynctool.sh -url URL [-out FILE] PATH

TLS trust: FNE_TOOL_CA_PATH, else SSL_CERT_FILE / REQUESTS_CA_BUNDLE, else the system store.
Standard library only (http.client), so the tools depend on nothing the collection's client uses.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from .wire import parse_file_name, parse_iso

STARTED = "OfflineSync utility started."
GENERATE_PATH = "/api/1.0/sync_message/offline"
ACK_PATH = "/api/1.0/sync_ack/offline"
_FILENAME = re.compile(r'filename="?([^";]+)"?')


class ToolError(Exception):
    pass


def _ssl_context() -> ssl.SSLContext:
    ca = os.environ.get("FNE_TOOL_CA_PATH") or os.environ.get("SSL_CERT_FILE") or os.environ.get(
        "REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=ca or None)


class Http:
    """One keep-alive connection to one base URL."""

    def __init__(self, url: str, timeout: float = 60):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError(f"invalid -url {url!r}")
        self.url = url
        if parts.scheme == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, timeout=timeout, context=_ssl_context())
        else:
            self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.token: str | None = None

    def request(self, path: str, body: bytes | None = None, method: str = "POST",
                content_type: str = "application/octet-stream") -> tuple[int, dict, bytes]:
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            self.conn.request(method, path, body=body or b"", headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()  # raises IncompleteRead on a truncated body
        except ssl.SSLError as exc:
            raise ToolError(f"TLS error talking to {self.origin}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise ToolError(f"connection to {self.origin} failed: {type(exc).__name__}: {exc}") from None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def authorize(self, user: str, password: str) -> None:
        status, _, data = self.request("/api/1.0/instances/~/authorize",
                                       json.dumps({"user": user, "password": password}).encode(),
                                       content_type="application/json")
        if status != 200:
            raise ToolError(f"authorization failed (HTTP {status}): {_error_text(data)}")
        self.token = json.loads(data)["token"]


def _error_text(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:300].strip()
    if isinstance(body, dict) and "key" in body:
        return f"{body['key']}: {body.get('message', '')}"
    return json.dumps(body)


def _base(url: str, endpoint: str) -> str:
    """The documented endpoint form (.../api/1.0/sync_message/offline for -generate, .../sync_ack/offline for
    -process) or a bare base URL; another path is an error, as a wrong URL is with the real tool."""
    parts = urlsplit(url)
    if parts.path.rstrip("/") not in ("", endpoint):
        raise ToolError(f"-url {url} is not the {endpoint} endpoint")
    return f"{parts.scheme}://{parts.netloc}"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sync_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ToolError(f"{path}: no such file or folder")
    return sorted(p for p in path.iterdir() if p.is_file() and parse_file_name(p.name) is not None)


# --- serverofflinesynctool ------------------------------------------------------------------------------------

def generate(url: str, path: Path, force: bool, auth: tuple[str, str] | None) -> int:
    path.mkdir(parents=True, exist_ok=True)
    client = Http(_base(url, GENERATE_PATH))
    if auth:
        client.authorize(*auth)
    total, first = 0, True
    while True:
        # force only on the first call: it resets the server's cursor; the rest page on from there
        query = "?force=true" if force and first else ""
        status, headers, data = client.request(GENERATE_PATH + query)
        first = False
        if status == 204:
            break
        if status != 200:
            raise ToolError(f"sync message download failed (HTTP {status}): {_error_text(data)}")
        match = _FILENAME.search(headers.get("content-disposition", ""))
        name = match.group(1) if match else None
        if not name or parse_file_name(name) is None or "/" in name:
            raise ToolError(f"server sent no valid file name ({headers.get('content-disposition')!r})")
        _write_atomic(path / name, data)
        total += int(headers.get("x-fne-record-count", "0"))
    # every message carries at least one record, so zero records means no file was written
    print("No new data is available." if total == 0 else f"Sync completed for {total} device records.")
    return 0


def process(url: str, ack_file: Path, path: Path, auth: tuple[str, str] | None) -> int:
    try:
        data = ack_file.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read acknowledgment {ack_file}: {exc.strerror}") from None
    client = Http(_base(url, ACK_PATH))
    if auth:
        client.authorize(*auth)
    status, _, body = client.request(ACK_PATH, data)
    if status != 200:
        raise ToolError(f"sync acknowledgment rejected (HTTP {status}): {_error_text(body)}")
    last = parse_iso(json.loads(body)["lastSyncTime"])
    for f in _sync_files(path) if path.exists() else []:
        ts = parse_file_name(f.name)
        if ts is not None and ts <= last:
            print(f"Purging file {f.name}")
            f.unlink()
    return 0


# --- backofficeofflinesynctool --------------------------------------------------------------------------------

def upload(url: str, path: Path, out: Path) -> int:
    files = _sync_files(path)
    if not files:
        raise ToolError(f"{path}: no sync files to upload")
    parts = urlsplit(url)
    client = Http(url)
    ack: bytes | None = None
    try:
        for f in files:
            status, _, body = client.request(parts.path or "/deviceservices", f.read_bytes())
            if status == 200:
                ack = body
                continue
            try:
                err = json.loads(body)
            except ValueError:
                err = None
            if isinstance(err, dict) and len(err) == 1:
                ((key, value),) = err.items()
                raise ToolError(f'"{key}": "{value}"')  # the back office's words, as documented
            raise ToolError(f"upload of {f.name} failed (HTTP {status}): {_error_text(body)}")
    finally:
        if ack is not None:  # what was accepted so far is acknowledged: keep it for -process
            _write_atomic(out.resolve(), ack)
    print("Successfully sent sync data and received a sync acknowledgment.")
    return 0


# --- command lines ---------------------------------------------------------------------------------------------

def _parse(argv: list[str], spec: dict[str, int]) -> tuple[dict[str, list[str]], list[str]]:
    """Java-style single-dash options: spec maps an option to how many values it takes."""
    opts: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in spec:
            n = spec[arg]
            if i + n >= len(argv):
                raise ToolError(f"option {arg} needs {n} value(s)")
            opts[arg] = argv[i + 1:i + 1 + n]
            i += 1 + n
        elif arg.startswith("-") and len(arg) > 1:
            raise ToolError(f"unknown option {arg}")
        else:
            rest.append(arg)
            i += 1
    return opts, rest


def server_tool(argv: list[str]) -> int:
    usage = ("usage: serverofflinesynctool.sh -url URL (-generate PATH [-force] | -process FILE PATH) "
             "[-authorize NAME PASSWORD]")
    opts, rest = _parse(argv, {"-url": 1, "-generate": 1, "-process": 2, "-force": 0, "-authorize": 2})
    if "-url" not in opts or ("-generate" in opts) == ("-process" in opts) or rest:
        raise ToolError(usage)
    print(STARTED, flush=True)
    auth = tuple(opts["-authorize"]) if "-authorize" in opts else None
    if "-generate" in opts:
        return generate(opts["-url"][0], Path(opts["-generate"][0]), "-force" in opts, auth)  # type: ignore[arg-type]
    ack, path = opts["-process"]
    return process(opts["-url"][0], Path(ack), Path(path), auth)  # type: ignore[arg-type]


def backoffice_tool(argv: list[str]) -> int:
    usage = "usage: backofficeofflinesynctool.sh -url URL [-out FILE] PATH"
    opts, rest = _parse(argv, {"-url": 1, "-out": 1})
    if "-url" not in opts or len(rest) != 1:
        raise ToolError(usage)
    print(STARTED, flush=True)
    return upload(opts["-url"][0], Path(rest[0]), Path(opts.get("-out", ["syncack.bin"])[0]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("server", "backoffice"):
        print("usage: python -m fnelab.vendor_tools server|backoffice ARGS...", file=sys.stderr)
        return 2
    try:
        return (server_tool if argv[0] == "server" else backoffice_tool)(argv[1:])
    except ToolError as exc:
        print(f"ERROR: {exc}" if not str(exc).startswith('"') else str(exc), file=sys.stderr)
        return 1
    except OSError as exc:  # a folder or -out file that cannot be written: an error message, not a traceback
        print(f"ERROR: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
