#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation stub: the fne.offline_sync.result action plugin does the work on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: result
short_description: Turn this host's entry of a fleet result into ok, changed or failed
version_added: 0.1.0
description:
  - Reads the registered result of a C(fne.offline_sync.fleet) task (a run_once task, so every host has it) and
    reports this host's entry as the task's own outcome, with its message. Talks to no host.
  - Template-free on purpose (it names the variable instead of templating it), so it stays the cheapest possible
    per-host task on fleets of thousands of hosts.
  - Run once (C(run_once), templated or not), it judges the whole fleet instead, in one result on the play's
    first host, failed when any entry failed, naming the first 20 failed entries with their messages. This is the
    fleet-summary mode of the cycle role (C(fne_sync_host_results=false)), for fleets where a per-host task
    costs too much.
author:
  - fne.offline_sync developers (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  var:
    description: Name of the registered variable holding the fleet result (its C(hosts) mapping is read).
    type: str
    default: __fne_report
  default_msg:
    description: Message when the result has no entry for this host.
    type: str
attributes:
  check_mode:
    support: full
    details: Changes nothing in any mode.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller only.
"""

EXAMPLES = r"""
- name: Upload the files waiting in the store for every server of the play
  fne.offline_sync.fleet:
    step: upload
    store: /var/lib/fne_sync
  run_once: true
  delegate_to: localhost
  register: __fne_upload

- name: Report each server's result on its own host
  fne.offline_sync.result:
    var: __fne_upload

- name: Or one result for the whole fleet (any failed server fails it)
  fne.offline_sync.result:
    var: __fne_upload
  run_once: true
"""

RETURN = r"""
msg:
  description: This host's message from the fleet result.
  returned: always
  type: str
"""
