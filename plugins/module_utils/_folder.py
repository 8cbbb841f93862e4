# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local sync-folder rules both backends follow: start a download (which files it may replace), name
conflicts, what an acknowledgment covers (the purge), which files an upload sends and where its acknowledgment
goes. The vendor's console lines are here too: both backends report with them. Private to the collection."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, tzinfo
from typing import Callable, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._errors import (
    FneError,
    LostResponseError,
    MismatchError,
    noop_warn,
)
from ansible_collections.fne.offline_sync.plugins.module_utils._files import (
    SYNC_SUFFIX,
    ensure_dir,
    fsync_dir,
    list_sync_files,
    sync_time_of,
    write_atomic,
)

GENERATE_SUCCESS = "Sync completed for {0} device records."
GENERATE_NOTHING = "No new data is available."
UPLOAD_SUCCESS = "Successfully sent sync data and received a sync acknowledgment."


def has_zone(value: str) -> bool:
    """Whether an ISO 8601 time names its zone (`Z` or an offset)."""
    text = value.strip()
    return text.endswith(("Z", "z")) or re.search(r"[+-]\d\d:?\d\d$", text.partition("T")[2]) is not None


def purge_covered(path: str, last_time: datetime, zone: Optional[tzinfo] = None,
                  warn: Callable[[str], None] = noop_warn) -> tuple[list[str], list[str]]:
    """Delete the sync files in path whose name time (read in `zone`) is at or before last_time; never a later one.
    An acknowledgment's time is the sync time of the last message it covers: when it names none of the files, the
    names are in another zone than `zone` (or were given by a clock), so nothing is purged."""
    path = os.path.abspath(os.path.expanduser(path))
    purged: list[str] = []
    lines: list[str] = []
    times = {file: sync_time_of(file, zone) for file in list_sync_files(path)}
    if any(when <= last_time for when in times.values() if when) and last_time not in times.values():
        warn(f"The acknowledgment's last sync time {last_time:%Y-%m-%dT%H:%M:%SZ} names none of the sync files in "
             f"{path}: their names are in another time zone (set time_zone) or were not given by the server, so "
             "none was purged.")
        return purged, lines
    for file, when in times.items():
        if when is not None and when <= last_time:
            try:
                os.unlink(file)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise FneError(f"Cannot purge {file}: {exc.strerror or exc}",
                               result={"purged": purged, "lines": lines}) from None
            purged.append(file)
            lines.append(f"Purging file {os.path.basename(file)}")
    if purged:
        fsync_dir(path)
    return purged, lines


def start_generate(path: str, force: bool) -> tuple[str, dict, set]:
    """The folder (created when missing), the result to fill, and the files a download may write over: only a
    forced download may, and only the files that were there before it (their records come again). Any other
    existing file is never overwritten, whatever name the server hands out."""
    path = os.path.abspath(os.path.expanduser(path))
    prepare_folder(path)
    before = list_sync_files(path)
    result: dict = {"changed": False, "records": 0, "files": [], "folder": path}
    if force:
        result["superseded"] = before
    return path, result, set(before) if force else set()


def take_replaced(result: dict, replaceable: set, path: str) -> None:
    """A forced message took an old file's name: that file is no longer superseded (playbooks may delete those)."""
    if path in replaceable:
        replaceable.discard(path)
        result["superseded"].remove(path)


def finish_generate(result: dict) -> dict:
    count = len(result["files"])
    result["message"] = GENERATE_SUCCESS.format(result["records"]) if count else GENERATE_NOTHING
    return result


