#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation stub: the fne.offline_sync.compat_check action plugin does the work on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compat_check
short_description: Learn whether the http backend reads what this site's license server and back office answer
version_added: 0.2.0
description:
  - For one license server (this host), runs the vendor's own tools (the tool backend) for a whole sync cycle -
    collect, upload, acknowledge - through recording proxies on the controller that forward to the real license
    server and back office. This is a real synchronization, with a store of its own under O(out), as safe as the
    fleet's.
  - Then replays the recorded answers to the collection's HTTP client (the http backend) in a scratch store, and
    says per step V(compatible) or what this site needs - a profile setting (C(fne_lls_force_query),
    C(fne_lls_time_zone), C(fne_backoffice_time_zone)), C(fne_sync_backend=tool), or registering the server at the
    back office. See docs/compatibility.md.
  - Writes a transcript a site can share when it reports a problem - methods, paths, query names, status, content
    types, header names, body sizes and sha256; never a body, a header value, a password or a token - and the
    needed settings as inventory YAML.
  - Settings come from this host's variables, as for the fleet (C(fne_lls_*), C(fne_backoffice_*),
    C(fne_sync_tool_path), C(fne_sync_timeout), ...); C(fne_sync_backend) is ignored (the check runs both).
author:
  - fne.offline_sync developers (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  out:
    description: Folder for the check's runs, one C(HOST-yyyyMMddTHHmmss) folder each (its store, C(transcript.json)
      and C(settings.yml)).
    type: path
    required: true
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller only; delegate it to C(localhost).
"""

EXAMPLES = r"""
- name: Check how this license server and the back office answer (run for one server, with --limit)
  fne.offline_sync.compat_check:
    out: /var/lib/fne_sync/compat
  delegate_to: localhost
  register: compat

- name: Show each step's verdict and the settings to add to the inventory
  ansible.builtin.debug:
    msg: "{{ compat.steps.values() | list + [compat.inventory or 'No setting needed'] }}"
"""

RETURN = r"""
compatible:
  description: Whether the http backend read every answer as the vendor's tool did, with the settings this host has.
  returned: always
  type: bool
steps:
  description: Per step (collect, upload, acknowledge), its verdict in words.
  returned: always
  type: dict
  sample: {"collect": "collect: compatible", "upload": "upload: compatible",
           "acknowledge": "acknowledge: NEEDS: the file names are in UTC-05:00: ..."}
settings:
  description: The inventory variables this server needs, by name.
  returned: always
  type: dict
  sample: {"fne_lls_time_zone": "-05:00"}
inventory:
  description: The same as inventory YAML for this host, empty when nothing is needed.
  returned: always
  type: str
transcript:
  description: Path of the transcript (JSON) of every exchange, without bodies or secrets.
  returned: always
  type: str
store:
  description: The store the check's cycle used (its ledger shows what was synchronized).
  returned: always
  type: str
"""
