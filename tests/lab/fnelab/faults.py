"""Fault injection: what a flaky network, proxy or server does to a request.

Request-level kinds (taken per request, optionally limited by --count and --endpoint):
  latency=S  wait S seconds, then answer normally
  status=C   answer C without doing anything (Retry-After when given)
  drop       do the work and commit it, then close the connection with no answer (the lost response)
  truncate   do the work, send the right status and Content-Length but half the body, then close
  html       a proxy's 502 text/html page, nothing done
Target-level kinds: expire_tokens (immediate), down (stop listening until cleared).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

REQUEST_KINDS = ("latency", "status", "drop", "truncate", "html")
KINDS = (*REQUEST_KINDS, "expire_tokens", "down")
ENDPOINTS = ("health", "authorize", "generate", "ack", "upload")


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
        if self.kind == "latency":
            try:
                float(self.value or "")
            except ValueError:
                raise FaultError("latency needs seconds: latency=2.5") from None
        if self.kind == "status" and not (self.value or "").isdigit():
            raise FaultError("status needs a code: status=503")
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

    def take(self, target: str, endpoint: str) -> list[Fault]:
        """The request-level faults this request meets (each one's count goes down by one)."""
        faults = self.active.get(target)
        if not faults:
            return []
        hit = [f for f in faults if f.kind in REQUEST_KINDS and f.endpoint in (None, endpoint)]
        # latency stacks with one other kind; of the others the first added wins
        chosen = [f for f in hit if f.kind == "latency"] + [f for f in hit if f.kind != "latency"][:1]
        for f in chosen:
            if f.count is not None:
                f.count -= 1
        faults[:] = [f for f in faults if f.count is None or f.count > 0]
        return chosen

    def describe(self) -> dict[str, list[dict]]:
        return {t: [asdict(f) for f in fs] for t, fs in self.active.items() if fs}
