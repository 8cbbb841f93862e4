"""Hostile and unusual answers, and bad settings, against a tiny real HTTP server: redirects are never followed,
every answer is bounded in time and size, a page that is not an acknowledgment never becomes one, and an error
where no request was sent never says "lost"."""

from __future__ import annotations

import math
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from test_client import NOTHING, SYNC, Script, _handler, client, conn, errors, http, json_answer, message, server

__all__ = ["server"]  # the fixture, shared with test_client.py

AUTHORIZE = "/api/1.0/instances/~/authorize"
UPLOAD = "/deviceservices"
ACK_OK = (200, {"Content-Type": "application/octet-stream"}, b"ACK\x00\x01binary")


@pytest.fixture
def elsewhere():
    """Another host: it must never see a request."""
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield script
    httpd.shutdown()
    httpd.server_close()


def redirect(status: int, to: str) -> tuple:
    return status, {"Location": to, "Content-Type": "text/html"}, b"<html>moved</html>"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(server, elsewhere, tmp_path, status):
    """Followed, a 307 re-posted the password to the other host; a 302 token from it was accepted; an upload
    posted the records there. Now each stops with the server's own words and the Location."""
    server.on("POST", AUTHORIZE, redirect(status, elsewhere.url + AUTHORIZE))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, username="admin", password="pw-secret")).generate(str(tmp_path))
    assert f"redirected ({status}) to {elsewhere.url}" in err.value.msg and "pw-secret" not in err.value.msg
    assert not isinstance(err.value, errors.LostResponseError)

    http.TOKENS.clear()
    server.on("POST", SYNC, redirect(status, elsewhere.url + SYNC))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "redirected" in err.value.msg and not isinstance(err.value, errors.LostResponseError)

    file = tmp_path / "20260101T000000.fnesync"
    file.write_bytes(b"records")
    server.on("POST", UPLOAD, redirect(status, elsewhere.url + UPLOAD))
    with pytest.raises(errors.FneError) as err:
        client.BackOffice(conn(server.url + UPLOAD)).upload(str(file))
    assert "redirected" in err.value.msg and err.value.result["accepted"] == []
    assert elsewhere.requests == [], "a request reached the other host"


def test_a_trickling_answer_ends_at_the_deadline(server, tmp_path):
    """A byte every 0.2 s never trips a 1 s socket timeout; the whole answer must still come within it."""
    server.on("POST", SYNC, (200, {"Content-Type": "application/octet-stream", "_trickle": 0.2,
                                   "Content-Disposition": 'attachment; filename="20260101T000000.fnesync"'},
                             b"x" * 200))
    started = time.monotonic()
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url, timeout=1)).generate(str(tmp_path))
    assert time.monotonic() - started < 20  # the body alone takes 40 s: a generous bound for a loaded machine
    assert "within 1s" in err.value.msg and "force: true" in err.value.msg
    assert list(tmp_path.iterdir()) == [], "a partial or temporary file was left behind"


def test_a_trickling_error_page_ends_at_the_deadline(server, tmp_path):
    server.on("POST", SYNC, (500, {"Content-Type": "text/plain", "_trickle": 0.2}, b"internal error " * 20))
    started = time.monotonic()
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, timeout=1)).generate(str(tmp_path))
    assert time.monotonic() - started < 20 and "[500]" in err.value.msg  # the page alone takes 60 s


def test_a_trickling_health_answer_is_retried_then_fails(server):
    server.on("GET", "/api/1.0/health", json_answer(200, {"status": "ok", "pad": "x" * 100}, _trickle=0.1))
    started = time.monotonic()
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, timeout=0.5, retries=1)).health()
    assert time.monotonic() - started < 12 and "within" in err.value.msg  # two answers of 11 s each otherwise
    assert server.count("GET", "/api/1.0/health") == 2


def test_an_endless_message_stops_at_the_size_cap(server, tmp_path, monkeypatch):
    monkeypatch.setattr(client, "MAX_MESSAGE", 2 << 20)
    server.on("POST", SYNC, (200, {"Content-Type": "application/octet-stream", "_endless": True,
                                   "Content-Disposition": 'attachment; filename="20260101T000000.fnesync"'},
                             b"y" * 65536))
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "larger than 2 MiB" in err.value.msg and list(tmp_path.iterdir()) == []


