"""The lab's variants: plausible shapes of the real products where the vendor documents nothing.

The vendor documents the tools, not the HTTP exchange behind them, so the lab's default answers are one guess among
several. A variant makes the lab answer another plausible way; the collection must survive every one of them.
Each variant names the inventory settings a user of such a site would have to write (none where the collection is
meant to detect the shape by itself); `fnelab up --variant NAME` writes exactly those into the lab's inventory.
The lab code asks `variant in lab.variants` where the answer differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str  # one line for `fnelab variants`
    settings: dict = field(default_factory=dict)  # license_servers group variables a user would have to set


# How a forced download is asked is the one thing of the HTTP exchange that no answer shows: only the vendor's tool
# (with -force) does, and fne.offline_sync.compat_check reads it there.
FORCE_QUERY = "forceResync=true"

# A license server whose file names are in its local time (a fixed offset here, so that the lab stays
# deterministic): names behind UTC are the dangerous direction (read as UTC, they look older than they are).
LOCAL_OFFSET = "-05:00"

# A back office that shows its times (the mismatch text, the acknowledgment fields its tool prints) in its own zone:
# ahead of UTC is the dangerous direction (read as UTC, an expected time looks later than it is, and the re-upload
# rule would take a message the back office refused for one it already holds).
BACKOFFICE_OFFSET = "+05:30"


def offset_seconds(offset: str) -> int:
    """An offset such as -05:00 in seconds."""
    hours, minutes = offset[1:].split(":")
    return (-1 if offset.startswith("-") else 1) * (int(hours) * 3600 + int(minutes) * 60)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    # The vendor's tools: their exit codes are unknown, and a 2022.09 Linux install names them without `.sh`.
    # The collection must judge by the documented console lines and find either name: nothing to configure.
    Variant("exit-zero-tools", "the vendor tools exit 0 after printing an error (as Java tools often do)"),
    Variant("tools-without-sh", "the vendor tools are installed as serverofflinesynctool, without .sh"),
    Variant("health-wrapped", "GET /api/1.0/health wraps its answer in \"LLS\" (security: \"enabled\"), host ids at "
            "GET /api/1.0/hostids, as a public LLS 2021.05 sample shows"),
    Variant("error-objects", "every error answer is {key, message, arguments}, the mismatch too (its text in message)"),
    Variant("no-disposition", "a sync message comes without Content-Disposition and without a record-count header"),
    Variant("empty-200", "\"nothing new\" is an empty 200 (not 204); sync_ack answers an empty 200 (no lastSyncTime)"),
    Variant("mismatch-at-process", "the back office acknowledges an out-of-order message without storing it; the "
            "license server reports the mismatch when it processes that acknowledgment"),
    Variant("local-time-names", f"sync file names carry the license server's local time (UTC{LOCAL_OFFSET})",
            {"fne_lls_time_zone": LOCAL_OFFSET}),
    Variant("backoffice-local-times", f"the back office shows its times in its own zone (UTC{BACKOFFICE_OFFSET}): the "
            "mismatch text, and the acknowledgment's LastSyncTime its tool prints",
            {"fne_backoffice_time_zone": BACKOFFICE_OFFSET}),
    Variant("other-force-query", f"a forced download is asked with ?{FORCE_QUERY} (?force=true is ignored: the "
            "server hands out only what is new)", {"fne_lls_force_query": FORCE_QUERY}),
    Variant("unregistered-device", "the back office refuses lls001 (400, \"not registered\") until "
            "`fnelab config --register lls001`"),
)}


class VariantError(ValueError):
    pass


def check(names: list[str]) -> list[str]:
    """The variant names, checked, in a stable order without repeats."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        known = ", ".join(VARIANTS) or "none"
        raise VariantError(f"unknown variant {', '.join(unknown)} (known: {known}; `fnelab variants` lists them)")
    return sorted(set(names))


def settings(names: list[str]) -> dict:
    """The inventory settings the given variants need, merged."""
    merged: dict = {}
    for name in names:
        merged.update(VARIANTS[name].settings)
    return merged
