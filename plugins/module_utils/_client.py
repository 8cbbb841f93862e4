# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The http backend: the license server's REST API and the back office's deviceservices endpoint, over the HTTP
layer (_http.py), following the local folder rules (_folder.py). Private to the collection.

Payloads are opaque: this module moves bytes, it never parses a sync message or an acknowledgment.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._connection import (
    AUTHORIZE,
    HEALTH,
    HOSTIDS,
    SYNC_ACK,
    SYNC_MESSAGE,
    Connection,
    lls_base_url,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import (
    FORCE_HINT,
    UNKNOWN_SERVER_RE,
    FneError,
    LostResponseError,
    MismatchError,
    UnknownServerError,
    is_mismatch,
    noop_warn,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    SYNC_SUFFIX,
    AtomicWriter,
    list_sync_files,
    parse_time,
    sha256_file,
    stamp_name,
    sync_time_of,
    zone_of,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._folder import (
    conflict_path,
    finish_generate,
    has_zone,
    name_conflict,
    purge_covered,
    start_generate,
    take_replaced,
    upload_files,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._http import (
    MAX_ACK,
    MAX_ERROR,
    MAX_JSON,
    MAX_MESSAGE,
    TOKENS,
    Http,
    MiB,
    chunked,
    error_text,
    header_int,
    looks_like_html,
    media_type,
    parse_json,
    says_empty,
)

# The compatibility profile (docs/compatibility.md): the answers' shapes are recognised here (health, _nothing_new,
# _file_name, _ack_answer, upload_file) and in _errors.is_mismatch; its settings are rows of _connection's table.
STAMP_RE = re.compile(r"(?<!\d)(\d{8}T\d{6})(?!\d)")  # the documented yyyyMMddTHHmmss, wherever a header has it
ENABLED = {"enabled": True, "true": True, "on": True, "yes": True,
           "disabled": False, "false": False, "off": False, "no": False}


def _flag(value: Any) -> Optional[bool]:
    """A health flag as the flat (bool) or the wrapped ("enabled") answer gives it; None when neither."""
    if isinstance(value, bool):
        return value
    return ENABLED.get(value.strip().lower()) if isinstance(value, str) else None


class LicenseServer:
    """The license server's REST API (`url` is the base, e.g. http://host:7070)."""

    def __init__(self, conn: Connection, warn: Callable[[str], None] = noop_warn):
        self.conn = conn
        self.base = lls_base_url(conn.url)
        self.warn = warn
        self.http = Http(conn, warn, "license server")

    # -- authorization -------------------------------------------------------------------------------------
    def _token_key(self) -> tuple:
        digest = hashlib.sha256((self.conn.password or "").encode("utf-8")).hexdigest()
        return (self.base, self.conn.username, digest)

    def _token(self, stale: Optional[str] = None) -> str:
        """The cached token, or a new one; `stale`: a token the server refused (dropped unless already replaced)."""
        try:
            return TOKENS.get(self._token_key(), self._authorize, stale)
        except LostResponseError as exc:  # authorize changes nothing: whatever follows it was never sent
            raise FneError(exc.msg, url=exc.url, status=exc.status) from None

    def _authorize(self) -> str:
        url = self.base + AUTHORIZE
        credentials = {"user": self.conn.username, "password": self.conn.password or ""}
        response = self.http.request("POST", url, json_body=credentials)
        self.http.raise_for_status("POST", url, response)
        answer = self.http.json(response, "a token")
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):  # it goes into a header
            raise self.http.fail(f"Authorization at {url} answered without a usable token.", url)
        self.http.secrets.add(token)
        return token

    def _send(self, method: str, path: str, *, repeatable: bool = True, query: str = "", **kwargs: Any) -> Any:
        url = self.base + path + query
        extra_headers = kwargs.pop("headers", None) or {}
        refused: Optional[str] = None
        while True:
            headers = dict(extra_headers)
            token = self._token(stale=refused) if self.conn.username else None
            if token:
                self.http.secrets.add(token)  # a cached token, authorized by another client of this process
                headers["Authorization"] = "Bearer " + token
            response = self.http.request(method, url, headers=headers, repeatable=repeatable, **kwargs)
            if response.status_code == 401 and token and refused is None:
                # The token expired (security.token.duration): authorize again, once. A 401 means the request
                # was not carried out, so even a non-repeatable one may be sent again.
                response.close()
                refused = token
                continue
            if response.status_code == 401 and not self.conn.username:
                self.http.raise_for_status(method, url, response, hint="The server has administrative security "
                                           "enabled: set username and password.")
            self.http.raise_for_status(method, url, response)
            return response

    # -- health --------------------------------------------------------------------------------------------
    def health(self) -> dict:
        url = self.base + HEALTH
        response = self.http.request("GET", url)
        self.http.raise_for_status("GET", url, response)
        answer = self.http.json(response, "the server's health")
        if not isinstance(answer, dict):
            raise self.http.fail(f"GET {url} answered {str(answer)[:200]!r} instead of the server's health.", url)
        # Informational only, so tolerant: flat (the lab) or wrapped in "LLS" (a public 2021.05 sample).
        data = answer["LLS"] if isinstance(answer.get("LLS"), dict) else answer
        security = data.get("security")
        database = data.get("database") if isinstance(data.get("database"), dict) else {}
        flags = security if isinstance(security, dict) else {"enabled": security}
        host_id, host_id_type = data.get("hostId"), data.get("hostIdType")
        if host_id is None:
            host_id, host_id_type = self._host_id()
        https = _flag(flags.get("https"))
        return {
            "reachable": True,
            "url": self.base,
            "status": data.get("status"),
            "version": data.get("version"),
            "instance_id": data.get("instanceId", data.get("serverInstanceID")),
            "host_id": host_id,
            "host_id_type": host_id_type,
            "database": database.get("status", database.get("connectionCheck")),
            "security": bool(_flag(flags.get("enabled"))),
            "https": self.base.startswith("https:") if https is None else https,
            "health": answer,
        }

    def _host_id(self) -> tuple:
        """(value, type) of the server's first host id from GET /api/1.0/hostids (Ethernet first), or Nones: it
        only informs, so any failure is a None."""
        url = self.base + HOSTIDS
        try:
            response = self.http.request("GET", url)
            if response.status_code != 200:
                response.close()
                return None, None
            answer = parse_json(self.http.read(response, MAX_ERROR))
        except FneError:
            return None, None
        listed = answer.get("hostids") if isinstance(answer, dict) else None
        ids = [i for i in listed if isinstance(i, dict) and isinstance(i.get("value"), str)] \
            if isinstance(listed, list) else []
        ids.sort(key=lambda i: str(i.get("type", "")).upper() != "ETHERNET")
        return (ids[0]["value"], ids[0].get("type")) if ids else (None, None)

    def check_authorization(self) -> bool:
        """Authorize with the configured credentials (raises FneError on refusal)."""
        if not self.conn.username:
            return False
        # really ask the server: a cached token says nothing about the credentials now
        self._token(stale=TOKENS.peek(self._token_key()))
        return True

    # -- step 1 --------------------------------------------------------------------------------------------
    def generate(self, path: str, force: bool = False) -> dict:
        """Download every pending message into path until the server answers 204."""
        path, result, replaceable = start_generate(path, force)
        files: list[dict] = result["files"]
        clock_named: list[str] = []
        first = True
        while True:
            query = f"?{self.conn.force_query}" if force and first else ""
            first = False
            url = self.base + SYNC_MESSAGE + query
            try:
                entry = self._download_one(url, path, query, replaceable, clock_named)
            except FneError as exc:
                exc.result = dict(result)
                if isinstance(exc, LostResponseError):
                    exc.amend(FORCE_HINT + (f" (The {len(files)} file(s) downloaded before it are kept.)"
                                            if files else ""))
                raise
            if entry is None:
                break
            if any(item["name"] == entry["name"] for item in files):
                # A server that never answers 204 would otherwise keep this loop going.
                raise FneError(f"POST {url} handed out {entry['name']} twice in one run; stopped downloading.",
                               url=url, result=dict(result))
            twin = next((item for item in files if item["sha256"] == entry["sha256"]), None)
            if twin is not None and entry["name"] in clock_named:
                # the same bytes again under a new clock name (the server named neither): no new message, and
                # no copy kept
                os.unlink(entry["path"])
                raise FneError(f"POST {url} handed out the message saved as {twin['name']} again in one run; stopped "
                               "downloading.", url=url, result=dict(result))
            files.append(entry)
            take_replaced(result, replaceable, entry["path"])
            result["records"] += entry["records"] or 0
            result["changed"] = True
            if len(files) >= self.conn.max_pages:  # a server that hands out messages forever must not hold us
                self.warn(f"Stopped after {self.conn.max_pages} messages from {self.base} (max_pages); the rest "
                          "comes with the next run (the server keeps what it has not handed out).")
                break
        if clock_named:
            self.warn(f"{self.base} named none of its sync messages (no Content-Disposition, no yyyyMMddTHHmmss "
                      f"header): they were named by this host's clock ({', '.join(clock_named)}). Process purges them "
                      "only when an acknowledgment's last sync time is exactly one of these names.")
        return finish_generate(result)

    def _nothing_new(self, response: Any, url: str) -> bool:
        """Whether a 2xx answer says "no new data": 204, a 200 whose Content-Length is 0, or a JSON "no new data".
        An empty body without that length may be a cut answer: not taken as nothing new."""
        if says_empty(response):
            return True
        if "json" not in media_type(response):
            return False
        _key, text = self.http.error_text(response)
        if re.search(r"no (new )?data|nothing (new|to sync)", text, re.I):
            return True
        raise self.http.fail(f"POST {url} answered {response.status_code} with JSON instead of a sync message: "
                             f"{text}. Nothing was written.", url, LostResponseError, status=response.status_code)

    def _file_name(self, response: Any, folder: str, clock_named: list) -> str:
        """Where a message's file name comes from: Content-Disposition, else a header holding the documented
        yyyyMMddTHHmmss, else this host's clock (in time_zone), one second after any name in the folder."""
        named = _disposition_name(response.headers.get("Content-Disposition", ""))
        if named:
            return named  # a name of another kind is refused by the caller
        for value in response.headers.values():
            stamp = STAMP_RE.search(value)
            if stamp and sync_time_of(stamp.group(1) + SYNC_SUFFIX) is not None:
                return stamp.group(1) + SYNC_SUFFIX
        zone = zone_of(self.conn.time_zone)
        when = datetime.now(timezone.utc).replace(microsecond=0)
        newest = [sync_time_of(f, zone) for f in list_sync_files(folder)]
        if newest:
            when = max(when, max(t for t in newest if t is not None) + timedelta(seconds=1))
        name = stamp_name(when, zone)
        clock_named.append(name)
        return name

    def _download_one(self, url: str, folder: str, query: str, replaceable: set, clock_named: list) -> Optional[dict]:
        response = self._send("POST", SYNC_MESSAGE, query=query, repeatable=False)
        try:
            if self._nothing_new(response, url):
                return None
            ctype = response.headers.get("Content-Type", "")
            if media_type(response) != "application/octet-stream":
                _key, text = self.http.error_text(response)
                raise self.http.fail(
                    f"POST {url} answered {response.status_code} with Content-Type {ctype or '(none)'} instead of a "
                    f"sync message: {text}. Nothing was written.", url, LostResponseError, status=response.status_code)
            body = self.http.iter_body(response, self._message_limit(response, folder, url), "sync message")
            first = next((chunk for chunk in body if chunk), b"")
            if not first:  # a complete chunked answer without a byte says "nothing new"; else it may be a cut one
                if chunked(response):
                    return None
                raise self.http.fail(f"POST {url} answered an empty sync message without Content-Length: 0; "
                                     "nothing was written.", url, LostResponseError)
            name = self._file_name(response, folder, clock_named)
            if sync_time_of(name) is None:  # only a name upload sends may become a file
                disposition = response.headers.get("Content-Disposition")
                raise self.http.fail(f"POST {url} answered a sync message without a valid file name "
                                     f"(Content-Disposition {disposition!r}). Nothing was written.", url,
                                     LostResponseError)
            records = header_int(response.headers.get("X-FNE-Record-Count"))
            final = os.path.join(folder, name)
            info = _stream_to_file(itertools.chain([first], body), response.headers.get("Content-Length"), final, url,
                                   replace=final in replaceable)
            info["records"] = records
            return info
        finally:
            response.close()

    def _message_limit(self, response: Any, folder: str, url: str) -> int:
        """The most bytes a sync message may have. It streams to disk, so only the disk bounds it: an announced
        Content-Length (the body ends there) is taken when the folder has room for it; an unannounced size (chunked:
        it could be endless) stops at MAX_MESSAGE."""
        announced = header_int(response.headers.get("Content-Length"))
        if announced is None or chunked(response):
            return MAX_MESSAGE
        free = shutil.disk_usage(folder).free
        if announced > free:
            raise self.http.fail(f"POST {url} answered a sync message of {announced / MiB:.0f} MiB, but {folder} has "
                                 f"{free / MiB:.0f} MiB free: nothing was written.", url, LostResponseError)
        return announced

    # -- step 3 --------------------------------------------------------------------------------------------
    def process(self, ack_file: str, path: Optional[str] = None) -> dict:
        """Send the acknowledgment; purge from path the sync files it covers."""
        ack_file = os.path.abspath(os.path.expanduser(ack_file))
        try:
            with open(ack_file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise FneError(f"Cannot read the acknowledgment file {ack_file}: {exc.strerror or exc}") from None
        url = self.base + SYNC_ACK
        try:
            response = self._send("POST", SYNC_ACK, data=data, headers={"Content-Type": "application/octet-stream"})
        except MismatchError as exc:  # the mismatch, reported when the acknowledgment is processed
            exc.amend("The license server processed the acknowledgment up to the mismatch (the documented first "
                      "step); download again with force: true, upload and process.")
            exc.result.update(changed=True, last_sync_time=None, processed=True, purged=[], lines=[])
            raise
        answer = self._ack_answer(response, url)
        last = answer.get("lastSyncTime")
        last = last if isinstance(last, str) else None
        zone = zone_of(self.conn.time_zone)
        last_time = parse_time(last, zone) if last else None
        if last and last_time is None:
            raise self.http.fail(f"POST {url} answered an unreadable lastSyncTime ({str(answer)[:300]}).", url)
        processed = bool(answer.get("processed", True))
        purged: list[str] = []
        lines: list[str] = []
        if path and last is None:
            self.warn(f"The license server processed the acknowledgment without saying its lastSyncTime, so which "
                      f"sync files it covers is unknown: none was purged from {path}.")
        elif path and not has_zone(last) and self.conn.time_zone is None:
            # A time without a zone may be the server's local time, hours after the real one (set time_zone).
            self.warn(f"The license server answered lastSyncTime {last} without a time zone, so which sync files it "
                      f"covers is unknown: none was purged from {path} (time_zone names the server's zone).")
        elif path:
            try:
                purged, lines = purge_covered(path, last_time, zone, self.warn)
            except FneError as exc:  # the server did process it: say so with the files already purged
                exc.result.update(changed=True, last_sync_time=last, processed=processed, server=answer)
                raise
        msg = f"Processed the sync acknowledgment: last sync time {last or 'not given'}"
        msg += f"; purged {len(purged)} file(s)." if path else "."
        return {"changed": processed or bool(purged), "last_sync_time": last, "processed": processed,
                "purged": purged, "lines": lines, "message": msg, "server": answer}

    def _ack_answer(self, response: Any, url: str) -> dict:
        """The JSON object sync_ack answered; {} for an empty answer (processed, the time unknown). Anything else
        (a portal's page, text) is no confirmation."""
        body = self.http.read(response, MAX_JSON)
        if not body.strip():
            return {}
        answer = parse_json(body)
        if not isinstance(answer, dict):
            raise self.http.fail(f"POST {url} did not answer JSON with the lastSyncTime (Content-Type "
                                 f"{response.headers.get('Content-Type') or 'none'}): {body[:300]!r}. Is url the "
                                 "license server's base URL?", url)
        if "lastSyncTime" not in answer and ("error" in answer or "key" in answer):  # an error, whatever the status
            key, text = error_text("application/json", body.decode("utf-8", "replace"))
            raise self.http.status_error("POST", url, response.status_code, key, text)
        return answer


def _disposition_name(header: str) -> Optional[str]:
    match = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', header or "", re.I)
    return os.path.basename(match.group(1).strip()) if match else None


def _stream_to_file(body: Iterator[bytes], expected: Optional[str], final_path: str, url: str,
                    replace: bool = False) -> dict:
    """Write a message body into final_path atomically; a short body leaves no file under the final name.
    An existing final_path is only overwritten with `replace`; a different message under the same name (two
    messages in one second, a server restored from backup) is kept beside it and reported as a LostResponseError."""
    try:
        writer = AtomicWriter(final_path)
    except OSError as exc:
        raise LostResponseError(f"Cannot write {final_path}: {exc.strerror or exc}. The answer of {url} was not "
                                "saved.", url=url) from None
    try:
        for chunk in body:
            writer.write(chunk)
        if header_int(expected) is not None and writer.size != header_int(expected):
            raise LostResponseError(f"The answer of POST {url} was truncated: {writer.size} of {expected} bytes; "
                                    "nothing was written.", url=url)
        try:
            return writer.commit(replace=replace)
        except FileExistsError:
            pass
        if sha256_file(final_path) == writer.sha256:
            return writer.info()  # the very same message is already there
        writer.final_path = conflict_path(final_path, writer.sha256)
        writer.commit()
        raise name_conflict(url, final_path, writer.final_path)
    except OSError as exc:
        raise LostResponseError(f"Cannot write {final_path}: {exc.strerror or exc}. The answer of {url} was not "
                                "saved.", url=url) from None
    finally:
        writer.abort()


def _not_an_ack(ctype: str, body: bytes) -> Optional[str]:
    """Why an answer is not an acknowledgment, or None. Its format is the vendor's and opaque here, but decoded it
    names its LastSyncTime: a textual answer (text/*, JSON, XML, HTML) that does not is someone else's page."""
    if not body:
        return "an empty body"
    head = body[:MAX_ERROR].decode("utf-8", "replace")
    if "html" in ctype or looks_like_html(head):
        return "an HTML page"
    textual = ctype.startswith("text/") or "json" in ctype or "xml" in ctype or (not ctype and _is_text(body))
    if textual and "lastsynctime" not in head.lower():
        return f"{ctype or 'untyped'} text that names no LastSyncTime"
    return None


def _is_text(body: bytes) -> bool:
    try:
        text = body[:MAX_ERROR].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c.isspace() for c in text)


class BackOffice:
    """The back office's deviceservices endpoint (`url` as the vendor tool takes it)."""

    def __init__(self, conn: Connection, warn: Callable[[str], None] = noop_warn):
        self.conn = conn
        self.url = conn.url.strip()
        self.warn = warn
        self.http = Http(conn, warn, "back office")

    def upload_file(self, file: str) -> bytes:
        """Send one message (the body streams from the file); return the acknowledgment bytes."""
        url = self.url
        try:
            size = os.path.getsize(file)
        except OSError as exc:
            raise FneError(f"Cannot read {file}: {exc.strerror or exc}") from None
        response = self.http.request("POST", url, body_path=file, repeatable=False,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(size)})
        try:
            status = response.status_code
            if status >= 400:
                key, text = self.http.error_text(response)
                if is_mismatch(key, text):
                    raise MismatchError(f"Upload of {file} to {url} failed: {text}", text,
                                        zone_of(self.conn.time_zone), url=url, status=status, key=key)
                if status < 500 and UNKNOWN_SERVER_RE.search(text):  # the server, not this file, is refused
                    raise UnknownServerError(
                        f"The back office at {url} refuses this license server: [{status}] {text.rstrip('.')}. "
                        "Register the license server (its host id) with the back office; its files wait until "
                        "then, and nothing is retried or set aside.", url=url, status=status, key=key)
                raise self.http.status_error("POST", url, status, key, text)
            self.http.raise_for_status("POST", url, response)
            body = self.http.read(response, MAX_ACK, "acknowledgment")
            expected_len = header_int(response.headers.get("Content-Length"))
            if expected_len is not None and len(body) != expected_len:
                raise LostResponseError(f"The acknowledgment from {url} was truncated ({len(body)} of "
                                        f"{expected_len} bytes).", url=url)
            problem = _not_an_ack(media_type(response), body)
            if problem:  # a proxy's or portal's page must never become an acknowledgment
                _key, text = error_text(media_type(response), body[:MAX_ERROR].decode("utf-8", "replace"))
                raise LostResponseError(f"POST {url} answered {status} with {problem} instead of an "
                                        f"acknowledgment: {text[:300]}", url=url, status=status)
            return body
        finally:
            response.close()

    def upload(self, src: str, dest: str = "syncack.bin") -> dict:
        return upload_files(self.upload_file, src, dest, self.url, self.warn)
