"""The client's error mapping, retry policy, token handling and file safety, against a tiny real HTTP server."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
import tracemalloc
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.module_utils import _client as client  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _connection as connection  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _errors as errors  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _files as files  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _folder as folder  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.module_utils import _http as http  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _store as store_mod  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._action import run_command  # noqa: E402

OK_HEALTH = {"status": "ok", "version": "1", "instanceId": "i", "hostId": "H", "hostIdType": "Ethernet",
             "database": {"status": "ok"}, "security": {"enabled": False, "https": False}}


class Script:
    """Answers per (method, path): a list consumed in order; the last one repeats."""

    def __init__(self):
        self.answers: dict[tuple[str, str], list] = {}
        self.requests: list[tuple[str, str, dict, int]] = []
        self.peers: list[int] = []  # each request's client port: which connection carried it

    def on(self, method: str, path: str, *answers) -> None:
        self.answers[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _h, _n in self.requests if m == method and p == path)


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            received = 0
            while received < length:
                chunk = self.rfile.read(min(1 << 20, length - received))
                if not chunk:
                    break
                received += len(chunk)
            path = self.path.split("?")[0]
            script.requests.append((self.command, self.path, dict(self.headers), received))
            script.peers.append(self.client_address[1])
            queue = script.answers.get((self.command, path)) or [(404, {}, b'{"key":"x","message":"not found"}')]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if answer == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, headers, body = answer
            headers = dict(headers)
            truncate = headers.pop("_truncate", False)
            trickle = headers.pop("_trickle", 0)  # seconds between the body's bytes
            endless = headers.pop("_endless", False)  # the body repeats until the client hangs up
            chunked = headers.pop("_chunked", False)  # the body as one chunk (none when empty), no Content-Length
            unended = headers.pop("_unended", 0)  # chunked: seconds to wait, never sending the last chunk
            close = headers.pop("_close", False)  # no Content-Length: the body ends where the connection closes
            time.sleep(headers.pop("_delay", 0))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if unended:
                    self.wfile.flush()
                    time.sleep(unended)
                    self.close_connection = True
                    return
                self.wfile.write((f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n")
                return
            if close:
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            if not endless:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if endless:
                    self.close_connection = True
                    while True:
                        self.wfile.write(body)
                if trickle:
                    for index in range(len(body)):
                        self.wfile.write(body[index:index + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
            except OSError:  # the client hung up, as it should
                self.close_connection = True
                return
            if not trickle:
                self.wfile.write(body[: len(body) // 2] if truncate else body)
            if truncate:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        do_GET = do_POST = _serve

    return Handler


@pytest.fixture
def server():
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    http.TOKENS.clear()
    yield script
    httpd.shutdown()
    httpd.server_close()


def conn(url: str, **kw) -> connection.Connection:
    kw.setdefault("retries", 2)
    kw.setdefault("max_retry_wait", 0.05)
    return connection.Connection(url=url, **kw)


def json_answer(status: int, data: dict, **headers) -> tuple:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(data).encode()


def message(name: str, body: bytes = b"FNESYNC1 data", records: int = 3) -> tuple:
    return 200, {"Content-Type": "application/octet-stream", "X-FNE-Record-Count": str(records),
                 "Content-Disposition": f'attachment; filename="{name}"'}, body


NOTHING = (204, {}, b"")
SYNC = "/api/1.0/sync_message/offline"


@pytest.mark.parametrize("url", ["http://h:7070", "http://h:7070/", "http://h:7070/api/1.0/sync_message/offline",
                                 "http://h:7070/api/1.0/sync_ack/offline", "http://h:7070/api/1.0/sync_message/offline"
                                 "?force=true"])
def test_base_url(url):
    assert connection.lls_base_url(url) == "http://h:7070"


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_statuses_are_retried_with_a_warning(server, status):
    server.on("GET", "/api/1.0/health", json_answer(status, {}, **{"Retry-After": "0"}), json_answer(200, OK_HEALTH))
    warnings: list[str] = []
    info = client.LicenseServer(conn(server.url), warnings.append).health()
    assert info["reachable"] and info["host_id"] == "H"
    assert len(warnings) == 1 and f"answered {status}; retrying" in warnings[0]


def test_retry_after_is_capped(server):
    server.on("GET", "/api/1.0/health", json_answer(503, {}, **{"Retry-After": "100"}), json_answer(200, OK_HEALTH))
    started = time.monotonic()
    client.LicenseServer(conn(server.url, max_retry_wait=0.2)).health()
    assert time.monotonic() - started < 2


def test_retries_run_out(server):
    server.on("GET", "/api/1.0/health", json_answer(503, {"key": "busy", "message": "try later"}))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, retries=2)).health()
    assert server.count("GET", "/api/1.0/health") == 3
    assert "[503 busy] try later" in err.value.msg and server.url in err.value.msg


@pytest.mark.parametrize("status", [400, 500])
def test_other_errors_are_not_retried(server, status):
    server.on("GET", "/api/1.0/health", json_answer(status, {"key": "glsErr.x", "message": "broken"}))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).health()
    assert server.count("GET", "/api/1.0/health") == 1
    assert err.value.status == status and err.value.key == "glsErr.x" and "broken" in err.value.msg


def test_404_hints_at_the_base_url(server):
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url + "/prefix")).health()
    assert "404" in err.value.msg and "base URL" in err.value.msg


def test_unreachable_is_retried_then_clear():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    warnings: list[str] = []
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(f"http://127.0.0.1:{port}"), warnings.append).health()
    assert "Cannot reach the license server at http://127.0.0.1" in err.value.msg
    assert not isinstance(err.value, errors.LostResponseError)
    assert len(warnings) == 2


def test_tls_failure_hints_at_ca_path(tmp_path, monkeypatch):
    """... and the trust anchors come from ca_path, else from REQUESTS_CA_BUNDLE as requests reads it."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Script()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(errors.FneError) as err:
            client.LicenseServer(conn(url)).health()
        assert "TLS failure" in err.value.msg and "ca_path" in err.value.msg
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        with pytest.raises(errors.FneError) as err:  # reachable with the CA; 404 is the fake server's answer
            client.LicenseServer(conn(url, ca_path=str(ca_file))).health()
        assert "404" in err.value.msg
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        with pytest.raises(errors.FneError) as err:
            client.LicenseServer(conn(url)).health()
        assert "404" in err.value.msg
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
        with pytest.raises(errors.FneError) as err:
            client.LicenseServer(conn(url)).health()
        assert "TLS failure" in err.value.msg
        with pytest.raises(errors.FneError) as err:  # ca_path wins over the environment
            client.LicenseServer(conn(url, ca_path=str(ca_file))).health()
        assert "404" in err.value.msg
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_generate_pages_until_204(server, tmp_path):
    server.on("POST", SYNC, message("20250101T000000.fnesync", b"a" * 10, 2),
              message("20250101T000001.fnesync", b"b" * 20, 5), NOTHING)
    result = client.LicenseServer(conn(server.url)).generate(str(tmp_path / "out"))
    assert result["records"] == 7 and result["message"] == "Sync completed for 7 device records."
    assert [f["name"] for f in result["files"]] == ["20250101T000000.fnesync", "20250101T000001.fnesync"]
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "out" / "20250101T000000.fnesync").stat().st_mode) == 0o600
    assert server.count("POST", SYNC) == 3


