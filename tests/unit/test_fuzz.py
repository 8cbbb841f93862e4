"""Fuzzing (hypothesis) of everything the client parses from a server or a user: headers, file names, JSON, acks,
the mismatch text, times, URLs. Whatever comes in, the only exceptions are FneError and its subclasses, and the
invariants hold: no file outside the target folder, no partial file under a final name, no temporary file left, no
secret in a message, "lost" only when the request reached the server.

Pure functions are fuzzed directly; the real LicenseServer.generate / process / health / authorize and
BackOffice.upload run against the tiny HTTP server of test_client.py (Script, _handler), and against a raw socket
server for framing (Content-Length) a well-behaved server library would never send. Deterministic
(derandomize=True, no example database): CI sees the same examples on every run. Each target's example count goes
to tests/integration/reliability.py (part "fuzz")."""

from __future__ import annotations

import calendar
import collections
import hashlib
import json
import math
import os
import re
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
import types
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from test_client import REPO, Script, client, connection, errors, files, folder, http, server

__all__ = ["server"]  # test_client.py's scripted HTTP server, a fixture shared by import

sys.path.insert(0, str(REPO / "tests" / "integration"))
from reliability import record  # noqa: E402

# Deterministic and modest: the whole file runs in well under a minute on a loaded 2-core machine.
# Each bug found is pinned as an @example (its minimal failing case): a known bug fails fast, before generation.
# No explain phase: its line tracer hits the recursion limit on the deeply nested JSON cases.
PURE = settings(max_examples=75, derandomize=True, database=None, deadline=None,
                phases=(Phase.explicit, Phase.generate, Phase.shrink),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# The server fixture lives for the whole test: each example sets the answers it needs and clears what it saw.
NET = settings(PURE, max_examples=20,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.function_scoped_fixture])

RUNS: collections.Counter = collections.Counter()  # examples run per target


def ran(target: str) -> None:
    RUNS[target] += 1


@pytest.fixture(scope="module", autouse=True)
def _record_examples():
    yield
    for target, count in sorted(RUNS.items()):
        record("fuzz", target, examples=count)


API = connection.API
SYNC = connection.SYNC_MESSAGE
ACK = connection.SYNC_ACK
HEALTH = connection.HEALTH
AUTHORIZE = connection.AUTHORIZE
UPLOAD = "/deviceservices"
PASSWORD = "pw-FUZZ-s3cret"
STAMP_NAME = re.compile(r"\A[0-9]{8}T[0-9]{6}\.fnesync\Z")
CONFLICT_NAME = re.compile(r"\A([0-9]{8}T[0-9]{6}\.fnesync)\.([0-9a-f]{12})\.conflict\Z")

# -- strategies ------------------------------------------------------------------------------------------------
# What a header value can carry: http.client decodes headers as latin-1 (no CR/LF: those would end the header).
HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(HEADER_CHARS, max_size=40)
# latin-1 digits that str.isdigit() accepts but int() and float() refuse
ODD_DIGITS = st.sampled_from(["\u00b2", "\u00b3", "\u00b9", "1\u00b2", " 7 ", "0x10", "1e3", "-1", "+5", "", " "])
numbers_text = st.one_of(st.integers(-5, 10 ** 30).map(str), ODD_DIGITS, header_text)

json_scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=10)
# JSON nested deeper than the interpreter's recursion limit: valid JSON, and a parser's classic trap.
json_bombs = st.builds(lambda opener, depth, tail: opener * depth + tail,
                       st.sampled_from(["[", '{"a":', '{"key":', '{"message":[']), st.integers(0, 3000),
                       st.sampled_from(["", "1", "]", "}"]))

# Times: every moment the datetime type holds, in every zone, in every format the protocol prints.
FIRST, LAST = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)
moments = st.one_of(
    st.datetimes(min_value=FIRST, max_value=LAST).map(lambda moment: moment.replace(microsecond=0)),
    # the calendar's edges, where a zone offset moves the instant out of the datetime type's range
    st.integers(0, 2 * 86400).map(lambda seconds: FIRST + timedelta(seconds=seconds)),
    st.integers(0, 2 * 86400).map(lambda seconds: LAST - timedelta(seconds=seconds)))
zones = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def _stamp(moment: datetime) -> str:
    return (f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}"
            f"{moment.second:02d}")


def _iso(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:" \
           f"{moment.second:02d}"


def _vendor(moment: datetime, comma: str = "", space: str = " ") -> str:
    """The back office's mismatch text: `Jan 24, 2019 11:04:09 AM` (UTC)."""
    hour = moment.hour % 12 or 12
    return (f"{calendar.month_abbr[moment.month]} {moment.day}, {moment.year:04d}{comma} {hour}:{moment.minute:02d}:"
            f"{moment.second:02d}{space}{'AM' if moment.hour < 12 else 'PM'}")


# The documented formats of a UTC moment (no zone printed: UTC), as parse_time's docstring lists them.
UTC_FORMS = {
    "stamp": _stamp,
    "iso": _iso,
    "iso-Z": lambda m: _iso(m) + "Z",
    "iso-z": lambda m: _iso(m) + "z",
    "iso-+00:00": lambda m: _iso(m) + "+00:00",
    "vendor": _vendor,
    "vendor-comma": lambda m: _vendor(m, comma=","),
    "vendor-nnbsp": lambda m: _vendor(m, space="\u202f"),
    "vendor-24h": lambda m: (f"{calendar.month_abbr[m.month]} {m.day:02d}, {m.year:04d} {m.hour:02d}:"
                             f"{m.minute:02d}:{m.second:02d}"),
}
utc_texts = st.builds(lambda moment, form: UTC_FORMS[form](moment), moments, st.sampled_from(sorted(UTC_FORMS)))
zoned_texts = st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), moments, zones)


@st.composite
def mangled_times(draw) -> str:
    """A printed time with a piece changed: out-of-range fields, huge numbers, odd separators."""
    text = draw(utc_texts | zoned_texts)
    index = draw(st.integers(0, len(text)))
    piece = draw(st.sampled_from(["", "9", "99999999999999999999", "+", "-", "T", " ", ":", "Z", "\u202f",
                                  "\u0660", "\u00b2"]) | st.text(max_size=3))
    cut = draw(st.integers(0, 3))
    return text[:index] + piece + text[index + cut:]


