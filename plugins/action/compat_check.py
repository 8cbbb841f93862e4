# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compatibility check for one server (plugin_utils/_compat.py); documented in plugins/modules/compat_check.py."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.plugins.action import ActionBase
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _compat as compat
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _fleet as fleet
from ansible_collections.fne.offline_sync.plugins.plugin_utils import _recorder
from ansible_collections.fne.offline_sync.plugins.plugin_utils._store import StoreError


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = False

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec={"out": {"type": "path", "required": True}})
        if _recorder.requests is None:
            return dict(result, failed=True, msg="compat_check needs the Python library requests on the controller")
        host = task_vars["inventory_hostname"]
        # this host's settings as the task sees them (inventory, play and extra variables), templated
        settings = {var: self._templar.template(task_vars[var]) for var in fleet.HOST_SPEC if var in task_vars}
        try:
            cfg = fleet.server_config(host, settings)
        except StoreError as exc:
            return dict(result, failed=True, msg=f"{host}: {exc.msg}")
        result.update(compat.check(cfg, args["out"]), changed=True)
        result["msg"] = "; ".join(result["steps"].values())
        return result