def test_force_only_on_the_first_request(server, tmp_path):
    server.on("POST", SYNC, message("20250101T000000.fnesync"), NOTHING)
    client.LicenseServer(conn(server.url)).generate(str(tmp_path), force=True)
    paths = [p for m, p, _h, _n in server.requests if m == "POST"]
    assert paths == [SYNC + "?force=true", SYNC]


def test_dropped_answer_is_a_lost_response_not_retried(server, tmp_path):
    server.on("POST", SYNC, message("20250101T000000.fnesync"), "drop")
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url, retries=3)).generate(str(tmp_path))
    assert server.count("POST", SYNC) == 2
    assert "force: true" in err.value.msg and "1 file(s) downloaded before it are kept" in err.value.msg
    assert err.value.result["files"][0]["name"] == "20250101T000000.fnesync"
    assert sorted(os.listdir(tmp_path)) == ["20250101T000000.fnesync"]


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_error_on_download_is_a_lost_response(server, tmp_path, status):
    server.on("POST", SYNC, (status, {"Content-Type": "text/html"}, b"<html><title>Bad Gateway</title></html>"))
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert server.count("POST", SYNC) == 1 and "Bad Gateway" in err.value.msg
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("answer", [
    (200, {"Content-Type": "application/octet-stream", "_truncate": True,
           "Content-Disposition": 'attachment; filename="20250101T000000.fnesync"'}, b"x" * 1000),
    (200, {"Content-Type": "text/html"}, b"<html><title>Login</title></html>"),
    (200, {"Content-Type": "application/octet-stream", "Content-Disposition": 'filename="../../etc/passwd"'}, b"x"),
])
def test_bad_answers_leave_no_file(server, tmp_path, answer):
    server.on("POST", SYNC, answer)
    with pytest.raises(errors.LostResponseError):
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_token_is_cached_and_renewed_once(server, tmp_path):
    server.on("POST", "/api/1.0/instances/~/authorize", *[json_answer(200, {"token": t}) for t in ("t1", "t2", "t3")])
    expired = json_answer(401, {"key": "glsErr.notAuthorized", "message": "Not authorized"})
    server.on("POST", SYNC, message("20250101T000000.fnesync"), expired, message("20250101T000001.fnesync"),
              NOTHING)
    lls = client.LicenseServer(conn(server.url, username="admin", password="pw"))
    assert len(lls.generate(str(tmp_path))["files"]) == 2
    auths = [h["Authorization"] for m, p, h, _n in server.requests if p.startswith(SYNC)]
    assert auths == ["Bearer t1", "Bearer t1", "Bearer t2", "Bearer t2"]
    assert server.count("POST", "/api/1.0/instances/~/authorize") == 2

    server.on("POST", SYNC, expired)  # refused again after renewing: an error, not a loop
    with pytest.raises(errors.FneError) as err:
        lls.generate(str(tmp_path))
    assert err.value.status == 401 and server.count("POST", "/api/1.0/instances/~/authorize") == 3