time_texts = st.one_of(utc_texts, zoned_texts, mangled_times(), st.text(max_size=30))

MEDIA_TYPES = ["application/octet-stream", "application/octet-stream; charset=binary", "APPLICATION/OCTET-STREAM",
               " application/octet-stream ", "application/octet-stream;", "text/html", "text/html; charset=utf-8",
               "text/plain", "application/json", "application/problem+json", "application/xml", "text/xml",
               "application/xhtml+xml", "multipart/mixed", "", "octet-stream", "application/x-fnesync"]
content_types = st.sampled_from(MEDIA_TYPES) | header_text
STATUSES = [200, 201, 202, 203, 204, 205, 206, 299, 300, 301, 302, 303, 304, 307, 308, 399, 400, 401, 403, 404,
            405, 408, 409, 413, 429, 451, 499, 500, 501, 502, 503, 504, 599]
statuses = st.sampled_from(STATUSES) | st.integers(200, 599)
html_pages = st.builds(lambda lead, start, title, rest: f"{lead}{start}<title>{title}</title>{rest}",
                       st.sampled_from(["", " ", "\n\t", "\r\n  "]),
                       st.sampled_from(["<!DOCTYPE html>", "<!doctype html>", "<html>", "<HTML lang=en>",
                                        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"><html>"]),
                       st.text(max_size=20), st.text(max_size=40))
mismatch_bodies = st.builds(
    lambda key, first, second, wrap: wrap(key, f"Expected sync time {first}, got {second}"),
    st.sampled_from([errors.MISMATCH_KEY, "key", "message"]) | st.text(max_size=10), time_texts, time_texts,
    st.sampled_from([lambda k, t: json.dumps({k: t}), lambda k, t: json.dumps({"key": k, "message": t}),
                     lambda k, t: t, lambda k, t: json.dumps({"key": k, "message": t}) + "\n  "]))
error_bodies = st.one_of(st.text(max_size=200), html_pages, json_bombs, mismatch_bodies,
                         json_values.map(json.dumps),
                         st.builds(lambda key, msg, extra: json.dumps({"key": key, "message": msg, **extra}),
                                   json_values, json_values, st.dictionaries(st.text(max_size=5), json_values,
                                                                             max_size=2)))
bodies = st.one_of(st.binary(max_size=300), error_bodies.map(lambda text: text.encode("utf-8", "surrogatepass")))

SYNC_NAMES = st.one_of(
    st.from_regex(r"[0-9]{8}T[0-9]{6}\.fnesync", fullmatch=True),  # a sync name, valid as a time or not
    st.builds(_stamp, moments).map(lambda stamp: stamp + ".fnesync"),
    st.sampled_from(["20260101T000000.fnesync", "../20260101T000000.fnesync", "/tmp/20260101T000000.fnesync",
                     "..", ".", "", "/", "20260101T000000.fnesync/..", "sub/20260101T000000.fnesync",
                     "..\\20260101T000000.fnesync", "20260101T000000.fnesync.tmp", ".20260101T000000.fnesync",
                     "20260101T000000.FNESYNC", "20260101T000000.fnesync ", "%2e%2e%2f20260101T000000.fnesync",
                     "20260101T000000.fnesync\x00", "\u00b220260101T00000.fnesync"]),
    header_text,
)
DISPOSITION_FORMS = ['attachment; filename="{}"', "attachment; filename={}", "attachment; filename*=UTF-8''{}",
                     'inline; FILENAME="{}"; size=3', "attachment; filename=\"{}\"; filename*=UTF-8''x.fnesync",
                     'attachment; filename="x"; filename="{}"', "filename={}", 'attachment;filename="{}";']
dispositions = st.one_of(st.builds(lambda form, name: form.format(name), st.sampled_from(DISPOSITION_FORMS),
                                   SYNC_NAMES), header_text)


def header_safe(value: str) -> bool:
    """The test server writes headers as latin-1 and must not be made to end a header early."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return "\r" not in value and "\n" not in value


# -- pure functions --------------------------------------------------------------------------------------------
@PURE
@given(header=dispositions | st.text(max_size=60))
def test_disposition_name_is_a_bare_name_and_only_a_sync_name_becomes_a_file(header):
    """Whatever Content-Disposition a server sends: None or a name with no '/'; a name that passes SYNC_NAME_RE (the
    only kind generate writes) lands directly in the folder. (That generate keeps only names upload sends is held
    end to end by test_generate_against_fuzzed_answers.)"""
    ran("disposition_name")
    name = client._disposition_name(header)
    assert name is None or (isinstance(name, str) and "/" not in name)
    if name and files.SYNC_NAME_RE.match(name):
        target = "/srv/fne/outbox"
        assert os.path.dirname(os.path.normpath(os.path.join(target, name))) == target


@PURE
@given(ctype=content_types | st.text(max_size=30), body=error_bodies | st.text(max_size=300))
@example(ctype="application/json", body='{"key": true, "message": "x"}')
@example(ctype="", body='{"key": [null], "message": null}')
@example(ctype="application/json", body="[" * 3000)
def test_error_text_never_raises_and_gives_a_key_and_words(ctype, body):
    """Any media type and body: (None or a str key, a str message), bounded by what was read. The key goes into
    FneError.key and into the message (`[400 key]`): anything but a str breaks the caller."""
    ran("error_text")
    key, text = http.error_text(ctype, body)
    assert key is None or isinstance(key, str), f"key {key!r} is not a str"
    assert isinstance(text, str)
    # The caller reads at most MAX_ERROR bytes; a JSON message is shown as Python prints it (repr of an odd
    # character: at most 10 characters for one).
    assert len(text) <= 10 * len(body) + len(ctype) + 100
    if key is not None:  # the caller builds its message with it
        http.Http.status_error(types.SimpleNamespace(what="license server", secrets=set(), fail=_fail,
                                                     conn=types.SimpleNamespace(time_zone=None)),
                               "GET", "http://h", 400, key, text)


def _fail(msg, url, cls=errors.FneError, **kwargs):
    return cls(msg, url=url, **kwargs)


def _http_dates(days, years, zones):
    """RFC 1123 dates (Retry-After's other form) with any field out of range."""
    return st.builds(lambda weekday, day, month, year, clock, zone: f"{weekday}, {day} {month} {year} {clock} {zone}",
                     st.sampled_from(["Mon", "Sun", "Xyz", ""]), days, st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
                     years, st.sampled_from(["00:00:00", "23:59:59", "24:61:61", "1:2:3", "99999999999:00:00"]),
                     zones)


retry_after_values = st.one_of(
    numbers_text,
    st.builds(lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S GMT"),
              st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))),
    _http_dates(st.integers(-1, 10 ** 20).map(str), st.integers(-1, 10 ** 25).map(str),
                st.sampled_from(["GMT", "UTC", "+0000", "-9999", "+99999999999999999999", "EST", "", "Z"])),
    header_text,
)


