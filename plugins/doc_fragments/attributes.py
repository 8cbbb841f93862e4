# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared attribute docs."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  action_group:
    description:
      - Use C(group/fne.offline_sync.fne) in C(module_defaults) to set defaults for this module.
      - The group holds all four modules, so put there only the options all of them take (O(validate_certs),
        O(timeout), O(retries), O(max_retry_wait), O(backend), O(tool_path)). O(url) names a license server for three
        of them and the back office for M(fne.offline_sync.upload), which has no O(username) or O(password) (an
        unsupported option fails the task). Set those per module (a C(module_defaults) entry per module name) or with
        the E(FNE_LLS_URL), E(FNE_LLS_USERNAME), E(FNE_LLS_PASSWORD) and E(FNE_BACKOFFICE_URL) environment variables.
    support: full
    membership:
      - fne.offline_sync.fne
notes:
  - When the task runs on the controller (connection local, or delegated to localhost), the action plugin runs the
    client in the controller process instead of shipping the module; results are the same. Set the variable
    C(fne_offline_sync_in_process=false) to ship the module anyway.
"""