def test_refused_password_is_never_echoed(server, tmp_path):
    secret = "S3cr3t-pw"
    server.on("POST", "/api/1.0/instances/~/authorize",
              json_answer(401, {"key": "glsErr.userAuthFailed", "message": f"bad password {secret}"}))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, username="admin", password=secret)).generate(str(tmp_path))
    assert secret not in err.value.msg and "glsErr.userAuthFailed" in err.value.msg and "********" in err.value.msg
    assert err.value.msg.startswith(f"Request POST {server.url}/api/1.0/instances/~/authorize failed: "
                                    "[401 glsErr.userAuthFailed] bad password ********.")


def test_process_purges_only_covered_files(server, tmp_path):
    for name in ("20250101T000000", "20250101T000005", "20250101T000006", "20250102T000000"):
        (tmp_path / f"{name}.fnesync").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("keep")
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", "/api/1.0/sync_ack/offline",
              json_answer(200, {"lastSyncTime": "2025-01-01T00:00:05Z", "processed": True}))
    result = client.LicenseServer(conn(server.url)).process(str(ack), str(tmp_path))
    assert [Path(p).name for p in result["purged"]] == ["20250101T000000.fnesync", "20250101T000005.fnesync"]
    assert result["lines"] == ["Purging file 20250101T000000.fnesync", "Purging file 20250101T000005.fnesync"]
    assert sorted(os.listdir(tmp_path)) == ["20250101T000006.fnesync", "20250102T000000.fnesync", "notes.txt",
                                            "syncack.bin"]


