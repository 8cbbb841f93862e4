"""The license-server and back-office REST APIs, as tests/lab/README.md specifies them."""

from __future__ import annotations

import re
import time

import pytest
import requests
from fnelab.wire import EPOCH, Ack, file_name, parse_file_name, parse_iso
from labhelp import Api, decode, upload


def test_health(lab_factory):
    lab = lab_factory(2, "--security", "0.5")
    for info in lab.info["servers"].values():
        r = requests.get(info["url"] + "/api/1.0/health", timeout=5)  # health needs no token
        body = r.json()
        assert r.status_code == 200 and body["status"] == "ok" and body["hostId"] == info["host_id"]
        assert body["hostIdType"] == "Ethernet" and body["database"] == {"status": "ok"}
        assert body["security"] == {"enabled": info["security"], "https": info["https"]}
        assert body["version"] and body["instanceId"]


def test_paging_cursor_and_unique_times(lab_factory):
    lab = lab_factory(1, "--records", "25", "--page-size", "10")
    api = Api(lab, "lls001")
    pages = []
    while (r := api.generate()).status_code == 200:
        assert r.headers["Content-Type"] == "application/octet-stream"
        name = re.fullmatch(r'attachment; filename="(\d{8}T\d{6}\.fnesync)"', r.headers["Content-Disposition"])[1]
        msg = decode(r.content)
        assert int(r.headers["X-FNE-Record-Count"]) == len(msg.records)
        assert name == file_name(msg.sync_time)
        pages.append(msg)
    assert r.status_code == 204 and not r.content
    assert [len(m.records) for m in pages] == [10, 10, 5]
    assert [r["seq"] for m in pages for r in m.records] == list(range(1, 26))
    # a chain: each message starts where the one before ended; one second each at least, never reused
    assert pages[0].from_time == EPOCH
    assert [m.from_time for m in pages[1:]] == [m.sync_time for m in pages[:-1]]
    assert all(b.sync_time > a.sync_time for a, b in zip(pages, pages[1:], strict=False))
    assert api.generate().status_code == 204
    lab.activity(3)
    more = decode(api.generate().content)
    assert [r["seq"] for r in more.records] == [26, 27, 28] and more.from_time == pages[-1].sync_time
    # live page-size change
    lab.config("--page-size", "2")
    lab.activity(5)
    assert [len(decode(b).records) for b in api.drain()] == [2, 2, 1]