@PURE
@given(value=retry_after_values)
@example(value="\u00b2")  # '²'.isdigit() is True, float('²') raises
@example(value="0 JAN 2147483648 0:0 GMT")
def test_retry_after_is_none_or_a_wait_the_cap_bounds(value):
    """Any Retry-After a server sends (latin-1, as http.client decodes it): None or a number of seconds >= 0, which
    the retry loop caps at max_retry_wait. Never an exception out of the retry loop."""
    ran("retry_after")
    wait = http._retry_after(types.SimpleNamespace(headers={"Retry-After": value}))
    assert wait is None or (isinstance(wait, float) and not math.isnan(wait) and wait >= 0)
    capped = http.Http._wait(types.SimpleNamespace(conn=types.SimpleNamespace(max_retry_wait=60.0)), 0, wait)
    assert math.isfinite(capped) and 0 <= capped <= 60


@PURE
@given(text=time_texts)
@example(text="0001-01-01T00:00:00+00:01")
def test_parse_time_is_none_or_an_aware_utc_time(text):
    """Any text (a server's lastSyncTime, the mismatch text's times): None or an aware UTC datetime, never an
    exception (OverflowError included: a time at the edge of the calendar in a zone past it)."""
    ran("parse_time")
    parsed = files.parse_time(text)
    assert parsed is None or (isinstance(parsed, datetime) and parsed.utcoffset() == timedelta(0))


@PURE
@given(moment=moments, form=st.sampled_from(sorted(UTC_FORMS)))
def test_parse_time_round_trips_the_documented_utc_formats(moment, form):
    ran("parse_time")
    assert files.parse_time(UTC_FORMS[form](moment)) == moment.replace(tzinfo=timezone.utc)


@PURE
@given(moment=moments, zone=zones)
@example(moment=datetime(1, 1, 1), zone=timezone(timedelta(minutes=1)))
def test_parse_time_round_trips_a_time_with_an_offset(moment, zone):
    """`2026-11-25T15:03:05+01:00` is the instant 14:03:05Z; at the calendar's edge too (0001-01-01T00:00:00+00:01
    is a valid lastSyncTime: the instant before the calendar's first second in UTC, which parse_time must refuse
    with None, never with an OverflowError)."""
    ran("parse_time")
    aware = moment.replace(tzinfo=zone)
    try:
        expected = aware.astimezone(timezone.utc)
    except OverflowError:
        expected = None  # not representable in UTC: the only right answers are None (or a clean refusal)
    assert files.parse_time(aware.isoformat()) == expected


@st.composite
def iso_with_zone(draw) -> tuple[str, bool, bool]:
    """(text, it names its zone, in the canonical form: T separator and Z or a 4-digit offset)."""
    moment = draw(moments)
    date = _iso(moment).split("T")[0]
    separator = draw(st.sampled_from(["T", "T", " ", "t"]))
    clock = _iso(moment).split("T")[1] + draw(st.sampled_from(["", ".5", ".123456"]))
    zone = draw(st.sampled_from([None, "Z", "z", "+05:30", "-0800", "+00:00", "-12:00", "+14", "+05:30:15"]))
    canonical = separator == "T" and zone in ("Z", "z", "+05:30", "-0800", "+00:00", "-12:00")
    return date + separator + clock + (zone or ""), zone is not None, canonical


@PURE
@given(case=iso_with_zone(), noise=st.text(max_size=30))
def test_has_zone_never_claims_a_zone_that_is_not_there(case, noise):
    """A time without zone must never be taken as UTC (no purge on it: a local time could be hours later); a
    canonical zone is always seen."""
    ran("has_zone")
    text, zoned, canonical = case
    assert not folder.has_zone(text) or zoned
    if canonical:
        assert folder.has_zone(text)
    assert isinstance(folder.has_zone(noise), bool)


@PURE
@given(first=utc_texts | zoned_texts, second=utc_texts | zoned_texts,
       wrap=st.sampled_from(["{}", '{{"key": "k", "message": "{}"}}', '"{}"}}', "{}  \n", "Error: {}"]),
       lead=st.sampled_from(["", "Mismatched or out of order time stamp in sync message. ", "x "]))
def test_mismatch_times_returns_the_two_times_as_printed(first, second, wrap, lead):
    ran("mismatch_times")
    text = wrap.format(f"{lead}Expected sync time {first}, got {second}")
    assert errors.mismatch_times(text) == (first, second)


@PURE
@given(text=st.text(max_size=80) | mismatch_bodies)
def test_mismatch_times_never_raises(text):
    ran("mismatch_times")
    expected, received = errors.mismatch_times(text)
    assert isinstance(expected, str) and isinstance(received, str)
    assert (expected == "") == (received == "")
    assert expected in text and received in text


