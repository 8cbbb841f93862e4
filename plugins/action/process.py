# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for fne.offline_sync.process: in the controller process when the task runs there, else the module."""

from __future__ import annotations

from ansible_collections.fne.offline_sync.plugins.plugin_utils._action import FneAction


class ActionModule(FneAction):
    MODULE = "process"
