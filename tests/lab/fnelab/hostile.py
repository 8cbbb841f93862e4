"""The hostile answers fault kinds play (see faults.py): trickled, endless and header-stuffed answers, captive
portal pages, errors that echo credentials, redirects and the "elsewhere" host they lead to, held requests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiohttp import web

from .faults import Fault
from .wire import iso

ENDLESS_CHUNK = b"x" * (1 << 20)
ENDLESS_PAUSE = 0.002   # between chunks: other servers of the lab still get answers; a client reading flat out
#                         meets its size cap (1 GiB for a sync message) in seconds, as from a real runaway server
BINARY_ENDPOINTS = ("generate", "upload")   # answer application/octet-stream; the others JSON
PORTAL_HTML = (b'<!DOCTYPE html>\n<html><head><title>Network access</title></head><body>\n<h1>Sign in to continue'
               b'</h1>\n<form method="post" action="/portal/login"><input name="username"><input name="password" '
               b'type="password"><button>Sign in</button></form>\n</body></html>\n')
PORTAL_TEXT = b"Network access: sign in at http://portal.invalid/login to continue.\n"
PORTAL_JSON = b'{"portal": "Sign in to continue", "login": "http://portal.invalid/login"}\n'
ELSEWHERE_BODY = b"elsewhere\n"   # what the elsewhere host answers but for authorize: a few bytes, no message


def hang_up(request: web.Request) -> NoReturn:
    """Cut the connection, nothing (more) sent."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def connected(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


def json_or_none(raw: bytes) -> Any:
    """The body as JSON when it is JSON (bounded: a JSON body worth recording is small), else None."""
    if not raw or len(raw) > 1 << 20:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def media_type(endpoint: str) -> str:
    return "application/octet-stream" if endpoint in BINARY_ENDPOINTS else "application/json"


def extra_headers(modifiers: dict[str, Fault]) -> dict[str, str]:
    headers = {}
    if "giant_headers" in modifiers:
        headers.update((f"X-Fnelab-Filler-{i:05d}", "x") for i in range(int(modifiers["giant_headers"].value)))
    if "huge_header" in modifiers:
        headers["X-Fnelab-Huge"] = "x" * int(modifiers["huge_header"].value)
    return headers


def portal_page(content_type: str) -> web.Response:
    """A captive portal's 200 login page, in the media type asked for (HTML, JSON or plain text words)."""
    body = PORTAL_HTML if "html" in content_type else PORTAL_JSON if "json" in content_type else PORTAL_TEXT
    return web.Response(body=body, status=200, headers={"Content-Type": content_type})


async def echo_token(request: web.Request, status: int) -> web.Response:
    """A careless server's error: its debug text repeats the bearer token, every header and a JSON body (the
    password of an authorize request)."""
    posted = json_or_none(await request.read())
    authorization = request.headers.get("Authorization", "(none)")
    message = f"Internal error handling {request.method} {request.path}: Authorization: {authorization}"
    if posted is not None:
        message += f"; body {json.dumps(posted)}"
    return web.json_response({"key": "glsErr.internal", "message": message,
                              "request": {"headers": dict(request.headers), "body": posted}}, status=status)


def redirect(code: int, location: str) -> web.Response:
    return web.Response(status=code, headers={"Location": location}, text=f"Moved to {location}\n")


