"""The compatibility profile (docs/compatibility.md): every plausible shape of the answers the vendor does not
document, parsed by the http client, against the tiny real HTTP server of test_client."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_client import NOTHING, SYNC, client, conn, errors, files, json_answer, message, server

__all__ = ["server"]  # the fixture, shared with test_client.py

ACK_PATH = "/api/1.0/sync_ack/offline"
BO = "/deviceservices"
WRAPPED = {"LLS": {"version": "2021.05.0", "buildDate": "x", "serverInstanceID": "V2YPFFXBK91E",
                   "database": {"connectionCheck": "success"}, "security": "enabled", "httpAuth": "disabled"}}
MISMATCH = "Expected sync time Jan 24, 2019 11:04:09 AM, got Jan 24, 2019 11:05:00 AM"


def octets(body: bytes = b"FNESYNC1 data", **headers: str) -> tuple:
    return 200, {"Content-Type": "application/octet-stream", **headers}, body


def test_wrapped_health_with_host_ids_elsewhere(server):
    server.on("GET", "/api/1.0/health", json_answer(200, WRAPPED))
    ids = [{"type": "WIRELESS", "value": "W1"}, {"type": "ETHERNET", "value": "A088B436F208"}]
    server.on("GET", "/api/1.0/hostids", json_answer(200, {"hostids": ids}))
    health = client.LicenseServer(conn(server.url)).health()
    assert health["security"] is True and health["version"] == "2021.05.0"
    assert health["instance_id"] == "V2YPFFXBK91E" and health["database"] == "success"
    assert (health["host_id"], health["host_id_type"]) == ("A088B436F208", "ETHERNET")
    assert health["https"] is False and health["health"] == WRAPPED


@pytest.mark.parametrize("hostids", [(404, {}, b"no"), (200, {"Content-Type": "text/html"}, b"<html>"),
                                     json_answer(200, {"hostids": "none"}), json_answer(200, {"hostids": []})])
def test_host_ids_only_inform(server, hostids):
    """A missing or odd /hostids answer leaves the host id unknown; health itself still answers."""
    server.on("GET", "/api/1.0/health", json_answer(200, dict(WRAPPED["LLS"], security="disabled")))
    server.on("GET", "/api/1.0/hostids", hostids)
    health = client.LicenseServer(conn(server.url, retries=0)).health()
    assert health["host_id"] is None and health["security"] is False and health["reachable"]


@pytest.mark.parametrize("answer", [(200, {"Content-Type": "application/octet-stream"}, b""),
                                    json_answer(200, {"message": "No new data is available."}), NOTHING])
def test_nothing_new_shapes(server, tmp_path, answer):
    server.on("POST", SYNC, message("20260101T000000.fnesync"), answer)
    result = client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert [f["name"] for f in result["files"]] == ["20260101T000000.fnesync"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260101T000000.fnesync"]


def test_an_empty_chunked_answer_is_nothing_new(server, tmp_path):
    named = {"Content-Disposition": "attachment; filename=20260101T000000.fnesync"}
    server.on("POST", SYNC, octets(b"one", _chunked=True, **named), octets(b"", _chunked=True))
    result = client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert [f["name"] for f in result["files"]] == ["20260101T000000.fnesync"]
    assert (tmp_path / "20260101T000000.fnesync").read_bytes() == b"one"


def test_an_empty_body_that_may_be_cut_is_a_lost_response(server, tmp_path):
    """Neither Content-Length: 0 nor a complete chunked answer: the records may be on their way and lost."""
    server.on("POST", SYNC, (200, {"Content-Type": "application/octet-stream", "_close": True}, b""))
    with pytest.raises(errors.LostResponseError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "empty sync message" in err.value.msg and list(tmp_path.iterdir()) == []


def test_other_json_is_no_sync_message(server, tmp_path):
    """Records may have been handed out: a JSON answer that is not "no data" is a lost response."""
    server.on("POST", SYNC, json_answer(200, {"status": "busy"}))
    with pytest.raises(errors.LostResponseError):
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_file_name_from_a_stamp_header(server, tmp_path):
    server.on("POST", SYNC, octets(**{"X-Sync-Time": "20260102T030405", "Content-Disposition": "attachment"}), NOTHING)
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url), warnings.append).generate(str(tmp_path))
    assert [f["name"] for f in result["files"]] == ["20260102T030405.fnesync"] and not warnings


def test_file_names_from_the_clock_in_order(server, tmp_path):
    """No name anywhere: this host's clock, in time_zone, each one after every name already in the folder."""
    zone = timezone(timedelta(hours=2))
    later = (datetime.now(zone) + timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")  # a name an hour ahead, in +02:00
    (tmp_path / f"{later}.fnesync").write_bytes(b"older message")
    server.on("POST", SYNC, octets(b"one"), octets(b"two"), NOTHING)
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url, time_zone="+02:00"), warnings.append).generate(str(tmp_path))
    names = [f["name"] for f in result["files"]]
    start = datetime.strptime(later, "%Y%m%dT%H%M%S")
    assert names == [(start + timedelta(seconds=s)).strftime("%Y%m%dT%H%M%S.fnesync") for s in (1, 2)]
    assert len(warnings) == 1 and "named by this host's clock" in warnings[0] and names[0] in warnings[0]
    assert (tmp_path / names[1]).read_bytes() == b"two"