# A secret is anything but the mask's own character (a '*' in the mask next to a '*' in the text would "match").
secrets_text = st.text(st.characters(exclude_characters="*"), min_size=1, max_size=12)
TOKEN68 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
tokens = st.text(st.sampled_from(TOKEN68), min_size=1, max_size=40).map(lambda token: token + "==")
SURROUNDING = ['"', "'", ",", ";", " ", "\n", ":", "Authorization", "Bearer", "bearer", "token", "{", "}", "=", "\t"]
surroundings = st.lists(st.sampled_from(SURROUNDING) | st.text(max_size=6), max_size=6).map("".join)
bearer_words = st.builds(lambda word, space: word + space, st.sampled_from(["Bearer", "bearer", "BEARER", "BeArEr"]),
                         st.sampled_from([" ", "  ", "\t", " \t"]))


@PURE
@given(secret=secrets_text, before=surroundings, after=surroundings)
def test_scrub_removes_a_secret_whatever_surrounds_it(secret, before, after):
    ran("scrub")
    assert secret not in errors.scrub(before + secret + after, [secret, None, ""])


@PURE
@given(token=tokens, scheme=bearer_words, before=surroundings, after=surroundings)
def test_scrub_removes_a_bearer_token_whatever_surrounds_it(token, scheme, before, after):
    """A token a server echoes back (`Authorization: Bearer TOKEN`) is masked even when the client never knew it.
    (Text that itself ends in `Bearer ` makes that word the token: RFC 6750's grammar, one token per scheme.)"""
    assume(not re.search(r"bearer\s+[^\s\"',;]*\Z", before, re.I))
    assume(token not in before + scheme and token not in after)
    ran("scrub")
    assert token not in errors.scrub(before + scheme + token + after, [])


@PURE
@given(token=tokens, password=secrets_text, before=surroundings, after=surroundings)
@example(token="abc==", password="e", before="", after="")
def test_scrub_removes_both_a_password_and_a_bearer_token(token, password, before, after):
    """The password is scrubbed first; whatever it is, the bearer token next to it must still be masked."""
    assume(password not in token and token not in before + "Bearer " and token not in after)
    assume(not re.search(r"bearer\s+[^\s\"',;]*\Z", before, re.I))
    ran("scrub")
    scrubbed = errors.scrub(f"{before}Bearer {token} pw={password}{after}", [password])
    assert password not in scrubbed and token not in scrubbed


hosts = st.sampled_from(["127.0.0.1", "lls01", "lls01.example.com", "[::1]", "api", "h", "LLS01"])
ports = st.sampled_from(["", ":7070", ":1443", ":80"])
prefixes = st.lists(st.sampled_from(["api", "1.0", "lls", "fne", "x", "v1", ""]), max_size=3).map(
    lambda parts: "".join("/" + part for part in parts))
endpoints = st.sampled_from(["", "/", API, API + "/", HEALTH, AUTHORIZE, SYNC, ACK, SYNC + "/"])
tails = st.sampled_from(["", "?force=true", "#frag", "?a=/api/1.0/x#y", "/"])


@PURE
@given(scheme=st.sampled_from(["http://", "https://"]), host=hosts, port=ports, prefix=prefixes,
       endpoint=endpoints, tail=tails, pad=st.sampled_from(["", " ", "\t\n"]))
@example(scheme="http://", host="api", port="", prefix="/1.0", endpoint="", tail="", pad="")
def test_lls_base_url_reduces_a_documented_endpoint_to_its_base(scheme, host, port, prefix, endpoint, tail, pad):
    """The base a user means, whichever documented endpoint URL they pasted; and every request built on the base
    goes to the host the user named."""
    assume(API not in prefix)  # a proxy prefix holding /api/1.0 is ambiguous by nature
    ran("lls_base_url")
    base = scheme + host + port + prefix.rstrip("/")
    url = pad + base + endpoint + tail + pad
    reduced = connection.lls_base_url(url)
    assert reduced == base
    for path in (HEALTH, AUTHORIZE, SYNC, ACK):
        assert urlsplit(reduced + path).netloc == urlsplit(url.strip()).netloc


@PURE
@given(url=st.text(max_size=60) | st.builds(
    lambda *parts: "".join(parts), st.sampled_from(["http://", "https://", ""]),
    hosts, ports, prefixes, endpoints, tails, st.text(max_size=5)))
def test_lls_base_url_never_raises_and_keeps_no_query(url):
    ran("lls_base_url")
    reduced = connection.lls_base_url(url)
    assert isinstance(reduced, str) and "?" not in reduced and "#" not in reduced


# URLs a user may type: schemes, hosts and ports, good and broken (brackets, full-width characters, controls).
url_schemes = st.sampled_from(["http://", "https://", "HTTP://", "", "ftp://", "http:/", "//", "http:", "https:///"])
url_hosts = st.sampled_from(["127.0.0.1", "lls01", "lls01.example.com", "[::1]", "[::1", "::1]", "[v1.x]",
                             "[fe80::1%eth0]", "h\uff03b", "h\u2100", "", "a b", "xn--bcher-kva.example",
                             "ex\u00e4mple", "lls01\x00", "\x01lls01", "lls01\x7f"]) | st.text(max_size=8)
url_ports = st.sampled_from(["", ":7070", ":0", ":65535", ":65536", ":-1", ":port", ":", ":7070:80", ": 7070",
                             ":\uff17\uff10"])
url_paths = st.sampled_from(["", "/", "/api/1.0/health", "?q=1", "#frag", "/a b", "/\x00"]) | st.text(max_size=8)
urls = st.builds(lambda lead, scheme, host, port, path: lead + scheme + host + port + path,
                 st.sampled_from(["", " ", "\x01", "\x00", "\t"]), url_schemes, url_hosts, url_ports, url_paths)


@PURE
@given(url=urls | st.text(max_size=40))
@example(url="http://[::1")  # ValueError from urlsplit
@example(url="\x01http://127.0.0.1:7070")  # urlsplit skips the \x01, requests does not
def test_check_url_returns_an_http_url_with_a_host_or_raises_fne_error(url):
    """Any string: an http(s) URL with a host that the HTTP library can use as given, or FneError. A URL the
    library cannot use fails later as "the answer was lost" (with the force hint): wrong advice for a request that
    never left."""
    ran("check_url")
    try:
        checked = connection.check_url(url, "license server")
    except errors.FneError:
        return
    parsed = urlsplit(checked)
    assert checked.lower().startswith(("http://", "https://")), f"{checked!r} does not start with its scheme"
    assert parsed.hostname and not any(ord(c) < 0x21 or ord(c) == 0x7F for c in checked), repr(checked)


