"""How many processes a large step forks: the CPUs the controller lets it use, a container's CPU limit included."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".venv" / "collections")
sys.path.insert(0, COLLECTIONS)

from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import (  # noqa: E402
    cgroup_cpu_quota,
    process_count,
    usable_cpus,
)


@pytest.mark.parametrize("requested, servers, workers, cpus, expected", [
    (0, 1000, 16, 2, 2), (0, 399, 16, 8, 1), (0, 400, 16, 8, 2), (0, 5000, 16, 8, 8), (0, 5000, 4, 8, 4),
    (3, 2, 16, 1, 2), (3, 100, 16, 1, 3), (1, 1000, 16, 8, 1)])
def test_process_count(monkeypatch, requested, servers, workers, cpus, expected):
    """0: one process per CPU, each with at least 200 servers; never more processes than servers or threads."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert process_count(requested, servers, workers) == expected


def _proc(tmp_path, cgroup: str, mounts: list) -> str:
    """A /proc/self of the process's cgroup lines and the mountinfo lines of `mounts` (root, mount point,
    fstype, super options), as the kernel writes them."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text("".join(
        f"{30 + n} 23 0:{28 + n} {root} {point} rw,relatime shared:{n} - {fstype} {fstype} {options}\n"
        for n, (root, point, fstype, options) in enumerate(mounts)))
    return str(proc)


def _cgroup(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text + "\n")


def test_cgroup_v2_quota_of_the_pod_above_the_container_counts(tmp_path):
    """cgroup v2 without a cgroup namespace (the path is the host's): the pod's limit of 1.5 CPUs, two levels up,
    applies to the container, which has none of its own; "max" is no limit."""
    mount = tmp_path / "sys fs cgroup"  # a space in the mount point: written as \\040 in mountinfo
    _cgroup(mount / "kubepods" / "pod1", cpu_max="150000 100000")
    _cgroup(mount / "kubepods" / "pod1" / "ctr", cpu_max="max 100000")
    proc = _proc(tmp_path, "0::/kubepods/pod1/ctr\n",
                 [("/", str(mount).replace(" ", "\\040"), "cgroup2", "rw,nsdelegate")])
    assert cgroup_cpu_quota(proc) == 1.5
    assert usable_cpus(proc) == min(len(os.sched_getaffinity(0)), 2)  # rounded up


def test_cgroup_v1_quota_through_a_mount_of_the_containers_own_cgroup(tmp_path):
    """cgroup v1 as Docker mounts it: the container sees its own cgroup at the mount point (mountinfo's root is its
    path); the cpu controller shares its hierarchy with cpuacct; other controllers' mounts are not read."""
    cpu = tmp_path / "cpu,cpuacct"
    _cgroup(cpu, cpu_cfs_quota_us="50000", cpu_cfs_period_us="100000")
    _cgroup(tmp_path / "cpuset", cpu_cfs_quota_us="10000", cpu_cfs_period_us="100000")
    proc = _proc(tmp_path, "4:cpuset:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
                 [("/docker/abc", str(tmp_path / "cpuset"), "cgroup", "rw,cpuset"),
                  ("/docker/abc", str(cpu), "cgroup", "rw,cpu,cpuacct")])
    assert cgroup_cpu_quota(proc) == 0.5
    assert usable_cpus(proc) == 1


@pytest.mark.parametrize("quota, period", [("-1", "100000"), ("garbage", "100000"), ("100000", "0")])
def test_no_or_unreadable_cgroup_quota_leaves_the_affinity_mask(tmp_path, quota, period):
    _cgroup(tmp_path / "cpu", cpu_cfs_quota_us=quota, cpu_cfs_period_us=period)
    proc = _proc(tmp_path, "1:cpu:/\n", [("/", str(tmp_path / "cpu"), "cgroup", "rw,cpu")])
    assert cgroup_cpu_quota(proc) is None
    assert usable_cpus(proc) == len(os.sched_getaffinity(0))
    assert cgroup_cpu_quota(str(tmp_path / "no-proc")) is None


def _writable_cpu_cgroup() -> Path:
    """A new cgroup under this process's own, in the hierarchy that has the cpu controller (v1 or v2)."""
    groups = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype, root, point = fields[fields.index("-") + 1], fields[3].rstrip("/"), fields[4]
        if fstype == "cgroup" and "cpu" in fields[-1].split(","):
            path = next(p for _h, controllers, p in groups if "cpu" in controllers.split(","))
        elif fstype == "cgroup2":
            path = next(p for h, _c, p in groups if h == "0")
        else:
            continue
        own = Path(point + path[len(root):])
        v2_without_cpu = fstype == "cgroup2" and "cpu" not in (own / "cgroup.subtree_control").read_text().split()
        if path.startswith(root) and os.access(own, os.W_OK) and not v2_without_cpu:
            return own / f"fne-test-{uuid.uuid4().hex[:8]}"
    pytest.skip("no writable cgroup with the cpu controller here (needs root, as in CI)")


def test_a_real_cgroup_cpu_limit_caps_the_processes():
    """A process in a real cgroup limited to half a CPU, and nested one level further without a limit of its own:
    the quota is read from the kernel's files, and a fleet of 10,000 servers gets one process, not one per CPU."""
    limited = _writable_cpu_cgroup()
    inner = limited / "inner"
    limited.mkdir()
    try:
        v2 = (limited / "cpu.max").exists()
        if v2:
            (limited / "cpu.max").write_text("50000 100000")
        else:
            (limited / "cpu.cfs_period_us").write_text("100000")
            (limited / "cpu.cfs_quota_us").write_text("50000")
        inner.mkdir()
        code = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
                "from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import "
                "cgroup_cpu_quota, process_count; print(cgroup_cpu_quota(), process_count(0, 10000, 16))")
        out = subprocess.run([sys.executable, "-c", code, str(inner / "cgroup.procs")], check=True, text=True,
                             capture_output=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS)).stdout.split()
        assert out == ["0.5", "1"]
        assert cgroup_cpu_quota() != 0.5  # the limit is the inner process's cgroup's, not this one's
    finally:
        for folder in (inner, limited):
            if folder.exists():
                folder.rmdir()
