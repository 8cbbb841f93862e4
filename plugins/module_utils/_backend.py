# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The interface both backends implement (http: _client.py, tool: _tool.py) and the one place that picks one.
The modules and the fleet talk to these protocols only. Private to the collection."""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from ansible_collections.fne.offline_sync.plugins.module_utils._client import BackOffice, LicenseServer
from ansible_collections.fne.offline_sync.plugins.module_utils._connection import connection_from_params
from ansible_collections.fne.offline_sync.plugins.module_utils._tool import (
    RunCommand,
    ToolBackOffice,
    ToolLicenseServer,
)


class LicenseServerBackend(Protocol):
    base: str  # the license server's base URL

    def generate(self, path: str, force: bool = False) -> dict:
        """Download every pending sync message into path (docs/design.md: return values, no-overwrite rule)."""

    def process(self, ack_file: str, path: Optional[str] = None) -> dict:
        """Hand an acknowledgment to the server; purge from path the sync files it covers."""


class BackOfficeBackend(Protocol):
    url: str  # the deviceservices URL

    def upload_file(self, file: str) -> bytes:
        """Send one sync message; return its acknowledgment."""

    def upload(self, src: str, dest: str = "syncack.bin") -> dict:
        """Send a file or a folder's sync files oldest first; the acknowledgment goes to dest."""


def license_server(params: dict, warn: Callable[[str], None], run_command: RunCommand) -> LicenseServerBackend:
    """The backend `params["backend"]` names, for the license server in module-style params."""
    conn = connection_from_params(params)
    if params["backend"] == "tool":
        return ToolLicenseServer(conn, params.get("tool_path"), warn, run_command, params.get("tool_server_command"))
    return LicenseServer(conn, warn)


def back_office(params: dict, warn: Callable[[str], None], run_command: RunCommand) -> BackOfficeBackend:
    """The backend `params["backend"]` names, for the back office in module-style params."""
    conn = connection_from_params(params)
    if params["backend"] == "tool":
        return ToolBackOffice(conn, params.get("tool_path"), warn, run_command, params.get("tool_backoffice_command"))
    return BackOffice(conn, warn)