userinfo_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-._~")
password_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def passwords(chars: st.SearchStrategy) -> st.SearchStrategy:
    """Passwords with a digit in them: such a password cannot be a word of a message's own text, only an echo."""
    return st.builds(lambda digit, rest: digit + rest, st.sampled_from("0123456789"), st.text(chars, min_size=5,
                                                                                              max_size=11))


@PURE
@given(scheme=st.sampled_from(["http://", "https://", "HTTPS://"]),
       user=st.text(userinfo_chars, min_size=1, max_size=6),
       password=passwords(password_chars), host=st.sampled_from(["127.0.0.1", "lls01"]),
       port=st.sampled_from(["", ":7070"]), path=st.sampled_from(["", "/", API]))
@example(scheme="http://", user="0", password="00000#", host="127.0.0.1", port="", path="")  # accepted
@example(scheme="http://", user="0", password="0000A#", host="127.0.0.1", port="", path="")  # refused, shown
def test_check_url_never_echoes_a_password_given_in_the_url(scheme, user, password, host, port, path):
    """`http://user:password@host`: refused, and the message never shows the password (# / ? are common in
    passwords: they end the authority part of a URL, the rest must still never be shown)."""
    url = f"{scheme}{user}:{password}@{host}{port}{path}"
    assume(password not in f"{scheme}{user}:@{host}{port}{path}")
    ran("check_url")
    try:
        checked = connection.check_url(url, "license server")
    except errors.FneError as exc:
        assert password not in exc.msg and password not in str(exc)
    else:
        assert password not in checked, f"{url!r} accepted: every later message shows the password"


@PURE
@given(lead=st.sampled_from(["", "htp://", "http:/", "//", "ftp://"]),
       user=st.text(userinfo_chars, min_size=1, max_size=6),
       password=passwords(userinfo_chars), host=st.sampled_from(["127.0.0.1", "lls01"]),
       port=st.sampled_from([":7070", ""]))
@example(lead="", user="0", password="000000", host="127.0.0.1", port=":7070")
def test_check_url_never_echoes_a_password_when_the_scheme_is_missing_or_wrong(lead, user, password, host, port):
    """`admin:secret@lls01:7070` (the scheme forgotten) is refused without showing the password either."""
    url = f"{lead}{user}:{password}@{host}{port}"
    assume(password not in f"{lead}{user}:@{host}{port}")
    ran("check_url")
    with pytest.raises(errors.FneError) as err:
        connection.check_url(url, "license server")
    assert password not in err.value.msg


@PURE
@given(ctype=st.sampled_from(["text/plain", "text/html", "application/json", "application/xml", "text/csv",
                              "application/xhtml+xml", "application/problem+json", "text/x-login"]),
       text=st.text(max_size=200) | html_pages, codec=st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))
def test_a_textual_page_without_last_sync_time_is_never_an_ack(ctype, text, codec):
    """A proxy's or portal's page (text/*, JSON, XML, HTML) that names no LastSyncTime is refused, in any
    encoding; an HTML page whatever its media type."""
    body = text.encode(codec, "replace")
    head = body[:http.MAX_ERROR].decode("utf-8", "replace")
    assume("lastsynctime" not in head.lower())
    ran("not_an_ack")
    assert client._not_an_ack(ctype, body)


@PURE
@given(ctype=st.sampled_from(MEDIA_TYPES).map(str.lower) | st.text(max_size=20), page=html_pages,
       pad=st.binary(max_size=3))
def test_an_html_page_is_never_an_ack_whatever_its_media_type(ctype, page, pad):
    assume(not pad.strip())
    ran("not_an_ack")
    assert client._not_an_ack(ctype, pad + page.encode())


@PURE
@given(ctype=st.text(max_size=30) | st.sampled_from(MEDIA_TYPES), body=st.binary(max_size=400) | bodies)
def test_not_an_ack_never_raises_on_any_bytes(ctype, body):
    ran("not_an_ack")
    verdict = client._not_an_ack(ctype, body)
    assert verdict is None or isinstance(verdict, str)
    if verdict is None:
        assert body and "html" not in ctype


@PURE
@given(name=SYNC_NAMES | st.text(max_size=30), where=st.sampled_from(["", "/srv/out/", "out/", "../"]))
def test_sync_time_of_is_none_or_the_utc_time_its_name_carries(name, where):
    ran("sync_time_of")
    when = files.sync_time_of(where + name)
    if when is not None:
        assert when.utcoffset() == timedelta(0) and _stamp(when) == os.path.basename(where + name)[:15]


@PURE
@given(moment=moments)
def test_sync_time_of_round_trips_a_stamp(moment):
    ran("sync_time_of")
    assert files.sync_time_of(_stamp(moment) + ".fnesync") == moment.replace(tzinfo=timezone.utc)


# -- the real client against a real server ---------------------------------------------------------------------
def _conn(url: str, **kw) -> connection.Connection:
    kw.setdefault("retries", 1)
    kw.setdefault("max_retry_wait", 0.01)
    kw.setdefault("timeout", 3)
    return connection.Connection(url=url, **kw)


