"""The compatibility check's recording proxy against a tiny real HTTP server: it forwards through the collection's own
Http, so an answer that trickles ends at the deadline, a redirect is recorded and never followed, and the transcript
keeps shapes, never a body or a header's value."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests
from test_client import conn, server
from test_client_hostile import elsewhere, redirect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".venv" / "collections"))

from ansible_collections.fne.offline_sync.plugins.plugin_utils._recorder import Recorder  # noqa: E402

__all__ = ["elsewhere", "server"]  # the fixtures


def relay(recorder: Recorder, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, recorder.url + path, timeout=60, allow_redirects=False, **kwargs)


def test_an_answer_is_forwarded_and_recorded_as_a_shape(server):
    server.on("POST", "/api/1.0/x", (200, {"Content-Type": "application/octet-stream", "X-Secret": "s3cr3t"},
                                     b"records"))
    with Recorder(conn(server.url + "/api/1.0"), "license server") as recorder:
        answer = relay(recorder, "POST", "/api/1.0/x?force=true", data=b"body",
                       headers={"Authorization": "Bearer tok3n"})
    assert (answer.status_code, answer.content) == (200, b"records")
    [exchange] = recorder.exchanges
    shape = exchange.transcript()
    assert shape["query"] == ["force"] and shape["response"]["bytes"] == 7
    assert "x-secret" in shape["response"]["headers"]
    assert not any(word in repr(shape) for word in ("s3cr3t", "tok3n", "records")), shape


def test_a_trickling_answer_ends_at_the_deadline(server):
    """A byte every 0.2 s never trips the 1 s socket timeout; the whole answer must come within it all the same."""
    server.on("GET", "/slow", (200, {"Content-Type": "text/plain", "_trickle": 0.2}, b"x" * 200))
    started = time.monotonic()
    with Recorder(conn(server.url, timeout=1), "license server") as recorder:
        answer = relay(recorder, "GET", "/slow")
    assert time.monotonic() - started < 20  # the body alone takes 40 s: a generous bound for a loaded machine
    assert answer.status_code == 502
    [exchange] = recorder.exchanges
    assert exchange.status == 502 and "within 1s" in exchange.error, exchange.error


def test_a_redirect_is_recorded_never_followed(server, elsewhere):
    server.on("POST", "/deviceservices", redirect(307, elsewhere.url + "/deviceservices"))
    with Recorder(conn(server.url + "/deviceservices"), "back office") as recorder:
        answer = relay(recorder, "POST", "/deviceservices", data=b"usage records")
    assert answer.status_code == 307 and [e.status for e in recorder.exchanges] == [307]
    assert elsewhere.requests == [], "the recorder followed the redirect"