def test_upload_streams_the_body(server, tmp_path):
    big = tmp_path / "20250101T000000.fnesync"
    with open(big, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK"))
    tracemalloc.start()
    try:
        result = client.BackOffice(conn(server.url + "/deviceservices")).upload(str(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert server.requests[-1][3] == 64 * 1024 * 1024
    assert result["ack"] == str(tmp_path / "syncack.bin") and (tmp_path / "syncack.bin").read_bytes() == b"ACK"


def test_upload_mismatch_keeps_the_ack_for_what_was_accepted(server, tmp_path):
    for name in ("20250101T000000", "20250101T000010"):
        (tmp_path / f"{name}.fnesync").write_bytes(b"m")
    text = "Expected sync time Jan 24, 2019 11:04:09 AM, got Jan 24, 2019 11:05:00 AM"
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK1"),
              json_answer(400, {errors.MISMATCH_KEY: text}))
    with pytest.raises(errors.MismatchError) as err:
        client.BackOffice(conn(server.url + "/deviceservices")).upload(str(tmp_path), "acks/ack.bin")
    assert err.value.expected == "Jan 24, 2019 11:04:09 AM" and err.value.received == "Jan 24, 2019 11:05:00 AM"
    assert f'"{errors.MISMATCH_KEY}": "{text}"' in err.value.msg
    assert err.value.result["accepted"] == [str(tmp_path / "20250101T000000.fnesync")]
    assert (tmp_path / "acks" / "ack.bin").read_bytes() == b"ACK1"
    assert server.count("POST", "/deviceservices") == 2


def test_upload_lost_answer_is_not_resent(server, tmp_path):
    (tmp_path / "20250101T000000.fnesync").write_bytes(b"m")
    server.on("POST", "/deviceservices", "drop")
    with pytest.raises(errors.LostResponseError):
        client.BackOffice(conn(server.url + "/deviceservices", retries=3)).upload(str(tmp_path))
    assert server.count("POST", "/deviceservices") == 1 and not (tmp_path / "syncack.bin").exists()


def test_sync_names_and_order(tmp_path):
    for name in ("20250102T000000.fnesync", "20250101T000000.fnesync", "x.fnesync", "20251399T000000.fnesync"):
        (tmp_path / name).write_bytes(b"")
    names = [Path(p).name for p in files.list_sync_files(str(tmp_path))]
    assert names == ["20250101T000000.fnesync", "20250102T000000.fnesync"]
    assert files.sync_time_of("20250101T000000.fnesync") == datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_atomic_writer_aborts_cleanly(tmp_path):
    with pytest.raises(RuntimeError), files.AtomicWriter(str(tmp_path / "f")) as writer:
        writer.write(b"partial")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    info = files.write_atomic(str(tmp_path / "g"), [b"a", b"b"])
    assert info["size"] == 2 and (tmp_path / "g").read_bytes() == b"ab"
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o600 and os.listdir(tmp_path) == ["g"]


def test_full_disk_is_a_clear_error_and_leaves_nothing(server, tmp_path, monkeypatch):
    import errno

    def full(self, chunk):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.AtomicWriter, "write", full)  # a real full disk needs a mount; the error path is ours
    server.on("POST", SYNC, message("20250101T000000.fnesync"), NOTHING)
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "No space left on device" in err.value.msg and str(tmp_path) in err.value.msg
    assert "force: true" in err.value.msg
    assert os.listdir(tmp_path) == []


def test_a_server_that_never_says_204_does_not_loop(server, tmp_path):
    server.on("POST", SYNC, message("20250101T000000.fnesync"))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "twice" in err.value.msg and server.count("POST", SYNC) == 2


def test_an_existing_sync_file_is_never_overwritten(server, tmp_path):
    """Same-second names (a restored server, a clock step back): the server's cursor already moved past the new
    message, and the old file may not be uploaded yet, so both must survive."""
    old = tmp_path / "20250101T000000.fnesync"
    old.write_bytes(b"old message")
    server.on("POST", SYNC, message("20250101T000000.fnesync", b"new message"), NOTHING)
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert old.read_bytes() == b"old message"
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".conflict")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"new message" and str(kept[0]) in err.value.msg
    assert "force: true" in err.value.msg and err.value.result["files"] == []


