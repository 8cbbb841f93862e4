"""Fault injection: every kind, per server or back office, live or at start, with --count and --endpoint."""

from __future__ import annotations

import time

import pytest
import requests
from labhelp import Api, decode, raw_request, upload


def test_latency_status_html_and_filters(lab_factory):
    lab = lab_factory(2, "--records", "4", "--page-size", "1")
    api, other = Api(lab, "lls001"), Api(lab, "lls002")
    health = api.url + "/api/1.0/health"
    lab.fault("lls001", "latency=1.5", "--count", "1", "--endpoint", "health")
    began = time.monotonic()
    assert requests.get(health, timeout=5).status_code == 200
    assert time.monotonic() - began >= 1.5
    began = time.monotonic()
    requests.get(health, timeout=5)
    assert time.monotonic() - began < 1.0  # --count 1: used up (generous: the machine may be busy)

    lab.fault("lls001", "status=503", "--retry-after", "7", "--count", "2", "--endpoint", "generate")
    assert requests.get(health, timeout=5).status_code == 200  # --endpoint: health is not affected
    assert other.generate().status_code == 200  # another server is not affected
    for _ in range(2):
        r = api.generate()
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert lab.state()["servers"]["lls001"]["cursor"] == 0  # a status fault does nothing
    assert api.generate().status_code == 200

    lab.fault("lls001", "html", "--count", "1")
    r = api.generate()
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html") and "<html>" in r.text
    assert r.headers["Server"] == "nginx" and "502 Bad Gateway" in r.text  # what a proxy in front would send
    assert lab.state()["servers"]["lls001"]["cursor"] == 1

    lab.fault("lls001", "status=429")  # no --count: until cleared
    assert [api.generate().status_code for _ in range(3)] == [429, 429, 429]
    lab.clear_faults("lls001")
    assert api.generate().status_code == 200


def test_drop_commits_then_loses_the_answer(lab_factory):
    lab = lab_factory(1, "--records", "4", "--page-size", "2")
    api = Api(lab, "lls001")
    lab.fault("lls001", "drop", "--count", "1", "--endpoint", "generate")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.generate()
    assert lab.state()["servers"]["lls001"]["cursor"] == 2  # handed out, never received
    assert decode(api.generate().content).first_seq == 3


def test_truncate_sends_half_the_body(lab_factory):
    lab = lab_factory(1, "--records", "4", "--page-size", "2")
    lab.fault("lls001", "truncate", "--count", "1")
    status, headers, body, complete = raw_request(lab.info["servers"]["lls001"]["url"], "/api/1.0/sync_message/offline")
    assert status == 200 and not complete
    assert len(body) == int(headers["Content-Length"]) // 2
    assert lab.state()["servers"]["lls001"]["cursor"] == 2


def test_truncate_a_large_answer_and_the_backoffice_acknowledgment(lab_factory):
    lab = lab_factory(1, "--records", "800", "--page-size", "800")
    url = lab.info["servers"]["lls001"]["url"]
    lab.fault("lls001", "truncate", "--count", "1")
    status, headers, body, complete = raw_request(url, "/api/1.0/sync_message/offline")
    assert status == 200 and not complete and int(headers["Content-Length"]) > 100_000
    assert len(body) == int(headers["Content-Length"]) // 2  # really sent, then cut: not an empty answer
    message = Api(lab, "lls001").generate(force=True).content  # the lost page again, from the epoch
    lab.fault("backoffice", "truncate", "--count", "1")
    bo = lab.info["backoffice"]["url"]
    status, headers, body, complete = raw_request(bo, "/deviceservices", message, ca=str(lab.dir / "ca.pem"))
    assert status == 200 and not complete and 0 < len(body) == int(headers["Content-Length"]) // 2
    assert lab.state()["backoffice"]["messages_accepted"] == 1  # stored before the answer broke off


def test_drop_on_the_acknowledgment_commits_it(lab_factory):
    lab = lab_factory(1, "--records", "4", "--page-size", "2")
    api = Api(lab, "lls001")
    m1, m2 = api.drain()
    upload(lab, m1)
    ack = upload(lab, m2).content
    lab.fault("lls001", "drop", "--count", "1", "--endpoint", "ack")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.ack(ack)
    state = lab.state()["servers"]["lls001"]
    assert state["held"] == 0 and state["acked_seq"] == 4 and state["last_ack_time"]  # processed, answer lost
    again = api.ack(ack).json()  # sending it again is harmless: a no-op
    assert again["processed"] is False and again["lastSyncTime"] == state["last_ack_time"]
    lab.verify(complete=True)


def test_down_and_up(lab_factory):
    lab = lab_factory(2, "--records", "1")
    url = lab.info["servers"]["lls001"]["url"]
    session = requests.Session()
    assert session.get(url + "/api/1.0/health", timeout=5).status_code == 200  # a keep-alive connection
    lab.fault("lls001", "down")
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url + "/api/1.0/health", timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/api/1.0/health", timeout=5)
    assert requests.get(lab.info["servers"]["lls002"]["url"] + "/api/1.0/health", timeout=5).status_code == 200
    status = lab.cli("status", "--dir", str(lab.dir), "--json").stdout
    assert '"lls001"' in status
    lab.clear_faults()
    assert requests.get(url + "/api/1.0/health", timeout=5).status_code == 200


def test_backoffice_faults(lab_factory):
    lab = lab_factory(1, "--records", "2", "--page-size", "1")
    m1, m2 = Api(lab, "lls001").drain()
    lab.fault("backoffice", "status=503", "--count", "1", "--retry-after", "1")
    r = upload(lab, m1)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    lab.fault("backoffice", "drop", "--count", "1")
    with pytest.raises(requests.exceptions.ConnectionError):
        upload(lab, m1)
    assert lab.state()["backoffice"]["records"] == 1  # accepted, the answer lost
    assert upload(lab, m1).status_code == 200  # exact re-upload: accepted again, stored once
    lab.fault("backoffice", "down")
    with pytest.raises(requests.exceptions.ConnectionError):
        upload(lab, m2)
    lab.clear_faults("backoffice")
    assert upload(lab, m2).status_code == 200
    assert lab.state()["backoffice"]["records"] == 2
    lab.verify()


def test_faults_at_start_and_bad_specs(lab_factory):
    lab = lab_factory(2, "--records", "1", "--fault", "lls002:status=500:1", "--fault", "lls001:down",
                      "--fault", "lls002:html:1@generate")
    url1, url2 = (lab.info["servers"][n]["url"] + "/api/1.0/health" for n in ("lls001", "lls002"))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url1, timeout=5)
    assert [requests.get(url2, timeout=5).status_code for _ in range(2)] == [500, 200]
    assert Api(lab, "lls002").generate().status_code == 502
    bad = lab.cli("fault", "--dir", str(lab.dir), "--target", "lls001", "explode", check=False)
    assert bad.returncode != 0 and "unknown fault kind" in bad.stderr
    bad = lab.cli("fault", "--dir", str(lab.dir), "--target", "lls999", "drop", check=False)
    assert bad.returncode != 0 and "no such target" in bad.stderr
