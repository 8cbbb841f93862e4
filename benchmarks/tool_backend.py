"""The cost of the tool backend (the vendor's Java tools) against the http backend, for the sync cycle of a fleet.

A script, not a test:  .venv/bin/python benchmarks/tool_backend.py [--servers 100] [--records 20]

For each backend, a fresh lab of the same shape (a quarter of the servers secured, a quarter HTTPS; one message per
server) and the same playbook (`ansible-playbook fne.offline_sync.sync`): a first run with a backlog on every server,
then a second run with nothing new. With the tool backend every step of every server starts a JVM (the lab's
stand-ins are Java programs, as the vendor's are): the first run starts 3 per server (generate, upload of the one
file, process), the second 1 (generate says "No new data is available."). Exits non-zero when `fnelab verify
--complete` finds a violation.

Measured on the 2-core development machine, shared with four other sessions (load 27-35 during the tool runs, 7-8
during the http runs), 100 servers, 20 records, 16 workers, `verify --complete` ok for both:
  http: first run 41.6 s, second run 31.7 s;
  tool: first run 567.3 s (300 JVM starts, 13.6x http), second run 129.1 s (100 JVM starts).
A JVM start with a TLS handshake costs about a CPU-second on this machine, against about a millisecond for a
request of the in-process http client: a site with hundreds of servers should prefer http wherever its profile
holds, and keep the tool backend for the servers that need it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import BIN, env, measured


def cycle(backend: str, args: argparse.Namespace, work: Path, base: str) -> dict:
    lab = work / f"lab-{backend}"
    fnelab = str(BIN / "fnelab")
    subprocess.run([fnelab, "up", "--servers", str(args.servers), "--dir", str(lab), "--records", str(args.records),
                    "--address-base", base, "--security", "0.25", "--https", "0.25"],
                   check=True, env=env(), stdout=subprocess.DEVNULL)
    try:
        tools = subprocess.run([fnelab, "tools-path", "--dir", str(lab)], env=env(), capture_output=True,
                               text=True, check=True).stdout.strip()
        sync = [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(lab / "inventory.yml"),
                "-e", f"fne_sync_store={work / f'store-{backend}'}", "-e", f"fne_sync_workers={args.workers}",
                "-e", f"fne_sync_backend={backend}", "-e", f"fne_sync_tool_path={tools}"]
        first = measured(sync, work / f"{backend}-1.log")["wall_s"]
        second = measured(sync, work / f"{backend}-2.log")["wall_s"]
        verify = subprocess.run([fnelab, "verify", "--dir", str(lab), "--complete"], env=env(), capture_output=True,
                                text=True, check=False)
        return {"first_run_s": round(first, 1), "second_run_s": round(second, 1),
                "verify_complete": "ok" if verify.returncode == 0 else "VIOLATIONS"}
    finally:
        subprocess.run([fnelab, "down", "--dir", str(lab)], env=env(), stdout=subprocess.DEVNULL, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fne-bench-tool-"))
    try:
        result = {"servers": args.servers, "records_per_server": args.records, "workers": args.workers,
                  "http": cycle("http", args, work, "127.151.0.0"), "tool": cycle("tool", args, work, "127.152.0.0")}
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    result["tool_vs_http_first_run"] = round(result["tool"]["first_run_s"] / result["http"]["first_run_s"], 2)
    print(json.dumps(result, indent=2))
    return 0 if all(result[b]["verify_complete"] == "ok" for b in ("http", "tool")) else 1


if __name__ == "__main__":
    sys.exit(main())