async def send(request: web.Request, response: web.Response, pause: float | None, truncate: bool
               ) -> web.StreamResponse:
    """Send a finished answer by hand: status and headers with the right Content-Length, then the body (only
    its first half when truncating, then close), one byte every `pause` seconds when trickling."""
    body = bytes(response.body or b"")
    if not body:
        if truncate:
            hang_up(request)  # a truncated empty answer (a 204) is a drop
        return response
    out = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
    out.content_length = len(body)
    part = body[: len(body) // 2] if truncate else body
    try:
        await out.prepare(request)
        if pause is None:
            await out.write(part)
        else:
            for i in range(len(part)):
                if i:
                    await asyncio.sleep(pause)
                await out.write(part[i:i + 1])
        if truncate:
            request.transport.close()  # close() flushes what was written, then hangs up
            raise asyncio.CancelledError  # nothing more goes out on this connection
        await out.write_eof()
    except ConnectionError:  # the client gave up
        hang_up(request)
    return out


async def endless(request: web.Request, endpoint: str, headers: dict[str, str], pause: float | None) -> NoReturn:
    """200 with the endpoint's media type and a chunked body that never ends. Each write waits while the client
    does not read (aiohttp's flow control), so memory stays bounded; it ends when the client goes away or the lab
    stops (which cancels the request)."""
    out = web.StreamResponse(status=200, headers={"Content-Type": media_type(endpoint), **headers})
    out.enable_chunked_encoding()  # no Content-Length: the body announces no end
    try:
        await out.prepare(request)
        if media_type(endpoint) == "application/json":
            await out.write(b'{"padding": "')
        while True:
            await out.write(ENDLESS_CHUNK[:1] if pause else ENDLESS_CHUNK)
            await asyncio.sleep(pause or ENDLESS_PAUSE)
    except ConnectionError:
        hang_up(request)


@dataclass
class Held:
    id: int
    target: str
    endpoint: str
    placement: str    # "before" (the work not done yet) or "after" (done and committed, answer not sent)
    request: web.Request
    since: float = field(default_factory=time.monotonic)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict:
        return {"id": self.id, "target": self.target, "endpoint": self.endpoint, "placement": self.placement,
                "method": self.request.method, "path": self.request.path_qs,
                "seconds": round(time.monotonic() - self.since, 3), "connected": connected(self.request)}


class Holds:
    """Requests kept waiting by `hold`/`hold_after` until a test releases them."""

    def __init__(self) -> None:
        self.waiting: dict[int, Held] = {}   # insertion order: oldest first
        self.ids = itertools.count(1)

    async def hold(self, request: web.Request, endpoint: str, fault: Fault) -> None:
        """Wait for release or the fault's upper bound; hang up when the client went away meanwhile."""
        placement = "after" if fault.kind == "hold_after" else "before"
        held = Held(next(self.ids), request["target"], endpoint, placement, request)
        self.waiting[held.id] = held
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(held.release.wait(), float(fault.value))
        finally:
            del self.waiting[held.id]
        if not connected(request):
            hang_up(request)

    def pending(self) -> list[dict]:
        return [h.describe() for h in self.waiting.values() if not h.release.is_set()]

    def release(self, target: str | None, endpoint: str | None, id_: int | None, every: bool) -> list[int]:
        """Release the oldest matching held request, or every one; the ids released."""
        match = [h for h in self.waiting.values() if not h.release.is_set() and target in (None, h.target)
                 and endpoint in (None, h.endpoint) and id_ in (None, h.id)]
        chosen = match if every else match[:1]
        for h in chosen:
            h.release.set()
        return [h.id for h in chosen]


class Elsewhere:
    """The other host `redirect` sends clients to: records every request it gets, answers plausibly."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.requests: deque[dict] = deque(maxlen=10_000)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():  # a repeated header is kept, comma-joined
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.requests.append({"time": iso(int(time.time())), "scheme": request.scheme, "method": request.method,
                              "path": request.path_qs, "headers": headers, "body_length": len(raw),
                              "body_sha256": hashlib.sha256(raw).hexdigest(), "json": json_or_none(raw)})
        if request.path.endswith("/instances/~/authorize"):
            return web.json_response({"token": "elsewhere-token", "expires": iso(int(time.time()) + 300)})
        return web.Response(body=ELSEWHERE_BODY, content_type="application/octet-stream")

    def describe(self) -> dict:
        return {**self.urls, "requests": list(self.requests)}

    def clear(self) -> int:
        cleared = len(self.requests)
        self.requests.clear()
        return cleared
