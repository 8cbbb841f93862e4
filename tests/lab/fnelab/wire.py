"""Lab wire formats: signed sync messages and acknowledgments, and the times they carry.

Only the lab reads these files (the collection moves them as opaque bytes). Both are
MAGIC + 4-byte big-endian length + JSON body + HMAC-SHA256(MAGIC + length + body).

A message with filler (`fnelab activity --bulk-bytes N`: a big file for the benchmarks) is framed so that it is
written and read in pieces, never whole in memory: BIG_MAGIC + 8-byte length L + [4-byte length J + JSON body (J
bytes, its header naming the Filler) + the filler (L - 4 - J bytes)] + HMAC-SHA256 of everything before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The "vendor key": shared by the servers and the back office, like the real products' signing keys.
LAB_KEY = b"fnelab-offline-sync-signing-key-v1"
MESSAGE_MAGIC = b"FNESYNC1"
BIG_MAGIC = b"FNESYNC2"
_BIG_HEAD = struct.Struct(">8sQI")  # BIG_MAGIC, L, J
CHUNK = 1 << 20
# The deterministic filler: one block repeated (the HMAC covers every byte, so a block suffices).
_FILLER = hashlib.sha256(b"fnelab filler").digest() * (CHUNK // 32)
SMALL_LIMIT = 256 << 20  # the most of a message a reader holds in memory (a small one whole, a big one's JSON)
ACK_MAGIC = b"FNEACK1\n"
EPOCH = 0  # a server that never synchronized: its "last sync time" is the Unix epoch
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class WireError(ValueError):
    """Not a lab message/acknowledgment, or its signature is wrong."""


# --- times (all UTC, whole seconds, carried as Unix seconds internally) ---------------------------------

def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def file_name(ts: int, offset: int = 0) -> str:
    """The documented sync file name: yyyyMMddTHHmmss.fnesync (UTC, or `offset` seconds from it)."""
    return datetime.fromtimestamp(ts + offset, UTC).strftime("%Y%m%dT%H%M%S") + ".fnesync"


def parse_file_name(name: str) -> int | None:
    stem = name.removesuffix(".fnesync")
    if stem == name:
        return None
    try:
        return int(datetime.strptime(stem, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


def vendor_time(ts: int, offset: int = 0) -> str:
    """The back office's display format, as in the documented mismatch text: 'Jan 24, 2019 11:04:09 AM', in UTC or
    `offset` seconds from it (no zone is shown).

    Built by hand so the host locale can never change it.
    """
    d = datetime.fromtimestamp(ts + offset, UTC)
    hour = d.hour % 12 or 12
    half = "AM" if d.hour < 12 else "PM"
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year} {hour}:{d.minute:02d}:{d.second:02d} {half}"


MISMATCH_TITLE = "Mismatched or out of order time stamp in sync message"


def mismatch_text(expected: int, got: int, offset: int = 0) -> str:
    return f"Expected sync time {vendor_time(expected, offset)}, got {vendor_time(got, offset)}"


# --- framing -------------------------------------------------------------------------------------------

def _seal(magic: bytes, body: bytes) -> bytes:
    head = magic + struct.pack(">I", len(body))
    return head + body + hmac.new(LAB_KEY, head + body, hashlib.sha256).digest()


def _open(magic: bytes, data: bytes, what: str) -> bytes:
    if not data.startswith(magic) or len(data) < len(magic) + 4 + 32:
        raise WireError(f"not a lab {what}")
    (size,) = struct.unpack(">I", data[len(magic):len(magic) + 4])
    end = len(magic) + 4 + size
    if len(data) != end + 32:
        raise WireError(f"{what} has the wrong length (truncated or padded)")
    if not hmac.compare_digest(hmac.new(LAB_KEY, data[:end], hashlib.sha256).digest(), data[end:]):
        raise WireError(f"{what} signature does not verify")
    return data[len(magic) + 4:end]


# --- sync message ----------------------------------------------------------------------------------------

@dataclass
class Message:
    host_id: str
    from_time: int          # sync time of the message handed out before (EPOCH for the first)
    sync_time: int          # generation time, also the file name
    forced: bool
    first_seq: int
    last_seq: int
    records: list[dict] = field(default_factory=list)
    filler: int = 0         # bytes of deterministic filler: a big message (BIG_MAGIC), streamed

    def _body(self) -> bytes:
        header = {"MessageType": "Server sync message", "HostId": self.host_id, "HostIdType": "Ethernet",
                  "FromTime": iso(self.from_time), "SyncTime": iso(self.sync_time), "Forced": self.forced,
                  "FirstSequence": self.first_seq, "LastSequence": self.last_seq, "RecordCount": len(self.records)}
        if self.filler:
            header["Filler"] = self.filler
        return json.dumps({"header": header, "records": self.records}, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        """The whole message (a big one too: only for tests; chunks() streams it)."""
        return _seal(MESSAGE_MAGIC, self._body()) if not self.filler else b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The encoded message in pieces of at most CHUNK bytes (plus the JSON), the HMAC computed on the way."""
        if not self.filler:
            yield self.encode()
            return
        body = self._body()
        head = _BIG_HEAD.pack(BIG_MAGIC, 4 + len(body) + self.filler, len(body)) + body
        mac = hmac.new(LAB_KEY, head, hashlib.sha256)
        yield head
        left = self.filler
        while left:
            piece = _FILLER[:min(left, CHUNK)]
            mac.update(piece)
            left -= len(piece)
            yield piece
        yield mac.digest()

    def size(self) -> int:
        """The encoded length in bytes."""
        if not self.filler:
            return len(self.encode())
        return _BIG_HEAD.size + len(self._body()) + self.filler + 32

    @classmethod
    def decode(cls, data: bytes) -> Message:
        reader = MessageReader()
        reader.feed(data)
        return reader.finish()

    @classmethod
    def _from_body(cls, body: bytes, filler: int = 0) -> Message:
        try:
            data = json.loads(body)
            h = data["header"]
            if int(h.get("Filler", 0)) != filler:
                raise WireError("sync message filler does not match its header")
            return cls(h["HostId"], parse_iso(h["FromTime"]), parse_iso(h["SyncTime"]), bool(h["Forced"]),
                       int(h["FirstSequence"]), int(h["LastSequence"]), list(data["records"]), filler)
        except WireError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError(f"malformed sync message: {exc}") from None

    def lines(self) -> list[str]:
        return ['MessageType="Server sync message"', f"HostId={self.host_id}", "HostIdType=Ethernet",
                f"FromTime={iso(self.from_time)}", f"SyncTime={iso(self.sync_time)}",
                f"Forced={str(self.forced).lower()}", f"FirstSequence={self.first_seq}",
                f"LastSequence={self.last_seq}", f"RecordCount={len(self.records)}"] + (
                    [f"Filler={self.filler}"] if self.filler else [])


