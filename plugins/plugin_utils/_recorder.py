# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compatibility check's recording reverse proxy (controller only). The vendor tools talk to it over plain HTTP
on 127.0.0.1; it forwards each request to the real server (its TLS settings, no redirect followed, every answer
bounded in time and size) and keeps what was exchanged: whole in memory, for the replay against the collection's
own HTTP client, and as a transcript a site may share: methods, paths, query names, status, content types, header
names, sizes and sha256, never a body, a header's value, a credential or a token."""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import Connection
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError, noop_warn, scrub
from ansible_collections.fne.offline_sync.plugins.module_utils._http import MAX_MESSAGE, Http, reason_of

try:
    import requests
except ImportError:  # the compat_check action says so
    requests = None

HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"))


@dataclass
class Exchange:
    """One request and its answer."""

    method: str
    path: str
    query: str  # as sent (forwarded as is; the transcript keeps the names alone)
    request_headers: Dict[str, str] = field(repr=False)
    request_body: bytes = field(repr=False)
    status: int = 0
    headers: Dict[str, str] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)
    error: Optional[str] = None  # the upstream could not be reached or answered too much

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")

    def transcript(self) -> Dict[str, Any]:
        """What may leave the site: the exchange's shape, no value that could hold a secret or a record."""
        return {
            "method": self.method, "path": self.path,
            "query": sorted({name for name, _value in parse_qsl(self.query, keep_blank_values=True)}),
            "request": {"content_type": self.request_headers.get("content-type", ""),
                        "headers": sorted(self.request_headers), **_size(self.request_body)},
            "status": self.status, "error": self.error,
            "response": {"content_type": self.header("Content-Type"),
                         "headers": sorted(k.lower() for k in self.headers), **_size(self.body)},
        }


def _size(body: bytes) -> Dict[str, Any]:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest() if body else None}


class _Endpoint:
    """A plain-HTTP server on 127.0.0.1 while the `with` block lasts (`url`); `answer` completes each exchange."""

    def __init__(self) -> None:
        self.exchanges: List[Exchange] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, name=f"fne-{type(self).__name__}", daemon=True).start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def keep(self, exchange: Exchange) -> Exchange:
        with self._lock:
            self.exchanges.append(exchange)
        return exchange


class Recorder(_Endpoint):
    """A reverse proxy to the side `conn` describes (scheme://host:port of its url; the request's path is kept) that
    records each exchange. Its requests go through the collection's own Http: the side's TLS and proxy settings, no
    redirect followed, each answer within the deadline and MAX_MESSAGE, errors without the password."""

    def __init__(self, conn: Connection, what: str):
        super().__init__()
        parts = urlsplit(conn.url)
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.http = Http(conn, noop_warn, what)

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        self.http.session.close()

    def answer(self, exchange: Exchange) -> None:
        """Send the request upstream once and keep the answer, or why there was none."""
        headers = {k: v for k, v in exchange.request_headers.items() if k not in HOP_BY_HOP}
        target = self.upstream + exchange.path + (f"?{exchange.query}" if exchange.query else "")
        try:
            response = self.http.once(exchange.method, target, exchange.request_body, headers)
            try:
                exchange.body = self.http.read(response, MAX_MESSAGE)
            finally:
                response.close()
            exchange.status = response.status_code
            # the body is kept decoded: its Content-Encoding no longer applies
            exchange.headers = {k: v for k, v in response.headers.items()
                                if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"}
        except FneError as exc:  # the answer broke off, took too long or was too large (scrubbed already)
            exchange.error = exc.msg
        except (requests.RequestException, OSError) as exc:
            exchange.error = scrub(f"{type(exc).__name__}: {reason_of(exc)}", self.http.secrets)
        if exchange.error:
            exchange.status, exchange.body = 502, b"the recorder could not forward\n"
            exchange.headers = {"Content-Type": "text/plain"}
        self.keep(exchange)


# Endpoints whose answer may be given again when the client asks more often than the tool did (no records there).
REPEATABLE = ("/authorize", "/health", "/hostids")


class Replay(_Endpoint):
    """Answers each request with what the tool got for the same method and path, in the same order: the
    collection's HTTP client meets exactly the answers the vendor's tool met. `exchanges` then holds the client's."""

    def __init__(self, recorded: List[Exchange]):
        super().__init__()
        self.queues: Dict[tuple, List[Exchange]] = {}
        for exchange in recorded:
            self.queues.setdefault((exchange.method, exchange.path), []).append(exchange)

    def answer(self, exchange: Exchange) -> None:
        queue = self.queues.get((exchange.method, exchange.path), [])
        if len(queue) > 1 or (queue and not exchange.path.endswith(REPEATABLE)):
            recorded = queue.pop(0)
        elif queue:
            recorded = queue[0]
        else:
            recorded = Exchange(exchange.method, exchange.path, "", {}, b"", 404, {"Content-Type": "text/plain"},
                                b"the vendor's tool never asked this: no recorded answer\n")
        exchange.status, exchange.headers, exchange.body = recorded.status, recorded.headers, recorded.body
        self.keep(exchange)


def _handler(endpoint: _Endpoint) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # the transcript is the log
            return

        def _relay(self) -> None:
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            exchange = Exchange(self.command, parts.path, parts.query, headers, self._body(headers))
            endpoint.answer(exchange)
            self.send_response(exchange.status)
            for name, value in exchange.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(exchange.body)))
            self.end_headers()
            self.wfile.write(exchange.body)

        def _body(self, headers: Dict[str, str]) -> bytes:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if not size:
                        self.rfile.readline()
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(headers.get("content-length") or 0))

        do_GET = do_POST = do_PUT = do_DELETE = _relay

    return Handler