def test_the_same_name_twice_in_one_run_keeps_both(server, tmp_path):
    server.on("POST", SYNC, message("20250101T000000.fnesync", b"first"),
              message("20250101T000000.fnesync", b"second"), NOTHING)
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert (tmp_path / "20250101T000000.fnesync").read_bytes() == b"first"
    assert [p.read_bytes() for p in tmp_path.glob("*.conflict")] == [b"second"]
    assert [f["name"] for f in err.value.result["files"]] == ["20250101T000000.fnesync"]


def test_a_forced_download_may_replace_only_superseded_files(server, tmp_path):
    for name in ("20250101T000000", "20250101T000001"):
        (tmp_path / f"{name}.fnesync").write_bytes(b"old")
    server.on("POST", SYNC, message("20250101T000001.fnesync", b"forced"), NOTHING)
    result = client.LicenseServer(conn(server.url)).generate(str(tmp_path), force=True)
    assert (tmp_path / "20250101T000001.fnesync").read_bytes() == b"forced"
    # A superseded list naming the new file would let a playbook delete the forced records.
    assert result["superseded"] == [str(tmp_path / "20250101T000000.fnesync")]


AUTH = "/api/1.0/instances/~/authorize"


def test_a_changed_password_authorizes_again(server, tmp_path):
    server.on("POST", AUTH, json_answer(200, {"token": "t-old"}),
              json_answer(401, {"key": "glsErr.userAuthFailed", "message": "Authentication failed"}))
    server.on("POST", SYNC, NOTHING)
    client.LicenseServer(conn(server.url, username="admin", password="old")).generate(str(tmp_path))
    with pytest.raises(errors.FneError) as err:  # the new password is wrong: the old token must not hide it
        client.LicenseServer(conn(server.url, username="admin", password="new")).generate(str(tmp_path))
    assert err.value.key == "glsErr.userAuthFailed" and server.count("POST", AUTH) == 2
    assert server.count("POST", SYNC) == 1
    with pytest.raises(errors.FneError):  # check_authorization asks the server, it does not trust the cache
        client.LicenseServer(conn(server.url, username="admin", password="old")).check_authorization()
    assert server.count("POST", AUTH) == 3


def test_threads_share_one_token_per_server(server):
    """The fleet calls the client from a thread pool: one authorize per server, and a token refused by the
    server is dropped only if nobody renewed it meanwhile."""
    server.on("POST", AUTH, (200, {"Content-Type": "application/json", "_delay": 0.3}, b'{"token": "t1"}'),
              json_answer(200, {"token": "t2"}))
    lls = [client.LicenseServer(conn(server.url, username="admin", password="pw")) for _server in range(8)]
    barrier = threading.Barrier(len(lls))
    tokens: list[str] = []

    def take(one):
        barrier.wait()
        tokens.append(one._token())

    threads = [threading.Thread(target=take, args=(one,)) for one in lls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == ["t1"] * 8 and server.count("POST", AUTH) == 1
    assert lls[0]._token(stale="t1") == "t2" and lls[1]._token(stale="t1") == "t2"
    assert server.count("POST", AUTH) == 2


@pytest.mark.parametrize("last, purged", [("2025-01-01T02:00:05+02:00", 1), ("2025-01-01T00:00:05", 0)])
def test_process_purges_by_utc_and_never_on_a_time_without_zone(server, tmp_path, last, purged):
    """File names are UTC. A lastSyncTime without a zone may be local time, hours ahead: purging by it could
    delete files the acknowledgment does not cover, so nothing is purged (with a warning)."""
    for name in ("20250101T000005", "20250101T010000"):
        (tmp_path / f"{name}.fnesync").write_bytes(b"x")
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", "/api/1.0/sync_ack/offline", json_answer(200, {"lastSyncTime": last, "processed": True}))
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url), warnings.append).process(str(ack), str(tmp_path))
    assert len(result["purged"]) == purged and len(list(tmp_path.glob("*.fnesync"))) == 2 - purged
    assert bool(warnings) == (purged == 0) and all("without a time zone" in w for w in warnings)


