# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loads fne.offline_sync.summary for the collection's own playbooks (a callback beside a playbook needs no
ansible.cfg): the fleet summary is printed after the play recap."""

from __future__ import annotations

from ansible_collections.fne.offline_sync.plugins.callback.summary import CallbackModule as _Summary

DOCUMENTATION = r"""
name: fne_sync_summary
type: notification
short_description: fne.offline_sync.summary, loaded without configuration for the collection's playbooks
description: [The same plugin as fne.offline_sync.summary; see its documentation.]
"""


class CallbackModule(_Summary):
    CALLBACK_NAME = "fne_sync_summary"
    CALLBACK_NEEDS_ENABLED = False
