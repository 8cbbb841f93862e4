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

from ansible_collections.fne.offline_sync.plugins.plugin_utils import _processes  # noqa: E402
from ansible_collections.fne.offline_sync.plugins.plugin_utils._processes import (  # noqa: E402
    cgroup_cpu_quota,
    process_count,
    usable_cpus,
)

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("requested, servers, workers, cpus, expected", [
    (0, 1000, 16, 2, 2), (0, 399, 16, 8, 1), (0, 400, 16, 8, 2), (0, 5000, 16, 8, 8), (0, 5000, 4, 8, 4),
    (3, 2, 16, 1, 2), (3, 100, 16, 1, 3), (1, 1000, 16, 8, 1)])
def test_process_count(monkeypatch, requested, servers, workers, cpus, expected):
    """0: one process per CPU, each with at least 200 servers; never more processes than servers or threads."""
    monkeypatch.setattr(_processes, "usable_cpus", lambda: cpus)  # whatever this machine's cgroup allows
    assert process_count(requested, servers, workers) == expected


def _proc(tmp_path, cgroup: str, mounts: list, optional: str = "shared:7") -> str:
    """A /proc/self of the process's cgroup lines and the mountinfo lines of `mounts` (root, mount point,
    fstype, super options) with `optional` fields, as the kernel writes them; a tmpfs at /sys/fs/cgroup first."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    mounts = [("/", "/sys/fs/cgroup", "tmpfs", "rw,mode=755")] + mounts
    (proc / "mountinfo").write_text("".join(
        " ".join(f"{30 + n} 23 0:{28 + n} {root} {point} rw,relatime {optional} - {fstype} {fstype} {options}".split())
        + "\n" for n, (root, point, fstype, options) in enumerate(mounts)))
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
    assert usable_cpus(proc) == min(AFFINITY, 2)  # rounded up


@pytest.mark.parametrize("optional", ["", "shared:7 master:3"])
def test_cgroup_v2_in_its_own_namespace(tmp_path, optional):
    """cgroup v2 with a cgroup namespace (Docker's and Kubernetes' default there): "0::/", the container's own cgroup
    at the mount point; mountinfo lines with no or several optional fields. A limit above the CPUs the affinity mask
    gives changes nothing."""
    mount = tmp_path / "cgroup"
    _cgroup(mount, cpu_max="200000 100000")
    proc = _proc(tmp_path, "0::/\n", [("/", str(mount), "cgroup2", "rw")], optional)
    assert cgroup_cpu_quota(proc) == 2.0
    _cgroup(mount, cpu_max=f"{(AFFINITY + 6) * 100000} 100000")
    assert usable_cpus(proc) == AFFINITY


def test_hybrid_host_reads_the_v1_cpu_hierarchy(tmp_path):
    """A hybrid host: the v1 cpu limit counts; the v2 hierarchy, which has no cpu controller (no cpu.max), and a
    cpuacct hierarchy of its own add nothing; the controllers may come in either order."""
    cpu, acct, unified = tmp_path / "cpu", tmp_path / "cpuacct", tmp_path / "unified"
    _cgroup(cpu / "user.slice", cpu_cfs_quota_us="150000", cpu_cfs_period_us="100000")
    _cgroup(acct / "user.slice", cpu_cfs_quota_us="10000", cpu_cfs_period_us="100000")
    _cgroup(unified / "user.slice")
    proc = _proc(tmp_path, "3:cpuacct:/user.slice\n2:cpuset,cpu:/user.slice\n0::/user.slice\n",
                 [("/", str(acct), "cgroup", "rw,cpuacct"), ("/", str(cpu), "cgroup", "rw,cpuset,cpu"),
                  ("/", str(unified), "cgroup2", "rw")])
    assert cgroup_cpu_quota(proc) == 1.5


@pytest.mark.parametrize("root, cgroup", [("/", "0::/../cgroupX\n"), ("/kubepods/pod1", "0::/elsewhere\n")])
def test_a_cgroup_the_mount_does_not_show_is_not_read(tmp_path, root, cgroup):
    """Outside this cgroup namespace ("/.."), or not under the mount's root: nothing is read, not a neighbour's
    whose name begins with the mount point's."""
    mount = tmp_path / "cgroup"
    _cgroup(mount / "elsewhere", cpu_max="50000 100000")
    _cgroup(tmp_path / "cgroupX", cpu_max="50000 100000")
    proc = _proc(tmp_path, cgroup, [(root, str(mount), "cgroup2", "rw")])
    assert cgroup_cpu_quota(proc) is None


def test_a_mount_hidden_by_a_later_one_on_the_same_mount_point_is_not_read(tmp_path):
    """The host's cgroup tree mounted, then the container's own cgroup mounted over it (as some container runtimes
    do): the mount point shows the later one only, so the earlier one's paths are not looked up in it."""
    mount = tmp_path / "cgroup"
    _cgroup(mount, cpu_max="max 100000")
    _cgroup(mount / "ctr", cpu_max="50000 100000")  # under the later mount: a child of the container's cgroup
    proc = _proc(tmp_path, "0::/ctr\n", [("/", str(mount), "cgroup2", "rw"), ("/ctr", str(mount), "cgroup2", "rw")])
    assert cgroup_cpu_quota(proc) is None


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
    assert usable_cpus(proc) == AFFINITY
    assert cgroup_cpu_quota(str(tmp_path / "no-proc")) is None


def test_odd_mountinfo_lines_and_names_never_raise(tmp_path):
    """A mount point that is not UTF-8, a cut-off line, a huge quota: no answer, or the right one, never an
    exception (the fleet step would fail on it)."""
    mount = tmp_path / "cgroup"
    _cgroup(mount, cpu_max="9" * 400 + " 1")
    proc = _proc(tmp_path, "0::/\n", [("/", str(mount), "cgroup2", "rw")])
    with open(os.path.join(proc, "mountinfo"), "ab") as handle:
        handle.write(b"99 23 0:99 / /mnt/caf\xe9 rw - cgroup2 cgroup2 rw\n41 23 0:41 /\n")
    assert cgroup_cpu_quota(proc) is None


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
