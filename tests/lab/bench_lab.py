#!/usr/bin/env python3
"""Benchmark the lab: start a 1000-server fleet, then hammer it with health + generate calls.

    .venv/bin/python tests/lab/bench_lab.py [--servers 1000] [--seconds 10] [--concurrency 64]

Prints the start time of `fnelab up` and the requests/s served (a script, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

FNELAB = [sys.executable, "-m", "fnelab"]


async def hammer(servers: list[dict], seconds: float, concurrency: int,
                 tls: ssl.SSLContext | None) -> tuple[int, int, dict[int, int]]:
    """Each worker owns a slice of the fleet (so keep-alive connections are reused) and alternates a health
    check and a generate call on each of its servers, round and round, until time is up."""
    done = errors = 0
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=2, ssl=tls if tls else True)

    async def worker(mine: list[dict], session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        i = 0
        while time.monotonic() < deadline:
            s = mine[i % len(mine)]
            i += 1
            for method, path in (("GET", "/api/1.0/health"), ("POST", "/api/1.0/sync_message/offline")):
                try:
                    async with session.request(method, s["url"] + path) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        done += 1
                except aiohttp.ClientError:
                    errors += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(servers[w::concurrency], session) for w in range(concurrency)))
    return done, errors, statuses


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--address-base", default="127.90.0.0")
    parser.add_argument("--https", action="store_true", help="serve (and verify) HTTPS on every server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fnelab-bench-") as tmp:
        directory = Path(tmp) / "lab"
        started = time.monotonic()
        subprocess.run([*FNELAB, "up", "--servers", str(args.servers), "--dir", str(directory), "--address-base",
                        args.address_base, "--records", str(args.records), "--page-size", "10",
                        *(["--https"] if args.https else [])], check=True)
        start_time = time.monotonic() - started
        try:
            # no administrative security: this measures the lab, not the authorize round trips
            servers = list(json.loads((directory / "lab.json").read_text())["servers"].values())
            tls = ssl.create_default_context(cafile=str(directory / "ca.pem")) if args.https else None
            began = time.monotonic()
            done, errors, statuses = asyncio.run(hammer(servers, args.seconds, args.concurrency, tls))
            elapsed = time.monotonic() - began
        finally:
            subprocess.run([*FNELAB, "down", "--dir", str(directory)], check=False)
    print(f"start: {args.servers} servers up in {start_time:.2f}s")
    print(f"served {done} requests in {elapsed:.1f}s ({errors} errors, statuses {statuses}): "
          f"{done / elapsed:.0f} requests/s")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
