"""Hostile answers: redirects (and the elsewhere host recording what leaks), trickled, endless and header-stuffed
answers, captive portal pages, errors echoing credentials, held requests; the lab stops cleanly with them open."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from fnelab.cli import control
from fnelab.faults import Fault, FaultError, parse_start_spec
from fnelab.wire import WireError
from labhelp import (
    AUTHORIZE,
    GENERATE,
    HEALTH,
    Api,
    decode,
    live_elsewhere,
    live_fault,
    live_held,
    live_state,
    raw_request,
    session,
    upload,
)


def _until(probe, seconds: float = 10):
    """Poll probe() until it answers something true; that answer."""
    deadline = time.monotonic() + seconds
    while not (answer := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return answer


def _in_thread(call) -> tuple[threading.Thread, dict]:
    """Run call() in a thread; its result (or exception) lands in the dict."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = call()
        except Exception as exc:  # the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_fault_values_are_checked():
    for kind, value in (("redirect", "200"), ("redirect_same", None), ("trickle", "0"), ("giant_headers", "x"),
                        ("huge_header", "-1"), ("hold", "0"), ("hold_after", "soon"), ("page200", "html"),
                        ("echo_token", "200"), ("status", "abc")):
        with pytest.raises(FaultError, match=kind):
            Fault(kind, value)
    assert Fault("giant_headers").value == "150" and Fault("huge_header").value == "70000"
    assert Fault("page200").value == "text/html" and Fault("echo_token").value == "500"
    assert Fault("hold").value == "300" and Fault("page200", "text/plain; charset=utf-8").value.startswith("text/")
    assert parse_start_spec("lls001:hold_after=20:1@ack") == ("lls001", Fault("hold_after", "20", 1, "ack"))


