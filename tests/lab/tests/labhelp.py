"""Helpers for the lab's own tests: the stand-in tools by absolute path, direct REST calls."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
from pathlib import Path

import requests
from fnelab.cli import control
from fnelab.state import connect, snapshot
from fnelab.wire import Message

BIN = Path(sys.executable).parent
TOOLS = Path(subprocess.run([str(BIN / "fnelab"), "tools-path"], capture_output=True, text=True,
                            check=True).stdout.strip())
GENERATE = "/api/1.0/sync_message/offline"
ACK = "/api/1.0/sync_ack/offline"
AUTHORIZE, HEALTH = "/api/1.0/instances/~/authorize", "/api/1.0/health"


def tool_env(truststore: str | None) -> dict[str, str]:
    """The environment of a Java tool: the lab's truststore handed to the JVM, as the vendor documents (the JRE's
    trust, never SSL_CERT_FILE and friends)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                                                             "JAVA_TOOL_OPTIONS")}
    if truststore:
        env["JAVA_TOOL_OPTIONS"] = f"-Djavax.net.ssl.trustStore={truststore}"
    return env


def run_tool(lab, name: str, *args: str, cwd: Path, ca: bool = True, tools: Path = TOOLS,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a stand-in vendor tool by absolute path, as an administrator (or the collection) would."""
    return subprocess.run([str(tools / name), *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**tool_env(lab.info["truststore"] if ca else None), **(env or {})})


def server_tool(lab, server: str, mode: str, *args: str, cwd: Path, force: bool = False,
                auth: bool = True) -> subprocess.CompletedProcess:
    """serverofflinesynctool.sh -url <documented endpoint> -generate PATH | -process FILE PATH [...]."""
    info = lab.info["servers"][server]
    url = info["url"] + (GENERATE if mode == "-generate" else ACK)
    first = ["-authorize", info["username"], info["password"]] if auth and info["security"] else []  # as documented
    return run_tool(lab, "serverofflinesynctool.sh", *first, "-url", url, mode, *args, *(["-force"] if force else []),
                    cwd=cwd)


def backoffice_tool(lab, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_tool(lab, "backofficeofflinesynctool.sh", "-url", lab.info["backoffice"]["url"], *args, cwd=cwd)


class Api:
    """Direct REST calls to one license server (requests, verified against the lab CA)."""

    def __init__(self, lab, server: str):
        self.info = lab.info["servers"][server]
        self.url = self.info["url"]
        self.session = session(lab)
        if self.info["security"]:
            self.login()

    def login(self) -> str:
        r = self.session.post(self.url + "/api/1.0/instances/~/authorize",
                              json={"user": self.info["username"], "password": self.info["password"]}, timeout=10)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        return token

    def generate(self, force: bool = False) -> requests.Response:
        return self.session.post(self.url + GENERATE + ("?force=true" if force else ""), timeout=10)

    def drain(self) -> list[bytes]:
        out = []
        while (r := self.generate()).status_code == 200:
            out.append(r.content)
        assert r.status_code == 204, r.text
        return out

    def ack(self, data: bytes, content_type: str | None = "application/octet-stream") -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return self.session.post(self.url + ACK, data=data, headers=headers, timeout=10)


def session(lab) -> requests.Session:
    """A session that trusts the lab CA and nothing from the environment: with trust_env, requests lets
    REQUESTS_CA_BUNDLE override Session.verify, and an HTTP(S)_PROXY would route loopback calls elsewhere."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(lab.dir / "ca.pem")
    return s


def upload(lab, body: bytes, content_type: str | None = "application/octet-stream") -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return session(lab).post(lab.info["backoffice"]["url"], data=body, headers=headers, timeout=10)


def decode(data: bytes) -> Message:
    return Message.decode(data)


def raw_request(url: str, path: str, body: bytes | None = None, ca: str | None = None, method: str = "POST",
                timeout: float = 5) -> tuple[int, dict, bytes, bool]:
    """One request with http.client (timeout: per socket operation); (status, headers, bytes received,
    complete?) to see truncation for what it is. http.client's own refusals (too many headers, a header line too
    long) are raised."""
    scheme, rest = url.split("://")
    host, port = rest.split("/")[0].split(":")
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, int(port), timeout=timeout, context=ssl.create_default_context(cafile=ca))
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/octet-stream"} if body else {})
        resp = conn.getresponse()
        try:
            return resp.status, dict(resp.getheaders()), resp.read(), True
        except http.client.IncompleteRead as exc:
            return resp.status, dict(resp.getheaders()), exc.partial, False
    finally:
        conn.close()


# In-process equivalents of a few `fnelab` commands, for tests that make many calls (each command is a Python
# start, about half a second on a busy machine); the commands themselves are tested elsewhere.
def live_fault(lab, target: str, spec: str, count: int | None = None, endpoint: str | None = None) -> None:
    kind, _, value = spec.partition("=")
    control(lab.dir, "/fault", {"target": target, "kind": kind, "value": value or None, "count": count,
                                "endpoint": endpoint})


def live_state(lab) -> dict:
    control(lab.dir, "/flush", {})
    db = connect(lab.dir / "lab.sqlite", readonly=True)
    try:
        return snapshot(db)
    finally:
        db.close()


def live_held(lab) -> list[dict]:
    return control(lab.dir, "/held")["held"]


def live_elsewhere(lab) -> list[dict]:
    return control(lab.dir, "/elsewhere")["requests"]
