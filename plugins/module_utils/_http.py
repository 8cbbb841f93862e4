# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP layer both API clients stand on: a requests session with the retry policy, TLS settings, the error
mapping (where a failure happened: connect, TLS, or after the request was sent) and the token cache. Private to the
collection."""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import socket
import ssl
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import Connection, check_connection
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import (
    FneError,
    LostResponseError,
    MismatchError,
    is_mismatch,
    scrub,
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

RETRY_STATUSES = frozenset((408, 429, 502, 503, 504))
# For a request that is not safe to repeat (sync_message advances the server's download cursor), a gateway
# error may mean the request did reach the server: that is a lost response, not something to retry.
GATEWAY_STATUSES = frozenset((502, 504))


def header_int(value: Optional[str]) -> Optional[int]:
    """A header's whole number (ASCII digits only), or None: `int()` takes other scripts' digits too."""
    match = re.fullmatch(r"\s*([0-9]{1,18})\s*", value or "")
    return int(match.group(1)) if match else None


def _retry_after(response: Any) -> Optional[float]:
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    seconds = header_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
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


def speaks_tls(url: str, timeout: float) -> bool:
    """Whether the host and port of an http:// URL complete a TLS handshake (no request is sent, no certificate is
    trusted): a TLS server hangs up on a plain HTTP request it cannot read, which would otherwise look like a lost
    answer."""
    parts = urlsplit(url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=min(timeout, 10)) as sock, \
                ctx.wrap_socket(sock, server_hostname=parts.hostname):
            return True
    except (OSError, ValueError):
        return False


def reason_of(exc: BaseException) -> str:
    root = _chain(exc)[-1]  # the innermost, most specific reason
    text = str(root) or type(root).__name__
    # urllib3 prefixes reasons with an object repr; keep the readable tail.
    text = re.sub(r"<[^>]+>:\s*", "", text)
    text = re.sub(r"\w+\(host='[^']*', port=\d+\):\s*", "", text)  # the connection pool's repr
    return text


URL_HINTS = {"license server": "Is url the license server's base URL (http://HOST:7070, or https://HOST:1443)?",
             "back office": "Is url the back office's deviceservices URL "
                            "(https://SITEID.compliance.flexnetoperations.com/deviceservices)?"}
MiB = 1 << 20
READ_SIZE = 64 * 1024  # small reads: the deadline is checked between them
# The most an answer may weigh, so that an endless body fills neither the disk nor the memory.
MAX_JSON = MiB
MAX_ERROR = 64 * 1024   # an error page: read this much for its words, never more
MAX_TEXT = 500          # of the server's words, what goes into a message
MAX_ACK = 64 * MiB
# A sync message streams to disk, never whole in memory (docs/performance.md, "Big files"): this cap guards the disk
# against an answer that could be endless (no Content-Length). One whose Content-Length announces its size ends
# there, so it is taken at any size the folder has room for (_client.LicenseServer._message_limit).
MAX_MESSAGE = 1024 * MiB
# A kept-alive connection idle longer than this is not used for a request that cannot be sent again: the server or a
# firewall may have dropped it without a word, and a failure there would be a lost answer instead of a failed connect.
REUSE_WITHIN = 2.0


class Deadline:
    """When one request must be done: connected, sent and its whole answer received within `timeout` seconds, plus
    `timeout` for each further MiB sent or received. A per-read socket timeout never fires on a server that trickles
    its answer a byte at a time: the watchdog shuts the connection down when this deadline passes. Also tracks
    whether the connection was established (before that, nothing was sent: never a lost answer)."""

    def __init__(self, timeout: float, send_bytes: int = 0):
        self.timeout = timeout
        self.start = time.monotonic()
        self.at = self.start + timeout * (1 + send_bytes / MiB)
        self.conn: Any = None       # the urllib3 connection carrying the request (set by the tracked pool)
        self.connected = False      # the connection (TCP and TLS) was established: the request may have left
        self.expired = False

    def allow(self, received: int) -> None:
        """More time for a large answer: `timeout` for each MiB received so far."""
        self.at = max(self.at, self.start + self.timeout * (1 + received / MiB))

    def expire(self) -> None:
        self.expired = True
        conn = self.conn
        if conn is not None and getattr(conn, "fne_deadline", None) is self:  # not yet handed to another request
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # a blocked read or write returns at once


class _Watchdog:
    """One thread watching the deadlines of every request in flight in this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: set = set()
        self._thread: Optional[threading.Thread] = None
        self._wakes_at: Optional[float] = None  # when the thread wakes next (None: when told)

    def watch(self, deadline: Deadline) -> None:
        with self._cond:
            self._active.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fne-deadlines", daemon=True)
                self._thread.start()
            if self._wakes_at is None or deadline.at < self._wakes_at:  # else it wakes in time: no thread switch
                self._cond.notify()

    def forget(self, deadline: Deadline) -> None:
        with self._cond:
            self._active.discard(deadline)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._active if d.at <= now]:
                    self._active.discard(deadline)
                    deadline.expire()
                nearest = min((d.at for d in self._active), default=None)
                self._wakes_at = None if nearest is None else max(now + 0.01, nearest)
                self._cond.wait(None if nearest is None else self._wakes_at - now)


WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # a forked child (the fleet's processes) has no watchdog thread: a fresh one
    os.register_at_fork(after_in_child=WATCHDOG.__init__)
_CURRENT = threading.local()  # .deadline: the request this thread is sending now


if HAS_REQUESTS:
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def _tracked_connection(base: type) -> type:
        class Tracked(base):  # type: ignore[misc,valid-type]
            def connect(self) -> None:
                super().connect()
                deadline = getattr(self, "fne_deadline", None)
                if deadline is not None:
                    deadline.connected = True
        return Tracked

    def _tracked_pool(base: type, connection: type) -> type:
        class Tracked(base):  # type: ignore[misc,valid-type]
            ConnectionCls = _tracked_connection(connection)

            def _get_conn(self, timeout: Any = None) -> Any:
                conn = super()._get_conn(timeout)
                deadline = getattr(_CURRENT, "deadline", None)
                conn.fne_deadline = deadline
                if deadline is not None:
                    deadline.conn = conn
                    deadline.connected = getattr(conn, "sock", None) is not None  # a kept-alive connection
                return conn
        return Tracked

    _POOLS = {"http": _tracked_pool(HTTPConnectionPool, HTTPConnection),
              "https": _tracked_pool(HTTPSConnectionPool, HTTPSConnection)}

    class _Adapter(requests.adapters.HTTPAdapter):
        """Connections that tell their request's deadline when they are established, and let it shut them down."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _POOLS

        def proxy_manager_for(self, proxy: Any, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = _POOLS
            return manager


def error_text(ctype: str, body: str) -> tuple[Optional[str], str]:
    """(key, message) from an error answer (its media type and the start of its body): the server's own words."""
    if "json" in ctype or body.startswith("{"):
        data = parse_json(body)
        if isinstance(data, dict):
            if "key" in data or "message" in data:
                key = data.get("key")
                return (key if isinstance(key, str) else None), str(data.get("message", ""))[:MAX_TEXT]
            if len(data) == 1:
                key, value = next(iter(data.items()))
                return key[:MAX_TEXT], f'"{key}": "{value}"'[:MAX_TEXT]
    if "html" in ctype or looks_like_html(body):
        title = re.search(r"<title>(.*?)</title>", body, re.I | re.S)
        text = title.group(1).strip()[:MAX_TEXT] if title else "an HTML page"
        return None, "{} (Content-Type {}: a proxy or a wrong URL?)".format(text, ctype.split(";")[0] or "none")
    return None, body.strip()[:MAX_TEXT]