def test_an_unwritable_dest_is_refused_before_anything_is_sent(server, tmp_path):
    (tmp_path / "20250101T000000.fnesync").write_bytes(b"m")
    (tmp_path / "blocker").write_text("a file, not a folder")
    for dest in ("blocker/ack.bin", str(tmp_path)):
        with pytest.raises(errors.FneError, match="Nothing was sent"):
            client.BackOffice(conn(server.url + "/deviceservices")).upload(str(tmp_path), dest)
    assert server.count("POST", "/deviceservices") == 0


def test_an_accepted_files_ack_survives_a_dest_that_fails_midway(server, tmp_path, monkeypatch):
    (tmp_path / "20250101T000000.fnesync").write_bytes(b"m")
    (tmp_path / "20250101T000010.fnesync").write_bytes(b"m")
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK1"))
    dest = str(tmp_path / "ack.bin")
    write = folder.write_atomic

    def full_disk(path, chunks, *args):
        if path == dest:
            raise OSError(28, "No space left on device")
        return write(path, chunks, *args)

    monkeypatch.setattr(folder, "write_atomic", full_disk)
    with pytest.raises(errors.FneError) as err:
        client.BackOffice(conn(server.url + "/deviceservices")).upload(str(tmp_path), dest)
    kept = tmp_path / "20250101T000000.syncack.bin"
    assert kept.read_bytes() == b"ACK1" and str(kept) in err.value.msg
    assert err.value.result["ack"] == str(kept)
    assert err.value.result["accepted"] == [str(tmp_path / "20250101T000000.fnesync")]
    assert server.count("POST", "/deviceservices") == 1  # stops: the next ack would have nowhere to go either


def test_a_tls_error_after_the_request_is_a_lost_response(tmp_path):
    """A TLS error while the answer is read (not a refused certificate) may follow a download the server
    carried out: reporting it as a TLS setup problem would hide that `force: true` is needed."""
    import ssl

    import trustme

    script = Script()
    served: list[str] = []

    class Corrupting(_handler(script)):
        def _serve(self):
            served.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            os.write(self.connection.fileno(), b"HTTP/1.1 200 OK\r\n\r\nnot TLS")  # bypasses the TLS layer
            self.close_connection = True

        do_POST = _serve

    ca = trustme.CA()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Corrupting)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(errors.LostResponseError) as err:
            client.LicenseServer(conn(url, ca_path=str(ca_file), retries=3)).generate(str(tmp_path / "out"))
        assert "force: true" in err.value.msg and served == [SYNC]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("secured", [False, True], ids=["open", "secured"])
def test_a_cycle_talks_to_each_license_server_over_one_connection(server, tmp_path, secured):
    """The phases of one server's cycle share its client, and "nothing new" (204) hands its connection back: one
    TCP (and TLS) handshake per license server per run, as a plain HTTP client would make, not one per phase; on a
    secured server the authorization's connection carries the download that follows it."""
    server.on("POST", SYNC, message("20250101T000000.fnesync"), NOTHING)
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK"))
    server.on("POST", "/api/1.0/sync_ack/offline", json_answer(200, {"lastSyncTime": "2025-01-01T00:00:05Z"}))
    server.on("POST", AUTH, json_answer(200, {"token": "t1"}))
    credentials = {"fne_lls_username": "admin", "fne_lls_password": "pw"} if secured else {}
    cfg = fleet.server_config("lls001", {"fne_lls_url": server.url, **credentials,
                                         "fne_backoffice_url": server.url + "/deviceservices"})
    entry = fleet.run_fleet("cycle", [cfg], fleet.Options(store=str(tmp_path / "store"), workers=1))["lls001"]
    assert not entry["failed"] and [e["step"] for e in entry["phases"]] == ["collect", "upload", "acknowledge"]
    lls = [(path.split("?")[0], peer) for (_m, path, _h, _n), peer in zip(server.requests, server.peers)
           if path.startswith("/api")]
    assert [p for p, _peer in lls] == [AUTH] * secured + [SYNC, SYNC, "/api/1.0/sync_ack/offline"]
    assert len({peer for _p, peer in lls}) == 1, lls