def test_force_restarts_from_the_last_acknowledged_sync_time(lab_factory):
    lab = lab_factory(1, "--records", "30", "--page-size", "10")
    api = Api(lab, "lls001")
    first, second, third = api.drain()
    ack = upload(lab, first)
    assert ack.status_code == 200
    processed = api.ack(ack.content).json()
    assert processed["processed"] is True and processed["purgedRecords"] == 10
    assert processed["lastSyncTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(decode(first).sync_time))
    assert api.generate().status_code == 204  # it believes 11-30 were delivered
    forced = api.generate(force=True)
    msg = decode(forced.content)
    assert msg.forced and msg.first_seq == 11 and msg.from_time == decode(first).sync_time
    assert msg.sync_time > decode(third).sync_time  # a new, unique time
    rest = [decode(b) for b in api.drain()]  # the rest pages on from the forced restart
    assert [m.first_seq for m in rest] == [21]
    assert upload(lab, forced.content).status_code == 200
    final = upload(lab, rest[0].encode())  # signed: re-encoding gives the same bytes
    assert final.status_code == 200
    api.ack(final.content)
    lab.verify(complete=True)
    assert api.generate(force=True).status_code == 204  # nothing after the last acknowledgment


def test_ack_rules(lab_factory):
    lab = lab_factory(2, "--records", "4", "--page-size", "2")
    a, b = Api(lab, "lls001"), Api(lab, "lls002")
    m1, m2 = a.drain()
    ack1 = upload(lab, m1).content
    ack2 = upload(lab, m2).content
    r = b.ack(ack2)  # addressed to another host id
    assert r.status_code == 400 and r.json()["key"] == "glsErr.syncAckTargetMismatch"
    r = a.ack(b"garbage")
    assert r.status_code == 400 and r.json()["key"] == "glsErr.invalidSyncAck"
    tampered = bytearray(ack2)
    tampered[20] ^= 1
    assert a.ack(bytes(tampered)).json()["key"] == "glsErr.invalidSyncAck"
    done = a.ack(ack2).json()
    assert done["processed"] is True and done["purgedRecords"] == 4
    stale = a.ack(ack1)  # older than what it already processed: a no-op, not an error
    assert stale.status_code == 200 and stale.json() == {"lastSyncTime": done["lastSyncTime"], "processed": False,
                                                         "purgedRecords": 0}
    assert a.ack(ack2).json()["processed"] is False
    lab.verify(complete=False)


def test_backoffice_continuity_and_reupload(lab_factory):
    lab = lab_factory(1, "--records", "6", "--page-size", "2")
    api = Api(lab, "lls001")
    m1, m2, m3 = api.drain()
    r = upload(lab, m2)  # out of order
    assert r.status_code == 400
    assert r.json() == {"Mismatched or out of order time stamp in sync message":
                        f"Expected sync time Jan 1, 1970 12:00:00 AM, got {vendor(decode(m1).sync_time)}"}
    assert upload(lab, m1).status_code == 200
    ack2 = upload(lab, m2)
    assert Ack.decode(ack2.content).last_sync_time == decode(m2).sync_time
    # exact re-upload, accept mode (default): 200, current LastSyncTime, nothing stored twice
    again = upload(lab, m1)
    assert again.status_code == 200 and Ack.decode(again.content).last_sync_time == decode(m2).sync_time
    lab.config("--reupload", "reject")
    rejected = upload(lab, m2)
    assert rejected.status_code == 400
    assert rejected.json() == {"Mismatched or out of order time stamp in sync message":
                               f"Expected sync time {vendor(decode(m2).sync_time)}, got {vendor(decode(m1).sync_time)}"}
    lab.config("--reupload", "accept")
    assert upload(lab, m2).status_code == 200
    assert upload(lab, m3).status_code == 200
    assert lab.state()["backoffice"]["records"] == 6
    bad = upload(lab, m3[:-1] + bytes([m3[-1] ^ 1]))
    assert bad.status_code == 400 and "Invalid sync message" in bad.json()
    assert upload(lab, b"<html>").status_code == 400
    report = lab.verify()
    assert report["servers"]["lls001"]["duplicated"] == 0 and report["servers"]["lls001"]["in_backoffice"] == 6


def vendor(ts: int) -> str:
    from fnelab.wire import vendor_time
    return vendor_time(ts)


def test_vendor_time_format():
    from fnelab.wire import vendor_time
    assert vendor_time(parse_iso("2019-01-24T11:04:09Z")) == "Jan 24, 2019 11:04:09 AM"
    assert vendor_time(parse_iso("2019-01-24T11:05:00Z")) == "Jan 24, 2019 11:05:00 AM"
    assert vendor_time(parse_iso("2026-12-05T00:07:03Z")) == "Dec 5, 2026 12:07:03 AM"
    assert vendor_time(parse_iso("2026-12-05T12:00:00Z")) == "Dec 5, 2026 12:00:00 PM"
    assert vendor_time(parse_iso("2026-12-05T23:59:59Z")) == "Dec 5, 2026 11:59:59 PM"
    assert parse_file_name("20140613T105312.fnesync") == parse_iso("2014-06-13T10:53:12Z")
    assert parse_file_name("20140613T105312.txt") is None


def test_authorization(lab_factory):
    lab = lab_factory(1, "--security", "--records", "5", "--page-size", "1", "--token-ttl", "1")
    info = lab.info["servers"]["lls001"]
    url = info["url"]
    r = requests.post(url + "/api/1.0/sync_message/offline", timeout=5)
    assert r.status_code == 401 and r.json()["key"] == "glsErr.notAuthorized"
    r = requests.post(url + "/api/1.0/sync_message/offline", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401 and r.json()["key"] == "glsErr.notAuthorized"
    bad = requests.post(url + "/api/1.0/instances/~/authorize", json={"user": "admin", "password": "x"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["key"] == "glsErr.userAuthFailed"
    api = Api(lab, "lls001")
    assert api.generate().status_code == 200
    time.sleep(1.2)  # --token-ttl 1
    assert api.generate().status_code == 401
    api.login()
    assert api.generate().status_code == 200
    lab.config("--token-ttl", "300")
    api.login()
    lab.fault("lls001", "expire_tokens")
    assert api.generate().status_code == 401
    api.login()
    assert api.generate().status_code == 200
    assert info["password"] not in (lab.dir / "lab.log").read_text()


def test_tls(lab_factory):
    lab = lab_factory(2, "--https", "0.5", "--records", "1")
    https = next(s for s in lab.info["servers"].values() if s["https"])
    plain = next(s for s in lab.info["servers"].values() if not s["https"])
    assert https["url"].startswith("https://") and plain["url"].startswith("http://")
    ca = str(lab.dir / "ca.pem")
    assert requests.get(https["url"] + "/api/1.0/health", verify=ca, timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https["url"] + "/api/1.0/health", timeout=5)  # not trusted without the lab CA
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(lab.info["backoffice"]["url"], data=b"x", timeout=5)
    assert requests.post(lab.info["backoffice"]["url"], data=b"x", verify=ca, timeout=5).status_code == 400


def test_fleet_files_and_spread(lab_factory):
    import yaml
    lab = lab_factory(8, "--security", "0.25", "--https", "0.5")
    servers = lab.info["servers"]
    assert list(servers) == [f"lls{i:03d}" for i in range(1, 9)]
    assert sum(s["security"] for s in servers.values()) == 2 and sum(s["https"] for s in servers.values()) == 4
    assert {(s["security"], s["https"]) for s in servers.values()} == {
        (False, False), (False, True), (True, False), (True, True)}
    base = lab.address_base.rsplit(".", 1)[0]
    assert servers["lls001"]["address"] == f"{base}.10" and servers["lls008"]["address"] == f"{base}.17"
    assert lab.info["backoffice"]["url"] == f"https://{base}.1:8443/deviceservices"
    assert lab.info["control_url"] == f"http://{base}.1:7099"
    inv = yaml.safe_load(lab.inventory.read_text())["all"]["children"]["license_servers"]
    assert inv["vars"] == {"fne_backoffice_url": lab.info["backoffice"]["url"],
                           "fne_backoffice_ca_path": str(lab.dir / "ca.pem")}
    for name, s in servers.items():
        host = inv["hosts"][name]
        assert host["fne_lls_url"] == s["url"] and host["fne_lls_host_id"] == s["host_id"]
        assert ("fne_lls_username" in host) == s["security"] == ("fne_lls_password" in host)
        assert ("fne_lls_ca_path" in host) == s["https"]


@pytest.mark.parametrize("n", [4, 5, 7, 10, 100, 1000])
@pytest.mark.parametrize(("security", "https"), [(0.25, 0.25), (0.5, 0.5), (0.1, 0.9), (0.9, 0.1)])
def test_mixed_fleets_have_every_combination(n, security, https):
    from fnelab.fleet import flags
    f = flags(n, security, https)
    assert len(set(f)) == 4
    assert abs(sum(s for s, _ in f) - security * n) <= max(2, 0.01 * n)
    assert flags(n, 1.0, 0.0) == [(True, False)] * n and flags(n, 0.0, 1.0) == [(False, True)] * n
