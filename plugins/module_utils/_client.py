# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one client: license-server API, back-office API, errors and the retry policy. Private to the collection.

Payloads are opaque: this module moves bytes, it never parses a sync message or an acknowledgment.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import ssl
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ._files import (
    CHUNK,
    SYNC_NAME_RE,
    SYNC_SUFFIX,
    AtomicWriter,
    ensure_dir,
    fsync_dir,
    list_sync_files,
    sha256_file,
    sync_time_of,
    write_atomic,
)

try:
    import requests
    import requests.exceptions as rexc

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # reported by the module with missing_required_lib
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

try:
    import urllib3.exceptions as u3exc
except ImportError:
    u3exc = None

DEFAULT_LLS_URL = "http://localhost:7070"
API = "/api/1.0"
HEALTH = API + "/health"
AUTHORIZE = API + "/instances/~/authorize"
SYNC_MESSAGE = API + "/sync_message/offline"
SYNC_ACK = API + "/sync_ack/offline"
MISMATCH_KEY = "Mismatched or out of order time stamp in sync message"
MISMATCH_RE = re.compile(r"Expected sync time (?P<expected>.+?), got (?P<received>.+?)\s*$")

RETRY_STATUSES = frozenset((408, 429, 502, 503, 504))
# For the one request that is not safe to repeat (sync_message advances the server's download cursor), a gateway
# error may mean the request did reach the server: that is a lost response, not something to retry.
GATEWAY_STATUSES = frozenset((502, 504))
GENERATE_SUCCESS = "Sync completed for {0} device records."
GENERATE_NOTHING = "No new data is available."
UPLOAD_SUCCESS = "Successfully sent sync data and received a sync acknowledgment."
FORCE_HINT = ("The server may already have handed out the records in that answer and will not send them again by "
              "itself: run generate with force: true to download every record since the last acknowledged sync time.")


def _noop_warn(msg: str) -> None:
    pass


class FneError(Exception):
    """An error with a message fit for the user: names the URL and the cause, never a secret."""

    def __init__(self, msg: str, url: Optional[str] = None, status: Optional[int] = None,
                 key: Optional[str] = None, result: Optional[dict] = None):
        super().__init__(msg)
        self.msg = msg
        self.url = url
        self.status = status
        self.key = key
        self.result = result if result is not None else {}  # return values to report with the failure


class MismatchError(FneError):
    """The back office's documented out-of-order answer."""

    def __init__(self, msg: str, expected: str, received: str, **kwargs: Any):
        super().__init__(msg, **kwargs)
        self.expected = expected
        self.received = received


class LostResponseError(FneError):
    """The request reached the server but its answer did not come back whole."""


@dataclass
class Connection:
    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    validate_certs: bool = True
    ca_path: Optional[str] = None
    timeout: float = 30
    retries: int = 3
    max_retry_wait: float = 60

    def secrets(self) -> list[str]:
        return [s for s in (self.password,) if s]