class Sandbox:
    """A folder holding only the target folder `out`: anything written elsewhere in it is outside the target."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="fne-fuzz-")
        self.out = os.path.join(self.root, "out")

    def names(self) -> list[str]:
        return sorted(os.listdir(self.out)) if os.path.isdir(self.out) else []

    def check(self, allowed_outside: tuple = ()) -> None:
        outside = sorted(set(os.listdir(self.root)) - {"out", *allowed_outside})
        assert outside == [], f"written outside the target folder: {outside}"
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                assert not name.endswith(".tmp"), f"temporary file left: {os.path.join(dirpath, name)}"

    def sync_file(self) -> str:
        """The target folder with one sync file in it, to upload."""
        os.makedirs(self.out, exist_ok=True)
        path = os.path.join(self.out, "20260101T000000.fnesync")
        with open(path, "wb") as handle:
            handle.write(b"FNESYNC1 records")
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _answer(status: int, ctype, body: bytes, truncate: bool, **headers) -> tuple:
    out = {key: value for key, value in headers.items() if value is not None}
    if ctype is not None:
        out["Content-Type"] = ctype
    if truncate:
        out["_truncate"] = True
    return status, out, body


message_answers = st.builds(
    _answer,
    statuses | st.sampled_from([200, 200, 200, 204]),
    content_types | st.sampled_from(["application/octet-stream"] * 3) | st.none(),
    bodies, st.booleans(),
    **{"Content-Disposition": dispositions | st.none(), "X-FNE-Record-Count": numbers_text | st.none()})


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_generate_folder(box: Sandbox, served: list[tuple], result) -> None:
    """No file outside, no temporary file, and every file under a final name is a whole message the server sent."""
    box.check()
    whole = {body for _status, headers, body in served if not headers.get("_truncate") or not body}
    for name in box.names():
        data = _read(os.path.join(box.out, name))
        conflict = CONFLICT_NAME.match(name)
        assert STAMP_NAME.match(name) or conflict, f"unexpected file {name!r}"
        assert data in whole, f"{name} holds {len(data)} bytes that are no whole message the server sent"
        if conflict:
            assert _sha(data).startswith(conflict.group(2))
    if result is not None:
        sendable = files.list_sync_files(box.out)
        for entry in result["files"]:
            assert entry["path"] in sendable, f"generate kept {entry['name']!r}, which upload never sends"
            assert _sha(_read(entry["path"])) == entry["sha256"]


def _json_field(body: bytes, name: str):
    """body's JSON object's field `name`, or None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data.get(name) if isinstance(data, dict) else None


def _reached(script: Script, path: str) -> bool:
    """Whether a POST to path (any query) reached the server."""
    return any(method == "POST" and seen.split("?")[0] == path for method, seen, _h, _n in script.requests)


def _expect_fne(call):
    """The call's result, or None when it raised FneError (the message is then checked for secrets)."""
    try:
        return call(), None
    except errors.FneError as exc:
        assert PASSWORD not in exc.msg and PASSWORD not in str(exc)
        return None, exc


@NET
@given(answers=st.lists(message_answers.filter(lambda a: all(header_safe(str(v)) for v in a[1].values())),
                        min_size=1, max_size=2),
       force=st.booleans())
@example(answers=[(200, {"Content-Type": "application/octet-stream", "X-FNE-Record-Count": "\u00b2",
                         "Content-Disposition": 'attachment; filename="20260101T000000.fnesync"'}, b"FNESYNC1")],
         force=False)
@example(answers=[(200, {"Content-Type": "application/octet-stream",
                         "Content-Disposition": 'attachment; filename="00000000T000000.fnesync"'}, b"")],
         force=False)
@example(answers=[(400, {}, b'{"key": [null], "message": null}')], force=False)
def test_generate_against_fuzzed_answers(server, answers, force):
    ran("generate")
    box = Sandbox()
    try:
        server.requests.clear()
        server.on("POST", SYNC, *answers, (204, {}, b""))
        http.TOKENS.clear()
        result, exc = _expect_fne(lambda: client.LicenseServer(_conn(server.url)).generate(box.out, force=force))
        if isinstance(exc, errors.LostResponseError):
            assert _reached(server, SYNC), "'lost' for a request that never reached the server"
        _check_generate_folder(box, answers, result)
    finally:
        box.close()


OK_HEALTH = {"status": "ok", "version": "1", "instanceId": "i", "hostId": "H", "hostIdType": "Ethernet",
             "database": {"status": "ok"}, "security": {"enabled": False, "https": False}}
health_json = st.one_of(
    st.builds(lambda base, extra: {**base, **extra}, st.just(OK_HEALTH),
              st.dictionaries(st.sampled_from(["status", "version", "instanceId", "hostId", "database", "security"]),
                              json_values, max_size=3)),
    json_values)


def json_endpoint_answers(data: st.SearchStrategy, ok_weight: int) -> st.SearchStrategy:
    """Answers of a JSON endpoint: fuzzed JSON (200 weighted by ok_weight), JSON too deep to parse, or any body;
    any status, media type and Retry-After; whole or truncated."""
    return st.builds(
        lambda status, ctype, body, truncate, retry_after: _answer(status, ctype, body, truncate,
                                                                   **{"Retry-After": retry_after}),
        statuses | st.sampled_from([200] * ok_weight) if ok_weight else statuses,
        st.sampled_from(["application/json", "application/json; charset=utf-8"]) | content_types | st.none(),
        st.one_of(data.map(lambda value: json.dumps(value).encode()), json_bombs.map(str.encode), bodies),
        st.booleans(), retry_after_values | st.none())


json_answers = json_endpoint_answers(health_json, 0)


@NET
@given(answers=st.lists(json_answers.filter(lambda a: all(header_safe(str(v)) for v in a[1].values())),
                        min_size=1, max_size=2))
@example(answers=[(200, {"Content-Type": "application/json"}, json.dumps({**OK_HEALTH, "security": "on"}).encode())])
@example(answers=[(503, {"Retry-After": "\u00b2"}, b"")])
@example(answers=[(200, {"Content-Type": "application/json"}, b"[" * 3000)])
def test_health_against_fuzzed_answers(server, answers):
    ran("health")
    server.requests.clear()
    server.on("GET", HEALTH, *answers)
    info, _exc = _expect_fne(lambda: client.LicenseServer(_conn(server.url)).health())
    if info is not None:
        assert info["reachable"] is True and isinstance(info["security"], bool) and isinstance(info["https"], bool)


token_json = st.one_of(st.builds(lambda token: {"token": token}, json_values | st.text(max_size=30)),
                       st.builds(lambda token, extra: {"token": token, **extra}, st.text(max_size=30),
                                 st.dictionaries(st.text(max_size=5), json_values, max_size=2)),
                       json_values)
