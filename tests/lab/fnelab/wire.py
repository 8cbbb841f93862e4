"""Lab wire formats: signed sync messages and acknowledgments, and the times they carry.

Only the lab reads these files (the collection moves them as opaque bytes). Both are
MAGIC + 4-byte big-endian length + JSON body + HMAC-SHA256(MAGIC + length + body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The "vendor key": shared by the servers and the back office, like the real products' signing keys.
LAB_KEY = b"fnelab-offline-sync-signing-key-v1"
MESSAGE_MAGIC = b"FNESYNC1"
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


def vendor_time(ts: int) -> str:
    """The back office's display format, as in the documented mismatch text: 'Jan 24, 2019 11:04:09 AM'.

    Built by hand so the host locale can never change it.
    """
    d = datetime.fromtimestamp(ts, UTC)
    hour = d.hour % 12 or 12
    half = "AM" if d.hour < 12 else "PM"
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year} {hour}:{d.minute:02d}:{d.second:02d} {half}"


MISMATCH_TITLE = "Mismatched or out of order time stamp in sync message"


def mismatch_text(expected: int, got: int) -> str:
    return f"Expected sync time {vendor_time(expected)}, got {vendor_time(got)}"


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

    def encode(self) -> bytes:
        body = {"header": {"MessageType": "Server sync message", "HostId": self.host_id,
                           "HostIdType": "Ethernet", "FromTime": iso(self.from_time),
                           "SyncTime": iso(self.sync_time), "Forced": self.forced,
                           "FirstSequence": self.first_seq, "LastSequence": self.last_seq,
                           "RecordCount": len(self.records)},
                "records": self.records}
        return _seal(MESSAGE_MAGIC, json.dumps(body, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, data: bytes) -> Message:
        try:
            body = json.loads(_open(MESSAGE_MAGIC, data, "sync message"))
            h = body["header"]
            return cls(h["HostId"], parse_iso(h["FromTime"]), parse_iso(h["SyncTime"]), bool(h["Forced"]),
                       int(h["FirstSequence"]), int(h["LastSequence"]), list(body["records"]))
        except WireError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError(f"malformed sync message: {exc}") from None

    def lines(self) -> list[str]:
        return ['MessageType="Server sync message"', f"HostId={self.host_id}", "HostIdType=Ethernet",
                f"FromTime={iso(self.from_time)}", f"SyncTime={iso(self.sync_time)}",
                f"Forced={str(self.forced).lower()}", f"FirstSequence={self.first_seq}",
                f"LastSequence={self.last_seq}", f"RecordCount={len(self.records)}"]


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
    if data.startswith(MESSAGE_MAGIC):
        return Message.decode(data).lines()
    if data.startswith(ACK_MAGIC):
        return Ack.decode(data).lines()
    raise WireError("neither a lab sync message nor a lab acknowledgment")
