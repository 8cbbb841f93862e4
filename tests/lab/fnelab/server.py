"""The lab process: every license server, the back office and the control endpoint, in one asyncio loop.

One aiohttp application serves all license servers; the request's local address says which server it is.
Run as `python -m fnelab.server --dir DIR` (detached by `fnelab up`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import secrets
import signal
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from aiohttp import web

from . import fleet, hostile, variants
from .faults import MODIFIERS, SAME_PREFIX, Fault, FaultError, Faults, parse_start_spec
from .state import AckError, Mismatch, Server, State
from .wire import (
    CHUNK,
    MISMATCH_TITLE,
    Ack,
    Message,
    MessageReader,
    WireError,
    file_name,
    iso,
    mismatch_text,
    vendor_time,
)

log = logging.getLogger("fnelab")
API = "/api/1.0"
VERSION = "2024.09-fnelab"
HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
            b"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def _error(status: int, key: str, message: str) -> web.Response:
    return web.json_response({"key": key, "message": message}, status=status)


async def _pieces(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A big message's body for aiohttp, written piece by piece as the client takes it."""
    for chunk in chunks:
        yield chunk


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in pieces, as it arrives (a big message is never whole in memory), or the bytes a hold
    fault read before the work."""
    if "body" in request:
        yield request["body"]
        return
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


HISTORY_PAGE = """<!doctype html><title>Upload synchronization history</title>
<h1>Upload synchronization history</h1>
<p>Up to 100 files per submission, all from one license server.</p>
<form method="post" action="/history" enctype="multipart/form-data">
<input type="file" name="file" multiple> <button>Upload</button></form>
"""


def _wrong_media_type(request: web.Request, expected: str) -> str | None:
    """The complaint when the request body is not declared as `expected` (a real REST server answers 415)."""
    if request.content_type == expected:  # aiohttp: the media type alone, lower case, without parameters
        return None
    declared = request.headers.get("Content-Type") or "none"
    return f"Unsupported Content-Type {declared}: expected {expected}."


class Lab:
    def __init__(self, directory: Path, start_faults: list[str]):
        self.dir = directory
        self.state = State(directory / "lab.sqlite")
        self.servers = self.state.servers()
        self.by_address = {s.address: s for s in self.servers}
        self.by_name = {s.name: s for s in self.servers}
        self.page_size = int(self.state.get("page_size", "500"))
        self.token_ttl = float(self.state.get("token_ttl", "300"))
        self.reupload = self.state.get("reupload", "accept")
        self.base = self.state.get("address_base")
        self.variants = frozenset(self.state.variants())  # see variants.py
        # unregistered-device: the back office does not know the first server until `fnelab config --register`
        self.unregistered = set(json.loads(self.state.get("unregistered") or "null") or (
            [self.servers[0].host_id] if "unregistered-device" in self.variants and self.servers else []))
        self.bo_address = fleet.address(self.base, 1)
        self.faults = Faults()
        self.holds = hostile.Holds()
        self.elsewhere = hostile.Elsewhere(fleet.elsewhere(self.base))
        self.lingering: dict[asyncio.Task, web.Request] = {}   # requests playing a fault, cut when the lab stops
        self.tokens: dict[str, tuple[str, float]] = {}   # token -> (server name, expiry)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.listeners: dict[str, asyncio.Server | None] = {}   # target -> listening socket (None: down)
        self.stopping = asyncio.Event()
        for spec in start_faults:
            target, fault = parse_start_spec(spec)
            self._apply_fault(target, fault)

    # --- plumbing ---------------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:  # ssl only loads key material from files
            os.chmod(f.name, 0o600)
            f.write(self.state.get("cert_chain_pem") + self.state.get("key_pem"))
            f.flush()
            ctx.load_cert_chain(f.name)
        return ctx

    def _target(self, request: web.Request) -> str:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        server = self.by_address.get(sock[0]) if sock else None
        return server.name if server else "backoffice"

    @web.middleware
    async def _faulty(self, request: web.Request, handler) -> web.StreamResponse:
        """Count the request and play the faults its target and endpoint meet."""
        target = self._target(request)
        endpoint = (request.match_info.route.name or "other").rpartition(":")[2]  # "r:generate" is generate too
        self.counts[(target, endpoint)] += 1
        if target in self.listeners and self.listeners[target] is None:  # down: cut keep-alive connections too
            request.transport.abort()
            raise asyncio.CancelledError
        request["target"] = target
        # under SAME_PREFIX a redirect_same was followed: it is not played again there (no redirect loop)
        skip = ("redirect_same",) if request.path.startswith(SAME_PREFIX + "/") else ()
        faults = self.faults.take(target, endpoint, skip)
        if not faults:
            return await handler(request)
        task = asyncio.current_task()
        assert task is not None
        self.lingering[task] = request
        try:
            return await self._play(request, handler, endpoint, faults)
        finally:
            self.lingering.pop(task, None)

    async def _play(self, request: web.Request, handler, endpoint: str, faults: list[Fault]) -> web.StreamResponse:
        """Modifiers around one answer: latency, hold, the answer (the work, or an injected one), hold_after,
        then the answer sent (with extra headers, trickled, truncated, or dropped)."""
        modifiers = {f.kind: f for f in faults if f.kind in MODIFIERS}
        answer = next((f for f in faults if f.kind not in MODIFIERS), None)
        kind = answer.kind if answer else None
        for f in faults:
            if f.kind == "latency":
                await asyncio.sleep(float(f.value))
        if "hold" in modifiers or "hold_after" in modifiers:
            request["body"] = await request.read()  # the whole request is received before it waits
        if "hold" in modifiers:
            await self.holds.hold(request, endpoint, modifiers["hold"])
        response = None if kind == "endless" else await self._answer(request, handler, answer)
        if "hold_after" in modifiers:
            await self.holds.hold(request, endpoint, modifiers["hold_after"])
        if kind == "drop":
            hostile.hang_up(request)
        pause = float(modifiers["trickle"].value) if "trickle" in modifiers else None
        headers = hostile.extra_headers(modifiers)
        if response is None:
            await hostile.endless(request, endpoint, headers, pause)
        response.headers.update(headers)
        if pause is not None or kind == "truncate":
            return await hostile.send(request, response, pause, truncate=kind == "truncate")
        return response

    async def _answer(self, request: web.Request, handler, answer: Fault | None) -> web.Response:
        """The handler's answer (the work done: no answer fault, drop, truncate) or an injected one (nothing done)."""
        kind = answer.kind if answer else None
        if answer is None or kind in ("drop", "truncate"):
            return await handler(request)
        if kind == "status":
            headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
            return web.json_response({"key": "fnelab.injectedFault", "message": f"injected status {answer.value}"},
                                     status=int(answer.value), headers=headers)
        if kind == "html":
            return web.Response(body=HTML_502, status=502, content_type="text/html", headers={"Server": "nginx"})
        if kind == "page200":
            return hostile.portal_page(answer.value)
        if kind == "echo_token":
            return await hostile.echo_token(request, int(answer.value))
        return hostile.redirect(int(answer.value), self._location(request, same=kind == "redirect_same"))

    def _location(self, request: web.Request, same: bool) -> str:
        """Where a redirect points: the same path and query on the elsewhere host (same scheme), or under
        SAME_PREFIX on this very address and port."""
        if same:
            host, port = request.transport.get_extra_info("sockname")[:2]
            return f"{request.scheme}://{host}:{port}{SAME_PREFIX}{request.raw_path}"
        return f"{self.elsewhere.urls[request.scheme]}{request.raw_path}"

    # --- license server ---------------------------------------------------------------------------------
    def _server(self, request: web.Request) -> Server:
        return self.by_name[request["target"]]

    def _authorized(self, request: web.Request, server: Server) -> bool:
        if not server.security:
            return True
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        entry = self.tokens.get(token)
        return entry is not None and entry[0] == server.name and entry[1] > time.time()

    def _refusal(self, status: int, key: str, title: str, message: str, arguments: list) -> web.Response:
        """An error answer in the lab's shape ({title: message}) or, with error-objects, {key, message, arguments}."""
        if "error-objects" in self.variants:
            return web.json_response({"key": key, "message": f"{title}: {message}", "arguments": arguments},
                                     status=status)
        return web.json_response({title: message}, status=status)

    def _mismatch(self, expected: int, got: int, backoffice: bool = True) -> web.Response:
        """The documented out-of-order answer, its times shown in the zone of whoever answers."""
        offset = variants.offset_seconds(variants.BACKOFFICE_OFFSET) \
            if backoffice and "backoffice-local-times" in self.variants else 0
        return self._refusal(400, "syncErr.outOfOrder", MISMATCH_TITLE, mismatch_text(expected, got, offset),
                             [vendor_time(expected, offset), vendor_time(got, offset)])

    async def health(self, request: web.Request) -> web.Response:
        s = self._server(request)
        if "health-wrapped" in self.variants:  # the shape of a public LLS 2021.05 sample
            return web.json_response({"LLS": {
                "version": VERSION, "buildDate": "2024-09-01", "buildVersion": VERSION,
                "serverInstanceID": f"fnelab-{s.name}", "database": {"connectionCheck": "success"},
                "security": "enabled" if s.security else "disabled", "httpAuth": "disabled",
                "licensingSecurityJSON": "enabled", "diskspace": "ok"}})
        return web.json_response({"status": "ok", "version": VERSION, "instanceId": f"fnelab-{s.name}",
                                  "hostId": s.host_id, "hostIdType": "Ethernet", "database": {"status": "ok"},
                                  "security": {"enabled": s.security, "https": s.https}})

    async def hostids(self, request: web.Request) -> web.Response:
        return web.json_response({"hostids": [{"type": "ETHERNET", "value": self._server(request).host_id}]})

    async def authorize(self, request: web.Request) -> web.Response:
        s = self._server(request)
        if wrong := _wrong_media_type(request, "application/json"):
            return _error(415, "glsErr.unsupportedMediaType", wrong)
        try:
            body = await request.json()
            user, password = body["user"], body["password"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "glsErr.invalidRequest", "expected JSON {\"user\": ..., \"password\": ...}")
        if not (secrets.compare_digest(str(user), s.username or "")
                and secrets.compare_digest(str(password), s.password or "")):
            return _error(401, "glsErr.userAuthFailed", "User authentication failed.")
        now = time.time()
        if len(self.tokens) > 50_000:  # long benchmarks: forget expired tokens
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
        token = secrets.token_urlsafe(24)
        expires = now + self.token_ttl
        self.tokens[token] = (s.name, expires)
        return web.json_response({"token": token, "expires": iso(int(expires))})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        s = self._server(request)
        if not self._authorized(request, s):
            return _error(401, "glsErr.notAuthorized", "Not authorized: authorize again.")
        asked = variants.FORCE_QUERY.split("=") if "other-force-query" in self.variants else ("force", "true")
        force = request.query.get(asked[0], "").lower() == asked[1].lower()
        msg = self.state.generate(s, self.page_size, force)
        if msg is None:
            if "empty-200" in self.variants:
                return web.Response(status=200, body=b"", content_type="application/octet-stream")
            return web.Response(status=204)
        headers = {}
        if "no-disposition" not in self.variants:
            offset = variants.offset_seconds(variants.LOCAL_OFFSET) if "local-time-names" in self.variants else 0
            headers = {"Content-Disposition": f'attachment; filename="{file_name(msg.sync_time, offset)}"',
                       "X-FNE-Record-Count": str(len(msg.records))}
        if msg.filler:  # streamed as the client reads it, with its length announced (faults: drop, hold, latency)
            headers["Content-Length"] = str(msg.size())
            return web.Response(body=_pieces(msg.chunks()), content_type="application/octet-stream",
                                headers=headers)
        return web.Response(body=msg.encode(), content_type="application/octet-stream", headers=headers)

    async def ack(self, request: web.Request) -> web.Response:
        s = self._server(request)
        if not self._authorized(request, s):
            return _error(401, "glsErr.notAuthorized", "Not authorized: authorize again.")
        if wrong := _wrong_media_type(request, "application/octet-stream"):
            return _error(415, "glsErr.unsupportedMediaType", wrong)
        try:
            ack = Ack.decode(await request.read())
            last, processed, purged = self.state.process_ack(s, ack)
        except WireError as exc:
            return _error(400, "glsErr.invalidSyncAck", f"Invalid sync acknowledgment: {exc}")
        except AckError as exc:
            return _error(400, exc.key, str(exc))
        if ack.mismatch:  # mismatch-at-process: processed up to what the back office holds, then the mismatch
            return self._mismatch(*ack.mismatch, backoffice=False)
        if "empty-200" in self.variants:
            return web.Response(status=200)
        return web.json_response({"lastSyncTime": iso(last), "processed": processed, "purgedRecords": purged})

    # --- back office ------------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        if wrong := _wrong_media_type(request, "application/octet-stream"):
            return self._refusal(415, "syncErr.mediaType", "Unsupported media type", wrong, [])
        reader = MessageReader()  # checks the framing and the signature as the body arrives
        try:
            async for chunk in _body(request):
                reader.feed(chunk)
            msg = reader.finish()
        except WireError as exc:
            return self._refusal(400, "syncErr.invalidMessage", "Invalid sync message", str(exc), [])
        if msg.host_id in self.unregistered:
            return self._refusal(400, "syncErr.unknownDevice", "Unknown device", f"The license server with host id "
                                 f"{msg.host_id} is not registered with this back office: register it first.",
                                 [msg.host_id])
        try:
            ack = self.state.upload(msg, reader.sha256.hexdigest(), self.reupload,
                                    mismatch_in_ack="mismatch-at-process" in self.variants)
        except Mismatch as exc:
            return self._mismatch(exc.expected, exc.got)
        return web.Response(body=ack.encode(), content_type="application/octet-stream")

    # --- back office web page "Upload synchronization history" (vendor: up to 100 files per submission, all from
    # one license server, answered with one acknowledgment to download); the browser-only path of air-gapped sites
    async def history_page(self, request: web.Request) -> web.Response:
        return web.Response(text=HISTORY_PAGE, content_type="text/html")

    async def history_upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return web.json_response({"Invalid request": "expected multipart/form-data with file fields"}, status=400)
        files = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "file":
                files.append(await part.read())
        if not 1 <= len(files) <= 100:
            return web.json_response({"Invalid request": f"{len(files)} files: 1 to 100 per submission"}, status=400)
        try:
            messages = sorted(((Message.decode(raw), raw) for raw in files), key=lambda pair: pair[0].sync_time)
        except WireError as exc:
            return web.json_response({"Invalid sync message": str(exc)}, status=400)
        if len({msg.host_id for msg, _raw in messages}) != 1:
            return web.json_response({"Invalid request": "all files of a submission must come from one license "
                                                         "server"}, status=400)
        ack = None
        for msg, raw in messages:  # like one upload each, in time order; refused ones store nothing
            try:
                ack = self.state.upload(msg, hashlib.sha256(raw).hexdigest(), self.reupload)
            except Mismatch as exc:
                return self._mismatch(exc.expected, exc.got)
        assert ack is not None
        return web.Response(body=ack.encode(), content_type="application/octet-stream",
                            headers={"Content-Disposition": 'attachment; filename="syncack.bin"'})

    # --- control ----------------------------------------------------------------------------------------
    def _apply_fault(self, target: str, fault: Fault) -> None:
        if target != "backoffice" and target not in self.by_name:
            raise FaultError(f"no such target {target!r}")
        if fault.kind == "expire_tokens":  # immediate: every token issued so far stops working
            self.tokens = {t: v for t, v in self.tokens.items() if v[0] != target}
        else:
            self.faults.add(target, fault)

    async def c_status(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "pid": os.getpid(), "servers": len(self.servers),
                                  "down": sorted(t for t, srv in self.listeners.items() if srv is None),
                                  "faults": self.faults.describe(), "held": len(self.holds.pending()),
                                  "config": {"page_size": self.page_size, "token_ttl": self.token_ttl,
                                             "reupload": self.reupload}})

    async def c_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            fault = Fault(body["kind"], body.get("value"), body.get("count"), body.get("endpoint"),
                          body.get("retry_after"))
            self._apply_fault(body["target"], fault)
            if fault.kind == "down":
                await self._listen_stop(body["target"])
        except (FaultError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self.c_status(request)

    async def c_clear(self, request: web.Request) -> web.Response:
        target = (await request.json()).get("target")
        if target is not None and target != "backoffice" and target not in self.by_name:
            return web.json_response({"error": f"no such target {target!r}"}, status=400)
        self.faults.clear(target)
        for t, srv in list(self.listeners.items()):
            if srv is None and target in (None, t):
                try:
                    await self._listen(t)
                except SystemExit as exc:  # someone took the address meanwhile: report, stay up
                    return web.json_response({"error": str(exc)}, status=500)
        return await self.c_status(request)

    async def c_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        reupload = body.get("reupload") or self.reupload
        if reupload not in ("accept", "reject"):
            return web.json_response({"error": "reupload is accept or reject"}, status=400)
        try:
            page_size = int(body["page_size"]) if body.get("page_size") is not None else self.page_size
            token_ttl = float(body["token_ttl"]) if body.get("token_ttl") is not None else self.token_ttl
        except (TypeError, ValueError):
            page_size = token_ttl = 0
        if page_size < 1 or token_ttl <= 0:  # a page of 0 records would be handed out forever
            return web.json_response({"error": "page_size must be at least 1 and token_ttl above 0"}, status=400)
        register = body.get("register")
        if register is not None and register not in self.by_name:
            return web.json_response({"error": f"no such server {register!r}"}, status=400)
        if register is not None:
            self.unregistered.discard(self.by_name[register].host_id)
        self.reupload, self.page_size, self.token_ttl = reupload, page_size, token_ttl
        self.state.put(reupload=self.reupload, page_size=self.page_size, token_ttl=self.token_ttl,
                       unregistered=json.dumps(sorted(self.unregistered)))
        return await self.c_status(request)

    async def c_activity(self, request: web.Request) -> web.Response:
        body = await request.json()
        names = body.get("servers")
        unknown = [n for n in names or [] if n not in self.by_name]
        if unknown:
            return web.json_response({"error": f"no such servers: {', '.join(unknown)}"}, status=400)
        ids = [self.by_name[n].id for n in names] if names else None
        bulk = body.get("bulk_bytes")
        if bulk is not None and (not isinstance(bulk, int) or bulk < 0):
            return web.json_response({"error": "bulk_bytes is a number of bytes, 0 or more"}, status=400)
        made = self.state.add_records(int(body["records"]), ids)
        if bulk is not None:
            self.state.set_bulk(bulk, ids)
        return web.json_response({"created": made})

    async def c_held(self, request: web.Request) -> web.Response:
        return web.json_response({"held": self.holds.pending()})

    async def c_release(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            id_ = int(body["id"]) if body.get("id") is not None else None
        except (TypeError, ValueError):
            return web.json_response({"error": "id is a number"}, status=400)
        released = self.holds.release(body.get("target"), body.get("endpoint"), id_, bool(body.get("all")))
        if not released and not body.get("all"):
            return web.json_response({"error": "no held request matches"}, status=409)
        return web.json_response({"released": released, "held": self.holds.pending()})

    async def c_elsewhere(self, request: web.Request) -> web.Response:
        return web.json_response(self.elsewhere.describe())

    async def c_elsewhere_clear(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.elsewhere.clear()})

    async def c_flush(self, request: web.Request) -> web.Response:
        self.flush()
        return web.json_response({"flushed": True})

    async def c_shutdown(self, request: web.Request) -> web.Response:
        self.stopping.set()
        return web.json_response({"stopping": True})

    # --- lifecycle --------------------------------------------------------------------------------------
    def flush(self) -> None:
        counts, self.counts = self.counts, Counter()
        self.state.add_counts(dict(counts))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(1)
            if not (self.dir / "lab.sqlite").exists():  # DIR deleted (an interrupted test run): go away
                log.warning("%s is gone; stopping", self.dir / "lab.sqlite")
                self.stopping.set()
                return
            self.flush()

    async def _bind(self, host: str, port: int, factory, tls: ssl.SSLContext | None, what: str) -> asyncio.Server:
        try:
            return await asyncio.get_running_loop().create_server(factory, host, port, ssl=tls, backlog=256,
                                                                  reuse_address=True)
        except OSError as exc:
            raise SystemExit(f"fnelab: cannot listen on {host}:{port} for {what}: "
                             f"{os.strerror(exc.errno or 0)}") from None

    async def _listen(self, target: str) -> None:
        if target == "backoffice":
            host, port, factory, tls = self.bo_address, fleet.BACKOFFICE_PORT, self.bo_runner.server, self.tls
        else:
            s = self.by_name[target]
            host, port, factory = s.address, fleet.SERVER_PORT, self.lls_runner.server
            tls = self.tls if s.https else None
        self.listeners[target] = await self._bind(host, port, factory, tls, target)

    async def _listen_stop(self, target: str) -> None:
        srv = self.listeners.get(target)
        if srv is not None:
            srv.close()
        self.listeners[target] = None

    async def run(self) -> None:
        started = time.monotonic()
        self.tls = self._ssl()
        lls = web.Application(middlewares=[self._faulty], client_max_size=64 * 1024 * 1024)
        bo = web.Application(middlewares=[self._faulty], client_max_size=256 * 1024 * 1024)
        for prefix, tag in (("", ""), (SAME_PREFIX, "r:")):  # SAME_PREFIX: where redirect_same leads, same routes
            lls.router.add_get(f"{prefix}{API}/health", self.health, name=f"{tag}health")
            lls.router.add_get(f"{prefix}{API}/hostids", self.hostids, name=f"{tag}hostids")
            lls.router.add_post(f"{prefix}{API}/instances/~/authorize", self.authorize, name=f"{tag}authorize")
            lls.router.add_post(f"{prefix}{API}/sync_message/offline", self.generate, name=f"{tag}generate")
            lls.router.add_post(f"{prefix}{API}/sync_ack/offline", self.ack, name=f"{tag}ack")
            bo.router.add_post(f"{prefix}/deviceservices", self.upload, name=f"{tag}upload")
        bo.router.add_get("/history", self.history_page, name="history_page")
        bo.router.add_post("/history", self.history_upload, name="history_upload")
        elsewhere = web.Application(client_max_size=256 * 1024 * 1024)
        elsewhere.router.add_route("*", "/{tail:.*}", self.elsewhere.handle)
        control = web.Application()
        for path, handler in (("/status", self.c_status), ("/held", self.c_held), ("/elsewhere", self.c_elsewhere)):
            control.router.add_get(path, handler)
        for path, handler in (("/fault", self.c_fault), ("/clear", self.c_clear), ("/config", self.c_config),
                              ("/activity", self.c_activity), ("/flush", self.c_flush),
                              ("/release", self.c_release), ("/elsewhere/clear", self.c_elsewhere_clear),
                              ("/shutdown", self.c_shutdown)):
            control.router.add_post(path, handler)
        self.lls_runner = web.AppRunner(lls, access_log=None, handle_signals=False)
        self.bo_runner = web.AppRunner(bo, access_log=None, handle_signals=False)
        elsewhere_runner = web.AppRunner(elsewhere, access_log=None, handle_signals=False)
        control_runner = web.AppRunner(control, access_log=None, handle_signals=False)
        runners = (control_runner, self.bo_runner, self.lls_runner, elsewhere_runner)
        for runner in runners:
            await runner.setup()
        for s in self.servers:
            await self._listen(s.name)
        await self._listen("backoffice")
        elsewhere_listeners = [
            await self._bind(self.elsewhere.urls["address"], port, elsewhere_runner.server,
                             self.tls if scheme == "https" else None, "elsewhere")
            for scheme, port in fleet.ELSEWHERE_PORTS.items()]
        for target, faults in self.faults.active.items():  # `--fault NAME:down` at start
            if any(f.kind == "down" for f in faults):
                await self._listen_stop(target)
        site = web.TCPSite(control_runner, self.bo_address, fleet.CONTROL_PORT, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise SystemExit(f"fnelab: cannot listen on {self.bo_address}:{fleet.CONTROL_PORT} (control): "
                             f"{os.strerror(exc.errno or 0)}") from None
        (self.dir / "lab.pid").write_text(f"{os.getpid()}\n")
        log.info("lab up: %d license servers, back office %s:%d, control :%d, in %.2fs", len(self.servers),
                 self.bo_address, fleet.BACKOFFICE_PORT, fleet.CONTROL_PORT, time.monotonic() - started)
        flusher = asyncio.create_task(self._flusher())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()
        log.info("lab stopping")
        flusher.cancel()
        for srv in [*self.listeners.values(), *elsewhere_listeners]:
            if srv is not None:
                srv.close()
        for task, request in list(self.lingering.items()):  # held, trickling, endless: cleanup would wait on them
            if request.transport is not None:
                request.transport.abort()
            task.cancel()
        await asyncio.sleep(0.1)  # let the control endpoint answer the shutdown request
        for runner in runners:
            await runner.cleanup()
        if (self.dir / "lab.sqlite").exists():
            self.flush()
        self.state.close()
        log.info("lab stopped")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fnelab.server")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--fault", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # injected drops are not errors
    _raise_nofile()
    pid_file = args.dir / "lab.pid"
    try:
        lab = Lab(args.dir, args.fault)
        asyncio.run(lab.run())
    except (FaultError, SystemExit) as exc:
        log.error("%s", exc)
        return 1
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
