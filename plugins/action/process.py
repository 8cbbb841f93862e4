# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for fne.offline_sync.process: in the controller process when the task runs there, else the module
(with the acknowledgment sent along when it is on the control node: remote_src=false)."""

from __future__ import annotations

import typing as t

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.fne.offline_sync.plugins.plugin_utils._action import FneAction


class ActionModule(FneAction):
    MODULE = "process"

    def shipped_args(self) -> dict[str, t.Any]:
        args = super().shipped_args()
        if boolean(args.get("remote_src", True), strict=False):
            return args
        # One connection for both: the file goes into the module's temporary folder (removed with it), instead of
        # a copy task and then this one.
        local = self._find_needle("files", args["src"])
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, "acknowledgment")
        self._transfer_file(local, remote)
        self._fixup_perms2((tmpdir, remote))
        return dict(args, src=remote, remote_src=True)
