# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work shared between processes. The threads of one process take turns on one interpreter lock: a fleet step or a
report over hundreds of servers is bound by one CPU (docs/performance.md, "One process per CPU for a large step")."""

from __future__ import annotations

import os
import pickle
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional, TypeVar

Item = TypeVar("Item")
SERVERS_PER_PROCESS = 200  # a smaller share is worked within seconds by one process: not worth a fork


def process_count(requested: int, servers: int, workers: Optional[int] = None) -> int:
    """How many processes share the work: ``requested``, or for 0 one per CPU this process may use, each with at
    least SERVERS_PER_PROCESS servers; never more than the servers or the threads (``workers``, if any)."""
    if requested == 0:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        requested = min(cpus, servers // SERVERS_PER_PROCESS)
    return max(1, min(int(requested), servers, servers if workers is None else int(workers)))


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