class MessageReader:
    """A sync message fed in pieces (a request body, a file), checked as it comes: a small message is held (at
    most SMALL_LIMIT bytes) and decoded at the end; of a big one only the framing and JSON are held, the filler
    goes through the HMAC and is dropped. `sha256` and `size` are those of every byte fed."""

    def __init__(self) -> None:
        self.head = bytearray()     # a small message whole; a big one's framing and JSON
        self.mac: hmac.HMAC | None = None   # a big message's HMAC, from the end of its JSON on
        self.mac_at = 0             # a big message: the offset of its HMAC
        self.tag = bytearray()      # the HMAC as received
        self.size = 0
        self.sha256 = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        start = self.size
        self.sha256.update(data)
        self.size += len(data)
        if self.mac is not None:
            self._stream(data, start)
            return
        self.head += data
        if self.head.startswith(BIG_MAGIC) and len(self.head) >= _BIG_HEAD.size:
            _magic, length, json_length = _BIG_HEAD.unpack_from(self.head)
            if 4 + json_length > length:
                raise WireError("sync message has the wrong length (its JSON overruns it)")
            end = _BIG_HEAD.size + json_length
            if end > SMALL_LIMIT:
                raise WireError("sync message header is too large")
            if len(self.head) >= end:  # the JSON is in: the rest streams
                rest = bytes(self.head[end:])
                del self.head[end:]
                self.mac = hmac.new(LAB_KEY, self.head, hashlib.sha256)
                self.mac_at = len(BIG_MAGIC) + 8 + length
                self._stream(rest, end)
        elif len(self.head) > SMALL_LIMIT:
            raise WireError("sync message is too large")

    def _stream(self, data: bytes, start: int) -> None:
        """Bytes from offset `start` on: the signed part into the HMAC, the rest is the HMAC received."""
        assert self.mac is not None
        signed = max(0, min(len(data), self.mac_at - start))
        self.mac.update(data[:signed])
        self.tag += data[signed:]
        if len(self.tag) > 32:
            raise WireError("sync message has the wrong length (truncated or padded)")

    def finish(self) -> Message:
        if self.mac is None:
            if self.head.startswith(BIG_MAGIC):
                raise WireError("sync message has the wrong length (truncated or padded)")
            return Message._from_body(_open(MESSAGE_MAGIC, bytes(self.head), "sync message"))
        if len(self.tag) != 32:
            raise WireError("sync message has the wrong length (truncated or padded)")
        if not hmac.compare_digest(self.mac.digest(), bytes(self.tag)):
            raise WireError("sync message signature does not verify")
        _magic, length, json_length = _BIG_HEAD.unpack_from(self.head)
        return Message._from_body(bytes(self.head[_BIG_HEAD.size:]), length - 4 - json_length)


