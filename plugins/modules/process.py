#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: process
short_description: Process a back office acknowledgment on a FlexNet Embedded license server
version_added: 0.1.0
description:
  - Step 3 of the offline synchronization cycle, as
    C(serverofflinesynctool.sh -url http://HOST:7070/api/1.0/sync_ack/offline -process FILE PATH).
  - Sends the acknowledgment O(src) to the license server, which updates its last synchronization time, then
    deletes from O(path) exactly the sync files the acknowledgment covers (their name time is at or before the
    last sync time in the server's answer), never a file generated after it. Each deletion is reported as the
    vendor tool prints it, C(Purging file yyyyMMddTHHmmss.fnesync).
  - Processing an acknowledgment older than one already processed is a no-op on the server.
  - Sync file names are UTC. When the server answers a last sync time without a time zone (it could be local time,
    hours later than the real one), nothing is purged and the module warns.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - fne.offline_sync.connection
  - fne.offline_sync.connection.lls
  - fne.offline_sync.attributes
  - fne.offline_sync.attributes.lls
attributes:
  platform:
    platforms: posix
  check_mode:
    support: partial
    details:
      - Check mode sends nothing and deletes nothing. Which files an acknowledgment covers is known only from the
        server's answer (the collection never decodes acknowledgments), so it reports C(changed=true) when O(src)
        is readable, an empty RV(purged), and in RV(candidates) the sync files in O(path) it could cover.
  diff_mode:
    support: none
options:
  src:
    description:
      - The acknowledgment file written by M(fne.offline_sync.upload) (the vendor tool's C(syncack.bin)).
      - One of O(src) and O(content) is required.
    type: path
  content:
    description:
      - The acknowledgment's bytes, base64-encoded (as M(ansible.builtin.slurp) returns a file), instead of O(src).
      - The module writes them to a private temporary file (mode C(0600)), processes it as O(src), and removes it.
    type: str
    version_added: 0.2.0
  remote_src:
    description:
      - Whether O(src) is on the host the module runs on, V(true), or on the control node, V(false).
      - With V(false) the action plugin sends the file along with the module, so one task on the license server host
        does what a copy task and this one would do. An acknowledgment of up to 1 MiB (they are a few hundred bytes)
        travels in the module's arguments as O(content), in the same round trip to the host; a larger one is copied
        into the module's temporary folder first (removed afterwards).
      - Makes no difference when the task runs on the control node.
    type: bool
    default: true
    version_added: 0.2.0
  path:
    description:
      - The folder of sync files to purge (the same folder as for M(fne.offline_sync.generate) and
        M(fne.offline_sync.upload)). Without it no local file is deleted.
    type: path
notes:
  - With O(backend=tool), the vendor tool does the purging; RV(last_sync_time) is null unless the tool prints it.
seealso:
  - module: fne.offline_sync.generate
  - module: fne.offline_sync.upload
author:
  - fne.offline_sync developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Process the acknowledgment and purge the files it covers
  fne.offline_sync.process:
    url: http://lls01.example.com:7070
    src: /var/tmp/fnesync/syncack.bin
    path: /var/tmp/fnesync
  register: processed

# In a play over the license server hosts: the acknowledgment is on the control node, the module runs on the host
- name: Process an acknowledgment kept on the control node
  fne.offline_sync.process:
    url: http://lls01.example.com:7070
    src: /var/tmp/acks/lls01.bin
    remote_src: false
    path: /var/tmp/fnesync

- name: Show what was purged
  ansible.builtin.debug:
    var: processed.lines
"""

RETURN = r"""
changed:
  description: Whether the server took the acknowledgment as new or any file was purged.
  returned: always
  type: bool
last_sync_time:
  description: The server's last synchronization time after processing, as the server answered it (UTC).
  returned: always
  type: str
  sample: "2026-11-25T14:03:05Z"
processed:
  description: Whether the server updated its state (false for an acknowledgment older than one already processed).
  returned: success, except in check mode
  type: bool
purged:
  description: Absolute paths of the files deleted from O(path), oldest first.
  returned: always
  type: list
  elements: str
lines:
  description: One C(Purging file NAME) line per deleted file, as the vendor tool prints them.
  returned: always
  type: list
  elements: str
  sample: ["Purging file 20140613T105312.fnesync"]
message:
  description: A summary.
  returned: always
  type: str
candidates:
  description: In check mode, the sync files in O(path) that the acknowledgment could cover.
  returned: in check mode
  type: list
  elements: str
server:
  description: The server's JSON answer.
  returned: success with O(backend=http), except in check mode
  type: dict
error:
  description: On failure, the error's facts (C(type), C(url), C(status), C(key)).
  returned: on failure
  type: dict
"""

from ansible_collections.fne.offline_sync.plugins.module_utils._modules import run_module  # noqa: E402


def main() -> None:
    run_module("process")


if __name__ == "__main__":
    main()
