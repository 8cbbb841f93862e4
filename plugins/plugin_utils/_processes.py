# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work shared between processes. The threads of one process take turns on one interpreter lock: a fleet step or a
report over hundreds of servers is bound by one CPU (docs/performance.md, "One process per CPU for a large step")."""

from __future__ import annotations

import math
import os
import pickle
import re
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional, TypeVar

Item = TypeVar("Item")
SERVERS_PER_PROCESS = 200  # a smaller share is worked within seconds by one process: not worth a fork


def process_count(requested: int, servers: int, workers: Optional[int] = None) -> int:
    """How many processes share the work: ``requested``, or for 0 one per CPU this process may use, each with at
    least SERVERS_PER_PROCESS servers; never more than the servers or the threads (``workers``, if any)."""
    if requested == 0:
        requested = min(usable_cpus(), servers // SERVERS_PER_PROCESS)
    return max(1, min(int(requested), servers, servers if workers is None else int(workers)))


def usable_cpus(proc: str = "/proc/self") -> int:
    """The CPUs this process may use: its affinity mask, and its cgroup's CPU quota rounded up (a container's CPU
    limit, as in an AWX or Kubernetes pod, which the affinity mask does not show)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_cpu_quota(proc: str = "/proc/self") -> Optional[float]:
    """The smallest CPU quota, in CPUs, of the process's cgroup and of those above it (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); None when none is set or the files cannot be read."""
    try:
        with open(os.path.join(proc, "cgroup"), encoding="utf-8", errors="surrogateescape") as handle:
            groups = [line.rstrip("\n").split(":", 2) for line in handle if line.count(":") >= 2]
        with open(os.path.join(proc, "mountinfo"), encoding="utf-8", errors="surrogateescape") as handle:
            lines = [line.split() for line in handle]
    except OSError:  # not Linux, or no /proc
        return None
    # id, parent, device, root, mount point, options, optional fields, "-", type, source, super options; of two
    # mounts on one mount point the later hides the earlier
    mounts = {fields[4]: fields for fields in lines if len(fields) >= 10 and "-" in fields[6:-2]}.values()
    quotas = []
    for fields in mounts:
        fstype = fields[fields.index("-", 6) + 1]
        if fstype == "cgroup2":
            path = next((p for hierarchy, _controllers, p in groups if hierarchy == "0"), None)
        elif fstype == "cgroup" and "cpu" in fields[-1].split(","):
            path = next((p for _hierarchy, controllers, p in groups if "cpu" in controllers.split(",")), None)
        else:
            continue
        root, top = _unescape(fields[3]).rstrip("/"), os.path.normpath(_unescape(fields[4]))
        if path is None or ".." in path.split("/") or not (path + "/").startswith(root + "/"):
            continue  # this mount does not show the process's cgroup (another cgroup namespace's, say)
        folder = os.path.normpath(top + "/" + path[len(root):])
        while folder == top or folder.startswith(top.rstrip("/") + "/"):  # a limit above, up to the mount's, applies
            quota = _read_quota(folder, fstype == "cgroup2")
            if quota:
                quotas.append(quota)
            folder = os.path.dirname(folder) if folder != top else ""
    return min(quotas) if quotas else None


def _read_quota(folder: str, v2: bool) -> Optional[float]:
    """One cgroup's CPU quota in CPUs, None when it has none ("max", -1) or no such file."""
    try:
        if v2:
            with open(os.path.join(folder, "cpu.max"), encoding="ascii") as handle:
                quota, period = (handle.read().split() + ["100000"])[:2]
        else:
            with open(os.path.join(folder, "cpu.cfs_quota_us"), encoding="ascii") as handle:
                quota = handle.read().strip()
            with open(os.path.join(folder, "cpu.cfs_period_us"), encoding="ascii") as handle:
                period = handle.read().strip()
        return int(quota) / int(period) if quota != "max" and int(quota) > 0 and int(period) > 0 else None
    except (OSError, ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
        return None


def _unescape(field: str) -> str:
    """A mountinfo path: a space, tab, newline or backslash in it is written as an octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def in_processes(items: List[Item], processes: int, work: Callable[[List[Item]], Dict[str, Any]],
                 lost: Callable[[List[Item], str], Dict[str, Any]]) -> Dict[str, Any]:
    """``work(share)`` for each of ``processes`` shares of ``items``, merged: the first share in this process, each
    other in a child forked before this process starts a thread, its answer pickled back through a pipe. For a
    child that died, ``lost(its share, how it ended)``. A module whose state a child must not share (a thread's
    open connection) resets it with ``os.register_at_fork``."""
    shares = [items[i::processes] for i in range(processes)]
    children, merged = [], {}
    try:
        for share in shares[1:]:
            read_end, write_end = os.pipe()
            with warnings.catch_warnings():
                # "multi-threaded, use of fork() may lead to deadlocks": no thread of ours is working yet, and what
                # one left behind is reset in the child (register_at_fork)
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: work its share, hand the answer over, end without running any exit handler
                status = 70
                try:
                    os.close(read_end)
                    data = pickle.dumps(work(share))
                    with os.fdopen(write_end, "wb") as out:
                        out.write(data)
                    status = 0
                except BaseException:  # the share is lost with the exit status; the reason goes to stderr
                    traceback.print_exc()
                finally:
                    os._exit(status)
            os.close(write_end)
            children.append((pid, read_end, share))
        merged.update(work(shares[0]))
    finally:
        for pid, read_end, share in children:
            with os.fdopen(read_end, "rb") as answer:  # read before waiting: a large answer fills the pipe
                data = answer.read()
            status = os.waitpid(pid, 0)[1]
            if status == 0 and data:
                merged.update(pickle.loads(data))
                continue
            code = os.waitstatus_to_exitcode(status)
            merged.update(lost(share, f"was killed by signal {-code}" if code < 0 else f"exited {code}"))
    return merged
