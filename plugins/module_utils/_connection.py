# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection settings, in one table: each module option with the inventory variable the fleet reads it from and
its environment fallback (``url`` <-> ``fne_lls_url`` <-> ``FNE_LLS_URL``). The modules' argument specs and the
fleet's per-host specs are both built from it; the doc fragments and the role argument spec are held to it by
tests. Also the base-URL rules and the API paths. Private to the collection."""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Optional
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import SettingError
from ansible_collections.fne.offline_sync.plugins.module_utils._files import zone_of

DEFAULT_LLS_URL = "http://localhost:7070"
API = "/api/1.0"
HEALTH = API + "/health"
AUTHORIZE = API + "/instances/~/authorize"
SYNC_MESSAGE = API + "/sync_message/offline"
SYNC_ACK = API + "/sync_ack/offline"
HOSTIDS = API + "/hostids"
MAX_PAGES = 10000
FORCE_QUERY = "force=true"  # our guess; compat_check shows what the vendor's tool sends
FORCE_QUERY_RE = re.compile(r"[\w.~-]+(=[\w.~%-]*)?(&[\w.~-]+(=[\w.~%-]*)?)*", re.ASCII)


class Setting(NamedTuple):
    option: str                # the module option
    spec: dict                 # its argument spec entry, without the environment fallback
    host_var: str              # the inventory variable the fleet reads it from
    env: Optional[str] = None  # the environment fallback, for modules and fleet alike


# The license server (generate, process, server_info).
LLS_SETTINGS = (
    Setting("url", {"type": "str", "default": DEFAULT_LLS_URL}, "fne_lls_url", "FNE_LLS_URL"),
    Setting("username", {"type": "str"}, "fne_lls_username", "FNE_LLS_USERNAME"),
    Setting("password", {"type": "str", "no_log": True}, "fne_lls_password", "FNE_LLS_PASSWORD"),
    Setting("ca_path", {"type": "path"}, "fne_lls_ca_path", "FNE_LLS_CA_PATH"),
    Setting("validate_certs", {"type": "bool", "default": True}, "fne_lls_validate_certs"),
    Setting("tool_server_command", {"type": "str"}, "fne_sync_tool_server_command", "FNE_TOOL_SERVER_COMMAND"),
    # The compatibility profile (docs/compatibility.md): what cannot be detected from the answers.
    Setting("time_zone", {"type": "str"}, "fne_lls_time_zone"),
    Setting("max_pages", {"type": "int", "default": MAX_PAGES}, "fne_lls_max_pages"),
    Setting("force_query", {"type": "str", "default": FORCE_QUERY}, "fne_lls_force_query"),
    Setting("proxy", {"type": "str"}, "fne_lls_proxy", "FNE_LLS_PROXY"),
)
# The back office (upload).
BACKOFFICE_SETTINGS = (
    Setting("url", {"type": "str", "required": True}, "fne_backoffice_url", "FNE_BACKOFFICE_URL"),
    Setting("ca_path", {"type": "path"}, "fne_backoffice_ca_path", "FNE_BACKOFFICE_CA_PATH"),
    Setting("validate_certs", {"type": "bool", "default": True}, "fne_backoffice_validate_certs"),
    Setting("tool_backoffice_command", {"type": "str"}, "fne_sync_tool_backoffice_command",
            "FNE_TOOL_BACKOFFICE_COMMAND"),
    # The compatibility profile: the zone of the back office's times (its mismatch text, the acknowledgment).
    Setting("time_zone", {"type": "str"}, "fne_backoffice_time_zone"),
    # The back office alone through a proxy: HTTPS_PROXY would take the HTTPS license servers there too.
    Setting("proxy", {"type": "str"}, "fne_backoffice_proxy", "FNE_BACKOFFICE_PROXY"),
)
# How requests are made, for either side.
TRANSPORT_SETTINGS = (
    Setting("timeout", {"type": "float", "default": 30}, "fne_sync_timeout"),
    Setting("retries", {"type": "int", "default": 3}, "fne_sync_retries"),
    Setting("max_retry_wait", {"type": "float", "default": 60}, "fne_sync_max_retry_wait"),
    Setting("backend", {"type": "str", "default": "http", "choices": ["http", "tool"]}, "fne_sync_backend"),
    Setting("tool_path", {"type": "path"}, "fne_sync_tool_path", "FNE_TOOL_PATH"),
)
SIDES = {"lls": LLS_SETTINGS + TRANSPORT_SETTINGS, "backoffice": BACKOFFICE_SETTINGS + TRANSPORT_SETTINGS}


def _entry(setting: Setting) -> dict:
    entry = copy.deepcopy(setting.spec)
    if setting.env:
        entry["fallback"] = (env_fallback, [setting.env])
    return entry


def module_spec(side: str) -> dict:
    """The connection options of a module that talks to `side` ("lls" or "backoffice")."""
    return {s.option: _entry(s) for s in SIDES[side]}


def host_spec(side: str) -> dict:
    """The same settings keyed by inventory variable, for the fleet: an error names the variable the user set.
    The URL has neither a default nor `required` there (a fleet never means localhost, and a step that does not
    talk to that side does not need it): the step that needs it says so."""
    spec = {}
    for setting in SIDES[side]:
        entry = _entry(setting)
        if setting.option == "url":
            entry.pop("default", None)
            entry.pop("required", None)
        spec[setting.host_var] = entry
    return spec


def params_from_host(side: str, validated: dict) -> dict:
    """Module-style params (option -> value) from the validated host variables of `side`."""
    return {s.option: validated.get(s.host_var) for s in SIDES[side]}


@dataclass
class Connection:
    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    validate_certs: bool = True
    ca_path: Optional[str] = None
    timeout: float = 30
    retries: int = 3
    max_retry_wait: float = 60
    time_zone: Optional[str] = None  # of this side's times: the license server's file names and lastSyncTime, or
    #                                  the back office's mismatch text and acknowledgment times
    max_pages: int = MAX_PAGES       # sync messages one generate call downloads at most
    force_query: str = FORCE_QUERY   # how a forced download is asked (the vendor's tool shows it: compat_check)
    proxy: Optional[str] = None  # unset: the environment's HTTP(S)_PROXY / NO_PROXY, as requests reads them

    def secrets(self) -> list[str]:
        return [s for s in (self.password,) if s]


def connection_from_params(params: dict) -> Connection:
    """A Connection from module-style params (a module's, or params_from_host's)."""
    return Connection(
        url=params["url"],
        username=params.get("username") or None,
        password=params.get("password") or None,
        validate_certs=params["validate_certs"],
        ca_path=params.get("ca_path") or None,
        timeout=params["timeout"],
        retries=params["retries"],
        max_retry_wait=params["max_retry_wait"],
        time_zone=params.get("time_zone") or None,
        max_pages=MAX_PAGES if params.get("max_pages") is None else params["max_pages"],
        force_query=params.get("force_query") or FORCE_QUERY,
        proxy=params.get("proxy") or None,
    )


def lls_base_url(url: str) -> str:
    """The license server's base URL; a full documented endpoint URL is reduced to it (the API path is looked for
    in the path only: a host may be called `api`)."""
    url = (url or DEFAULT_LLS_URL).strip()
    url = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    path = slash + path
    index = path.find(API + "/")
    if index < 0 and path.endswith(API):
        index = len(path) - len(API)
    if index >= 0:
        path = path[:index]
    return scheme + sep + authority + path if sep else url


def check_url(url: str, what: str) -> str:
    """An http(s) URL with a host and without credentials, else SettingError (before any request is made). A URL with
    an '@' is never shown: a password with '#', '/' or '?' in it hides from a URL parser."""
    url = (url or "").strip()
    if "@" in url:
        raise SettingError(f"The {what} URL carries credentials (user:password@) or an '@': set username and "
                           "password instead; credentials in a URL end up in logs.", "url")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise SettingError(f"The {what} URL {url!r} holds a space, a control or an invisible character.", "url")
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError:
        parsed, port = None, -1
    if parsed is not None and parsed.scheme not in ("http", "https"):
        raise SettingError(f"The {what} URL {url!r} must start with http:// or https://.", "url")
    if parsed is None or not parsed.hostname or port == -1:
        raise SettingError(f"The {what} URL {url!r} has no valid host and port.", "url")
    return url


def check_connection(conn: Connection, what: str) -> None:
    """The settings of one side before any request: SettingError naming what to fix."""
    check_url(conn.url, what)
    if conn.proxy:
        check_url(conn.proxy, f"{what} proxy")
    check_numbers(conn)
    if conn.validate_certs and conn.ca_path and not os.path.isfile(conn.ca_path):
        raise SettingError(f"ca_path {conn.ca_path} is not a file: set it to the PEM file of the {what}'s CA.",
                           "ca_path")
    if conn.username and not conn.password:
        raise SettingError("username is set without a password: set both (administrative security), or neither.",
                           "username", "password")
    try:
        zone_of(conn.time_zone)
    except ValueError as exc:
        raise SettingError(f"{exc}.", "time_zone") from None
    if not FORCE_QUERY_RE.fullmatch(conn.force_query):
        raise SettingError(f"force_query {conn.force_query!r} is not a query string such as force=true.",
                           "force_query")


def check_numbers(conn: Connection) -> None:
    """timeout, retries, max_retry_wait and max_pages within sense, else SettingError (before any request is made)."""
    for name, value, low, high in (("timeout", conn.timeout, 0.001, 86400.0),
                                   ("max_retry_wait", conn.max_retry_wait, 0.0, 86400.0),
                                   ("retries", conn.retries, 0, 100), ("max_pages", conn.max_pages, 1, 1000000)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            low_text = "above 0" if name == "timeout" else f"at least {low}"
            raise SettingError(f"{name} must be {low_text} and at most {high:g}, not {value!r}.", name)
