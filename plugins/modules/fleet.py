#!/usr/bin/python
# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation stub: the fne.offline_sync.fleet action plugin does the work on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet
short_description: Run one offline synchronization step for many license servers from the controller
version_added: 0.1.0
description:
  - Works every license server of the play whose topology matches I(topology) in a bounded thread pool on the
    controller, with the collection's client, against the control-node store C(STORE/<inventory_hostname>/).
  - Meant to run once per play (with C(run_once) and C(delegate_to=localhost)); a cheap per-host task then turns each
    host's entry of RV(hosts) into ok, changed or failed for that host. One server's failure is recorded in its own
    entry and never stops the others.
  - Per-host settings come from each host's variables, validated per host with Ansible's own validator (a host
    whose variables are invalid fails alone, in the validator's words naming the variable); they are documented in
    the role argument spec (C(ansible-doc -t role fne.offline_sync.cycle)). The license server
    C(fne_lls_url), C(fne_lls_username), C(fne_lls_password), C(fne_lls_ca_path), C(fne_lls_validate_certs),
    C(fne_sync_tool_server_command), C(fne_lls_proxy), C(fne_lls_time_zone), C(fne_lls_max_pages),
    C(fne_lls_force_query) (the compatibility profile, docs/compatibility.md); the back office C(fne_backoffice_url),
    C(fne_backoffice_ca_path),
    C(fne_backoffice_validate_certs), C(fne_backoffice_proxy), C(fne_sync_tool_backoffice_command),
    C(fne_backoffice_time_zone); both
    C(fne_sync_timeout), C(fne_sync_retries), C(fne_sync_max_retry_wait), C(fne_sync_backend), C(fne_sync_tool_path);
    and C(fne_sync_topology). Unset settings fall back to the environment variables C(FNE_LLS_URL),
    C(FNE_LLS_USERNAME), C(FNE_LLS_PASSWORD), C(FNE_LLS_CA_PATH), C(FNE_LLS_PROXY), C(FNE_BACKOFFICE_URL),
    C(FNE_BACKOFFICE_CA_PATH), C(FNE_BACKOFFICE_PROXY), C(FNE_TOOL_PATH), C(FNE_TOOL_SERVER_COMMAND),
    C(FNE_TOOL_BACKOFFICE_COMMAND), as the modules' options do.
  - Used by the roles of this collection; see docs/design.md for the store and the recovery rules.
author:
  - fne.offline_sync developers (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  step:
    description:
      - C(collect) finishes a run that died, processes pending acknowledgments, downloads new messages. On first
        contact (the store has no ledger for that server, being new, wiped, or a fresh AWX container) the download is
        forced, so that records an earlier run downloaded into a lost store come again.
      - A sync file the back office, or an acknowledgment the server, refuses as invalid (400, 409, 422) is set
        aside in C(STORE/<host>/quarantine/) (ledger C(quarantined)); that host fails once with the file named, and
        the next run goes on without it.
      - C(upload) sends outbox files to the back office, oldest first; runs the documented recovery on a mismatch
        or a recorded gap when I(auto_recover).
      - C(acknowledge) processes the newest pending acknowledgment on the server.
      - C(recover) runs the documented forced re-download unconditionally.
      - C(cycle) runs the O(phases) (by default C(collect), C(upload), C(acknowledge)) for each server in turn, in one
        thread and under one hold of its store lock; each server's entry holds its phases' entries in C(phases).
        The way the cycle role's C(api) entry point works the api-topology servers.
      - Every step that may download (C(cycle), C(collect), C(upload), C(acknowledge), C(recover)) keeps one journal
        of the downloads in flight in C(STORE/.in_flight/), made durable once before any server is asked; a server
        whose download a dead run left unsettled gets C(needs_force) at the next such step (see docs/design.md).
      - C(status) reads the store only. C(report) builds (and writes) the fleet report.
      - C(release) moves quarantined files back (sync files to C(outbox/), acknowledgments to C(acks/)) for another
        try.
      - C(admit), C(prepare_ack), C(complete_ack), C(supersede), C(mark_force) are the store operations of the remote
        topology.
    type: str
    required: true
    choices: [cycle, collect, upload, acknowledge, recover, status, release, admit, prepare_ack, complete_ack,
              supersede, mark_force, report]
  phases:
    description:
      - For C(cycle), the phases each server goes through, in this order (the cycle role passes the ones the run's
        tags select).
    type: list
    elements: str
    choices: [collect, upload, acknowledge]
    default: [collect, upload, acknowledge]
  hosts:
    description: Inventory names to work. Defaults to C(ansible_play_hosts).
    type: list
    elements: str
  topology:
    description: Work only the hosts whose C(fne_sync_topology) is this (C(all) for every host).
    type: str
    default: api
    choices: [api, remote, all]
  store:
    description: The control-node store root.
    type: path
    required: true
  workers:
    description: Servers worked at the same time (threads, spread over O(processes)).
    type: int
    default: 16
  processes:
    description:
      - Controller processes that share the servers and the O(workers) threads of the step. The threads of one
        process take turns on one interpreter lock, so a step over hundreds of servers is bound by one CPU; more
        processes use more of the controller's CPUs.
      - V(0) picks for you, one process per CPU the controller lets this task use, each with at least 200 servers
        (one process below 400 servers). The CPUs it may use are its affinity mask's, and no more than its cgroup's
        CPU quota rounded up (a container's CPU limit, as an AWX or Automation Platform job's pod has).
      - Each process keeps its own count of unreachable back office uploads (O(step=upload)), so with several
        processes a back office that is down is tried up to three times in each before its servers stop trying.
    type: int
    default: 0
  auto_recover:
    description: Run the documented recovery automatically on a mismatch or a recorded gap.
    type: bool
    default: true
  lock_timeout:
    description: Seconds to wait for a server's store lock held by another run before failing that host.
    type: float
    default: 5
  files:
    description:
      - For C(admit), the fetched files, each C({src, name, sha256, records}), and the files generate returned with
        their bytes, each C({path, sha256, content}) (C(content) base64-encoded, written to the store before the
        check); a file the store holds already (in C(outbox/), C(sent/) or C(superseded/)) is left alone.
      - For C(prepare_ack), the files waiting on the license server host (RV(fne.offline_sync.generate#module:waiting)),
        each C({path, sha256}); the result's C(new_files) are those the store does not hold yet, each with C(inline)
        true when the entry carried its bytes (C(content)), so no fetch is needed.
    type: list
    elements: dict
    default: []
  forced:
    description:
      - For C(admit), the files come from a forced download.
      - For C(mark_force), the forced download was requested (by C(fne.offline_sync.force_resync)), so the ledger
        records C(recovery_started), not the C(lost_response) of a lost answer.
    type: bool
    default: false
  last_sync_time:
    description: For C(complete_ack), the last sync time the server answered.
    type: str
  ack:
    description:
      - For C(complete_ack), the name of the acknowledgment the server processed; it and the older ones move to
        C(sent/), newer ones stay pending. Unset, the newest pending acknowledgment.
    type: str
  reason:
    description:
      - For C(mark_force), why a forced download is needed (written to C(needs_force) and the ledger).
      - For C(complete_ack), the mismatch the process step reported, recorded the same way after the
        acknowledgment moves to sent/.
    type: str
  generated:
    description: For C(admit), the C(files) that M(fne.offline_sync.generate) returned on the host (records, sha256).
    type: list
    elements: raw
    default: []
  failed_hosts:
    description: For C(report), hosts that failed earlier in this run.
    type: list
    elements: str
    default: []
  results:
    description: For C(report), the registered results of this run's fleet steps.
    type: list
    elements: raw
    default: []
  result_vars:
    description: For C(report), names of registered fleet results of this run, read without templating them.
    type: list
    elements: str
    default: []
  stale_days:
    description: For C(report), servers without a successful sync for longer than this stand out.
    type: float
    default: 7
  keep_days:
    description:
      - For C(acknowledge), retention - remove from C(sent/) the sync files and acknowledgments more than this many
        days old (by their sync time) and older than any acknowledgment still pending; what is not yet
        acknowledged is never there. The ledger keeps their lines (the totals stay true). C(0) keeps every file.
    type: float
    default: 0
  preflight:
    description:
      - Checks made before the step touches any server; when one fails the task fails, naming it, and no server
        is touched. C(store), the store (or its nearest existing parent) is a folder this user can write;
        C(backoffice), every server has a back office URL. Read-only, also in check mode.
      - For the C(status) step (the cycle role's plan, run once for the play) the task does not fail; it returns
        RV(preflight_failed), the cycle skips its steps and the C(report) step fails every server with it (given
        as O(preflight_failed)), so each server shows the reason in the recap and the report.
    type: list
    elements: str
    choices: [store, backoffice]
    default: []
  preflight_failed:
    description:
      - For C(report), the pre-flight failure of the plan (RV(preflight_failed)); every server fails with it.
    type: str
  metrics_file:
    description:
      - For C(report) (when the report is written), write Prometheus metrics for node_exporter's textfile collector
        to this file, atomically and readable by all (0644) - per server the last successful sync time, records and
        files synchronized, failures, recovery pending, files waiting; per run its duration, records and files,
        servers ok and failed.
    type: path
  run_started:
    description: For C(report), when the run started (Unix time; the plan step's C(started)), for the run's duration.
    type: float
  last_run:
    description:
      - For C(report), the status playbook's view, which runs no step - each server's last recorded run (its outcome,
        and its error and time when it failed) stands for this run; nothing is written.
    type: bool
    default: false
  live_var:
    description:
      - For C(report), the name of a per-host registered C(fne.offline_sync.server_info) result to add to each
        server's entry (the status playbook with C(fne_sync_live=true)).
    type: str
  stats:
    description:
      - For C(report), publish this run's report for AWX workflows, as M(ansible.builtin.set_stats) would (from this
        task's own result, C(ansible_stats), not per host, aggregated), as C(fne_sync_report) beside the report
        files' paths (C(fne_sync_report_paths)) - V(full), this run's servers with their figures; V(totals), the
        run's totals and the failed servers' names. Unset, nothing is published.
    type: str
    choices: [full, totals]
  write_report:
    description: For C(report), write C(report.json) and C(report.html) into the store (never in check mode).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Nothing is changed on any server or in the store; each host's entry lists what a real run would do.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller only (the action plugin); it never connects to the managed hosts.
"""

EXAMPLES = r"""
- name: Download new records from every api-topology server of the play
  fne.offline_sync.fleet:
    step: collect
    store: /var/lib/fne_sync
  run_once: true
  delegate_to: localhost
  register: __fne_collect

- name: Show each server's outcome as ok, changed or failed on its own host
  fne.offline_sync.result:
    var: __fne_collect

- name: What collect, upload and acknowledge would do, each server start to end in its own thread (a dry run)
  fne.offline_sync.fleet:
    step: cycle
    store: /var/lib/fne_sync
  check_mode: true
  run_once: true
  delegate_to: localhost
  register: __fne_cycle
"""

RETURN = r"""
preflight_failed:
  description: For the C(status) step, what the pre-flight found (see O(preflight)); no server was touched.
  returned: when a pre-flight check of the status step failed
  type: str
  sample: "pre-flight: no back office URL for 3 server(s) (lls001, lls002, lls003): set fne_backoffice_url (or
    FNE_BACKOFFICE_URL). No server was touched."
hosts:
  description:
    - One entry per server worked, keyed by inventory name (in the sample, C(lls002) is a C(cycle) entry).
    - A C(cycle) entry's C(phases) holds each phase's entry without what the cycle entry says (C(host),
      C(topology)) and without the keys at their empty value (no files, no records, C(false), C(null)).
  returned: always
  type: dict
  sample:
    lls001:
      changed: true
      failed: false
      msg: "lls001: collect: downloaded 1 file(s), 25 record(s)"
      records: 25
      fetched: [20261125T140305.fnesync]
      uploaded: []
      processed: []
      recovered: false
      needs_force: false
    lls002:
      changed: true
      failed: false
      step: cycle
      msg: "lls002: collect: downloaded 1 file(s), 25 record(s) | lls002: upload: uploaded 1 file(s) | lls002:
        acknowledge: processed acknowledgment 20261125T140305.ack"
      phases: [{step: collect, changed: true, failed: false}, {step: upload, changed: true, failed: false},
               {step: acknowledge, changed: true, failed: false}]
failed_hosts:
  description: Names of the servers whose step failed.
  returned: always except for I(step=report)
  type: list
  elements: str
processes:
  description: How many processes worked the servers of the step (see O(processes)).
  returned: always except for I(step=report)
  type: int
  sample: 2
ansible_stats:
  description:
    - For I(step=report) with I(stats), what Ansible publishes as custom stats - C(data.fne_sync_report), this
      run's servers (I(stats=full)) or the run's totals and failed servers (I(stats=totals)), and
      C(data.fne_sync_report_paths). The fleet report itself is in the store (C(STORE/report.json)), not in the
      result - at a thousand servers it is megabytes that every callback would copy.
  returned: when I(step=report) and I(stats) is set
  type: dict
paths:
  description: For I(step=report), the report files written (empty in check mode).
  returned: when I(step=report)
  type: dict
started:
  description: When this step started (Unix time); the plan's is the run's start.
  returned: always
  type: float
summary:
  description: For I(step=report), the short problems-first summary (at most about 20 lines) and the report path.
  returned: when I(step=report)
  type: list
  elements: str
summary_after_recap:
  description: For I(step=report), whether the C(fne.offline_sync.summary) callback prints the summary after the
    play recap (else the role prints it in a task).
  returned: when I(step=report)
  type: bool
"""
