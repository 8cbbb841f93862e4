#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: generate
short_description: Download the pending offline synchronization data of a FlexNet Embedded license server
version_added: 0.1.0
description:
  - Step 1 of the offline synchronization cycle, as
    C(serverofflinesynctool.sh -url http://HOST:7070/api/1.0/sync_message/offline -generate PATH [-force]).
  - Asks the license server for sync messages until it answers that nothing is new, and writes each message to
    O(path) under the name the server gives it, C(yyyyMMddTHHmmss.fnesync) (its sync time, also the upload order).
  - Every file is written atomically (a temporary name in the same folder, fsync, rename, fsync of the folder), mode
    0600; a folder the module creates gets mode 0700. A truncated answer or an answer that is not a sync message
    (for example an HTML page from a proxy) is an error and leaves no file under a final name.
  - An existing file is never overwritten (only a forced download may replace a file it supersedes). Should the
    server hand out a different message under a name already in O(path), the new message is kept beside it as
    C(NAME.fnesync.HASH.conflict) and the module fails with C(error.type=LostResponseError); upload never sends such
    a file, so recover with O(force=true).
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
      - Requesting sync data hands it out (the server advances its download cursor), so check mode requests none.
        It checks that the server answers its health endpoint, that the credentials are accepted, and that O(path)
        can be written, then reports C(changed=false), no files and no records; whether new data is pending is
        unknown in check mode.
  diff_mode:
    support: none
options:
  path:
    description:
      - The folder to write the sync files to; created (mode 0700) when missing. Use the same folder for
        M(fne.offline_sync.upload) and M(fne.offline_sync.process).
    type: path
    required: true
  force:
    description:
      - Ask the server for every record since the last acknowledged sync time again (the vendor's C(-force)), and
        reset its download cursor there. This is the documented recovery after an out-of-order upload, and after a
        lost answer (see notes).
      - The sync files already in O(path) before a forced download carry records that the forced messages carry
        again; they are returned as RV(superseded) and should not be uploaded.
    type: bool
    default: false
  return_content:
    description:
      - Also return the bytes of the files in RV(waiting), base64-encoded, as C(content) (as
        M(ansible.builtin.slurp) does), oldest first while they fit in 1 MiB in all; a file beyond that has no
        C(content).
      - The remote topology takes the files so, in the same round trip to the license server host, and fetches only
        the files without C(content).
    type: bool
    default: false
    version_added: 0.2.0
notes:
  - A request for sync data whose answer is lost in transit (the connection dropped, a truncated body, a 502/504
    from a gateway, an answer that is not a sync message) fails with C(error.type=LostResponseError) and
    RV(lost_response=true). It is never retried; the server may already have handed out those records and will not
    send them again by itself. Run the module again with O(force=true) to recover them.
seealso:
  - module: fne.offline_sync.upload
  - module: fne.offline_sync.process
  - module: fne.offline_sync.server_info
author:
  - fne.offline_sync developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Download the pending sync data of a license server
  fne.offline_sync.generate:
    url: http://lls01.example.com:7070
    path: /var/tmp/fnesync
  register: generated

- name: Another server, with administrative security over HTTPS with a private CA (a folder per server)
  fne.offline_sync.generate:
    url: https://lls02.example.com:1443
    username: admin
    password: "{{ vault_lls_password }}"
    ca_path: /etc/pki/fne-ca.pem
    path: /var/tmp/fnesync-lls02

- name: Recover records after an out-of-order upload or a lost answer
  fne.offline_sync.generate:
    url: http://lls01.example.com:7070
    path: /var/tmp/fnesync
    force: true

- name: Use the vendor tool instead of the REST API
  fne.offline_sync.generate:
    backend: tool
    tool_path: /opt/flexnetls/enterprise
    path: /var/tmp/fnesync
"""

RETURN = r"""
changed:
  description: Whether any sync file was written.
  returned: always
  type: bool
records:
  description: The number of device records in the files written (as the server counted them).
  returned: always
  type: int
  sample: 1200
files:
  description: The files written in this run, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path of the file.
      type: str
      sample: /var/tmp/fnesync/20140613T105312.fnesync
    name:
      description: File name, C(yyyyMMddTHHmmss.fnesync).
      type: str
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: SHA-256 of the file's content, hex.
      type: str
    records:
      description: Device records in this file; null when unknown (the V(tool) backend knows only the total).
      type: int
waiting:
  description:
    - Every sync file in O(path) after this run, oldest first (upload order), each with C(path), C(name), C(size)
      and C(sha256) as in RV(files); the new files and those of earlier runs not yet purged.
    - The remote topology fetches from this list, so one task on the license server host downloads, lists and
      hashes.
    - With O(return_content=true), each file that fits also has C(content), its bytes base64-encoded.
  returned: always
  type: list
  elements: dict
  version_added: 0.2.0
folder:
  description: Absolute path of the folder (O(path)).
  returned: always
  type: str
message:
  description: The vendor tool's summary line.
  returned: always
  type: str
  sample: Sync completed for 1200 device records.
lines:
  description: The vendor tool's output lines (password removed).
  returned: success with O(backend=tool)
  type: list
  elements: str
  sample: ["OfflineSync utility started.", "Sync completed for 1200 device records."]
superseded:
  description:
    - With O(force=true), the sync files that were in O(path) before the forced download. Their records are in the
      new files again; do not upload them. A file that a forced message replaced under the same name is not listed.
  returned: when O(force=true)
  type: list
  elements: str
lost_response:
  description: True when the module failed because an answer was lost (see notes); run again with O(force=true).
  returned: on a lost answer
  type: bool
error:
  description: On failure, the error's facts.
  returned: on failure
  type: dict
  contains:
    type:
      description: C(FneError), C(LostResponseError) or C(MismatchError).
      type: str
    url:
      description: The URL of the failed request.
      type: str
    status:
      description: The HTTP status, when there was an answer.
      type: int
    key:
      description: The server's error key (for example C(glsErr.userAuthFailed)).
      type: str
"""

from ansible_collections.fne.offline_sync.plugins.module_utils._modules import run_module  # noqa: E402


def main() -> None:
    run_module("generate")


if __name__ == "__main__":
    main()
