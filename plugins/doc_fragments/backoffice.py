# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared option docs: the back office connection."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - The back office's device services URL as the vendor tool takes it,
        for example C(https://SITEID.compliance.flexnetoperations.com/deviceservices).
      - If not set, the value of the E(FNE_BACKOFFICE_URL) environment variable is used.
    type: str
    required: true
  ca_path:
    description:
      - PEM file of the CA that signed the back office's HTTPS certificate, for a private CA or a TLS-inspecting
        proxy.
      - If not set, the value of the E(FNE_BACKOFFICE_CA_PATH) environment variable is used.
    type: path
  tool_backoffice_command:
    description:
      - With O(backend=tool), the exact command that runs the vendor's back-office tool (split as a shell would,
        without a shell), for example V(/opt/fnetools/backofficeofflinesynctool) or a wrapper of the site's own;
        the module adds the documented arguments. Overrides the lookup in O(tool_path).
      - If not set, the value of the E(FNE_TOOL_BACKOFFICE_COMMAND) environment variable is used.
    type: str
  time_zone:
    description:
      - The time zone of the back office's times - the sync times in its mismatch text and, with O(backend=tool),
        the acknowledgment's C(LastSyncTime) its tool prints; V(UTC) when unset. An offset (V(+05:30)) or, where
        Python has C(zoneinfo), a zone name (V(Asia/Kolkata)).
      - The vendor prints these times without a zone. The C(fne.offline_sync.compat_check) playbook names this
        setting when the back office's times are not in UTC. The fleet's re-upload rule compares the expected
        time with a file's own time, so a wrong zone can take a missing message for an accepted one. See
        docs/compatibility.md.
    type: str
  proxy:
    description:
      - The proxy for the back office alone, C(http://HOST:PORT) (HTTPS goes through it with C(CONNECT)); it is
        named in connection errors. The license servers keep their own setting.
      - Set, it wins over the E(HTTPS_PROXY), E(HTTP_PROXY) and E(NO_PROXY) environment variables for the back
        office; not set, those apply (to both sides alike). Credentials in the URL are refused (they end up in
        logs). O(backend=tool) does not use it.
      - If not set, the value of the E(FNE_BACKOFFICE_PROXY) environment variable is used.
    type: str
"""