authorize_answers = json_endpoint_answers(token_json, 4)


@NET
@given(answer=authorize_answers.filter(lambda a: all(header_safe(str(v)) for v in a[1].values())))
@example(answer=(200, {"Content-Type": "application/json", "_truncate": True}, b'{"token": ""}'))
@example(answer=(200, {"Content-Type": "application/json"}, b'{"token": "tok\\n"}'))
@example(answer=(200, {"Content-Type": "application/json"}, b'{"token": "\\u0100"}'))  # no latin-1: no header
def test_authorize_against_fuzzed_answers(server, answer):
    """Whatever authorize answers, the password never shows, and a token the HTTP library refuses to send is not
    a "lost" answer (nor an exception of the HTTP library)."""
    ran("authorize")
    box = Sandbox()
    try:
        server.requests.clear()
        server.on("POST", AUTHORIZE, answer)
        server.on("POST", SYNC, (204, {}, b""))
        http.TOKENS.clear()
        lls = client.LicenseServer(_conn(server.url, username="admin", password=PASSWORD))
        result, exc = _expect_fne(lambda: lls.generate(box.out))
        token = _json_field(answer[2], "token")
        if exc is not None and isinstance(token, str) and len(token.strip()) >= 4:
            assert token not in exc.msg
        if isinstance(exc, errors.LostResponseError):
            assert _reached(server, SYNC), "'lost' for a request that never reached the server"
        _check_generate_folder(box, [], result)
    finally:
        box.close()


echo_pages = st.sampled_from([
    (200, "text/plain", "echo: {token}"), (200, "text/html", "<html><title>Authorization: Bearer {token}</title>"),
    (200, "application/json", '{{"key": "x", "message": "{token}"}}'), (200, "", "{token}"),
    (500, "text/plain", "bad token {token}"), (400, "application/json", '{{"token": "{token}"}}'),
    (502, "text/html", "<title>Bearer {token}</title>"), (401, "text/plain", "expired: {token}")])


@NET
@given(token=tokens, page=echo_pages, ctype=content_types | st.none())
@example(token="tok-SECRET-123==", page=(200, "text/plain", "echo: {token}"), ctype=None)
def test_a_token_a_server_echoes_never_reaches_a_message(server, token, page, ctype):
    """A proxy or a debug page that shows the request's Authorization header back: whatever the status and media
    type, the token (and the password) never reach the error message, the ledger or the output."""
    ran("authorize")
    box = Sandbox()
    try:
        status, page_type, text = page
        server.requests.clear()
        server.on("POST", AUTHORIZE, (200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()))
        page_headers = {"Content-Type": page_type if ctype is None else ctype}
        server.on("POST", SYNC, (status, page_headers, text.format(token=token).encode()))
        http.TOKENS.clear()
        lls = client.LicenseServer(_conn(server.url, username="admin", password=PASSWORD))
        _result, exc = _expect_fne(lambda: lls.generate(box.out))
        if exc is not None:
            assert token not in exc.msg and token not in str(exc)
    finally:
        box.close()


FILES = ("20200101T000000.fnesync", "20260101T120000.fnesync", "20991231T235959.fnesync")
ack_json = st.one_of(
    st.builds(lambda last, processed: {"lastSyncTime": last, "processed": processed}, time_texts,
              json_values),
    st.builds(lambda last: {"lastSyncTime": last}, time_texts | json_values),
    json_values)
ack_answers = json_endpoint_answers(ack_json, 6)


def _purge_bound(body: bytes):
    """The newest sync time the served answer allows purging (None: nothing may be purged)."""
    try:
        answer = json.loads(body)
        last = answer.get("lastSyncTime")
        return files.parse_time(last) if folder.has_zone(last) else None
    except Exception:  # noqa: BLE001 (not a purging answer, whatever the reason)
        return None


@NET
@given(answer=ack_answers.filter(lambda a: all(header_safe(str(v)) for v in a[1].values())))
@example(answer=(200, {"Content-Type": "application/json"}, b'{"lastSyncTime": "0001-01-01T00:00:00+00:01"}'))
def test_process_against_fuzzed_answers(server, answer):
    """Whatever sync_ack answers: FneError or a result, and only files at or before a zoned lastSyncTime go."""
    ran("process")
    box = Sandbox()
    try:
        os.makedirs(box.out)
        for name in FILES:
            with open(os.path.join(box.out, name), "wb") as handle:
                handle.write(b"FNESYNC1")
        ack = os.path.join(box.root, "syncack.bin")
        with open(ack, "wb") as handle:
            handle.write(b"ACK")
        server.requests.clear()
        server.on("POST", ACK, answer)
        result, _exc = _expect_fne(lambda: client.LicenseServer(_conn(server.url)).process(ack, box.out))
        box.check(allowed_outside=("syncack.bin",))
        gone = sorted(set(FILES) - set(box.names()))
        bound = _purge_bound(answer[2]) if answer[0] < 300 and not answer[1].get("_truncate") else None
        for name in gone:
            assert bound is not None and files.sync_time_of(name) <= bound, f"{name} purged by {answer!r}"
        if result is not None:
            assert sorted(os.path.basename(path) for path in result["purged"]) == gone
    finally:
        box.close()


ack_bodies = st.one_of(bodies, st.sampled_from([b"ACK\x00\x01binary", b'MessageType="ack" LastSyncTime=2026',
                                                b"", b"<html>portal</html>", b"\xef\xbb\xbfLastSyncTime"]))
upload_answers = st.builds(
    _answer,
    statuses | st.sampled_from([200, 200, 400, 409]), content_types | st.none(),
    ack_bodies | mismatch_bodies.map(str.encode), st.booleans())


