#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: server_info
short_description: Report a FlexNet Embedded license server's health and the sync files waiting in a folder
version_added: 0.1.0
description:
  - Reads the license server's health endpoint, C(GET /api/1.0/health), to report whether it is reachable, its version,
    instance id, host id and whether administrative security is on. With O(username), also checks that the
    credentials are accepted.
  - Lists the sync files waiting in O(path), oldest first.
  - Changes nothing. An unreachable server is reported (RV(reachable=false), RV(error)), not a failure.
  - Always uses the REST API, also with O(backend=tool); the vendor tool has no health command.
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
    support: full
  diff_mode:
    support: none
options:
  path:
    description:
      - A folder of sync files to report on (RV(pending)).
    type: path
seealso:
  - module: fne.offline_sync.generate
author:
  - fne.offline_sync developers (!UNKNOWN)
"""

EXAMPLES = r"""
# In a play over the license servers of the inventory: each server is asked from the controller.
- name: Check the license servers
  fne.offline_sync.server_info:
    url: "{{ fne_lls_url }}"
    username: "{{ fne_lls_username | default(omit) }}"
    password: "{{ fne_lls_password | default(omit) }}"
    ca_path: "{{ fne_lls_ca_path | default(omit) }}"
    path: /var/tmp/fnesync
  delegate_to: localhost
  register: info

- name: Fail on unreachable servers
  ansible.builtin.assert:
    that: info.reachable
    fail_msg: "{{ inventory_hostname }} is unreachable: {{ info.error }}"
"""

RETURN = r"""
reachable:
  description: Whether the health endpoint answered.
  returned: always
  type: bool
url:
  description: The base URL used.
  returned: always
  type: str
version:
  description: The server's version.
  returned: always
  type: str
instance_id:
  description: The server's instance id.
  returned: always
  type: str
host_id:
  description: The server's host id (the C(TargetID) of its acknowledgments).
  returned: always
  type: str
  sample: A088B436F208
host_id_type:
  description: The host id's type.
  returned: always
  type: str
  sample: Ethernet
database:
  description: The database check's status.
  returned: always
  type: str
security:
  description: Whether administrative security is enabled; null when unreachable.
  returned: always
  type: bool
https:
  description: Whether the server reports HTTPS.
  returned: always
  type: bool
status:
  description: The health endpoint's status field.
  returned: always
  type: str
health:
  description: The raw health answer.
  returned: always
  type: dict
authorized:
  description: With O(username), whether the credentials were accepted; otherwise null.
  returned: always
  type: bool
error:
  description: Why the server is unreachable or refused the credentials; null otherwise.
  returned: always
  type: str
pending:
  description: The sync files in O(path), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path.
      type: str
    name:
      description: File name.
      type: str
    size:
      description: Size in bytes.
      type: int
    sync_time:
      description: The sync time the name carries (UTC, ISO 8601).
      type: str
pending_count:
  description: The number of files in RV(pending).
  returned: always
  type: int
"""

from ansible_collections.fne.offline_sync.plugins.module_utils._modules import run_module  # noqa: E402


def main() -> None:
    run_module("server_info")


if __name__ == "__main__":
    main()