def test_the_same_unnamed_message_again_stops_the_download(server, tmp_path):
    """A server (or a proxy) that answers the same bytes forever: no second copy under a new clock name."""
    server.on("POST", SYNC, octets(b"same"))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert "again in one run" in err.value.msg and server.count("POST", SYNC) == 2
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [b"same"]


def test_a_disposition_that_names_no_sync_file_is_refused(server, tmp_path):
    server.on("POST", SYNC, octets(**{"Content-Disposition": 'attachment; filename="report.pdf"'}))
    with pytest.raises(errors.LostResponseError):
        client.LicenseServer(conn(server.url)).generate(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("answer", [
    json_answer(400, {"Mismatched or out of order time stamp in sync message": MISMATCH}),
    json_answer(400, {"key": "syncErr.outOfOrder", "arguments": ["a", "b"],
                      "message": f"Mismatched or out of order time stamp in sync message: {MISMATCH}"}),
    (409, {"Content-Type": "text/plain"}, f"Mismatched or out of order time stamp in sync message: {MISMATCH}"
     .encode()),
])
def test_the_mismatch_in_every_shape_at_upload(server, tmp_path, answer):
    sync_file = tmp_path / "20190124T110500.fnesync"
    sync_file.write_bytes(b"m")
    server.on("POST", BO, answer)
    with pytest.raises(errors.MismatchError) as err:
        client.BackOffice(conn(server.url + BO)).upload_file(str(sync_file))
    assert (err.value.expected, err.value.received) == ("Jan 24, 2019 11:04:09 AM", "Jan 24, 2019 11:05:00 AM")


def test_the_mismatch_at_the_process_step(server, tmp_path):
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    (tmp_path / "20190124T110409.fnesync").write_bytes(b"m")
    server.on("POST", ACK_PATH, json_answer(400, {"key": "syncErr.outOfOrder",
                                                  "message": f"Mismatched or out of order ...: {MISMATCH}"}))
    with pytest.raises(errors.MismatchError) as err:
        client.LicenseServer(conn(server.url)).process(str(ack), str(tmp_path))
    assert err.value.expected == "Jan 24, 2019 11:04:09 AM" and "force: true" in err.value.msg
    assert err.value.result["purged"] == [] and (tmp_path / "20190124T110409.fnesync").exists()


@pytest.mark.parametrize("answer", [(200, {}, b""), json_answer(200, {"status": "processed"})])
def test_an_ack_processed_without_a_last_sync_time_purges_nothing(server, tmp_path, answer):
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    (tmp_path / "20190124T110409.fnesync").write_bytes(b"m")
    server.on("POST", ACK_PATH, answer)
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url), warnings.append).process(str(ack), str(tmp_path))
    assert result["processed"] and result["last_sync_time"] is None and result["purged"] == []
    assert (tmp_path / "20190124T110409.fnesync").exists() and "without saying its lastSyncTime" in warnings[0]