def test_an_endless_acknowledgment_stops_at_the_size_cap(server, tmp_path, monkeypatch):
    monkeypatch.setattr(client, "MAX_ACK", 1 << 20)
    server.on("POST", UPLOAD, (200, {"Content-Type": "application/octet-stream", "_endless": True}, b"z" * 65536))
    file = tmp_path / "20260101T000000.fnesync"
    file.write_bytes(b"records")
    with pytest.raises(errors.LostResponseError) as err:
        client.BackOffice(conn(server.url + UPLOAD)).upload(str(file))
    assert "larger than 1 MiB" in err.value.msg and not (tmp_path / "syncack.bin").exists()


def test_an_endless_error_page_is_read_only_in_part(server, tmp_path):
    server.on("GET", "/api/1.0/health", (500, {"Content-Type": "text/plain", "_endless": True}, b"oops " * 10000))
    started = time.monotonic()
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, retries=0)).health()
    assert time.monotonic() - started < 20  # the page never ends: reading it whole would never return
    assert "[500] oops oops" in err.value.msg and len(err.value.msg) < 1000


@pytest.mark.parametrize("answer", [
    (200, {"Content-Type": "text/plain"}, b"Please log in to the corporate proxy to continue."),
    (200, {"Content-Type": "text/html"}, b"<html><title>Portal</title>sign in</html>"),
    (200, {"Content-Type": "application/octet-stream"}, b"<!DOCTYPE html><html>captive portal</html>"),
    (200, {"Content-Type": "application/json"}, b'{"status": "ok"}'),
], ids=["text-login-page", "html-page", "html-as-octet-stream", "json"])
def test_a_page_that_is_not_an_acknowledgment_never_becomes_one(server, tmp_path, answer):
    """A proxy's 200 login page was saved as the ack and the files counted as sent: every later run failed."""
    server.on("POST", UPLOAD, answer)
    file = tmp_path / "20260101T000000.fnesync"
    file.write_bytes(b"records")
    with pytest.raises(errors.LostResponseError) as err:
        client.BackOffice(conn(server.url + UPLOAD)).upload(str(file))
    assert "instead of an acknowledgment" in err.value.msg
    assert err.value.result["accepted"] == [] and not (tmp_path / "syncack.bin").exists()


@pytest.mark.parametrize("answer", [ACK_OK, (200, {"Content-Type": "text/plain"},
                                             b'MessageType="Server sync acknowledgment" LastSyncTime=2026')])
def test_an_acknowledgment_is_taken_binary_or_as_text_naming_its_last_sync_time(server, tmp_path, answer):
    server.on("POST", UPLOAD, answer)
    file = tmp_path / "20260101T000000.fnesync"
    file.write_bytes(b"records")
    result = client.BackOffice(conn(server.url + UPLOAD)).upload(str(file))
    assert result["accepted"] == [str(file)] and (tmp_path / "syncack.bin").read_bytes() == answer[2]


@pytest.mark.parametrize("url, words", [
    ("ftp://127.0.0.1:7070", "must start with http:// or https://"),
    ("127.0.0.1:7070", "must start with http:// or https://"),
    ("http://", "no valid host"),
    ("http://lls01:port", "no valid host"),
    ("http://lls 01:7070", "holds a space"),
    ("http://lls01\u200b:7070", "invisible character"),
    ("http://0:pa#ss@127.0.0.1:7070", "carries credentials"),
    ("http://admin:pw-secret@127.0.0.1:7070", "carries credentials"),
])
def test_a_bad_url_fails_before_any_request_and_never_says_lost(server, tmp_path, url, words):
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(url)).generate(str(tmp_path))
    assert words in err.value.msg and not isinstance(err.value, errors.LostResponseError)
    assert "force" not in err.value.msg and "pw-secret" not in err.value.msg and "pa#ss" not in err.value.msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting", [{"timeout": -1}, {"timeout": 0}, {"timeout": math.nan}, {"timeout": 1e300},
                                     {"timeout": math.inf}, {"retries": -5}, {"retries": 1000},
                                     {"max_retry_wait": -1}, {"max_retry_wait": math.nan}])
def test_a_number_out_of_sense_fails_before_any_request(server, setting):
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, **setting)).health()
    assert next(iter(setting)) in err.value.msg and server.requests == []