def test_each_phase_of_a_cycle_finishes_an_accepted_file_first(server, tmp_path, monkeypatch):
    """The back office accepted a file and its acknowledgment was written, but moving the file to sent/ failed: the
    acknowledge phase finishes that move before processing, so no later run uploads the accepted file again."""
    server.on("POST", SYNC, message("20250101T000000.fnesync"), NOTHING)
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK"))
    server.on("POST", "/api/1.0/sync_ack/offline", json_answer(200, {"lastSyncTime": "2025-01-01T00:00:00Z"}))
    move, failed = store_mod.ServerStore._move, []

    def failing_once(self, src, folder):
        if folder == self.sent and src.endswith(".fnesync") and not failed:
            failed.append(src)
            raise OSError(5, "Input/output error")
        return move(self, src, folder)
    monkeypatch.setattr(store_mod.ServerStore, "_move", failing_once)
    cfg = fleet.server_config("lls001", {"fne_lls_url": server.url,
                                         "fne_backoffice_url": server.url + "/deviceservices"})
    opts = fleet.Options(store=str(tmp_path / "store"), workers=1)
    phases = fleet.run_fleet("cycle", [cfg], opts)["lls001"]["phases"]
    assert failed and [(e["step"], e["failed"]) for e in phases] == [("collect", False), ("upload", True),
                                                                     ("acknowledge", False)]
    server.on("POST", SYNC, NOTHING)
    assert not fleet.run_fleet("cycle", [cfg], opts)["lls001"]["failed"]
    store = tmp_path / "store" / "lls001"
    assert not list((store / "outbox").iterdir()) and [p.name for p in (store / "sent").glob("*.fnesync")] == [
        "20250101T000000.fnesync"]
    assert server.count("POST", "/deviceservices") == 1


def test_a_request_that_cannot_be_repeated_takes_no_connection_that_waited(server, tmp_path, monkeypatch):
    """A kept-alive connection idle longer than REUSE_WITHIN may be gone without a word (an idle timeout, a
    firewall): a download, which cannot be asked for again, opens a new one (a failure there is a failed connect,
    not a lost answer); a repeatable request and a download right after an answer keep using it."""
    monkeypatch.setattr(http, "REUSE_WITHIN", 0.2)
    server.on("POST", SYNC, NOTHING)
    server.on("POST", "/api/1.0/sync_ack/offline", json_answer(200, {"lastSyncTime": "2025-01-01T00:00:05Z"}))
    (tmp_path / "ack.bin").write_bytes(b"ACK")
    lls = client.LicenseServer(conn(server.url))
    lls.generate(str(tmp_path / "out"))
    lls.generate(str(tmp_path / "out"))  # at once: the same connection
    time.sleep(0.3)
    lls.process(str(tmp_path / "ack.bin"))  # repeatable: the same connection
    time.sleep(0.3)
    lls.generate(str(tmp_path / "out"))  # waited: a new one
    assert server.peers[0] == server.peers[1] == server.peers[2] != server.peers[3], server.peers


def test_a_chunked_no_content_answer_is_not_read_for_its_connection(server, tmp_path):
    """A 204 claiming a chunked body that never ends: close() must not wait for it, only drop the connection."""
    server.on("POST", SYNC, (204, {"_chunked": True, "_unended": 4}, b""))
    started = time.monotonic()
    assert client.LicenseServer(conn(server.url, timeout=5)).generate(str(tmp_path / "out"))["files"] == []
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("answer", [(200, {"Content-Type": "application/octet-stream"}, b""), (204, {}, b"")])
def test_an_empty_acknowledgment_is_a_lost_response(server, tmp_path, answer):
    (tmp_path / "20250101T000000.fnesync").write_bytes(b"m")
    server.on("POST", "/deviceservices", answer)
    with pytest.raises(errors.LostResponseError):
        client.BackOffice(conn(server.url + "/deviceservices")).upload(str(tmp_path))
    assert not (tmp_path / "syncack.bin").exists() and server.count("POST", "/deviceservices") == 1