@pytest.mark.parametrize("answer", [json_answer(200, {"error": "database locked"}),
                                    json_answer(200, {"key": "glsErr.internal", "message": "database locked"})])
def test_an_ack_answered_with_an_error_is_no_confirmation(server, tmp_path, answer):
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", ACK_PATH, answer)
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).process(str(ack))
    assert "database locked" in err.value.msg


def test_an_ack_answered_with_a_page_is_no_confirmation(server, tmp_path):
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", ACK_PATH, (200, {"Content-Type": "text/html"}, b"<html><title>Portal</title></html>"))
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url)).process(str(ack))
    assert not isinstance(err.value, errors.MismatchError) and "did not answer JSON" in err.value.msg


@pytest.mark.parametrize("zone, last, purged", [
    (None, "2026-01-01T05:00:00Z", []),                     # names read as UTC: none is the acknowledged time
    ("-05:00", "2026-01-01T05:00:00Z", ["20260101T000000"]),
    ("America/New_York", "2026-01-01T05:00:00Z", ["20260101T000000"]),
    ("-05:00", "2026-01-01T00:00:00", ["20260101T000000"]),  # no zone in the answer: the configured one
    (None, "2026-01-01T00:00:00Z", ["20260101T000000"]),     # the same names as UTC, as by default
])
def test_file_names_in_a_time_zone(server, tmp_path, zone, last, purged):
    """Names in the server's local time: purged only when the acknowledged time is exactly one of the names."""
    for name in ("20260101T000000", "20260101T000010"):
        (tmp_path / f"{name}.fnesync").write_bytes(b"m")
    ack = tmp_path / "syncack.bin"
    ack.write_bytes(b"FNEACK1")
    server.on("POST", ACK_PATH, json_answer(200, {"lastSyncTime": last}))
    warnings: list[str] = []
    result = client.LicenseServer(conn(server.url, time_zone=zone), warnings.append).process(str(ack), str(tmp_path))
    assert [Path(p).name[:15] for p in result["purged"]] == purged
    assert bool(warnings) == (not purged)


@pytest.mark.parametrize("text, minutes", [("UTC", 0), ("+02:00", 120), ("-0530", -330), ("Europe/Berlin", 60)])
def test_zone_names(text, minutes):
    assert files.zone_of(text).utcoffset(datetime(2026, 1, 1)) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["+25:00", "CET+1", "Mars/Olympus", "../etc/passwd", "local"])
def test_a_bad_zone_is_refused_before_any_request(server, text):
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn(server.url, time_zone=text))
    assert "time_zone" in err.value.msg and server.requests == []


def test_max_pages_is_checked():
    with pytest.raises(errors.FneError) as err:
        client.LicenseServer(conn("http://h:7070", max_pages=0))
    assert "max_pages must be at least 1" in err.value.msg


@pytest.mark.parametrize("status", [400, 403, 404])
def test_an_unknown_server_is_refused_once(server, tmp_path, status):
    sync_file = tmp_path / "20260101T000000.fnesync"
    sync_file.write_bytes(b"m")
    server.on("POST", BO, json_answer(status, {"key": "e", "message": "Device A088 is not registered here."}))
    with pytest.raises(errors.UnknownServerError) as err:
        client.BackOffice(conn(server.url + BO, retries=3)).upload_file(str(sync_file))
    assert "Register the license server" in err.value.msg and "not registered" in err.value.msg
    assert server.count("POST", BO) == 1


def test_the_mismatch_text_is_told_from_other_errors():
    assert errors.is_mismatch(None, f"plain: {MISMATCH}")
    assert errors.is_mismatch("Mismatched or out of order time stamp in sync message", "whatever")
    assert not errors.is_mismatch("glsErr.userAuthFailed", "User authentication failed.")