def test_redirect_elsewhere_records_what_a_client_sends_there(lab_factory):
    lab = lab_factory(1, "--security", "--https", "--records", "1")
    info, elsewhere = lab.info["servers"]["lls001"], lab.info["elsewhere"]
    lab.fault("lls001", "redirect=307", "--count", "1", "--endpoint", "authorize")
    r = session(lab).post(info["url"] + AUTHORIZE, json={"user": info["username"], "password": info["password"]},
                          timeout=5)  # requests follows a 307 with the same body: the password goes elsewhere
    assert [h.status_code for h in r.history] == [307] and r.history[0].headers["Location"] == elsewhere["https"] \
        + AUTHORIZE
    assert r.status_code == 200 and r.json()["token"] == "elsewhere-token"
    (seen,) = live_elsewhere(lab)
    assert (seen["method"], seen["scheme"], seen["path"]) == ("POST", "https", AUTHORIZE)
    assert seen["json"] == {"user": "admin", "password": info["password"]}
    assert seen["body_sha256"] == hashlib.sha256(r.history[0].request.body).hexdigest()

    api = Api(lab, "lls001")  # a real token
    live_fault(lab, "lls001", "redirect=302", 1, endpoint="generate")
    r = api.session.post(api.url + GENERATE + "?force=true", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"] == elsewhere["https"] + GENERATE + "?force=true"
    assert live_state(lab)["servers"]["lls001"]["messages_handed_out"] == 0  # nothing done
    naive = api.session.post(r.headers["Location"], timeout=5)  # a client that keeps its token on the way
    assert naive.status_code == 200 and naive.headers["Content-Type"] == "application/octet-stream"
    assert naive.content == b"elsewhere\n"
    assert live_elsewhere(lab)[-1]["headers"]["Authorization"] == api.session.headers["Authorization"]

    (message,) = api.drain()
    live_fault(lab, "backoffice", "redirect=308", 1)
    r = upload(lab, message)  # 308: the message is sent again, elsewhere, and not stored
    assert [h.status_code for h in r.history] == [308] and r.content == b"elsewhere\n"
    last = live_elsewhere(lab)[-1]
    assert last["path"] == "/deviceservices" and last["body_length"] == len(message) and last["json"] is None
    assert last["body_sha256"] == hashlib.sha256(message).hexdigest()
    assert live_state(lab)["backoffice"]["messages_accepted"] == 0
    text = lab.cli("elsewhere", "--dir", str(lab.dir)).stdout  # the plain listing shows no secret
    assert "3 requests" in text and "Authorization present" in text and info["password"] not in text
    assert "cleared (3 requests)" in lab.cli("elsewhere", "--dir", str(lab.dir), "--clear").stdout
    assert live_elsewhere(lab) == []


def test_redirect_same_leads_back_to_the_real_handler(lab_factory):
    lab = lab_factory(1, "--security", "--records", "2", "--page-size", "1")
    info = lab.info["servers"]["lls001"]
    url, s = info["url"], session(lab)
    live_fault(lab, "lls001", "redirect_same=307", endpoint="authorize")  # no --count, and still no loop
    r = s.post(url + AUTHORIZE, json={"user": info["username"], "password": info["password"]}, timeout=5)
    assert [h.headers["Location"] for h in r.history] == [url + "/r" + AUTHORIZE]
    auth = {"Authorization": f"Bearer {r.json()['token']}"}  # a real token
    live_fault(lab, "lls001", "redirect_same=301", 1, endpoint="generate")
    r = s.post(url + GENERATE, headers=auth, allow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["Location"] == url + "/r" + GENERATE
    assert live_state(lab)["servers"]["lls001"]["cursor"] == 0
    assert decode(s.post(r.headers["Location"], headers=auth, timeout=5).content).first_seq == 1
    assert decode(s.post(url + GENERATE, headers=auth, timeout=5).content).first_seq == 2  # used up
    assert live_elsewhere(lab) == []


def test_trickle_a_body_and_an_error_body_byte_by_byte(lab_factory):
    lab = lab_factory(1)
    url = lab.info["servers"]["lls001"]["url"]
    live_fault(lab, "lls001", "trickle=0.005", 1, endpoint="health")
    began = time.monotonic()
    # a 0.5 s timeout per socket read never fires, yet the whole answer takes over twice that
    status, headers, body, complete = raw_request(url, HEALTH, method="GET", timeout=0.5)
    assert status == 200 and complete and json.loads(body)["status"] == "ok"
    assert int(headers["Content-Length"]) == len(body) > 200 and time.monotonic() - began >= 0.005 * (len(body) - 1)
    live_fault(lab, "lls001", "status=500", 1)  # trickle stacks with an answer kind: an error body trickles
    live_fault(lab, "lls001", "trickle=0.01", 1)
    began = time.monotonic()
    status, _, body, complete = raw_request(url, GENERATE, timeout=0.5)
    assert status == 500 and complete and json.loads(body)["message"] == "injected status 500"
    assert time.monotonic() - began >= 0.01 * (len(body) - 1)
    assert raw_request(url, GENERATE)[0] == 204  # used up


def test_header_floods(lab_factory):
    lab = lab_factory(1)
    url = lab.info["servers"]["lls001"]["url"]
    live_fault(lab, "lls001", "giant_headers", 1, endpoint="health")  # 150
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        raw_request(url, HEALTH, method="GET")
    live_fault(lab, "lls001", "huge_header", 1)  # 70,000 bytes
    with pytest.raises(http.client.LineTooLong):
        raw_request(url, HEALTH, method="GET")
    live_fault(lab, "lls001", "status=503", 1)  # what came, seen on a raw socket: on an error answer too
    live_fault(lab, "lls001", "giant_headers=120", 1)
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {HEALTH} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 503") and head.count(b"\r\nX-Fnelab-Filler-") == 120
    assert raw_request(url, HEALTH, method="GET")[0] == 200  # used up


def test_portal_pages_and_errors_that_echo_credentials(lab_factory):
    lab = lab_factory(1, "--security", "--records", "2", "--page-size", "1")
    api, info = Api(lab, "lls001"), lab.info["servers"]["lls001"]
    live_fault(lab, "lls001", "page200", 1, endpoint="generate")
    r = api.generate()
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html" and "<form" in r.text
    live_fault(lab, "lls001", "page200=application/octet-stream", 1, endpoint="generate")
    r = api.generate()
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
    with pytest.raises(WireError):
        decode(r.content)  # a 200 that is no sync message
    assert live_state(lab)["servers"]["lls001"]["cursor"] == 0  # nothing done
    live_fault(lab, "backoffice", "page200=text/plain", 1)
    r = upload(lab, api.generate().content)  # the proxy's 200 page where an acknowledgment should be
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain" and "sign in" in r.text
    assert live_state(lab)["backoffice"]["messages_accepted"] == 0

    live_fault(lab, "lls001", "echo_token", 1, endpoint="generate")
    r = api.generate()
    assert r.status_code == 500 and r.json()["key"] == "glsErr.internal"
    assert f"Authorization: {api.session.headers['Authorization']}" in r.json()["message"]
    assert r.json()["request"]["headers"]["Authorization"] == api.session.headers["Authorization"]
    live_fault(lab, "lls001", "echo_token=400", 1, endpoint="authorize")
    r = session(lab).post(api.url + AUTHORIZE, json={"user": "admin", "password": info["password"]}, timeout=5)
    assert r.status_code == 400 and info["password"] in r.json()["message"] and "token" not in r.json()
    assert live_state(lab)["servers"]["lls001"]["cursor"] == 1


def test_hold_before_and_after_the_work(lab_factory):
    lab = lab_factory(1, "--records", "4", "--page-size", "2", "--fault", "lls001:hold:1@generate")
    api = Api(lab, "lls001")
    thread, out = _in_thread(api.generate)
    listing = lab.cli("held", "--dir", str(lab.dir), "--json", "--wait", "10", "--target", "lls001").stdout
    (held,) = json.loads(listing)
    assert (held["endpoint"], held["placement"], held["connected"]) == ("generate", "before", True)
    assert live_state(lab)["servers"]["lls001"]["cursor"] == 0 and thread.is_alive()  # received, not carried out
    lab.cli("release", "--dir", str(lab.dir), "--target", "lls001")
    thread.join(10)
    assert decode(out["result"].content).first_seq == 1 and live_held(lab) == []

    live_fault(lab, "lls001", "hold_after", 1, endpoint="generate")
    thread, out = _in_thread(api.generate)
    (held,) = _until(lambda: live_held(lab))
    assert held["placement"] == "after" and thread.is_alive()
    assert live_state(lab)["servers"]["lls001"]["cursor"] == 4  # carried out and committed, the answer still held
    assert "no held request matches" in lab.cli("release", "--dir", str(lab.dir), "--target", "backoffice",
                                                check=False).stderr
    lab.cli("release", "--dir", str(lab.dir), "--id", str(held["id"]))
    thread.join(10)
    assert decode(out["result"].content).first_seq == 3
    assert lab.cli("held", "--dir", str(lab.dir), "--wait", "0.2", check=False).returncode == 1


def test_a_client_killed_while_its_request_is_held(lab_factory):
    """A SIGKILL placed exactly inside a transfer: held before the work, nothing is done; after, the work stays
    done and the answer is lost."""
    lab = lab_factory(1, "--records", "4", "--page-size", "2")
    url = lab.info["servers"]["lls001"]["url"] + GENERATE
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # loopback, straight
    client = ("import sys, urllib.request\n"
              "urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='POST'), timeout=60)")
    for kind, cursor in (("hold", 0), ("hold_after", 2)):
        live_fault(lab, "lls001", kind, 1)
        proc = subprocess.Popen([sys.executable, "-c", client, url], env=env)
        _until(lambda: live_held(lab))
        proc.kill()
        proc.wait()
        _until(lambda: not live_held(lab)[0]["connected"])  # the lab sees the connection go
        control(lab.dir, "/release", {"all": True})
        assert live_state(lab)["servers"]["lls001"]["cursor"] == cursor
    assert decode(Api(lab, "lls001").generate().content).first_seq == 3  # the lost answer's records come next


def test_endless_body_and_a_clean_stop_with_hostile_answers_open(lab_factory):
    lab = lab_factory(1, "--records", "1")
    url = lab.info["servers"]["lls001"]["url"]
    s = session(lab)
    live_fault(lab, "lls001", "endless", endpoint="generate")
    with s.post(url + GENERATE, stream=True, timeout=5) as r:
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
        assert "Content-Length" not in r.headers
        received = 0
        for chunk in r.iter_content(1 << 16):
            received += len(chunk)
            if received > 4 << 20:
                break
    assert received > 4 << 20 and live_state(lab)["servers"]["lls001"]["cursor"] == 0  # nothing done
    stalled = s.post(url + GENERATE, stream=True, timeout=5)  # reads nothing: the lab must wait, not spin
    pid = int((lab.dir / "lab.pid").read_text())
    time.sleep(0.3)  # socket buffers fill
    cpu = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - cpu < 0.15
    live_fault(lab, "lls001", "hold", endpoint="health")
    live_fault(lab, "lls001", "trickle=1", endpoint="authorize")
    held, held_out = _in_thread(lambda: session(lab).get(url + HEALTH, timeout=30))
    trickled, trickled_out = _in_thread(lambda: session(lab).post(url + AUTHORIZE, json={}, timeout=30).content)
    _until(lambda: live_held(lab))
    began = time.monotonic()
    lab.down()  # an endless, a held and a trickling answer open: cut, not waited for
    assert time.monotonic() - began < 5
    for thread, out in ((held, held_out), (trickled, trickled_out)):
        thread.join(10)
        assert isinstance(out.get("error"), requests.exceptions.RequestException), out
    with pytest.raises(requests.exceptions.RequestException):
        for _chunk in stalled.iter_content(1 << 16):  # the stream ends cut off, not as a complete body
            pass
    stalled.close()