def test_tls_to_a_plain_port_is_a_tls_error_not_a_lost_answer(server, tmp_path):
    server.on("POST", SYNC, NOTHING)
    https = server.url.replace("http://", "https://")
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(https, retries=0)).generate(str(tmp_path))
    assert "TLS failure" in err.value.msg and not isinstance(err.value, errors.LostResponseError)
    assert server.count("POST", SYNC) == 0


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_a_ca_path_that_is_no_certificate_is_not_a_lost_answer(server, tmp_path, content):
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    https = server.url.replace("http://", "https://")
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(https, ca_path=str(ca), retries=0)).generate(str(tmp_path / "out"))
    assert not isinstance(err.value, errors.LostResponseError) and "force" not in err.value.msg
    assert ("is not a file" in err.value.msg) if content is None else ("TLS failure" in err.value.msg)


def test_a_normal_cycle_still_works_over_kept_alive_connections(server, tmp_path):
    """The deadline watchdog must never cut a healthy connection that is reused for the next request."""
    server.on("POST", SYNC, message("20260101T000000.fnesync"), message("20260101T000001.fnesync"), NOTHING)
    result = client.LicenseServer(conn(server.url, timeout=0.5)).generate(str(tmp_path))
    time.sleep(0.8)  # past every deadline: nothing may fire on the idle pooled connection
    assert len(result["files"]) == 2
    server.on("GET", "/api/1.0/health", json_answer(200, {"status": "ok"}))
    assert client.LicenseServer(conn(server.url, timeout=0.5)).health()["reachable"]


def test_a_token_or_password_echoed_by_the_server_never_reaches_a_message(server, tmp_path):
    server.on("POST", AUTHORIZE, json_answer(200, {"token": "tok-SECRET-123"}))
    echoed = "failed for Authorization: Bearer tok-SECRET-123, password pw-secret"
    server.on("POST", SYNC, json_answer(500, {"key": "glsErr.internal", "message": echoed}))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, username="admin", password="pw-secret")).generate(str(tmp_path))
    assert "glsErr.internal" in err.value.msg
    assert "tok-SECRET-123" not in err.value.msg and "pw-secret" not in err.value.msg
    assert errors.scrub("Authorization: Bearer abc.def-ghi", []) == "Authorization: Bearer ********"


def test_a_server_that_never_runs_dry_is_left_after_max_messages(server, tmp_path, monkeypatch):
    server.on("POST", SYNC, *(message(f"2026010{i}T000000.fnesync") for i in range(1, 6)))
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url, max_pages=2), warnings.append).generate(str(tmp_path))
    assert [f["name"] for f in result["files"]] == ["20260101T000000.fnesync", "20260102T000000.fnesync"]
    assert server.count("POST", SYNC) == 2 and "Stopped after 2 messages" in warnings[0]


def test_credentials_in_netrc_never_replace_the_collections_own(server, tmp_path, monkeypatch):
    """A ~/.netrc naming the license server's host (left by another tool): requests would put its user and password
    in a Basic Authorization header over the token, and send them to the back office too. Credentials come from the
    collection's settings alone."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    server.on("POST", AUTHORIZE, json_answer(200, {"token": "t1"}))
    server.on("POST", SYNC, message("20250101T000000.fnesync"), NOTHING)
    server.on("POST", UPLOAD, (200, {"Content-Type": "application/octet-stream"}, b"ACK"))
    lls = client.LicenseServer(conn(server.url, username="admin", password="pw"))
    files = lls.generate(str(tmp_path / "out"))["files"]
    client.BackOffice(conn(server.url + UPLOAD)).upload_file(files[0]["path"])
    sent = {path.split("?")[0]: headers.get("Authorization") for _m, path, headers, _n in server.requests}
    assert sent == {AUTHORIZE: None, SYNC: "Bearer t1", UPLOAD: None}, sent
    assert all("netrc-secret" not in repr(headers) for _m, _p, headers, _n in server.requests)


def test_the_environments_proxy_is_taken_and_no_proxy_bypasses_it(server, tmp_path, monkeypatch):
    """HTTP(S)_PROXY and NO_PROXY as requests reads them (once for each side, not for each request): nothing listens
    at the target, so only the proxy (here the test server, answering the absolute-form request) can answer."""
    target = "http://127.0.0.2:9"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, server.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server.on("POST", target + SYNC, NOTHING)
    assert client.LicenseServer(conn(target, retries=0)).generate(str(tmp_path / "out"))["files"] == []
    assert [path for _m, path, _h, _n in server.requests] == [target + SYNC]
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.2")
    with pytest.raises(errors.FneError, match="Cannot reach the license server"):
        client.LicenseServer(conn(target, retries=0)).generate(str(tmp_path / "out"))
    assert len(server.requests) == 1
