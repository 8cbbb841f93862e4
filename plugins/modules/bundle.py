#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation stub: the fne.offline_sync.bundle action plugin does the work on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bundle
short_description: Carry the offline synchronization across an air gap as verified transfer bundles
version_added: 0.1.0
description:
  - For sites where no machine reaches both the license servers and the back office (see docs/air-gap.md). The
    inside control node collects as usual and writes an outgoing bundle (I(op=export)); the outside one uploads it
    and writes a return bundle of acknowledgments (I(op=upload)); the inside imports that (I(op=import)) and the
    fleet's C(acknowledge) step processes each server's newest acknowledgment.
  - A bundle is one tar file with C(manifest.json) (bundle id, site, sequence number, per server its host id, files
    in upload order with sha256 and records, the acknowledgment it waits for), the files, and C(manifest.hmac)
    when a site key is set. Every bundle is verified whole (site, kind, signature, every sha256) before anything
    changes; a refused bundle changes nothing.
  - Idempotent across carries. A file goes into one outgoing bundle; every bundle not yet acknowledged is copied to
    I(dest) again on each export, whole, so a lost medium is recovered by the next carry. The outside never uploads a
    file its store holds already, and takes outgoing bundles in sequence order only. An acknowledgment not newer
    than the one a server already has is skipped, so importing a return bundle twice changes nothing.
  - Runs on the controller only, once per play (C(run_once), C(delegate_to=localhost)); the result has one entry per
    server for M(fne.offline_sync.result).
author:
  - fne.offline_sync developers (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  op:
    description:
      - C(export) (inside) writes a new outgoing bundle with every outbox file of the I(hosts) not yet in a bundle
        (none when there is nothing new) and copies every bundle not yet acknowledged to I(dest).
      - A server marked C(needs_force) (a download whose answer was lost, or a mismatch the outside reported) is held
        (nothing new of it is bundled) until its recovery may run, that is when the outside's mismatch came back with
        its newest acknowledgment or no bundle of that server is in transit. Then C(export) first runs the first half
        of the documented recovery for it (process the newest acknowledgment, set the outbox aside in
        C(superseded/), download again with force; api-topology servers, C(fne_lls_*) settings of each host) and
        flags the server C(forced) in the bundle, so the outside sets aside what it holds of that server before it
        takes the forced files.
      - C(upload) (outside) takes the outgoing bundles in I(src) in sequence order into the outside store
        C(STORE/.airgap/outside/SITE/), uploads what the back office does not hold yet (back office settings from
        the C(fne_backoffice_*) variables of the task's host, else C(FNE_BACKOFFICE_URL)), and writes a return bundle
        to I(dest).
      - C(import) (inside) verifies the return bundles in I(src) and takes their acknowledgments into each server's
        store (C(acks/)); the files they cover leave C(outbox/).
      - C(unpack) (outside with a browser only) takes the outgoing bundles in I(src) into the outside store as
        C(upload) does, then lays out every file still waiting for the back office in
        C(DEST/SITE/HOST/part-NN/) (at most 100 files each, all from one server, in upload order; a part never
        changes once laid out) and writes C(DEST/SITE/CHECKLIST.txt), one line per submission of the back office's
        web page.
      - C(pack) (outside with a browser only) takes the acknowledgments saved from the web page as
        C(FOLDER/SITE/HOST/part-NN/acknowledgment.bin) into the outside store (each covers its part's files and
        every earlier one) and writes a return bundle to I(dest), as C(upload) does.
    type: str
    required: true
    choices: [export, upload, import, unpack, pack]
  site:
    description: The site name every bundle carries; a bundle of another site is refused.
    type: str
    required: true
  site_key:
    description:
      - Secret shared by the inside and the outside of the site. When set, bundles are signed (HMAC-SHA256 of the
        manifest, which holds every file's sha256) and every bundle read must carry a valid signature.
      - When unset, a signed bundle is refused (it cannot be verified).
    type: str
  store:
    description: The control-node store root (C(fne_sync_store)).
    type: path
    required: true
  dest:
    description:
      - For C(export), C(upload) and C(pack), the folder the bundles are written to (the medium, or a transfer
        folder). For C(unpack), the folder the per-server part folders and the checklist are written to.
    type: path
  folder:
    description: For C(pack), the folder C(unpack) wrote to (its I(dest)).
    type: path
  src:
    description:
      - For C(upload), C(unpack) and C(import), bundle files or folders holding them (a folder stands for every
        bundle of the kind needed in it).
    type: list
    elements: path
    default: []
  hosts:
    description: For C(export) and C(import), the inventory names to work. Defaults to C(ansible_play_hosts).
    type: list
    elements: str
  stale_days:
    description: For C(export), a bundle not acknowledged after this many days is named in a warning (C(stale)).
    type: float
    default: 7
  lock_timeout:
    description: Seconds to wait for a server's store lock held by another run.
    type: float
    default: 5
  workers:
    description: For C(export), how many servers' forced downloads (the recovery's first half) run at once.
    type: int
    default: 16
attributes:
  check_mode:
    support: partial
    details:
      - C(export), C(upload) and C(import) write, upload and move nothing; each server's entry says what a real run
        would do. C(unpack) and C(pack) do not support check mode (the task is skipped).
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller only (the action plugin).
"""

EXAMPLES = r"""
- name: Inside | write the outgoing bundle onto the medium
  fne.offline_sync.bundle:
    op: export
    site: plant7
    site_key: "{{ vault_plant7_key }}"
    store: /var/lib/fne_sync
    dest: /media/usb
  run_once: true
  delegate_to: localhost

- name: Outside | upload the bundles on the medium, write the return bundle next to them
  fne.offline_sync.bundle:
    op: upload
    site: plant7
    site_key: "{{ vault_plant7_key }}"
    store: /var/lib/fne_sync
    src: [/media/usb]
    dest: /media/usb/return

- name: Inside | take the acknowledgments that came back
  fne.offline_sync.bundle:
    op: import
    site: plant7
    site_key: "{{ vault_plant7_key }}"
    store: /var/lib/fne_sync
    src: [/media/usb/return]
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
hosts:
  description: One entry per server, keyed by inventory name (C(changed), C(failed), C(msg); C(in_transit) for export).
  returned: always
  type: dict
written:
  description: For C(export), the name of the new outgoing bundle, or null when nothing was new.
  returned: when I(op=export)
  type: str
outstanding:
  description: For C(export), the bundles not yet acknowledged (C(name), C(id), C(created), C(age_days), C(stale)),
    oldest first.
  returned: when I(op=export)
  type: list
  elements: dict
stale:
  description: For C(export), the names of the bundles out longer than I(stale_days).
  returned: when I(op=export)
  type: list
  elements: str
copied:
  description: Paths of the bundles written or copied to I(dest).
  returned: always
  type: list
  elements: str
checklist:
  description: For C(unpack), the path of the checklist.
  returned: when I(op=unpack)
  type: str
lines:
  description: For C(unpack), the checklist's lines.
  returned: when I(op=unpack)
  type: list
  elements: str
return_bundle:
  description: For C(upload) and C(pack), the name of the new return bundle, or null when nothing new came back.
  returned: when I(op=upload) or I(op=pack)
  type: str
"""
