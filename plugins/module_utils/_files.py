# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sync-file names and ordering, sha256, atomic writes. Private to the collection."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterable, Optional

try:
    from zoneinfo import ZoneInfo  # Python 3.9+
except ImportError:  # an older Python on a managed host: fixed offsets only
    ZoneInfo = None

SYNC_SUFFIX = ".fnesync"
SYNC_NAME_RE = re.compile(r"^(\d{8}T\d{6})\.fnesync$")
STAMP_FORMAT = "%Y%m%dT%H%M%S"  # a sync file's name: its sync time (UTC unless time_zone says otherwise)
OFFSET_RE = re.compile(r"([+-])(\d\d):?(\d\d)")
FILE_MODE = 0o600
DIR_MODE = 0o700
CHUNK = 1024 * 1024


def zone_of(name: Optional[str]) -> tzinfo:
    """The time zone a time_zone setting names: UTC (also when unset), an offset (+02:00, -0500) or, where Python
    has zoneinfo, a zone name (Europe/Berlin). ValueError when it is none of these."""
    text = (name or "UTC").strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    match = OFFSET_RE.fullmatch(text)
    if match and int(match.group(2)) < 24 and int(match.group(3)) < 60:
        delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        return timezone(-delta if match.group(1) == "-" else delta)
    if ZoneInfo is not None and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", text):
        try:
            return ZoneInfo(text)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; a bad key a ValueError
            pass
    raise ValueError(f"time_zone {text!r} is not UTC, an offset such as +02:00 or -05:00, or a zone name such as "
                     "Europe/Berlin")


def sync_time_of(name: str, zone: Optional[tzinfo] = None) -> Optional[datetime]:
    """The sync time (in UTC) a `yyyyMMddTHHmmss.fnesync` name carries, read in `zone` (UTC by default), or None
    for any other name."""
    match = SYNC_NAME_RE.match(os.path.basename(name))
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=zone or timezone.utc) \
            .astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def stamp_name(when: datetime, zone: Optional[tzinfo] = None) -> str:
    """The sync file name for a time, written in `zone` (UTC by default)."""
    return when.astimezone(zone or timezone.utc).strftime(STAMP_FORMAT) + SYNC_SUFFIX


def parse_time(text: str, zone: Optional[tzinfo] = None) -> Optional[datetime]:
    """The times the protocol prints, in UTC: ISO 8601 (`2026-11-25T14:03:05Z`, an offset, or none: then in
    `zone`, UTC by default), file stamps (`20261125T140305`), and the back office's mismatch text (`Jan 24, 2019
    11:04:09 AM`, read in `zone` too). None when the text is none of these."""
    text = (text or "").strip().replace("\u202f", " ")
    if not text:
        return None
    parsed = None
    for fmt in (STAMP_FORMAT, "%b %d, %Y %I:%M:%S %p", "%b %d, %Y, %I:%M:%S %p", "%b %d, %Y %H:%M:%S"):
        with contextlib.suppress(ValueError):
            parsed = datetime.strptime(text, fmt)
            break
    if parsed is None:
        iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            return None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone or timezone.utc)
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # year 1 with a positive offset, say
        return None


def list_sync_files(folder: str) -> list[str]:
    """Paths of the sync files in folder, oldest first (the name is the sync time and the upload order)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [n for n in names if sync_time_of(n) is not None and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(found)]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_dir(path: str) -> None:
    """Create folder (and parents) with mode 0700 when missing; an existing folder keeps its mode."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        os.chmod(path, DIR_MODE)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicWriter:
    """Write a file under a temporary name in the target folder; `commit()` renames it into place.

    Whatever goes wrong before `commit()` (a short body, a full disk, an exception), `abort()` removes the
    temporary file, so no partial file ever sits under the final name.
    """

    def __init__(self, final_path: str, mode: int = FILE_MODE):
        self.final_path = os.path.abspath(final_path)
        self.folder = os.path.dirname(self.final_path)
        fd, self.tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(self.final_path)}.", suffix=".tmp",
                                             dir=self.folder)
        os.fchmod(fd, mode)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self, replace: bool = True) -> dict:
        """Move the file into place. `replace=False` never overwrites: FileExistsError when final_path exists,
        and the written data stays in the temporary file (commit again under another final_path, or abort)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if replace:
            os.replace(self.tmp_path, self.final_path)
        else:
            os.link(self.tmp_path, self.final_path)  # atomic, and fails instead of overwriting
            os.unlink(self.tmp_path)
        self._done = True
        fsync_dir(self.folder)
        return self.info()

    def info(self) -> dict:
        return {"path": self.final_path, "name": os.path.basename(self.final_path), "size": self.size,
                "sha256": self.sha256}

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_atomic(final_path: str, chunks: Iterable[bytes], mode: int = FILE_MODE) -> dict:
    """Write chunks to final_path atomically; returns {path, name, size, sha256}."""
    with AtomicWriter(final_path, mode) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()


def move_atomic(src: str, final_path: str) -> None:
    """Rename src (same file system) to final_path with mode 0600 and make the rename durable."""
    os.chmod(src, FILE_MODE)
    with open(src, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(src, final_path)
    fsync_dir(os.path.dirname(os.path.abspath(final_path)))
