"""What a real server would refuse, the lab refuses too: wrong method, wrong media type, empty bodies, plain HTTP on
an HTTPS port, another server's token, forged or duplicated content. Each refusal leaves the state untouched."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
import requests
from fnelab.wire import EPOCH, Message, record
from labhelp import ACK, AUTHORIZE, GENERATE, HEALTH, Api, decode, session, upload


def test_wrong_method_is_405_and_does_nothing(lab_factory):
    lab = lab_factory(1, "--records", "2", "--page-size", "1")
    api = Api(lab, "lls001")
    for path in (GENERATE, GENERATE + "?force=true", ACK, AUTHORIZE):
        assert api.session.get(api.url + path, timeout=5).status_code == 405, path
        assert api.session.put(api.url + path, data=b"x", timeout=5).status_code == 405, path
    assert api.session.post(api.url + HEALTH, timeout=5).status_code == 405
    assert session(lab).get(lab.info["backoffice"]["url"], timeout=5).status_code == 405
    state = lab.state()
    assert state["servers"]["lls001"]["cursor"] == 0 and state["servers"]["lls001"]["messages_handed_out"] == 0


def test_wrong_media_type_is_415_and_does_nothing(lab_factory):
    lab = lab_factory(1, "--security", "--records", "2", "--page-size", "1")
    api = Api(lab, "lls001")
    info = lab.info["servers"]["lls001"]
    s = session(lab)
    # authorize takes JSON only: a form post or an undeclared body is refused, whatever it holds
    form = s.post(api.url + AUTHORIZE, data={"user": info["username"], "password": info["password"]}, timeout=5)
    assert form.status_code == 415 and form.json()["key"] == "glsErr.unsupportedMediaType"
    raw = s.post(api.url + AUTHORIZE, data=f'{{"user":"admin","password":"{info["password"]}"}}', timeout=5)
    assert raw.status_code == 415 and "token" not in raw.text
    assert s.post(api.url + AUTHORIZE, json={"user": "admin", "password": info["password"]},
                  timeout=5).status_code == 200
    # the acknowledgment and the upload are binary bodies: application/octet-stream, or refused
    m1, m2 = api.drain()
    # (no Content-Type at all counts as application/octet-stream, as HTTP says a server may assume)
    for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = upload(lab, m1, content_type=ctype)
        assert r.status_code == 415 and list(r.json()) == ["Unsupported media type"], ctype
    assert lab.state()["backoffice"]["messages_accepted"] == 0
    ack = upload(lab, m1).content
    for ctype in ("text/plain", "application/json"):
        r = api.ack(ack, content_type=ctype)
        assert r.status_code == 415 and r.json()["key"] == "glsErr.unsupportedMediaType", ctype
    assert lab.state()["servers"]["lls001"]["last_ack_time"] is None  # nothing processed
    assert api.ack(ack, content_type="application/octet-stream; charset=binary").json()["processed"] is True


def test_empty_and_foreign_bodies_are_400(lab_factory):
    lab = lab_factory(1, "--records", "1")
    api = Api(lab, "lls001")
    (message,) = api.drain()
    for body in (b"", b"{}", message):  # a sync message is not an acknowledgment
        r = api.ack(body)
        assert r.status_code == 400 and r.json()["key"] == "glsErr.invalidSyncAck", body[:10]
    ack = upload(lab, message).content
    for body in (b"", ack, message[:-1], message + b"\0"):  # an acknowledgment is not a message
        r = upload(lab, body)
        assert r.status_code == 400 and list(r.json()) == ["Invalid sync message"], body[:10]
    assert lab.state()["backoffice"]["messages_accepted"] == 1


def test_tampered_messages_and_acks_are_refused_byte_by_byte(lab_factory):
    lab = lab_factory(1, "--records", "2", "--page-size", "1")
    api = Api(lab, "lls001")
    m1, m2 = api.drain()
    for i in range(0, len(m1), max(1, len(m1) // 40)):  # a flipped bit anywhere: magic, length, body, signature
        bad = bytearray(m1)
        bad[i] ^= 0x01
        assert upload(lab, bytes(bad)).status_code == 400, i
    assert lab.state()["backoffice"]["messages_accepted"] == 0
    ack = upload(lab, m1).content
    for i in sorted({*range(0, 16), *range(16, len(ack), 7), len(ack) - 1}):  # magic, length, fields, signature
        bad = bytearray(ack)
        bad[i] ^= 0x01
        r = api.ack(bytes(bad))
        assert r.status_code == 400 and r.json()["key"] == "glsErr.invalidSyncAck", i
    assert lab.state()["servers"]["lls001"]["held"] == 2


def test_another_servers_token_is_refused(lab_factory):
    lab = lab_factory(2, "--security", "--records", "1")
    a, b = Api(lab, "lls001"), Api(lab, "lls002")
    stolen = a.session.headers["Authorization"]
    r = session(lab).post(b.url + GENERATE, headers={"Authorization": stolen}, timeout=5)
    assert r.status_code == 401 and r.json()["key"] == "glsErr.notAuthorized"
    r = session(lab).post(b.url + GENERATE, headers={"Authorization": stolen.replace("Bearer ", "Basic ")},
                          timeout=5)
    assert r.status_code == 401
    assert lab.state()["servers"]["lls002"]["cursor"] == 0
    assert b.generate().status_code == 200


def test_https_ports_refuse_plain_http_and_plain_ports_refuse_tls(lab_factory):
    lab = lab_factory(2, "--https", "0.5", "--records", "1")
    https = next(s for s in lab.info["servers"].values() if s["https"])
    plain = next(s for s in lab.info["servers"].values() if not s["https"])
    for url in (https["url"], lab.info["backoffice"]["url"].rsplit("/", 1)[0]):
        as_plain = "http://" + url.split("://", 1)[1]
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(as_plain + GENERATE, timeout=5)
    ctx = ssl.create_default_context(cafile=str(lab.dir / "ca.pem"))
    host = plain["address"]
    with socket.create_connection((host, 7070), timeout=5) as sock, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(sock, server_hostname=host)
    # nothing was handed out by the refused calls
    assert all(s["cursor"] == 0 for s in lab.state()["servers"].values())
    conn = http.client.HTTPSConnection(https["address"], 7070, context=ctx, timeout=5)
    conn.request("GET", HEALTH)
    assert conn.getresponse().status == 200


def test_backoffice_never_stores_a_record_twice_whatever_it_is_sent(lab_factory):
    """Signed messages built by hand (only the lab can): overlapping and repeated sequences are stored once."""
    lab = lab_factory(1, "--records", "6", "--page-size", "3")
    host = lab.info["servers"]["lls001"]["host_id"]
    m1, m2 = (decode(m) for m in Api(lab, "lls001").drain())
    assert upload(lab, m1.encode()).status_code == 200
    overlap = Message(host, m1.sync_time, m1.sync_time + 1, True, 2, 5,
                      [record(host, seq, 0) for seq in (2, 3, 3, 4, 5)])
    assert upload(lab, overlap.encode()).status_code == 200
    report = lab.verify()
    assert report["servers"]["lls001"]["in_backoffice"] == 5 and report["servers"]["lls001"]["duplicated"] == 0
    assert lab.state()["backoffice"]["records"] == 5
    # and the chain moved on: m2 (from m1's time) is now out of order, a fresh chain from the epoch too
    assert upload(lab, m2.encode()).status_code == 400
    assert upload(lab, Message(host, EPOCH, m1.sync_time, False, 1, 1, [record(host, 1, 0)]).encode()
                  ).status_code == 400


def test_settings_that_would_break_the_protocol_are_refused(lab_factory):
    lab = lab_factory(1, "--records", "2")
    for option in (("--page-size", "0"), ("--page-size", "-3"), ("--token-ttl", "0")):
        bad = lab.cli("config", "--dir", str(lab.dir), *option, check=False)
        assert bad.returncode == 2 and "must be greater than 0" in bad.stderr, option
    r = requests.post(lab.info["control_url"] + "/config", json={"page_size": 0, "reupload": "reject"}, timeout=5)
    assert r.status_code == 400
    config = lab.state()["config"]
    assert (config["page_size"], config["reupload"]) == ("500", "accept")  # nothing of the refused call applied
    assert [len(decode(m).records) for m in Api(lab, "lls001").drain()] == [2]


def test_the_collection_cannot_lean_on_the_lab():
    """The judge is only worth something if the collection moves payloads as opaque bytes and never reads the
    lab's state: nothing shipped (plugins, roles, playbooks) names the lab, its formats, its key or its files."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    pattern = re.compile(r"fnelab|FNESYNC1|FNEACK1|LAB_KEY|lab\.sqlite|lab\.json|\bimport hmac\b")
    shipped = [p for top in ("plugins", "roles", "playbooks") for p in (repo / top).rglob("*")
               if p.is_file() and p.suffix in (".py", ".yml", ".yaml", ".j2", ".sh")]
    assert shipped, "no collection content found"
    # the air-gap bundles are signed with the site's own key (HMAC): that one file may use hmac, never the lab's key
    signer = repo / "plugins" / "plugin_utils" / "_bundle.py"
    hits = [f"{p.relative_to(repo)}:{n}: {line.strip()}" for p in shipped
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)
            and not (p == signer and line.strip() == "import hmac")]
    assert not hits, hits
