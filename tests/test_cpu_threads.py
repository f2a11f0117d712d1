"""icmlm_zoo.cpu_threads: the busy-CPU defaults the entry points set before torch starts its thread pool."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from icmlm_zoo import cpu_threads
from icmlm_zoo.cpu_threads import cgroup_cpu_limit, configure_cpu_threads, free_cpu_count, loader_workers


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_env_is_set_only_where_unset(monkeypatch):
    monkeypatch.setattr(cpu_threads, "free_cpu_count", lambda: 3)
    env: dict[str, str] = {}
    plan = configure_cpu_threads(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3"}
    assert plan.set_env == env and plan.free_cpus == 3

    user = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}
    plan = configure_cpu_threads(user)
    assert user == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}  # the user's settings win
    assert plan.set_env == {}


def test_user_thread_count_in_mkl_variable_is_respected(monkeypatch):
    monkeypatch.setattr(cpu_threads, "free_cpu_count", lambda: 2)
    env = {"MKL_NUM_THREADS": "1"}
    configure_cpu_threads(env)
    assert "OMP_NUM_THREADS" not in env and env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_off_switch_leaves_everything(monkeypatch):
    env = {"ICMLM_ZOO_THREADS": "off"}
    plan = configure_cpu_threads(env)
    assert plan.off and env == {"ICMLM_ZOO_THREADS": "off"}


def test_lowers_torch_threads_to_the_free_cores_never_raises(monkeypatch):
    import torch
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(cpu_threads, "free_cpu_count", lambda: 1)
        plan = configure_cpu_threads({})
        assert torch.get_num_threads() == 1 and plan.torch_threads == 1
        monkeypatch.setattr(cpu_threads, "free_cpu_count", lambda: 8)
        configure_cpu_threads({})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cgroup_v2_quota(tmp_path):
    _write(tmp_path / "user.slice/job/cpu.max", "150000 100000\n")
    _write(tmp_path / "user.slice/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit("0::/user.slice/job\n", tmp_path) == pytest.approx(1.5)
    assert cgroup_cpu_limit("0::/user.slice\n", tmp_path) is None  # "max": no quota


def test_cgroup_v2_parent_quota_bounds_the_child(tmp_path):
    _write(tmp_path / "a/cpu.max", "100000 100000\n")
    _write(tmp_path / "a/b/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit("0::/a/b\n", tmp_path) == pytest.approx(1.0)


def test_cgroup_v1_quota(tmp_path):
    _write(tmp_path / "cpu,cpuacct/docker/x/cpu.cfs_quota_us", "250000\n")
    _write(tmp_path / "cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n")
    text = "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n"
    assert cgroup_cpu_limit(text, tmp_path) == pytest.approx(2.5)
    _write(tmp_path / "cpu,cpuacct/docker/x/cpu.cfs_quota_us", "-1\n")  # v1: no quota
    assert cgroup_cpu_limit(text, tmp_path) is None


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup_cpu_limit("0::/\n1:cpu:/\n", tmp_path) is None
    assert cgroup_cpu_limit("", tmp_path) is None


def test_free_cpus_take_the_smaller_of_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    _write(tmp_path / "job/cpu.max", "150000 100000\n")
    assert free_cpu_count("0::/job\n", tmp_path) == 2            # 1.5 cores of quota, rounded up
    _write(tmp_path / "job/cpu.max", "900000 100000\n")
    assert free_cpu_count("0::/job\n", tmp_path) == 4            # affinity is the bound
    assert free_cpu_count("0::/none\n", tmp_path) == 4


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_affinity_is_respected_in_a_fresh_process():
    code = textwrap.dedent("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        from icmlm_zoo.cpu_threads import free_cpu_count
        print(free_cpu_count())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_loader_workers_leave_a_core_for_the_step():
    assert loader_workers(4, 2) == 1
    assert loader_workers(1, 1) == 0
    assert loader_workers(0, 8) == 0
    assert loader_workers(3, 8) == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_entry_point_reaches_openmp_in_time():
    """The policy comes before OpenMP is loaded: when torch was already imported, the command restarts itself
    once with the variables set, so the child sees them from its start."""
    code = textwrap.dedent("""
        import os, sys
        import torch  # loads OpenMP before the entry point's first line, as `import icmlm_zoo` does
        from icmlm_zoo.cpu_threads import configure_cpu_threads
        print("start", os.environ.get("OMP_WAIT_POLICY"), flush=True)
        plan = configure_cpu_threads(restart=True)
        print("end", os.environ.get("OMP_WAIT_POLICY"), plan.in_time, flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "ICMLM_ZOO_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split("\n")[:3] == ["start None", "start PASSIVE", "end PASSIVE True"]