def prepare_folder(path: str) -> None:
    try:
        ensure_dir(path)
    except OSError as exc:
        raise FneError(f"Cannot create the folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FneError(f"Cannot write to the folder {path}: permission denied.")


def conflict_path(final_path: str, sha256: str) -> str:
    return f"{final_path}.{sha256[:12]}.conflict"


def name_conflict(url: str, final_path: str, kept: str) -> LostResponseError:
    return LostResponseError(f"{url} handed out {os.path.basename(final_path)}, but {final_path} already holds a "
                             f"different message; nothing was overwritten and the new one was saved as {kept} (not "
                             "a sync file name: it is never uploaded).", url=url)


def unsent_files(src: str) -> list[str]:
    """Files of a src folder that look like sync messages but that upload never sends (their names carry no sync
    time: a copy renamed by hand, a `.conflict` kept by generate, a vendor tool's `.unrecognized` file): records
    that would otherwise wait unnoticed."""
    src = os.path.abspath(os.path.expanduser(src))
    if not os.path.isdir(src):
        return []
    return sorted(name for name in os.listdir(src)
                  if (SYNC_SUFFIX in name.lower() or name.endswith(".unrecognized")) and sync_time_of(name) is None
                  and not name.startswith(".")  # an interrupted download's temporary file: never complete
                  and os.path.isfile(os.path.join(src, name)))


def resolve_upload(src: str, dest: str) -> tuple[list[str], str]:
    """The files to send, oldest first, and the acknowledgment path (relative dest: in src's folder)."""
    src = os.path.abspath(os.path.expanduser(src))
    if os.path.isdir(src):
        files, folder = list_sync_files(src), src
    elif os.path.isfile(src):
        files, folder = [src], os.path.dirname(src)
    else:
        raise FneError(f"src {src} does not exist.")
    dest = os.path.expanduser(dest or "syncack.bin")
    if not os.path.isabs(dest):
        dest = os.path.join(folder, dest)
    return files, dest


def save_ack_elsewhere(file: str, ack: bytes) -> Optional[str]:
    """Write an acknowledgment that could not go to dest next to its sync file, else in the temporary folder."""
    stem = os.path.basename(file).rsplit(".", 1)[0]
    for folder in (os.path.dirname(os.path.abspath(file)), tempfile.gettempdir()):
        target = os.path.join(folder, f"{stem}.syncack.bin")
        try:
            write_atomic(target, [ack])
            return target
        except OSError:
            continue
    return None


def _check_dest(dest: str) -> None:
    """Before anything is sent: the acknowledgment must have somewhere to go."""
    folder = os.path.dirname(dest)
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if os.path.isdir(dest):
        raise FneError(f"dest {dest} is a folder: name the acknowledgment file. Nothing was sent.")
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise FneError(f"The acknowledgment cannot be written to {dest} ({probe} is not a writable folder). "
                       "Nothing was sent.")


def upload_files(send: Callable[[str], bytes], src: str, dest: str, url: str,
                 warn: Callable[[str], None] = noop_warn) -> dict:
    """Upload each file oldest first; after each accepted file the acknowledgment is written to dest, so on any
    failure dest holds the acknowledgment for everything accepted so far."""
    files, dest = resolve_upload(src, dest)
    _check_dest(dest)
    skipped = unsent_files(src)
    if skipped:
        warn(f"Not sent, their names are not yyyyMMddTHHmmss.fnesync (generate with force: true downloads the "
             f"records not yet acknowledged again): {', '.join(skipped)}")
    accepted: list[str] = []
    result: dict = {"changed": False, "ack": None, "accepted": accepted, "files": files}
    if not files:
        result["message"] = f"No sync files to send in {src}."
        return result
    for file in files:
        try:
            ack = send(file)
        except FneError as exc:
            result["mismatch"] = isinstance(exc, MismatchError)
            if isinstance(exc, MismatchError):
                result["expected"] = exc.expected
                result["received"] = exc.received
                result["expected_time"] = exc.expected_time and exc.expected_time.strftime("%Y-%m-%dT%H:%M:%SZ")
                exc.amend(f"The acknowledgment for the {len(accepted)} file(s) accepted before it is in {dest}: "
                          "process it, then download again with force: true, upload and process."
                          if accepted else "No file was accepted in this run.")
            exc.result = dict(result)
            raise
        accepted.append(file)
        result["changed"] = True
        try:
            ensure_dir(os.path.dirname(dest))
            write_atomic(dest, [ack])
        except OSError as exc:
            # The back office holds the message now; its acknowledgment must not vanish with this error.
            kept = save_ack_elsewhere(file, ack)
            result["ack"] = kept
            where = f"it was saved as {kept}: process that file" if kept else "it could not be saved anywhere"
            raise FneError(f"The back office accepted {file} but its acknowledgment could not be written to {dest} "
                           f"({exc.strerror or exc}); {where}.", url=url, result=dict(result)) from None
        result["ack"] = dest
    result["message"] = UPLOAD_SUCCESS
    return result
