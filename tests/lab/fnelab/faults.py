"""Fault injection: what a flaky network, a proxy, a captive portal or a careless server does to a request.

Request-level kinds (taken per request, optionally limited by --count and --endpoint). Modifiers change how an
answer is delivered and stack with each other and with one answer kind (every latency; of each other modifier the
first added):
  latency=S          wait S seconds, then answer normally
  trickle=S          the answer's status and headers at once, then its body one byte every S seconds
  giant_headers[=N]  N extra headers on the answer (default 150: http.client refuses more than 100)
  huge_header[=B]    one extra header of B bytes (default 70000: above http.client's 65536-byte line limit)
  hold[=S]           keep the request (received in full) waiting BEFORE the work until released (fnelab release)
                     or S seconds (default 300); released with its client gone, it is not carried out
  hold_after[=S]     the same, AFTER the work is done and committed, before the answer is sent
Answer kinds (the first added applies):
  status=C           answer C without doing anything (Retry-After when given)
  drop               do the work and commit it, then close the connection with no answer (the lost response)
  truncate           do the work, send the right status and Content-Length but half the body, then close
  html               a proxy's 502 text/html page, nothing done
  redirect=C         a C redirect (301, 302, 303, 307, 308) to the same path on the lab's "elsewhere" host, which
                     records what it is sent; nothing done
  redirect_same=C    a C redirect to the same host and port, path prefixed with /r (SAME_PREFIX), which the lab
                     serves like the original path (redirect_same is not played there: no loop); nothing done
  endless            200 with the endpoint's media type and a body that never ends, nothing done
  page200[=TYPE]     200 with a captive portal's login page as TYPE (default text/html), nothing done
  echo_token[=C]     a C error (default 500) whose JSON echoes the request's Authorization header, other headers
                     and JSON body (a careless server's debug output), nothing done
Target-level kinds: expire_tokens (immediate), down (stop listening until cleared).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MODIFIERS = ("latency", "trickle", "giant_headers", "huge_header", "hold", "hold_after")
ANSWERS = ("status", "drop", "truncate", "html", "redirect", "redirect_same", "endless", "page200", "echo_token")
REQUEST_KINDS = (*MODIFIERS, *ANSWERS)
KINDS = (*REQUEST_KINDS, "expire_tokens", "down")
ENDPOINTS = ("health", "authorize", "generate", "ack", "upload")
SAME_PREFIX = "/r"  # redirect_same points here; the lab serves every path under it too
REDIRECT_CODES = (301, 302, 303, 307, 308)
DEFAULTS = {"giant_headers": "150", "huge_header": "70000", "hold": "300", "hold_after": "300",
            "page200": "text/html", "echo_token": "500"}


def _media_type(text: str) -> str:
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+(;.*)?", text):
        raise ValueError(text)
    return text


# kind: (parse VALUE, is the parsed value acceptable, the complaint otherwise)
RULES: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
    "latency": (float, lambda v: True, "latency needs seconds: latency=2.5"),
    "status": (int, lambda v: 100 <= v <= 599, "status needs a code: status=503"),
    "trickle": (float, lambda v: v > 0, "trickle needs seconds per byte: trickle=0.05"),
    "giant_headers": (int, lambda v: 0 < v <= 10_000, "giant_headers takes a number of headers: giant_headers=150"),
    "huge_header": (int, lambda v: 0 < v <= 16 << 20, "huge_header takes a size in bytes: huge_header=70000"),
    "hold": (float, lambda v: v > 0, "hold takes an upper bound in seconds: hold=60"),
    "hold_after": (float, lambda v: v > 0, "hold_after takes an upper bound in seconds: hold_after=60"),
    "redirect": (int, lambda v: v in REDIRECT_CODES, "redirect needs a code: redirect=307 (301 302 303 307 308)"),
    "redirect_same": (int, lambda v: v in REDIRECT_CODES,
                      "redirect_same needs a code: redirect_same=307 (301 302 303 307 308)"),
    "page200": (_media_type, lambda v: True, "page200 takes a media type: page200=text/html"),
    "echo_token": (int, lambda v: 400 <= v <= 599, "echo_token takes an error code: echo_token=500"),
}


class FaultError(ValueError):
    pass


@dataclass
class Fault:
    kind: str
    value: str | None = None
    count: int | None = None          # requests left; None = until cleared
    endpoint: str | None = None
    retry_after: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise FaultError(f"unknown endpoint {self.endpoint!r} (one of {', '.join(ENDPOINTS)})")
        self.value = self.value or DEFAULTS.get(self.kind)
        if self.kind in RULES:
            parse, acceptable, complaint = RULES[self.kind]
            try:
                ok = acceptable(parse(self.value or ""))
            except ValueError:
                ok = False
            if not ok:
                raise FaultError(complaint)
        if self.count is not None and self.count < 1:
            raise FaultError("--count must be at least 1")


def parse_kind(text: str) -> tuple[str, str | None]:
    kind, _, value = text.partition("=")
    return kind, (value or None)


def parse_start_spec(spec: str) -> tuple[str, Fault]:
    """`NAME:KIND[=VALUE][:COUNT][@ENDPOINT]`, as `fnelab up --fault` takes it."""
    body, _, endpoint = spec.partition("@")
    parts = body.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise FaultError(f"bad --fault {spec!r}: expected NAME:KIND[=VALUE][:COUNT][@ENDPOINT]")
    kind, value = parse_kind(parts[1])
    count = None
    if len(parts) == 3:
        if not parts[2].isdigit():
            raise FaultError(f"bad --fault {spec!r}: COUNT must be a number")
        count = int(parts[2])
    return parts[0], Fault(kind, value, count, endpoint or None)


class Faults:
    """Live faults per target (a server name or 'backoffice')."""

    def __init__(self) -> None:
        self.active: dict[str, list[Fault]] = {}

    def add(self, target: str, fault: Fault) -> None:
        self.active.setdefault(target, []).append(fault)

    def clear(self, target: str | None = None) -> None:
        if target is None:
            self.active.clear()
        else:
            self.active.pop(target, None)

    def take(self, target: str, endpoint: str, skip: tuple[str, ...] = ()) -> list[Fault]:
        """The request-level faults this request meets (each one's count goes down by one), `skip` kinds aside:
        every latency, the first of each other modifier, the first answer kind."""
        faults = self.active.get(target)
        if not faults:
            return []
        chosen: list[Fault] = []
        slots: set[str] = set()
        for f in faults:
            if f.kind not in REQUEST_KINDS or f.kind in skip or f.endpoint not in (None, endpoint):
                continue
            slot = f.kind if f.kind in MODIFIERS else "answer"
            if slot not in slots or slot == "latency":
                chosen.append(f)
                slots.add(slot)
        for f in chosen:
            if f.count is not None:
                f.count -= 1
        faults[:] = [f for f in faults if f.count is None or f.count > 0]
        return chosen

    def describe(self) -> dict[str, list[dict]]:
        return {t: [asdict(f) for f in fs] for t, fs in self.active.items() if fs}
