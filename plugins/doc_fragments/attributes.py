# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared attribute docs: the action groups a module belongs to, and the in-process note."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
notes:
  - When the task runs on the controller (connection local, or delegated to localhost), the action plugin runs the
    client in the controller process instead of shipping the module; results are the same. Set the variable
    C(fne_offline_sync_in_process=false) to ship the module anyway.
"""

    # The license-server modules: generate, process, server_info.
    LLS = r"""
attributes:
  action_group:
    description:
      - Use C(group/fne.offline_sync.lls) in C(module_defaults) to set the license server's O(url), O(username),
        O(password) and TLS options once for M(fne.offline_sync.generate), M(fne.offline_sync.process) and
        M(fne.offline_sync.server_info).
      - C(group/fne.offline_sync.fne) holds all four modules; put there only options all of them take
        (O(validate_certs), O(timeout), O(retries), O(max_retry_wait), O(backend), O(tool_path)).
    support: full
    membership:
      - fne.offline_sync.fne
      - fne.offline_sync.lls
"""

    # The back-office module: upload.
    BACK_OFFICE = r"""
attributes:
  action_group:
    description:
      - Use C(group/fne.offline_sync.backoffice) in C(module_defaults) to set the back office's O(url) and TLS
        options.
      - C(group/fne.offline_sync.fne) holds all four modules; put there only options all of them take
        (O(validate_certs), O(timeout), O(retries), O(max_retry_wait), O(backend), O(tool_path)).
    support: full
    membership:
      - fne.offline_sync.fne
      - fne.offline_sync.backoffice
"""
