"""service/cpus.py: the CPUs a process may use (affinity, cgroup v1 and v2 quotas up the hierarchy) and the default worker count."""

import os

import pytest

from service import cpus


def cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    """A fake /sys/fs/cgroup (`files`: path under it -> contents) and /proc/self/cgroup holding `proc_line`."""
    root = tmp_path / "cgroup"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line + "\n")
    return root, proc


def test_cgroup_v2_at_the_root_as_in_a_container(tmp_path):
    root, proc = cgroup(tmp_path, "0::/", {"cpu.max": "150000 100000\n"})
    assert cpus.quota(root, proc) == 1.5


def test_cgroup_v2_unlimited(tmp_path):
    root, proc = cgroup(tmp_path, "0::/", {"cpu.max": "max 100000\n"})
    assert cpus.quota(root, proc) is None


def test_cgroup_v2_nested_takes_the_smallest_limit_up_the_tree(tmp_path):
    root, proc = cgroup(tmp_path, "0::/kubepods.slice/pod1/ctr", {
        "cpu.max": "max 100000", "kubepods.slice/cpu.max": "800000 100000",
        "kubepods.slice/pod1/cpu.max": "200000 100000", "kubepods.slice/pod1/ctr/cpu.max": "max 100000"})
    assert cpus.quota(root, proc) == 2.0


def test_cgroup_v1_cpu_controller(tmp_path):
    root, proc = cgroup(tmp_path, "4:memory:/x\n3:cpu,cpuacct:/docker/abc", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cpus.quota(root, proc) == 0.5


def test_no_cgroup_files_no_quota(tmp_path):
    root, proc = cgroup(tmp_path, "0::/", {})
    assert cpus.quota(root, proc) is None
    assert cpus.quota(tmp_path / "absent", tmp_path / "absent-proc") is None


@pytest.mark.parametrize("usable,workers", [(0.5, 1), (1.0, 1), (1.5, 1), (2.0, 2), (3.9, 3), (16.0, 16)])
def test_one_worker_per_whole_usable_cpu_at_least_one(usable, workers):
    assert cpus.default_workers(usable) == workers


def test_usable_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(cpus, "affinity", lambda: 8)
    monkeypatch.setattr(cpus, "quota", lambda: 2.5)
    assert cpus.usable() == 2.5 and cpus.default_workers() == 2
    monkeypatch.setattr(cpus, "quota", lambda: None)
    assert cpus.usable() == 8.0


def test_the_affinity_is_this_process_s():
    assert cpus.affinity() == len(os.sched_getaffinity(0))
