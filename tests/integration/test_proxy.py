"""The back office through a proxy of its own (fne_backoffice_proxy), a real forwarding CONNECT proxy: the back
office's traffic goes through it, the license servers' never does, and a dead proxy is named in the error."""

from __future__ import annotations

import select
import socket
import socketserver
import threading

from fnetest import BIN, ansible_env, run
from test_sync_support import hosts_of, playbook, write_inventory


class ConnectProxy(socketserver.ThreadingTCPServer):
    """HTTP CONNECT only (what requests sends for an https:// URL through a proxy); records every target."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.targets: list[str] = []
        super().__init__(("127.0.0.1", 0), ConnectHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class ConnectHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").split()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the request's headers
        if len(request) < 2 or request[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 CONNECT only\r\n\r\n")
            return
        self.server.targets.append(request[1])
        host, port = request[1].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            pair = {self.connection: upstream, upstream: self.connection}
            while True:
                ready, _w, _x = select.select(list(pair), [], [], 30)
                if not ready:
                    return
                for side in ready:
                    data = side.recv(65536)
                    if not data:
                        return
                    pair[side].sendall(data)


def test_backoffice_proxy_alone(lab_factory, tmp_path):
    lab = lab_factory(3, "--https", "--records", "5")
    proxy = ConnectProxy()
    env = {key: value for key, value in ansible_env().items() if "proxy" not in key.lower()}
    inventory = write_inventory(lab, tmp_path / "inventory.json",
                                {host: {"fne_backoffice_proxy": proxy.url} for host in hosts_of(lab)})
    store = tmp_path / "store"
    first = playbook("sync", inventory, store, env=env)
    assert not first.failed(), first
    lab.verify(complete=True)
    backoffice = lab.info["backoffice"]["url"].split("/")[2]
    assert backoffice in proxy.targets, proxy.targets
    servers = {server["url"].split("/")[2] for server in lab.info["servers"].values()}
    assert not servers & set(proxy.targets), proxy.targets  # the HTTPS license servers went direct

    proxy.shutdown()
    proxy.server_close()
    lab.activity(2)
    down = playbook("sync", inventory, store, "-e", "fne_sync_retries=0", env=env, expect_rc=2)
    assert down.failed() == set(hosts_of(lab)), down
    assert f"Cannot reach the back office at {lab.info['backoffice']['url']} through the proxy {proxy.url}" \
        in down.out, down
    # the upload module's own option, ad hoc
    ad_hoc = run([str(BIN / "ansible"), "localhost", "-m", "fne.offline_sync.upload", "-a",
                  f"url={lab.info['backoffice']['url']} src={store / 'lls001' / 'outbox'} proxy={proxy.url} "
                  f"ca_path={lab.info['ca_path']} retries=0"], env=env, check=False)
    assert ad_hoc.returncode != 0 and f"through the proxy {proxy.url}" in ad_hoc.stdout, ad_hoc.stdout