def record(host_id: str, seq: int, created: int) -> dict:
    """A device transaction record; deterministic from its key so the database stores only the key."""
    digest = hashlib.sha256(f"{host_id}:{seq}".encode()).hexdigest()
    return {"seq": seq, "id": f"{host_id}-{seq:08d}", "time": iso(created),
            "device": f"DEV-{digest[:10].upper()}", "feature": f"feature{int(digest[10:12], 16) % 8}",
            "count": 1 + int(digest[12:14], 16) % 4}


# --- acknowledgment -------------------------------------------------------------------------------------

@dataclass
class Ack:
    target_id: str
    last_sync_time: int
    message_time: int
    mismatch: tuple[int, int] | None = None  # the mismatch-at-process variant: (expected, got), not stored

    def lines(self) -> list[str]:
        # Exactly the documented fields, including the vendor's spelling "MessageTIme".
        lines = ['MessageType="Server sync acknowledgment"', f"MessageTIme={iso(self.message_time)}",
                 f"LastSyncTime={iso(self.last_sync_time)}", "SourceIDType=String", "SourceID=BACK_OFFICE",
                 "SourceIds=BACK_OFFICE", f"TargetID={self.target_id}", "TargetIDType=Ethernet"]
        if self.mismatch:
            lines += [f"MismatchExpected={iso(self.mismatch[0])}", f"MismatchGot={iso(self.mismatch[1])}"]
        return lines

    def encode(self) -> bytes:
        return _seal(ACK_MAGIC, "\n".join(self.lines()).encode())

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        text = _open(ACK_MAGIC, data, "sync acknowledgment").decode()
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        try:
            if fields.get("MessageType") != '"Server sync acknowledgment"':
                raise WireError("not a sync acknowledgment")
            mismatch = ((parse_iso(fields["MismatchExpected"]), parse_iso(fields["MismatchGot"]))
                        if "MismatchExpected" in fields else None)
            return cls(fields["TargetID"], parse_iso(fields["LastSyncTime"]), parse_iso(fields["MessageTIme"]),
                       mismatch)
        except (KeyError, ValueError) as exc:
            raise WireError(f"malformed sync acknowledgment: {exc}") from None


def decode_any(data: bytes) -> list[str]:
    """Key=Value lines of a message or an acknowledgment (for `fnelab decode`)."""
    if data.startswith((MESSAGE_MAGIC, BIG_MAGIC)):
        return Message.decode(data).lines()
    if data.startswith(ACK_MAGIC):
        return Ack.decode(data).lines()
    raise WireError("neither a lab sync message nor a lab acknowledgment")


def decode_file(path: str) -> list[str]:
    """decode_any of a file, read in pieces: a big message is never whole in memory."""
    with open(path, "rb") as handle:
        first = handle.read(CHUNK)
        if not first.startswith(BIG_MAGIC):
            return decode_any(first + handle.read())
        reader = MessageReader()
        while first:
            reader.feed(first)
            first = handle.read(CHUNK)
        return reader.finish().lines()