@NET
@given(answer=upload_answers.filter(lambda a: all(header_safe(str(v)) for v in a[1].values())))
@example(answer=(400, {}, b'{"key":true,"":null}'))
def test_upload_against_fuzzed_answers(server, answer):
    """Whatever the back office answers: FneError or an acknowledgment that is the whole body and looks like one;
    no ack written for a refused upload, no temporary file, nothing outside the folder."""
    ran("upload")
    box = Sandbox()
    try:
        sync = box.sync_file()
        server.requests.clear()
        server.on("POST", UPLOAD, answer)
        result, exc = _expect_fne(lambda: client.BackOffice(_conn(server.url + UPLOAD)).upload(sync))
        box.check()
        ack = os.path.join(box.out, "syncack.bin")
        status, headers, body = answer
        if result is not None:
            assert result["accepted"] == [sync] and _read(ack) == body
            assert not headers.get("_truncate") and 200 <= status < 300
            ctype = http.media_type(types.SimpleNamespace(headers={"Content-Type": headers.get("Content-Type", "")}))
            assert client._not_an_ack(ctype, body) is None
        else:
            assert not os.path.exists(ack) and exc.result.get("accepted") == []
            if isinstance(exc, errors.MismatchError):
                assert isinstance(exc.expected, str) and isinstance(exc.received, str)
            if isinstance(exc, errors.LostResponseError):
                assert _reached(server, UPLOAD), "'lost' for a request that never reached the server"
        assert set(box.names()) <= {"20260101T000000.fnesync", "syncack.bin"}
    finally:
        box.close()


# -- framing a server library would never send: a raw socket server ----------------------------------------------
class _RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _sep, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*([0-9]+)", head)
            while length and len(rest) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            path = head.split(b" ")[1].split(b"?")[0].decode("latin-1")
            self.server.seen.append(path)
            queue = self.server.replies.get(path) or [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            sock.sendall(reply)
        except OSError:
            pass


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def raw():
    httpd = _RawServer(("127.0.0.1", 0), _RawHandler)
    httpd.replies, httpd.seen = {}, []
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


content_lengths = st.one_of(st.none(), st.integers(0, 80).map(str), ODD_DIGITS,
                            st.sampled_from(["5, 5", "3, 9", "-1", "99999999999999999999", " 8", "8 ", "08"]))


def _raw_reply(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{key}: {value}" for key, value in headers] + ["Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _prefixes(body: bytes, length) -> set:
    """What a client may keep of a body framed by `length`: the whole, or the declared first bytes."""
    kept = {body}
    for number in re.findall(r"[0-9]+", length or ""):
        if int(number) <= len(body):
            kept.add(body[:int(number)])
    return kept


@NET
@given(length=content_lengths, body=st.binary(min_size=1, max_size=40), count=numbers_text | st.none(),
       name=st.sampled_from(["20260101T000000.fnesync"]) | SYNC_NAMES)
@example(length="\u00b2", body=b"\x00", count=None, name="20260101T000000.fnesync")
def test_generate_against_fuzzed_framing(raw, length, body, count, name):
    headers = [("Content-Type", "application/octet-stream"),
               ("Content-Disposition", f'attachment; filename="{name}"')]
    headers += [("Content-Length", length)] if length is not None else []
    headers += [("X-FNE-Record-Count", count)] if count is not None else []
    assume(all(header_safe(value) for _key, value in headers))
    ran("framing")
    box = Sandbox()
    try:
        raw.seen.clear()
        raw.replies[SYNC] = [_raw_reply(200, headers, body), _raw_reply(204, [], b"")]
        result, exc = _expect_fne(lambda: client.LicenseServer(_conn(raw.url)).generate(box.out))
        box.check()
        kept = _prefixes(body, length)
        for entry in box.names():
            assert _read(os.path.join(box.out, entry)) in kept, f"{entry}: a partial message"
        if isinstance(exc, errors.LostResponseError):
            assert SYNC in raw.seen
    finally:
        box.close()


@NET
@given(length=content_lengths, body=st.binary(min_size=1, max_size=40) | ack_bodies,
       ctype=st.sampled_from(["application/octet-stream", "text/plain"]))
@example(length="\u00b2", body=b"\x00", ctype="application/octet-stream")
def test_upload_against_fuzzed_framing(raw, length, body, ctype):
    headers = [("Content-Type", ctype)] + ([("Content-Length", length)] if length is not None else [])
    assume(all(header_safe(value) for _key, value in headers))
    ran("framing")
    box = Sandbox()
    try:
        sync = box.sync_file()
        raw.seen.clear()
        raw.replies[UPLOAD] = [_raw_reply(200, headers, body)]
        result, _exc = _expect_fne(lambda: client.BackOffice(_conn(raw.url + UPLOAD)).upload(sync))
        box.check()
        if result is not None:
            assert _read(os.path.join(box.out, "syncack.bin")) in _prefixes(body, length)
    finally:
        box.close()


# -- URLs a user types, against no server at all ----------------------------------------------------------------
@pytest.fixture(scope="module")
def closed_port():
    """A port bound and never listening: every connection to it is refused, nothing can ever be sent there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# Controls, and the invisible characters a copy-paste brings along (zero-width space, byte-order mark).
junk = st.sampled_from(["", "\x00", "\x01", "\x1b", "\x7f", " ", "\t", "\x0b", "\x1f", "\u200b", "\ufeff"])


@NET
@given(lead=junk, inside=junk, trail=junk, path=st.sampled_from(["", "/", "/\x01", "/%00", "/a b", "?x=\x02"]))
@example(lead="", inside="\u200b", trail="", path="")  # a zero-width space pasted into the host
@example(lead="\x01", inside="", trail="", path="")
def test_a_request_that_never_left_is_never_a_lost_answer(closed_port, lead, inside, trail, path):
    """No server listens: whatever the user typed, the error must not say the answer was lost (that advises a
    forced download, and the fleet marks the server for one)."""
    ran("check_url")
    box = Sandbox()
    try:
        url = f"{lead}http://127.0.0.1{inside}:{closed_port}{path}{trail}"
        _result, exc = _expect_fne(lambda: client.LicenseServer(_conn(url, retries=0)).generate(box.out))
        assert exc is not None and not isinstance(exc, errors.LostResponseError), (
            f"{url!r}: {exc.msg if exc else 'no error'}")
        assert "force" not in exc.msg
    finally:
        box.close()
