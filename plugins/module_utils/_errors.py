# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client's errors, the back office's mismatch text, and scrubbing secrets out of messages. Private to the
collection."""

from __future__ import annotations

import json
import re
from datetime import tzinfo
from typing import Any, Iterable, Optional

from ansible_collections.fne.offline_sync.plugins.module_utils._files import parse_time

# The back office's documented out-of-order answer, and the two times it prints.
MISMATCH_KEY = "Mismatched or out of order time stamp in sync message"
MISMATCH_RE = re.compile(r"Expected sync time (?P<expected>.+?), got (?P<received>.+?)\s*$")
FORCE_HINT = ("The server may already have handed out the records in that answer and will not send them again by "
              "itself: run generate with force: true to download every record since the last acknowledged sync time.")
MASK = "********"


class FneError(Exception):
    """An error with a message fit for the user: names the URL and the cause, never a secret."""

    def __init__(self, msg: str, url: Optional[str] = None, status: Optional[int] = None,
                 key: Optional[str] = None, result: Optional[dict] = None):
        super().__init__(msg)
        self.msg = msg
        self.url = url
        self.status = status
        self.key = key
        self.result = result if result is not None else {}  # return values to report with the failure

    def amend(self, text: str) -> None:
        """Add a sentence to the message (str(exc) follows)."""
        self.msg = f"{self.msg} {text}"
        self.args = (self.msg,)


class SettingError(FneError):
    """A setting found wrong before any request; `options` name it (the fleet names their host variables)."""

    def __init__(self, msg: str, *options: str):
        super().__init__(msg)
        self.options = options


class MismatchError(FneError):
    """The back office's documented out-of-order answer: the two times of its text as printed, and the expected
    one read in ``zone`` (the back office's time zone; UTC by default), None when unreadable."""

    def __init__(self, msg: str, text: str, zone: Optional[tzinfo] = None, **kwargs: Any):
        super().__init__(msg, **kwargs)
        self.expected, self.received = mismatch_times(text)
        self.expected_time = parse_time(self.expected, zone)


class LostResponseError(FneError):
    """The request reached the server but its answer did not come back whole."""


class UnknownServerError(FneError):
    """The back office refuses the license server itself (not registered): no file of it is at fault."""


def mismatch_times(text: str) -> tuple[str, str]:
    """(expected, received) as the back office printed them in its mismatch text; empty when not found."""
    match = MISMATCH_RE.search(text.strip().rstrip('"}').rstrip())
    return (match.group("expected"), match.group("received")) if match else ("", "")


def is_mismatch(key: Optional[str], text: str) -> bool:
    """Whether an error answer is the documented mismatch, wherever it puts the text: a JSON key (the seed's
    shape), {key, message, arguments} or plain text, from the upload or from the processing of an acknowledgment."""
    return MISMATCH_KEY.lower() in f"{key or ''} {text}".lower() or MISMATCH_RE.search(text) is not None


# How a back office may say it does not know a license server (the lab plays one; the vendor documents none).
UNKNOWN_SERVER_RE = re.compile(r"not registered|unregistered|unknown (device|server|host|instance)|"
                               r"no such (device|server|host|instance)", re.I)


def noop_warn(msg: str) -> None:
    """The default `warn` callback: a caller that shows no warnings."""


BEARER_RE = re.compile(r"(Bearer\s+)[^\s\"',;]+", re.I)


def scrub(text: str, secrets: Iterable[Optional[str]]) -> str:
    """text without the given secrets, and without any bearer token a careless server echoed back."""
    text = BEARER_RE.sub(lambda match: match.group(1) + MASK, text)  # first: a secret may be part of "Bearer"
    for secret in secrets:
        if secret:  # as written, and as a JSON answer echoes it back ("pa\"ss", "w\u00f6rd")
            for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
                text = text.replace(form, MASK)
    return text
