# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP layer both API clients stand on: a requests session with the retry policy, TLS settings, the error
mapping (where a failure happened: connect, TLS, or after the request was sent) and the token cache. Private to the
collection."""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import Connection
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError, LostResponseError, scrub

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

RETRY_STATUSES = frozenset((408, 429, 502, 503, 504))
# For a request that is not safe to repeat (sync_message advances the server's download cursor), a gateway
# error may mean the request did reach the server: that is a lost response, not something to retry.
GATEWAY_STATUSES = frozenset((502, 504))


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
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


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


def reason_of(exc: BaseException) -> str:
    root = _chain(exc)[-1]  # the innermost, most specific reason
    text = str(root) or type(root).__name__
    # urllib3 prefixes reasons with an object repr; keep the readable tail.
    text = re.sub(r"<[^>]+>:\s*", "", text)
    return text


def error_text(response: Any) -> tuple[Optional[str], str]:
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


class Http:
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
                reason = reason_of(exc)
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
                    _key, text = error_text(response)
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
        key, text = error_text(response)
        shown_key = " " + key if key and not text.startswith('"') else ""
        if hint is None:
            hint = {401: f"The {self.what} refused the credentials: check username and password (administrative "
                         "security).",
                    404: f"Is url the {self.what}'s base URL (for a license server http://HOST:7070, or "
                         "https://HOST:1443)?"}.get(status, "")
        msg = f"Request {method} {url} failed: [{status}{shown_key}] {text.rstrip('.')}"
        raise self.fail(f"{msg}. {hint}" if hint else msg, url, status=status, key=key)


class TokenCache:
    """One token per key (base URL, user name, sha256 of the password) for the life of the process. The fleet
    calls the client from a thread pool: a per-key lock makes concurrent callers of one server share one authorize
    instead of each sending their own. A changed password must authorize again, never reuse what an old one earned."""

    def __init__(self) -> None:
        self._tokens: dict = {}
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get(self, key: tuple, authorize: Callable[[], str], stale: Optional[str] = None) -> str:
        """The cached token, or a new one; `stale`: a token the server refused (dropped unless already replaced)."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                token = self._tokens.get(key)
                if token is not None and token != stale:
                    return token
                self._tokens.pop(key, None)
            token = authorize()
            with self._lock:
                self._tokens[key] = token
            return token

    def peek(self, key: tuple) -> Optional[str]:
        with self._lock:
            return self._tokens.get(key)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKENS = TokenCache()
