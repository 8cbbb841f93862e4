#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: upload
short_description: Send offline synchronization data to the FlexNet Operations back office
version_added: 0.1.0
description:
  - Step 2 of the offline synchronization cycle, as
    C(backofficeofflinesynctool.sh -url https://SITEID.compliance.flexnetoperations.com/deviceservices -out FILE PATH).
  - Sends O(src) (one sync file, or every C(*.fnesync) file of a folder, oldest first) one message per request,
    streaming each file from disk (memory use stays flat for multi-gigabyte files), and writes the back office's
    acknowledgment to O(dest).
  - The acknowledgment is written atomically after each accepted file, so whatever fails later, O(dest) holds the
    acknowledgment for everything accepted so far. Should O(dest) not be writable, the acknowledgment of the file
    just accepted is saved as C(yyyyMMddTHHmmss.syncack.bin) next to it (else in the temporary folder), the module
    fails naming that file, and RV(ack) points to it.
  - Files in a O(src) folder whose names contain C(.fnesync) but are not C(yyyyMMddTHHmmss.fnesync) are not sent;
    the module warns with their names.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - fne.offline_sync.connection
  - fne.offline_sync.backoffice
  - fne.offline_sync.attributes
  - fne.offline_sync.attributes.back_office
attributes:
  platform:
    platforms: posix
  check_mode:
    support: partial
    details:
      - The back office has no dry run. Check mode sends nothing and writes nothing; it reports the files it would
        send (RV(files)) and C(changed=true) when there is at least one.
  diff_mode:
    support: none
options:
  src:
    description:
      - A sync file, or a folder whose C(yyyyMMddTHHmmss.fnesync) files are all sent, oldest first (the name is the
        sync time; the back office takes one server's messages strictly in that order).
      - All files must come from one license server.
    type: path
    required: true
  dest:
    description:
      - Where to write the acknowledgment.
      - A relative path is relative to the folder of O(src) (O(src) itself when it is a folder). The vendor tool
        writes it relative to its current directory, which a module has no meaningful equivalent of; with the default
        the acknowledgment sits next to the sync files it covers.
    type: path
    default: syncack.bin
notes:
  - >-
    When the back office answers the documented
    C("Mismatched or out of order time stamp in sync message": "Expected sync time ..., got ...") the module fails
    with that text, returns RV(mismatch=true) with RV(expected) and RV(received), and keeps in O(dest) the
    acknowledgment for the files accepted before it (RV(accepted)). The documented recovery follows; process that
    acknowledgment (M(fne.offline_sync.process)), download again with O(fne.offline_sync.generate#module:force=true),
    upload, process.
  - A message whose answer is lost after it was sent is not sent again (the back office may have accepted it);
    the module fails with C(error.type=LostResponseError). So does an empty answer where an acknowledgment belongs.
seealso:
  - module: fne.offline_sync.generate
  - module: fne.offline_sync.process
author:
  - fne.offline_sync developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Send every downloaded file, oldest first
  fne.offline_sync.upload:
    url: https://SITEID.compliance.flexnetoperations.com/deviceservices
    src: /var/tmp/fnesync
  register: uploaded

- name: Send one file and keep the acknowledgment elsewhere
  fne.offline_sync.upload:
    url: https://SITEID.compliance.flexnetoperations.com/deviceservices
    src: /var/tmp/fnesync/20140613T105312.fnesync
    dest: /var/tmp/acks/lls01.bin

- name: Handle the documented out-of-order answer
  block:
    - fne.offline_sync.upload:
        src: /var/tmp/fnesync
  rescue:
    - ansible.builtin.debug:
        msg: "Expected {{ ansible_failed_result.expected }}, got {{ ansible_failed_result.received }}"
      when: ansible_failed_result.mismatch | default(false)
"""

RETURN = r"""
changed:
  description: Whether the back office accepted at least one file.
  returned: always
  type: bool
ack:
  description:
    - Absolute path of the acknowledgment file written in this run; null when nothing was accepted.
    - When O(dest) could not be written, the file the acknowledgment was saved to instead.
  returned: always
  type: str
  sample: /var/tmp/fnesync/syncack.bin
accepted:
  description: The files the back office accepted in this run, in the order sent.
  returned: always
  type: list
  elements: str
files:
  description: The files to send, oldest first (in check mode, the files that would be sent).
  returned: always
  type: list
  elements: str
message:
  description: The vendor tool's summary line.
  returned: success
  type: str
  sample: Successfully sent sync data and received a sync acknowledgment.
mismatch:
  description: True when the back office answered the documented out-of-order error.
  returned: always, except in check mode
  type: bool
expected:
  description: The sync time the back office expected, exactly as it printed it.
  returned: when RV(mismatch=true)
  type: str
  sample: Jan 24, 2019 11:04:09 AM
expected_time:
  description:
    - RV(expected) read in O(time_zone), in ISO 8601 UTC; V(null) when the text names no time this module reads.
  returned: when RV(mismatch=true)
  type: str
  sample: "2019-01-24T11:04:09Z"
received:
  description: The sync time the back office got, exactly as it printed it.
  returned: when RV(mismatch=true)
  type: str
  sample: Jan 24, 2019 11:05:00 AM
ack_fields:
  description:
    - The fields of the last acknowledgment as the vendor's back-office tool printed them (quotes removed), for
      example C(LastSyncTime), C(MessageTIme), C(TargetID).
  returned: with O(backend=tool), when the tool printed them
  type: dict
  sample: {"LastSyncTime": "Jan 13, 2019 10:52:45 AM", "TargetID": "A088B436F208", "TargetIDType": "Ethernet"}
last_sync_time:
  description:
    - The last acknowledgment's C(LastSyncTime) as printed by the back-office tool, read in O(time_zone), in ISO 8601
      (UTC).
  returned: with O(backend=tool), when the tool printed it
  type: str
  sample: "2019-01-13T10:52:45Z"
ack_dest:
  description: The acknowledgment path that would be written.
  returned: in check mode
  type: str
lost_response:
  description: True when a message was sent but its answer was lost.
  returned: on a lost answer
  type: bool
error:
  description: On failure, the error's facts (C(type), C(url), C(status), C(key)).
  returned: on failure
  type: dict
"""

from ansible_collections.fne.offline_sync.plugins.module_utils._modules import run_module  # noqa: E402


def main() -> None:
    run_module("upload")


if __name__ == "__main__":
    main()
