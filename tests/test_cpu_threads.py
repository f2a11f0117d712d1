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
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3",
                   "ICMLM_ZOO_SET_ENV": "OMP_NUM_THREADS,OMP_WAIT_POLICY"}  # which of them are ours, not the user's
    assert plan.set_env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3"} and plan.free_cpus == 3

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


STAT = """cpu  900 0 300 5000 10 0 0 0 0 0
cpu0 400 0 100 2500 5 0 0 0 0 0
cpu1 500 0 200 2500 5 0 0 {steal} 0 0
intr 12345
"""


def test_cpu_sample_sums_the_busy_time_of_the_allowed_cpus():
    hz = os.sysconf("SC_CLK_TCK")
    both = cpu_threads.cpu_sample(STAT.format(steal=0), {0, 1}, own=1.0)
    assert both.cpus == 2 and both.busy == pytest.approx(1200 / hz) and both.own == 1.0
    one = cpu_threads.cpu_sample(STAT.format(steal=0), {1}, own=1.0)
    assert one.cpus == 1 and one.busy == pytest.approx(700 / hz)
    stolen = cpu_threads.cpu_sample(STAT.format(steal=50), {1}, own=1.0)  # the hypervisor's: not ours either
    assert stolen.busy == pytest.approx(750 / hz)
    assert cpu_threads.cpu_sample(STAT, {7}, own=1.0) is None  # no line for the allowed CPUs


def _sample(when, busy, own, cpus=2):
    return cpu_threads.CpuSample(when=when, busy=busy, own=own, cpus=cpus)


def test_others_load_is_the_busy_time_that_is_not_ours():
    a = _sample(10.0, 100.0, 5.0)
    assert cpu_threads.others_load(a, _sample(14.0, 108.0, 9.0)) == pytest.approx(1.0)  # 8 busy, 4 ours, in 4 s
    assert cpu_threads.others_load(a, _sample(14.0, 104.0, 9.0)) == 0.0
    assert cpu_threads.others_load(a, _sample(10.2, 101.0, 5.0)) is None  # too short a window to tell
    assert cpu_threads.others_load(None, a) is None


@pytest.mark.parametrize("free, cpus, others, threads", [
    (2, 2, 0.0, 2), (2, 2, 0.3, 2),    # idle, or a light load: both cores
    (2, 2, 1.0, 1), (2, 2, 0.6, 1),    # one core's worth taken: one thread
    (2, 2, 2.0, 1), (2, 2, 3.5, 1),    # never below one
    (2, 64, 30.0, 2),                  # a 2-core quota on a 64-core host half busy: the quota bounds
    (8, 8, 2.9, 5), (4, 4, None, 4),   # no measurement: the free cores
])
def test_threads_follow_the_idle_cores(free, cpus, others, threads):
    assert cpu_threads.threads_for_load(free, cpus, others) == threads


def test_threads_for_run(monkeypatch):
    monkeypatch.setattr(cpu_threads, "_PLAN", None)
    assert cpu_threads.threads_for_run(3, 2) == (3, "run.threads")
    assert cpu_threads.threads_for_run("auto", 2)[0] == 2  # train() called from Python: the caller's setting
    start = _sample(100.0, 50.0, 1.0)
    plan = cpu_threads.ThreadPlan(free_cpus=2, start=start, command=True)
    monkeypatch.setattr(cpu_threads, "_PLAN", plan)
    monkeypatch.setattr(cpu_threads, "cpu_sample", lambda: _sample(105.0, 60.0, 6.0))  # 10 busy, 5 ours
    n, why = cpu_threads.threads_for_run("auto", 2)
    assert n == 1 and "1.0 of them busy" in why
    monkeypatch.setattr(cpu_threads, "cpu_sample", lambda: _sample(105.0, 56.0, 6.0))
    assert cpu_threads.threads_for_run("auto", 2)[0] == 2
    for other in (dict(user_threads=True), dict(off=True), dict(command=False)):
        monkeypatch.setattr(cpu_threads, "_PLAN", cpu_threads.ThreadPlan(free_cpus=2, start=start, **{
            "command": True, **other}))
        assert cpu_threads.threads_for_run("auto", 7)[0] == 7  # the user's or the caller's count stands


def test_our_own_settings_are_not_taken_for_the_users(monkeypatch):
    """After the entry point restarts itself (or in a child), OMP_NUM_THREADS is there, but it was ours."""
    monkeypatch.setattr(cpu_threads, "free_cpu_count", lambda: 2)
    env: dict[str, str] = {}
    configure_cpu_threads(env)
    again = configure_cpu_threads(env)
    assert not again.user_threads and env["OMP_NUM_THREADS"] == "2"
    user = {"OMP_NUM_THREADS": "1"}
    assert configure_cpu_threads(user).user_threads


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs /proc/stat and two cores")
def test_training_command_runs_on_the_cores_a_busy_process_leaves(tmp_path):
    """`icmlm-train` beside a CPU-bound process (pinned to one of the two cores it is given) trains with one
    intra-op thread, says so, and saves the count for a resume."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "ICMLM_ZOO_THREADS", "ICMLM_ZOO_SET_ENV")}
    hog = subprocess.Popen(["taskset", "-c", str(cpus[1]), sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run(["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m",
                              "icmlm_zoo.training", "--preset", "demo", "--out", str(tmp_path / "run"),
                              "--set", "train.max_steps=2", "eval.every=0", "eval.max_batches=1",
                              "run.progress=false", "run.export.model=null", "data.synthetic.num_images=64",
                              "tags.max_captions=200"],
                             capture_output=True, text=True, env=env, timeout=300)
    finally:
        hog.kill()
        hog.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CPU threads: 1 (2 free cores, other processes kept" in out.stdout + out.stderr
    assert "threads: 1" in (tmp_path / "run" / "config.yaml").read_text()


def test_run_threads_key_takes_auto_or_a_count():
    from icmlm_zoo.training.config import ConfigError, load_config
    assert load_config("demo", None, []).run.threads == "auto"
    assert load_config("demo", None, ["run.threads=3"]).run.threads == 3
    for bad in ("run.threads=0", "run.threads=two"):
        with pytest.raises(ConfigError, match="run.threads"):
            load_config("demo", None, [bad])