def test_upload_sends_in_time_order_and_warns_about_files_it_skips(server, tmp_path):
    for name in ("20250102T000000.fnesync", "20250101T235959.fnesync", "20250101T000000 (copy).fnesync",
                 "20250101T000000.fnesync.0123456789ab.conflict", ".20250103T000000.fnesync.x.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(name.encode())
    server.on("POST", "/deviceservices", (200, {"Content-Type": "application/octet-stream"}, b"ACK"))
    warnings: list[str] = []
    result = client.BackOffice(conn(server.url + "/deviceservices"), warnings.append).upload(str(tmp_path))
    assert [Path(p).name for p in result["accepted"]] == ["20250101T235959.fnesync", "20250102T000000.fnesync"]
    assert len(warnings) == 1 and "20250101T000000 (copy).fnesync" in warnings[0]
    assert "0123456789ab.conflict" in warnings[0] and ".tmp" not in warnings[0]


def test_a_failed_purge_still_reports_the_processed_ack(server, tmp_path, monkeypatch):
    (tmp_path / "20250101T000005.fnesync").write_bytes(b"x")
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", "/api/1.0/sync_ack/offline",
              json_answer(200, {"lastSyncTime": "2025-01-01T00:00:05Z", "processed": True}))
    monkeypatch.setattr(folder.os, "unlink", lambda _p: (_item for _item in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).process(str(ack), str(tmp_path))
    assert err.value.result["changed"] and err.value.result["last_sync_time"] == "2025-01-01T00:00:05Z"


def test_a_local_file_problem_is_a_clean_failure(server, tmp_path):
    """One failure path: an OSError the client did not foresee becomes an FneError (fail_json), not a traceback."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible_collections.fne.offline_sync.plugins.module_utils import _modules as options

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    server.on("GET", "/api/1.0/health", json_answer(200, OK_HEALTH))
    params = ArgumentSpecValidator(options.argument_spec("server_info")).validate(
        {"url": server.url, "path": str(not_a_folder)}).validated_parameters
    with pytest.raises(errors.FneError) as err:
        options.execute("server_info", params, False, lambda _m: None, run_command)
    assert str(not_a_folder) in err.value.msg and "Not a directory" in err.value.msg


def test_tool_backend_takes_a_killed_runs_files_and_never_overwrites(server, tmp_path):
    from ansible_collections.fne.offline_sync.plugins.module_utils import _tool as tool

    tools = str(REPO / "tests" / "lab" / "fnelab" / "tools")
    leftover = tmp_path / ".fne-tool-killed"
    leftover.mkdir()
    (leftover / "20250101T000000.fnesync").write_bytes(b"handed out, never moved")
    (tmp_path / "20250101T000002.fnesync").write_bytes(b"old")
    server.on("POST", SYNC, message("20250101T000001.fnesync", b"new"), message("20250101T000002.fnesync", b"other"),
              NOTHING)
    with pytest.raises(errors.LostResponseError) as err:
        tool.ToolLicenseServer(conn(server.url), tools, lambda _m: None, run_command).generate(str(tmp_path))
    assert "force: true" in err.value.msg
    assert sorted(f["name"] for f in err.value.result["files"]) == ["20250101T000000.fnesync",
                                                                    "20250101T000001.fnesync"]
    assert (tmp_path / "20250101T000000.fnesync").read_bytes() == b"handed out, never moved"
    assert (tmp_path / "20250101T000002.fnesync").read_bytes() == b"old"
    assert [p.read_bytes() for p in tmp_path.glob("*.conflict")] == [b"other"]
    assert not list(tmp_path.glob(".fne-tool-*"))
