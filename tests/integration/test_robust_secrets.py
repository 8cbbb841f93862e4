"""Secrets (issue 9): with administrative security and HTTPS on every license server, both backends (http and the
vendor tool), ad-hoc modules and the sync playbook, at -vvvv and with ANSIBLE_DEBUG=1, and a server that echoes
the bearer token and the authorize body in its error answers (`echo_token` on each license-server endpoint): the
password and every token the lab issued are found nowhere: not in stdout or stderr, not in any file under the store
(ledger, report.json, report.html, acknowledgments), the module's folders, the temporary folders or the log file.

The lab keeps its tokens to itself, so the test puts a recording TLS relay (TlsTap) between the collection and each
server: it presents the lab's own certificate (its IP SANs cover every server address) on another port of the
server's address, so the collection and the vendor tool verify it with the lab's CA as usual, and it records both
directions: every token the lab issued and every echo it sent back are known exactly.

A secret is looked for as written and in its JSON-escaped forms (once and twice: a server's JSON error inside a
result printed as JSON). With ANSIBLE_DEBUG=1 only the controller-process path is run: ansible-core itself prints a
shipped module's arguments, password included, in its debug output ("done with _execute_module (...)"), as its
documentation of DEFAULT_DEBUG warns ("can include secret information despite no_log settings")."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import ssl
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import reliability
from fnetest import BIN, ansible_env, run
from test_modules_support import TOOLS

ENDPOINTS = ("health", "authorize", "generate", "ack")  # the license server's endpoints the echo_token fault plays on
# A wrong password that JSON escapes: a quote, a backslash, a non-ASCII letter (a server's JSON echo of it differs
# from the string the user typed)
FANCY_PASSWORD = 'Zq"7\\w\u00f6rd-Fancy'


class TlsTap:
    """A recording TLS relay in front of lab servers (see the module docstring). It runs on one asyncio loop in its
    own thread: an SSL object read by one thread while another writes to it (a relay with a thread per direction)
    breaks now and then under load, and the client then sees the connection end without an answer."""

    def __init__(self, lab_dir: Path):
        with sqlite3.connect(lab_dir / "lab.sqlite") as db:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('cert_chain_pem', 'key_pem')"))
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as pem:
            pem.write(meta["cert_chain_pem"] + meta["key_pem"])
            pem.flush()
            self.server_ctx.load_cert_chain(pem.name)
        self.client_ctx = ssl.create_default_context(cafile=str(lab_dir / "ca.pem"))
        self.recorded: dict[str, list[bytes]] = defaultdict(list)  # server -> bytes both ways, as relayed
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def front(self, server: str, url: str) -> str:
        """A URL whose requests reach the server at url (https://IP:PORT) through the tap."""
        host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port), ssl=self.client_ctx,
                                                                     server_hostname=host)
            except (OSError, ssl.SSLError):
                writer.close()
                return
            await asyncio.gather(self._pump(reader, up_writer, server), self._pump(up_reader, writer, server))

        listening = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(relay, host, 0, ssl=self.server_ctx), self._loop).result(30)
        self._servers.append(listening)
        return f"https://{host}:{listening.sockets[0].getsockname()[1]}"

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, server: str) -> None:
        try:
            while data := await asyncio.wait_for(src.read(65536), 120):
                with self._lock:
                    self.recorded[server].append(data)
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            pass
        finally:
            dst.close()

    def text(self, server: str) -> str:
        with self._lock:
            return b"".join(self.recorded[server]).decode("latin-1")

    def tokens(self, server: str) -> set[str]:
        """Every token the server issued (authorize answers) or was shown (Authorization headers)."""
        text = self.text(server)
        return set(re.findall(r'"token":\s*"([^"]+)"', text)) | set(re.findall(r"Bearer ([A-Za-z0-9_\-.~+/=]+)", text))

    def close(self) -> None:
        for listening in self._servers:
            self._loop.call_soon_threadsafe(listening.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


def forms(secret: str) -> set[str]:
    """The secret as written and JSON-escaped once and twice (ASCII-only escapes and not)."""
    found = {secret}
    for _round in range(2):
        found |= {json.dumps(f, ensure_ascii=ascii_only)[1:-1] for f in found for ascii_only in (True, False)}
    return found


def scan(secrets: dict[str, set[str]], texts: dict[str, str]) -> dict[str, list[str]]:
    """owner -> where each of its secrets was found ('PLACE: SECRET[:6]...')."""
    found: dict[str, list[str]] = defaultdict(list)
    for owner, owned in secrets.items():
        for secret in owned:
            variants = forms(secret)
            for place, text in texts.items():
                if any(v in text for v in variants):
                    found[owner].append(f"{place}: {secret[:6]}...")
    return found


def files_text(*roots: Path) -> dict[str, str]:
    """Every file under roots, by path."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file():
                out[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return out


class Setup:
    """A secured HTTPS lab behind a tap, an inventory of hosts (each its own server, backend and echo fault),
    and the folders a run may write to."""

    def __init__(self, lab, tmp_path: Path, hosts: dict[str, dict], tmpdir: Path):
        self.lab, self.tmp = lab, tmp_path
        self.tap = TlsTap(lab.dir)
        info = lab.info
        self.store, self.out = tmp_path / "store", tmp_path / "out"
        self.dirs = {name: tmp_path / name for name in ("ansible-local", "ansible-remote", "remote")}
        for folder in self.dirs.values():
            folder.mkdir()
        self.dirs["tmpdir"] = tmpdir
        self.log = tmp_path / "ansible.log"
        self.server_of: dict[str, str] = {}
        self.fancy: dict[str, str] = {}
        servers = sorted(info["servers"])
        entries = {}
        for index, (host, spec) in enumerate(sorted(hosts.items())):
            server = servers[index]
            self.server_of[host] = server
            details = info["servers"][server]
            assert details["security"] and details["https"], details
            password = f"{FANCY_PASSWORD}-{index}" if spec.get("fancy") else details["password"]
            if spec.get("fancy"):
                self.fancy[host] = password
            entry = {"fne_lls_url": self.tap.front(server, details["url"]), "fne_lls_username": details["username"],
                     "fne_lls_password": password, "fne_lls_ca_path": info["ca_path"],
                     "fne_sync_backend": spec.get("backend", "http"), "fne_sync_tool_path": str(TOOLS),
                     "fne_out": str(self.out / host), "ansible_connection": "local",
                     "ansible_python_interpreter": sys.executable}
            if spec.get("shipped"):
                entry["fne_offline_sync_in_process"] = False
            if spec.get("remote"):
                entry.update(fne_sync_topology="remote", fne_sync_remote_path=str(self.dirs["remote"] / host))
            entries[host] = entry
            if spec.get("echo"):
                lab.fault(server, "echo_token", "--endpoint", spec["echo"])
        self.inventory = tmp_path / "inventory.json"
        self.inventory.write_text(json.dumps({"all": {
            "vars": {"fne_backoffice_url": info["backoffice"]["url"], "fne_backoffice_ca_path": info["ca_path"]},
            "children": {"license_servers": {"hosts": entries}}}}, indent=1))

    def env(self, debug: bool) -> dict:
        env = {k: v for k, v in ansible_env(ANSIBLE_DEPRECATION_WARNINGS="False").items() if not k.startswith("FNE_")}
        env.update(TMPDIR=str(self.dirs["tmpdir"]), ANSIBLE_LOCAL_TEMP=str(self.dirs["ansible-local"]),
                   ANSIBLE_REMOTE_TMP=str(self.dirs["ansible-remote"]), ANSIBLE_LOG_PATH=str(self.log))
        if debug:
            env["ANSIBLE_DEBUG"] = "1"
        return env

    def secrets(self) -> dict[str, set[str]]:
        """host -> its password (or the wrong one it sends) and every token its server issued."""
        info = self.lab.info["servers"]
        return {host: {self.fancy.get(host) or info[server]["password"]} | self.tap.tokens(server)
                for host, server in self.server_of.items()}

    def places(self, outputs: list[str]) -> dict[str, str]:
        texts = {f"output {i}": text for i, text in enumerate(outputs)}
        texts.update(files_text(self.store, self.out, *self.dirs.values(), self.log))
        return texts

    def judge(self, part: str, outputs: list[str]) -> None:
        """Record each host's case; fail naming every secret found and where."""
        for index, text in enumerate(outputs):  # the outputs of the run, for whoever reads a failure
            (self.tmp / f"output-{index}.log").write_text(text)
        found = scan(self.secrets(), self.places(outputs))
        for host, server in sorted(self.server_of.items()):
            reliability.record("secrets", f"{part}/{host}", secrets_found=len(found.get(host, [])),
                               tokens=len(self.tap.tokens(server)),
                               echoes=self.tap.text(server).count("Internal error handling"))
        self.tap.close()
        assert not found, "secrets found:\n" + "\n".join(f"{host}: {places}" for host, places in sorted(found.items()))


@pytest.fixture
def short_tmpdir():
    """The runs' TMPDIR, outside pytest's deep folders: multiprocessing puts a Unix socket there (ansible-core's RPC
    host), and such a path may be at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="fne-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def secure_lab(lab_factory):
    def make(servers: int):
        return lab_factory(servers, "--security", "--https", "--records", "3", "--token-ttl", "3600")
    return make


# hosts of the ad-hoc and playbook runs: each its own server, backend and echo fault
ECHO_HOSTS = {f"{backend}-echo-{endpoint}": {"backend": backend, "echo": endpoint}
              for backend in ("http", "tool") for endpoint in ENDPOINTS}
ADHOC_ARGS = {
    "server_info": {"path": "{{ fne_out }}"},
    "generate": {"path": "{{ fne_out }}"},
    "process": {"src": "{{ fne_out }}/syncack.bin", "path": "{{ fne_out }}"},
}
LLS_ARGS = {"url": "{{ fne_lls_url }}", "username": "{{ fne_lls_username }}", "password": "{{ fne_lls_password }}",
            "ca_path": "{{ fne_lls_ca_path }}", "backend": "{{ fne_sync_backend }}",
            "tool_path": "{{ fne_sync_tool_path }}"}
UPLOAD_ARGS = {"url": "{{ fne_backoffice_url }}", "ca_path": "{{ fne_backoffice_ca_path }}", "src": "{{ fne_out }}",
               "backend": "{{ fne_sync_backend }}", "tool_path": "{{ fne_sync_tool_path }}"}


def adhoc_cycle(setup: Setup, debug: bool, limit: str = "all") -> list[str]:
    """server_info, generate, upload, process as ad-hoc commands over every host; their outputs."""
    outputs = []
    verbosity = "-v" if debug else "-vvvv"
    for module in ("server_info", "generate", "upload", "process"):
        args = UPLOAD_ARGS if module == "upload" else dict(LLS_ARGS, **ADHOC_ARGS[module])
        proc = run([str(BIN / "ansible"), limit, "-i", str(setup.inventory), verbosity, "--forks", "16",
                    "-m", f"fne.offline_sync.{module}", "-a", json.dumps(args)], check=False, env=setup.env(debug))
        assert proc.returncode in (0, 2) and re.search(r"^\S+ \| (SUCCESS|CHANGED|FAILED!) =>", proc.stdout, re.M), \
            f"{module}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout + proc.stderr)
    return outputs


def assert_echoes_played(setup: Setup, outputs: list[str], hosts: dict[str, dict]) -> None:
    """The secrets were in play: every server issued tokens, the echoes carried them (or the password) back."""
    every = "\n".join(outputs)
    for host, spec in hosts.items():
        server = setup.server_of[host]
        text = setup.tap.text(server)
        if spec.get("echo") in ("generate", "ack"):
            echoed = re.findall(r"Internal error handling [^\"]*Authorization: Bearer ([A-Za-z0-9_\-]+)", text)
            lines = "\n".join(line for line in every.splitlines() if host in line)
            assert echoed and set(echoed) <= setup.tap.tokens(server), f"{host}: no token echoed back\n{lines[-3000:]}"
        if spec.get("echo") == "authorize":
            assert "Internal error handling POST /api/1.0/instances/~/authorize" in text, f"{host}: no echo"
        if spec.get("echo") and spec["echo"] != "health" or spec.get("fancy"):
            assert "glsErr.internal" in every, f"{host}: the echo did not reach a result"
        if not spec.get("fancy") and spec.get("echo") != "authorize":
            assert setup.tap.tokens(server), f"{host}: its server issued no token"


@pytest.mark.parametrize("mode", ["vvvv", "debug"])
@pytest.mark.slow
def test_adhoc_modules(secure_lab, tmp_path, short_tmpdir, mode):
    """The four modules ad hoc, both backends, every echo; at -vvvv also shipped (AnsibleModule)."""
    debug = mode == "debug"
    hosts = dict(ECHO_HOSTS)
    if not debug:
        hosts.update({"shipped-http-echo-generate": {"echo": "generate", "shipped": True},
                      "shipped-tool-echo-ack": {"backend": "tool", "echo": "ack", "shipped": True}})
    setup = Setup(secure_lab(len(hosts)), tmp_path, hosts, short_tmpdir)
    outputs = adhoc_cycle(setup, debug)
    assert_echoes_played(setup, outputs, hosts)
    setup.judge(f"adhoc-{mode}", outputs)


@pytest.mark.parametrize("mode", ["vvvv", "debug"])
@pytest.mark.slow
def test_sync_playbook(secure_lab, tmp_path, short_tmpdir, mode):
    """The sync playbook (secure logging off: every result printed), both backends, every echo, other hosts'
    entries in the same report; at -vvvv also a remote-topology host (modules shipped)."""
    debug = mode == "debug"
    hosts = dict(ECHO_HOSTS, **{"http-clean": {}, "tool-clean": {"backend": "tool"}})
    if not debug:  # one that works too: when every remote-topology host fails, no report is written (a bug)
        hosts.update({"remote-echo-ack": {"echo": "ack", "remote": True, "shipped": True},
                      "remote-clean": {"remote": True, "shipped": True}})
    setup = Setup(secure_lab(len(hosts)), tmp_path, hosts, short_tmpdir)
    args = [str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(setup.inventory),
            "-e", f"fne_sync_store={setup.store}", "-e", "fne_sync_secure_logging=false",
            "-v" if debug else "-vvvv"]
    proc = run(args, check=False, env=setup.env(debug), timeout=900)
    assert proc.returncode == 2 and "PLAY RECAP" in proc.stdout, proc.stdout[-3000:]
    outputs = [proc.stdout + proc.stderr]
    assert_echoes_played(setup, outputs, hosts)
    report = json.loads((setup.store / "report.json").read_text())
    assert set(report["servers"]) == set(hosts), report["servers"].keys()
    setup.judge(f"sync-{mode}", outputs)


def test_password_echoed_as_json(secure_lab, tmp_path, short_tmpdir):
    """A password with a quote, a backslash and a non-ASCII letter, echoed by the server inside its JSON error (so
    escaped): ad hoc and in the sync playbook, both backends."""
    hosts = {f"{backend}-{how}-fancy": {"backend": backend, "echo": "authorize", "fancy": True}
             for backend in ("http", "tool") for how in ("adhoc", "sync")}
    setup = Setup(secure_lab(len(hosts)), tmp_path, hosts, short_tmpdir)
    outputs = adhoc_cycle(setup, debug=False, limit="*-adhoc-fancy")
    proc = run([str(BIN / "ansible-playbook"), "fne.offline_sync.sync", "-i", str(setup.inventory), "--limit",
                "*-sync-fancy", "-e", f"fne_sync_store={setup.store}", "-e", "fne_sync_secure_logging=false",
                "-vvvv"], check=False, env=setup.env(False))
    outputs.append(proc.stdout + proc.stderr)
    for host, server in setup.server_of.items():
        assert json.dumps(setup.fancy[host])[1:-1] in setup.tap.text(server), f"{server} did not echo the password"
    setup.judge("json-escaped-password", outputs)
