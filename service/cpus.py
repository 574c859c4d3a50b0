"""The CPUs this process may use (its CPU affinity, and its cgroup's CPU quota: a container's CPU limit), and the default number of workers that follows from them.

A worker is one process with one event loop; its model calls run on one intra-op thread
(``SERVICE_THREADS``). One worker per usable CPU, at least one, is the rule measured in
docs/decisions/workers.md. A quota of 1.5 CPUs gives one worker: a second would be throttled half of the time.
BentoML's own ``workers: cpu_count`` reads the quota only where the cgroup is mounted at the root and
ignores the affinity (``taskset``, ``docker --cpuset-cpus``), hence this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity() -> int:
    """CPUs the scheduler may run this process on (``taskset``, cpusets); all of them where that is not known."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limit(directory: Path) -> float | None:
    """cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000"): the quota in CPUs, None when unlimited or unreadable."""
    text = _read(directory / "cpu.max")
    parts = text.split() if text else []
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
        return int(parts[0]) / int(parts[1])
    return None


def _v1_limit(directory: Path) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: unlimited)."""
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota), int(period)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def _ancestry(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder under `mount` and each parent up to the mount: a parent's limit applies to its children."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup and its parents, in CPUs (the smallest); None when there is none."""
    limits: list[float] = []
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2, the unified hierarchy
            limits += filter(None, map(_v2_limit, _ancestry(root, path)))
        elif "cpu" in controllers.split(","):  # cgroup v1: mounted as cpu, or cpu,cpuacct
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if mount.is_dir():
                    limits += filter(None, map(_v1_limit, _ancestry(mount, path)))
                    break
    return min(limits) if limits else None


def usable() -> float:
    """CPUs this process may use: its affinity, capped by its cgroup's quota."""
    cpus, limit = float(affinity()), quota()
    return min(cpus, limit) if limit else cpus


def default_workers(cpus: float | None = None) -> int:
    """One worker per whole usable CPU (`cpus`, default: read here), at least one."""
    return max(1, math.floor(usable() if cpus is None else cpus))