def lls_base_url(url: str) -> str:
    """The license server's base URL; a full documented endpoint URL is reduced to it."""
    url = (url or DEFAULT_LLS_URL).strip()
    url = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    index = url.find(API + "/")
    if index < 0 and url.endswith(API):
        index = len(url) - len(API)
    if index >= 0:
        url = url[:index]
    return url


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_server_time(value: str) -> datetime:
    """`2026-11-25T14:03:05Z` (the lab) or any ISO 8601 time; naive times are taken as UTC (but `process` purges
    nothing on a naive time)."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _has_zone(value: str) -> bool:
    """Whether an ISO 8601 time names its zone (`Z` or an offset)."""
    text = value.strip()
    return text.endswith(("Z", "z")) or re.search(r"[+-]\d\d:?\d\d$", text.partition("T")[2]) is not None


def _retry_after(response: Any) -> Optional[float]:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - _utc_now()).total_seconds())


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions behind it (requests wraps urllib3, which wraps the socket or ssl error), outermost
    first."""
    out: list[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in out:
        out.append(current)
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = nxt
    return out


def classify_exception(exc: BaseException) -> str:
    """'tls', 'connect' (the request never left: safe to retry) or 'lost' (sent; the answer did not come back)."""
    if isinstance(exc, rexc.SSLError):
        return "tls"
    if isinstance(exc, rexc.ConnectTimeout):
        return "connect"
    if isinstance(exc, (rexc.ReadTimeout, rexc.ChunkedEncodingError, rexc.ContentDecodingError)):
        return "lost"
    chain = _chain(exc)
    if u3exc is not None:
        for item in chain:
            if isinstance(item, u3exc.SSLError):
                return "tls"
            if isinstance(item, (u3exc.NewConnectionError, u3exc.ConnectTimeoutError)):
                return "connect"
            if isinstance(item, (u3exc.ProtocolError, u3exc.ReadTimeoutError)):
                return "lost"
    # Without urllib3's own exception types, only a refused connection is known never to have carried the request.
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return "connect"
    return "lost"


def _is_certificate_failure(exc: BaseException) -> bool:
    """A refused certificate: only ever found in the handshake, before any request was sent."""
    return any(isinstance(item, ssl.SSLCertVerificationError) for item in _chain(exc)) or \
        "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _reason(exc: BaseException) -> str:
    root = _chain(exc)[-1]  # the innermost, most specific reason
    text = str(root) or type(root).__name__
    # urllib3 prefixes reasons with an object repr; keep the readable tail.
    text = re.sub(r"<[^>]+>:\s*", "", text)
    return text


def _error_text(response: Any) -> tuple[Optional[str], str]:
    """(key, message) from an error answer: the server's own words."""
    ctype = response.headers.get("Content-Type", "")
    body = response.text[:2000] if response.content else ""
    if "json" in ctype or body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if "key" in data or "message" in data:
                return data.get("key"), str(data.get("message", ""))
            if len(data) == 1:
                key, value = next(iter(data.items()))
                return key, f'"{key}": "{value}"'
    if "html" in ctype:
        title = re.search(r"<title>(.*?)</title>", body, re.I | re.S)
        text = title.group(1).strip() if title else "an HTML page"
        return None, "{} (Content-Type {}: a proxy or a wrong URL?)".format(text, ctype.split(";")[0])
    return None, body.strip()[:500]


class _Http:
    """A requests session with the retry policy, TLS settings and the error mapping."""

    def __init__(self, conn: Connection, warn: Callable[[str], None], what: str):
        if not HAS_REQUESTS:
            raise FneError("The Python library requests is required on the host that runs this module.")
        self.conn = conn
        self.warn = warn
        self.what = what  # "license server" / "back office", for messages
        self.session = requests.Session()
        # Passed with every request: a session-level setting loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify = (conn.ca_path or True) if conn.validate_certs else False
        self.session.headers["User-Agent"] = "fne.offline_sync"

    def fail(self, msg: str, url: str, **kwargs: Any) -> FneError:
        return FneError(scrub(msg, self.conn.secrets()), url=url, **kwargs)

    def _wait(self, attempt: int, retry_after: Optional[float]) -> float:
        wait = retry_after if retry_after is not None else min(2.0 ** attempt, 30.0)
        return max(0.0, min(wait, self.conn.max_retry_wait))

    def request(self, method: str, url: str, *, body_path: Optional[str] = None, data: Optional[bytes] = None,
                headers: Optional[dict] = None, json_body: Any = None, stream: bool = False,
                repeatable: bool = True) -> Any:
        """Send one request, retrying transient failures. `repeatable=False`: the request changes server state
        and its answer cannot be asked for again, so a lost answer or a gateway error is a LostResponseError."""
        retries = max(0, int(self.conn.retries))
        attempt = 0
        while True:
            handle = open(body_path, "rb") if body_path else None  # noqa: SIM115 (closed in finally)
            try:
                response = self.session.request(
                    method, url, data=handle if handle is not None else data, json=json_body, headers=headers,
                    timeout=self.conn.timeout, stream=stream, allow_redirects=True, verify=self.verify)
            except rexc.RequestException as exc:
                kind = classify_exception(exc)
                reason = _reason(exc)
                if kind == "tls" and not repeatable and not _is_certificate_failure(exc):
                    kind = "lost"  # a TLS error while reading the answer: the request may have been carried out
                if kind == "tls":
                    raise self.fail(
                        f"TLS failure talking to the {self.what} at {url}: {reason}. If its certificate is signed "
                        "by a private CA, set ca_path to that CA's PEM file (or validate_certs: false, not "
                        "recommended).", url) from None
                if kind == "connect" or repeatable:
                    if attempt < retries:
                        wait = self._wait(attempt, None)
                        self.warn(f"{method} {url} failed ({reason}); retrying in {wait:.1f}s "
                                  f"(retry {attempt + 1} of {retries})")
                        time.sleep(wait)
                        attempt += 1
                        continue
                    if kind == "connect":
                        raise self.fail(f"Cannot reach the {self.what} at {url}: {reason}. Check the URL and that "
                                        "the server is running and reachable from this host.", url) from None
                    raise LostResponseError(
                        scrub(f"The answer of the {self.what} to {method} {url} was lost: {reason}.",
                              self.conn.secrets()), url=url) from None
                raise LostResponseError(
                    scrub(f"The {self.what} at {url} received the request but its answer was lost ({reason}).",
                          self.conn.secrets()), url=url) from None
            finally:
                if handle is not None:
                    handle.close()
            status = response.status_code
            if status in RETRY_STATUSES:
                if not repeatable and status in GATEWAY_STATUSES:
                    _key, text = _error_text(response)
                    raise LostResponseError(
                        scrub(f"{method} {url} answered {status} from a gateway: {text}. The request may have "
                              f"reached the {self.what}.", self.conn.secrets()), url=url, status=status)
                if attempt < retries:
                    wait = self._wait(attempt, _retry_after(response))
                    self.warn(f"{method} {url} answered {status}; retrying in {wait:.1f}s "
                              f"(retry {attempt + 1} of {retries})")
                    response.close()
                    time.sleep(wait)
                    attempt += 1
                    continue
            return response

    def raise_for_status(self, method: str, url: str, response: Any, hint: Optional[str] = None) -> None:
        """FneError "Request METHOD URL failed: [status key] the server's words. hint" for any non-2xx answer."""
        status = response.status_code
        if 200 <= status < 300:
            return
        key, text = _error_text(response)
        shown_key = " " + key if key and not text.startswith('"') else ""
        if hint is None:
            hint = {401: f"The {self.what} refused the credentials: check username and password (administrative "
                         "security).",
                    404: f"Is url the {self.what}'s base URL (for a license server http://HOST:7070, or "
                         "https://HOST:1443)?"}.get(status, "")
        msg = f"Request {method} {url} failed: [{status}{shown_key}] {text.rstrip('.')}"
        raise self.fail(f"{msg}. {hint}" if hint else msg, url, status=status, key=key)


# One token per (base URL, user name, password) for the life of the process. The fleet calls the client from a
# thread pool: _TOKENS_LOCK guards the dict, and a per-key lock makes concurrent callers of one server share one
# authorize instead of each sending their own. The password is in the key as a digest only (a changed password
# must authorize again, never reuse a token that an old password earned).
_TOKENS: dict = {}
_TOKENS_LOCK = threading.Lock()
_KEY_LOCKS: dict = {}


class LicenseServer:
    """The license server's REST API (`url` is the base, e.g. http://host:7070)."""

    def __init__(self, conn: Connection, warn: Callable[[str], None] = _noop_warn):
        self.conn = conn
        self.base = lls_base_url(conn.url)
        self.warn = warn
        self.http = _Http(conn, warn, "license server")

    # -- authorization -------------------------------------------------------------------------------------
    def _token_key(self) -> tuple:
        digest = hashlib.sha256((self.conn.password or "").encode("utf-8")).hexdigest()
        return (self.base, self.conn.username, digest)

    def _token(self, stale: Optional[str] = None) -> str:
        """The cached token, or a new one; `stale`: a token the server refused (drop it unless already replaced)."""
        key = self._token_key()
        with _TOKENS_LOCK:
            key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
        with key_lock:
            with _TOKENS_LOCK:
                token = _TOKENS.get(key)
                if token is not None and token != stale:
                    return token
                _TOKENS.pop(key, None)
            token = self._authorize()
            with _TOKENS_LOCK:
                _TOKENS[key] = token
            return token

    def _authorize(self) -> str:
        url = self.base + AUTHORIZE
        credentials = {"user": self.conn.username, "password": self.conn.password or ""}
        response = self.http.request("POST", url, json_body=credentials)
        self.http.raise_for_status("POST", url, response)
        try:
            return response.json()["token"]
        except (ValueError, KeyError, TypeError):
            raise self.http.fail(f"Authorization at {url} answered without a token.", url) from None

    def _send(self, method: str, path: str, *, stream: bool = False, repeatable: bool = True,
              query: str = "", **kwargs: Any) -> Any:
        url = self.base + path + query
        extra_headers = kwargs.pop("headers", None) or {}
        refused: Optional[str] = None
        while True:
            headers = dict(extra_headers)
            token = self._token(stale=refused) if self.conn.username else None
            if token:
                headers["Authorization"] = "Bearer " + token
            response = self.http.request(method, url, headers=headers, stream=stream, repeatable=repeatable,
                                         **kwargs)
            if response.status_code == 401 and token and refused is None:
                # The token expired (security.token.duration): authorize again, once. A 401 means the request
                # was not carried out, so even a non-repeatable one may be sent again.
                response.close()
                refused = token
                continue
            if response.status_code == 401 and not self.conn.username:
                self.http.raise_for_status(method, url, response, hint="The server has administrative security "
                                           "enabled: set username and password.")
            self.http.raise_for_status(method, url, response)
            return response

    # -- health --------------------------------------------------------------------------------------------
    def health(self) -> dict:
        url = self.base + HEALTH
        response = self.http.request("GET", url)
        self.http.raise_for_status("GET", url, response)
        try:
            data = response.json()
        except ValueError:
            raise self.http.fail("GET {} did not answer JSON (Content-Type {}): is url the license server's "
                                 "base URL?".format(url, response.headers.get("Content-Type")), url) from None
        security = data.get("security") or {}
        return {
            "reachable": True,
            "url": self.base,
            "status": data.get("status"),
            "version": data.get("version"),
            "instance_id": data.get("instanceId"),
            "host_id": data.get("hostId"),
            "host_id_type": data.get("hostIdType"),
            "database": (data.get("database") or {}).get("status"),
            "security": bool(security.get("enabled")),
            "https": bool(security.get("https", self.base.startswith("https:"))),
            "health": data,
        }

    def check_authorization(self) -> bool:
        """Authorize with the configured credentials (raises FneError on refusal)."""
        if not self.conn.username:
            return False
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self._token_key())
        self._token(stale=cached)  # really ask the server: a cached token says nothing about the credentials now
        return True

    # -- step 1 --------------------------------------------------------------------------------------------
    def generate(self, path: str, force: bool = False) -> dict:
        """Download every pending message into path until the server answers 204."""
        path, result, replaceable = start_generate(path, force)
        files: list[dict] = result["files"]
        first = True
        while True:
            query = "?force=true" if force and first else ""
            first = False
            url = self.base + SYNC_MESSAGE + query
            try:
                entry = self._download_one(url, path, query, replaceable)
            except FneError as exc:
                exc.result = dict(result)
                if isinstance(exc, LostResponseError):
                    exc.msg = f"{exc.msg} {FORCE_HINT}"
                    if files:
                        exc.msg += f" (The {len(files)} file(s) downloaded before it are kept.)"
                    exc.args = (exc.msg,)
                raise
            if entry is None:
                break
            if any(item["name"] == entry["name"] for item in files):
                # A server that never answers 204 would otherwise keep this loop going.
                raise FneError(f"POST {url} handed out {entry['name']} twice in one run; stopped downloading.",
                               url=url, result=dict(result))
            files.append(entry)
            take_replaced(result, replaceable, entry["path"])
            result["records"] += entry["records"] or 0
            result["changed"] = True
        return _finish_generate(result)

    def _download_one(self, url: str, folder: str, query: str, replaceable: set) -> Optional[dict]:
        response = self._send("POST", SYNC_MESSAGE, query=query, stream=True, repeatable=False)
        try:
            if response.status_code == 204:
                return None
            ctype = response.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip().lower() != "application/octet-stream":
                _key, text = _error_text(response)
                raise LostResponseError(
                    f"POST {url} answered {response.status_code} with Content-Type {ctype or '(none)'} instead of a "
                    f"sync message: {text}. Nothing was written.", url=url, status=response.status_code)
            name = _disposition_name(response.headers.get("Content-Disposition", ""))
            if not name or not SYNC_NAME_RE.match(name):
                disposition = response.headers.get("Content-Disposition")
                raise LostResponseError(f"POST {url} answered a sync message without a valid file name "
                                        f"(Content-Disposition {disposition!r}). Nothing was written.", url=url)
            count = response.headers.get("X-FNE-Record-Count")
            records = int(count) if count and count.strip().isdigit() else None
            final = os.path.join(folder, name)
            info = _stream_to_file(response, final, url, replace=final in replaceable)
            info["records"] = records
            return info
        finally:
            response.close()

    # -- step 3 --------------------------------------------------------------------------------------------
    def process(self, ack_file: str, path: Optional[str] = None) -> dict:
        """Send the acknowledgment; purge from path the sync files it covers."""
        ack_file = os.path.abspath(os.path.expanduser(ack_file))
        try:
            with open(ack_file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise FneError(f"Cannot read the acknowledgment file {ack_file}: {exc.strerror or exc}") from None
        url = self.base + SYNC_ACK
        response = self._send("POST", SYNC_ACK, data=data,
                              headers={"Content-Type": "application/octet-stream"})
        try:
            answer = response.json()
            last = answer["lastSyncTime"]
            last_time = parse_server_time(last)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FneError(f"POST {url} answered without a lastSyncTime ({response.text[:300]}).",
                           url=url) from None
        processed = bool(answer.get("processed", True))
        purged: list[str] = []
        lines: list[str] = []
        if path and not _has_zone(last):
            # File names are UTC; a time without a zone may be the server's local time, hours after the real one.
            self.warn(f"The license server answered lastSyncTime {last} without a time zone, so which sync files it "
                      f"covers is unknown: none was purged from {path}.")
        elif path:
            try:
                purged, lines = purge_covered(path, last_time)
            except FneError as exc:  # the server did process it: say so with the files already purged
                exc.result.update(changed=True, last_sync_time=last, processed=processed, server=answer)
                raise
        msg = f"Processed the sync acknowledgment: last sync time {last}"
        msg += f"; purged {len(purged)} file(s)." if path else "."
        return {"changed": processed or bool(purged), "last_sync_time": last, "processed": processed,
                "purged": purged, "lines": lines, "message": msg, "server": answer}


def purge_covered(path: str, last_time: datetime) -> tuple[list[str], list[str]]:
    """Delete the sync files in path whose name time is at or before last_time; never a later one."""
    path = os.path.abspath(os.path.expanduser(path))
    purged: list[str] = []
    lines: list[str] = []
    for file in list_sync_files(path):
        when = sync_time_of(file)
        if when is not None and when <= last_time:
            try:
                os.unlink(file)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise FneError(f"Cannot purge {file}: {exc.strerror or exc}",
                               result={"purged": purged, "lines": lines}) from None
            purged.append(file)
            lines.append(f"Purging file {os.path.basename(file)}")
    if purged:
        fsync_dir(path)
    return purged, lines


def start_generate(path: str, force: bool) -> tuple[str, dict, set]:
    """The folder (created when missing), the result to fill, and the files a download may write over: only a
    forced download may, and only the files that were there before it (their records come again). Any other
    existing file is never overwritten, whatever name the server hands out."""
    path = os.path.abspath(os.path.expanduser(path))
    _prepare_folder(path)
    before = list_sync_files(path)
    result: dict = {"changed": False, "records": 0, "files": [], "folder": path}
    if force:
        result["superseded"] = before
    return path, result, set(before) if force else set()


def take_replaced(result: dict, replaceable: set, path: str) -> None:
    """A forced message took an old file's name: that file is no longer superseded (playbooks may delete those)."""
    if path in replaceable:
        replaceable.discard(path)
        result["superseded"].remove(path)


def _finish_generate(result: dict) -> dict:
    count = len(result["files"])
    result["message"] = GENERATE_SUCCESS.format(result["records"]) if count else GENERATE_NOTHING
    return result


def _disposition_name(header: str) -> Optional[str]:
    match = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', header or "", re.I)
    return os.path.basename(match.group(1).strip()) if match else None


def _prepare_folder(path: str) -> None:
    try:
        ensure_dir(path)
    except OSError as exc:
        raise FneError(f"Cannot create the folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FneError(f"Cannot write to the folder {path}: permission denied.")


def conflict_path(final_path: str, sha256: str) -> str:
    return f"{final_path}.{sha256[:12]}.conflict"


def name_conflict(url: str, final_path: str, kept: str) -> LostResponseError:
    return LostResponseError(f"{url} handed out {os.path.basename(final_path)}, but {final_path} already holds a "
                             f"different message; nothing was overwritten and the new one was saved as {kept} (not "
                             "a sync file name: it is never uploaded).", url=url)


def _stream_to_file(response: Any, final_path: str, url: str, replace: bool = False) -> dict:
    """Stream a response body into final_path atomically; a short body leaves no file under the final name.
    An existing final_path is only overwritten with `replace`; a different message under the same name (two
    messages in one second, a server restored from backup) is kept beside it and reported as a LostResponseError."""
    expected = response.headers.get("Content-Length")
    encoded = bool(response.headers.get("Content-Encoding"))
    try:
        writer = AtomicWriter(final_path)
    except OSError as exc:
        raise LostResponseError(f"Cannot write {final_path}: {exc.strerror or exc}. The answer of {url} was not "
                                "saved.", url=url) from None
    try:
        try:
            for chunk in response.iter_content(CHUNK):
                writer.write(chunk)
        except rexc.RequestException as exc:
            raise LostResponseError(f"The answer of POST {url} was truncated or broke off ({_reason(exc)}); "
                                    "nothing was written.", url=url) from None
        if expected is not None and not encoded and expected.strip().isdigit() and writer.size != int(expected):
            raise LostResponseError(f"The answer of POST {url} was truncated: {writer.size} of {expected} bytes; "
                                    "nothing was written.", url=url)
        try:
            return writer.commit(replace=replace)
        except FileExistsError:
            pass
        if sha256_file(final_path) == writer.sha256:
            return writer.info()  # the very same message is already there
        writer.final_path = conflict_path(final_path, writer.sha256)
        writer.commit()
        raise name_conflict(url, final_path, writer.final_path)
    except OSError as exc:
        raise LostResponseError(f"Cannot write {final_path}: {exc.strerror or exc}. The answer of {url} was not "
                                "saved.", url=url) from None
    finally:
        writer.abort()


class BackOffice:
    """The back office's deviceservices endpoint (`url` as the vendor tool takes it)."""

    def __init__(self, conn: Connection, warn: Callable[[str], None] = _noop_warn):
        self.conn = conn
        self.url = conn.url.strip()
        self.warn = warn
        self.http = _Http(conn, warn, "back office")

    def upload_file(self, file: str) -> bytes:
        """Send one message (the body streams from the file); return the acknowledgment bytes."""
        url = self.url
        try:
            size = os.path.getsize(file)
        except OSError as exc:
            raise FneError(f"Cannot read {file}: {exc.strerror or exc}") from None
        response = self.http.request("POST", url, body_path=file, repeatable=False,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(size)})
        try:
            if response.status_code >= 400:
                key, text = _error_text(response)
                if key == MISMATCH_KEY:
                    match = MISMATCH_RE.search(text.rstrip('"'))
                    expected = match.group("expected") if match else ""
                    received = match.group("received") if match else ""
                    raise MismatchError(f"Upload of {file} to {url} failed: {text}", expected, received,
                                        url=url, status=response.status_code, key=key)
            self.http.raise_for_status("POST", url, response)
            ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype in ("text/html", "application/json"):
                _key, text = _error_text(response)
                raise LostResponseError(f"POST {url} answered {ctype} instead of an acknowledgment: {text}",
                                        url=url, status=response.status_code)
            body = response.content
            expected_len = response.headers.get("Content-Length")
            if expected_len and expected_len.isdigit() and len(body) != int(expected_len):
                raise LostResponseError(f"The acknowledgment from {url} was truncated ({len(body)} of "
                                        f"{expected_len} bytes).", url=url)
            if not body:  # an empty "acknowledgment" (a proxy's 200/204) would be written and fail in process
                raise LostResponseError(f"POST {url} answered {response.status_code} without an acknowledgment.",
                                        url=url, status=response.status_code)
            return body
        except rexc.RequestException as exc:
            raise LostResponseError(f"The acknowledgment from {url} broke off ({_reason(exc)}).",
                                    url=url) from None
        finally:
            response.close()

    def upload(self, src: str, dest: str = "syncack.bin") -> dict:
        return upload_files(self.upload_file, src, dest, self.url, self.warn)


def unsent_files(src: str) -> list[str]:
    """Files of a src folder that look like sync messages but that upload never sends (their names carry no sync
    time: a copy renamed by hand, a `.conflict` kept by generate): records that would otherwise wait unnoticed."""
    src = os.path.abspath(os.path.expanduser(src))
    if not os.path.isdir(src):
        return []
    return sorted(name for name in os.listdir(src)
                  if SYNC_SUFFIX in name.lower() and not SYNC_NAME_RE.match(name)
                  and not name.startswith(".")  # an interrupted download's temporary file: never complete
                  and os.path.isfile(os.path.join(src, name)))


def resolve_upload(src: str, dest: str) -> tuple[list[str], str]:
    """The files to send, oldest first, and the acknowledgment path (relative dest: in src's folder)."""
    src = os.path.abspath(os.path.expanduser(src))
    if os.path.isdir(src):
        files, folder = list_sync_files(src), src
    elif os.path.isfile(src):
        files, folder = [src], os.path.dirname(src)
    else:
        raise FneError(f"src {src} does not exist.")
    dest = os.path.expanduser(dest or "syncack.bin")
    if not os.path.isabs(dest):
        dest = os.path.join(folder, dest)
    return files, dest


def _save_ack_elsewhere(file: str, ack: bytes) -> Optional[str]:
    """Write an acknowledgment that could not go to dest next to its sync file, else in the temporary folder."""
    stem = os.path.basename(file).rsplit(".", 1)[0]
    for folder in (os.path.dirname(os.path.abspath(file)), tempfile.gettempdir()):
        target = os.path.join(folder, f"{stem}.syncack.bin")
        try:
            write_atomic(target, [ack])
            return target
        except OSError:
            continue
    return None


def upload_files(send: Callable[[str], bytes], src: str, dest: str, url: str,
                 warn: Callable[[str], None] = _noop_warn) -> dict:
    """Upload each file oldest first; after each accepted file the acknowledgment is written to dest, so on any
    failure dest holds the acknowledgment for everything accepted so far."""
    files, dest = resolve_upload(src, dest)
    skipped = unsent_files(src)
    if skipped:
        warn(f"Not sent, their names are not yyyyMMddTHHmmss.fnesync (generate with force: true downloads the "
             f"records not yet acknowledged again): {', '.join(skipped)}")
    accepted: list[str] = []
    result: dict = {"changed": False, "ack": None, "accepted": accepted, "files": files}
    if not files:
        result["message"] = f"No sync files to send in {src}."
        return result
    for file in files:
        try:
            ack = send(file)
        except FneError as exc:
            result["mismatch"] = isinstance(exc, MismatchError)
            if isinstance(exc, MismatchError):
                result["expected"] = exc.expected
                result["received"] = exc.received
                exc.msg += (f" The acknowledgment for the {len(accepted)} file(s) accepted before it is in {dest}: "
                            "process it, then download again with force: true, upload and process."
                            if accepted else " No file was accepted in this run.")
            exc.args = (exc.msg,)
            exc.result = dict(result)
            raise
        accepted.append(file)
        result["changed"] = True
        try:
            ensure_dir(os.path.dirname(dest))
            write_atomic(dest, [ack])
        except OSError as exc:
            # The back office holds the message now; its acknowledgment must not vanish with this error.
            kept = _save_ack_elsewhere(file, ack)
            result["ack"] = kept
            where = f"it was saved as {kept}: process that file" if kept else "it could not be saved anywhere"
            raise FneError(f"The back office accepted {file} but its acknowledgment could not be written to {dest} "
                           f"({exc.strerror or exc}); {where}.", url=url, result=dict(result)) from None
        result["ack"] = dest
    result["message"] = UPLOAD_SUCCESS
    return result