def parse_json(text: Any) -> Any:
    """JSON, or None when it is not (or nests deeper than the parser can follow)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def looks_like_html(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n")[:15].lower().startswith(("<!doctype html", "<html"))


def media_type(response: Any) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def chunked(response: Any) -> bool:
    """Whether the body comes in chunks: no length announced, it ends where its last chunk says."""
    return "chunked" in response.headers.get("Transfer-Encoding", "").lower()


def says_empty(response: Any) -> bool:
    """Whether the answer says it has no body: 204, or a Content-Length of 0."""
    return response.status_code == 204 or header_int(response.headers.get("Content-Length")) == 0


class Http:
    """A requests session with the retry policy, TLS settings, deadlines, size limits and the error mapping. Never
    follows a redirect: it could carry the password, a token or the records to another host."""

    def __init__(self, conn: Connection, warn: Callable[[str], None], what: str):
        if not HAS_REQUESTS:
            raise FneError("The Python library requests is required on the host that runs this module.")
        check_connection(conn, what)
        self.conn = conn
        self.warn = warn
        self.what = what  # "license server" / "back office", for messages
        self.secrets = set(conn.secrets())  # kept out of every message; the client adds the tokens it gets
        self.session = requests.Session()
        self.session.mount("http://", _Adapter())
        self.session.mount("https://", _Adapter())
        # Every request goes to this one host: the environment (HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) is read
        # once, as requests reads it, and passed with every request (ca_path and proxy win over it, for this side
        # only). Not for each request (a scan of the whole environment), and never ~/.netrc: requests would send its
        # entry for the host as Basic authorization, over the license server's token and to the back office.
        settings = self.session.merge_environment_settings(
            conn.url, {"http": conn.proxy, "https": conn.proxy} if conn.proxy else {}, None,
            (conn.ca_path or True) if conn.validate_certs else False, None)
        self.session.trust_env = False
        self.verify, self.proxies = settings["verify"], settings["proxies"]
        self.via = f" through the proxy {conn.proxy}" if conn.proxy else ""  # for messages
        self.session.headers["User-Agent"] = "fne.offline_sync"
        self.session.headers["Accept-Encoding"] = "identity"  # the bytes as sent: sizes and caps mean what they say
        self.idle_since = 0.0  # when the last answer was read or closed (its connection has waited in the pool since)

    def fail(self, msg: str, url: str, cls: type = FneError, **kwargs: Any) -> FneError:
        return cls(scrub(msg, self.secrets), url=url, **kwargs)

    def _warn(self, text: str) -> None:
        self.warn(scrub(text, self.secrets))

    def _wait(self, attempt: int, retry_after: Optional[float]) -> float:
        wait = retry_after if retry_after is not None else min(2.0 ** attempt, 30.0)
        return max(0.0, min(wait, self.conn.max_retry_wait))

    def _backoff(self, attempt: int, why: str, retry_after: Optional[float] = None) -> bool:
        """Wait before retry number attempt + 1, saying why; False when no retry is left."""
        if attempt >= self.conn.retries:
            return False
        wait = self._wait(attempt, retry_after)
        self._warn(f"{why}; retrying in {wait:.1f}s (retry {attempt + 1} of {self.conn.retries})")
        time.sleep(wait)
        return True

    def _send(self, method: str, url: str, deadline: Deadline, body_path: Optional[str], **kwargs: Any) -> Any:
        """One attempt, watched by its deadline; the response's close() ends the watch."""
        handle = open(body_path, "rb") if body_path else None  # noqa: SIM115 (closed in finally)
        data = kwargs.pop("data")
        _CURRENT.deadline = deadline
        WATCHDOG.watch(deadline)
        try:
            response = self.session.request(method, url, data=handle if handle is not None else data,
                                            timeout=self.conn.timeout, stream=True, allow_redirects=False,
                                            verify=self.verify, proxies=self.proxies, **kwargs)
        except BaseException:
            WATCHDOG.forget(deadline)
            raise
        finally:
            _CURRENT.deadline = None
            if handle is not None:
                handle.close()
        close = response.close

        def close_and_forget() -> None:  # every caller closes its response: that ends the watch too
            if says_empty(response) and not chunked(response):
                # a body known to be empty, read (within the deadline): the connection goes back to the pool
                # instead of being closed
                with contextlib.suppress(rexc.RequestException, OSError):  # StreamConsumedError: read already
                    for _chunk in response.iter_content(READ_SIZE):
                        pass
            WATCHDOG.forget(deadline)
            close()
            self.idle_since = time.monotonic()
        response.close = close_and_forget
        response.fne_deadline = deadline
        return response

    def once(self, method: str, url: str, data: bytes, headers: dict) -> Any:
        """One attempt, no retry, nothing judged (a relay's request): the answer, to read with read() and close;
        requests' own exception when none came."""
        return self._send(method, url, Deadline(self.conn.timeout, len(data)), None, data=data, headers=headers)

    def request(self, method: str, url: str, *, body_path: Optional[str] = None, data: Optional[bytes] = None,
                headers: Optional[dict] = None, json_body: Any = None, repeatable: bool = True) -> Any:
        """Send one request, retrying transient failures; the answer's body is read with read() / iter_body().
        `repeatable=False`: the request changes server state and its answer cannot be asked for again, so a lost
        answer or a gateway error is a LostResponseError."""
        if not repeatable and time.monotonic() - self.idle_since > REUSE_WITHIN:
            for adapter in self.session.adapters.values():
                adapter.close()  # its pooled connections: this request opens a new one
        attempt = 0
        send_bytes = os.path.getsize(body_path) if body_path else len(data or b"")
        while True:
            deadline = Deadline(self.conn.timeout, send_bytes)
            try:
                response = self._send(method, url, deadline, body_path, data=data, json=json_body, headers=headers)
            except rexc.RequestException as exc:
                kind, reason = self._classify(exc, deadline, repeatable, url)
                if kind == "tls":
                    raise self.fail(
                        f"TLS failure talking to the {self.what} at {url}{self.via}: {reason}. If its certificate is "
                        "signed by a private CA, set ca_path to that CA's PEM file (or validate_certs: false, not "
                        "recommended).", url) from None
                if kind == "connect" or repeatable:
                    if self._backoff(attempt, f"{method} {url} failed ({reason})"):
                        attempt += 1
                        continue
                    if kind == "connect":
                        raise self.fail(f"Cannot reach the {self.what} at {url}{self.via}: {reason}. Check the URL"
                                        f"{', the proxy' if self.via else ''} and that the server is running and "
                                        "reachable from this host.", url) from None
                    raise self.fail(f"The answer of the {self.what} to {method} {url}{self.via} was lost: {reason}.",
                                    url, LostResponseError) from None
                raise self.fail(f"The {self.what} at {url} received the request but its answer was lost ({reason}).",
                                url, LostResponseError) from None
            status = response.status_code
            if repeatable and status not in RETRY_STATUSES:
                try:  # read whole inside the retry loop: an answer that breaks off or trickles is retried too
                    response.fne_body = self._prefix(response) if status >= 300 else self.read(response, MAX_JSON)
                except LostResponseError as exc:
                    if self._backoff(attempt, exc.msg.rstrip(".")):
                        attempt += 1
                        continue
                    raise
            if status in RETRY_STATUSES:
                if not repeatable and status in GATEWAY_STATUSES:
                    _key, text = self.error_text(response)
                    raise self.fail(f"{method} {url} answered {status} from a gateway: {text}. The request may have "
                                    f"reached the {self.what}.", url, LostResponseError, status=status)
                if self._backoff(attempt, f"{method} {url} answered {status}", _retry_after(response)):
                    response.close()
                    attempt += 1
                    continue
            return response

    def _classify(self, exc: BaseException, deadline: Deadline, repeatable: bool, url: str) -> tuple[str, str]:
        """(kind, reason): 'tls' and 'connect' when the connection was never established or the request could not
        have been understood (nothing was carried out: never a lost answer), else 'lost'."""
        reason = reason_of(exc)
        if deadline.expired:
            return "lost", (f"no complete answer within {time.monotonic() - deadline.start:.0f}s (the server is "
                            "too slow, or sends its answer a byte at a time)")
        if isinstance(exc, (rexc.InvalidURL, rexc.InvalidSchema, rexc.MissingSchema, rexc.InvalidHeader)):
            return "connect", reason  # refused by requests before anything was sent
        if deadline.conn is not None and not deadline.connected:
            tls = isinstance(exc, rexc.SSLError) or any(isinstance(e, ssl.SSLError) for e in _chain(exc))
            return ("tls" if tls else "connect"), reason
        kind = classify_exception(exc)
        if kind == "tls" and not repeatable and not _is_certificate_failure(exc):
            kind = "lost"  # a TLS error while reading the answer: the request may have been carried out
        if kind == "lost" and url.lower().startswith("http://") and speaks_tls(url, self.conn.timeout):
            return "connect", (f"{reason}: the server speaks TLS (HTTPS) on that port, so it could not read the "
                               "plain HTTP request; use https:// in the URL")
        return kind, reason

    def iter_body(self, response: Any, limit: int, what: str = "answer") -> Iterator[bytes]:
        """The body in chunks, within the request's deadline (more time for each MiB) and at most `limit` bytes;
        LostResponseError when it is larger, breaks off or takes too long."""
        if getattr(response, "fne_body", None) is not None:  # read already (a repeatable request)
            yield response.fne_body
            return
        deadline: Deadline = response.fne_deadline
        url = response.url
        size = 0
        try:
            for chunk in response.iter_content(READ_SIZE):
                size += len(chunk)
                if size > limit:  # not what was asked for; the request may have been carried out all the same
                    raise self.fail(f"The {what} of {url} is larger than {limit // MiB or limit} "
                                    f"{'MiB' if limit >= MiB else 'bytes'}: refused, nothing was kept.", url,
                                    LostResponseError)
                deadline.allow(size)
                yield chunk
            self.idle_since = time.monotonic()  # read to its end: the connection is back in the pool
        except (rexc.RequestException, OSError) as exc:
            why = (f"no complete answer within {time.monotonic() - deadline.start:.0f}s (too slow, or sent a byte "
                   "at a time)" if deadline.expired else reason_of(exc))
            raise self.fail(f"The {what} of {url} was truncated or broke off: {why}.", url,
                            LostResponseError) from None
        finally:
            WATCHDOG.forget(deadline)

    def read(self, response: Any, limit: int, what: str = "answer") -> bytes:
        return b"".join(self.iter_body(response, limit, what))

    def json(self, response: Any, what: str) -> Any:
        """The answer as JSON (FneError naming `what` was expected when it is not)."""
        body = self.read(response, MAX_JSON)
        data = parse_json(body)
        if data is None:
            raise self.fail(f"{response.request.method} {response.url} did not answer JSON with {what} (Content-Type "
                            f"{response.headers.get('Content-Type') or 'none'}): {body[:300]!r}. Is url the "
                            f"{self.what}'s base URL?", response.url)
        return data

    def _prefix(self, response: Any) -> bytes:
        """At most MAX_ERROR bytes of an answer, whatever it does after them (an error page: its words)."""
        body = b""
        with contextlib.suppress(FneError):
            for chunk in self.iter_body(response, 1 << 62):
                body += chunk
                if len(body) >= MAX_ERROR:
                    break
        response.close()
        return body[:MAX_ERROR]

    def error_text(self, response: Any) -> tuple[Optional[str], str]:
        """(key, message) of an error answer, from at most MAX_ERROR bytes of it."""
        return error_text(response.headers.get("Content-Type", ""), self._prefix(response).decode("utf-8", "replace"))

    def raise_for_status(self, method: str, url: str, response: Any, hint: Optional[str] = None) -> None:
        """FneError "Request METHOD URL failed: [status key] the server's words. hint" for any non-2xx answer."""
        status = response.status_code
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            location = response.headers.get("Location") or "(no Location)"
            response.close()
            raise self.fail(f"Request {method} {url} was redirected ({status}) to {location}: redirects are not "
                            f"followed (they could carry credentials or records to another host). Set url to the "
                            f"{self.what}'s own address.", url, status=status)
        key, text = self.error_text(response)
        raise self.status_error(method, url, status, key, text, hint)

    def status_error(self, method: str, url: str, status: int, key: Optional[str], text: str,
                     hint: Optional[str] = None) -> FneError:
        shown_key = " " + key if key and not text.startswith('"') else ""
        if hint is None:
            hint = {401: (f"The {self.what} refused the credentials: check username and password (administrative "
                          "security)." if self.what == "license server" else
                          f"The {self.what} asks for credentials this collection does not send: is url right?"),
                    404: URL_HINTS.get(self.what, "Is url right?")}.get(status, "")
        msg = f"Request {method} {url} failed: [{status}{shown_key}] {text.rstrip('.')}"
        msg = f"{msg}. {hint}" if hint else msg
        if 400 <= status < 500 and is_mismatch(key, text):  # wherever the back office's mismatch shows up
            # the license server relaying it at the process step: read as UTC (the upload reads its own, in the zone)
            return self.fail(msg, url, MismatchError, text=text, status=status, key=key)
        return self.fail(msg, url, status=status, key=key)


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
