"""CPU thread settings that survive a busy machine: OpenMP's passive wait policy and thread counts from the cores
actually free to the process (its CPU affinity and its cgroup's CPU quota).

With OpenMP's default wait policy the threads of torch's pool spin after every parallel region; on cores that
other processes hold, each spinning thread takes time the others need and small ops become many times slower
(docs/performance.md, "Contention"). The policy is read once, when the OpenMP runtime is loaded, i.e. when torch
is imported: :func:`configure_cpu_threads` must run before that, which is why this module imports nothing but
the standard library. The command-line entry points call it on their first line.

A setting the user made in the environment always wins; ``ICMLM_ZOO_THREADS=off`` turns all of this off.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import MutableMapping

__all__ = ["ThreadPlan", "configure_cpu_threads", "free_cpu_count", "cgroup_cpu_limit", "loader_workers",
           "OFF_VARIABLE"]

OFF_VARIABLE = "ICMLM_ZOO_THREADS"
# OMP_WAIT_POLICY=PASSIVE: libgomp (torch's OpenMP on Linux wheels) sets its spin count to 0, LLVM/Intel OpenMP
# its block time to 0; the same one variable serves all three runtimes.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_OPENMP_LIBS = ("libgomp", "libiomp", "libomp")


@dataclass
class ThreadPlan:
    """What :func:`configure_cpu_threads` found and did."""
    free_cpus: int                          # cores this process may use (affinity and cgroup quota)
    set_env: dict[str, str] = field(default_factory=dict)  # variables it set (unset before)
    in_time: bool = True                    # False: the OpenMP runtime was already loaded, the policy came late
    torch_threads: int | None = None        # torch's intra-op threads after the call, when torch was imported
    off: bool = False                       # ICMLM_ZOO_THREADS=off


def cgroup_cpu_limit(proc_cgroup: str, fs_root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota, in cores, of the cgroup named in ``proc_cgroup`` (the text of /proc/self/cgroup), or
    ``None`` where there is none. Reads cgroup v2 ``cpu.max`` ("max 100000" = no quota) or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = no quota), at the process's cgroup and every parent
    (a parent's quota bounds its children); the smallest quota found wins."""
    root = Path(fs_root)
    limits: list[float] = []
    for line in proc_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":                                  # v2 unified hierarchy
            base, reader = root, _read_v2
        elif "cpu" in controllers.split(","):                  # v1 cpu controller (maybe "cpu,cpuacct")
            base = next((root / n for n in (controllers, "cpu", "cpu,cpuacct") if (root / n).is_dir()), None)
            if base is None:
                continue
            reader = _read_v1
        else:
            continue
        rel = Path(path.lstrip("/"))
        for folder in [base / rel, *[base / p for p in rel.parents]]:
            limit = reader(folder)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _read_v2(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def free_cpu_count(proc_cgroup: str | None = None, fs_root: str | Path = "/sys/fs/cgroup") -> int:
    """Cores this process may use: its CPU affinity (``os.sched_getaffinity``) bounded by its cgroup's CPU quota
    (rounded up; at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):                      # not Linux
        cpus = os.cpu_count() or 1
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    quota = cgroup_cpu_limit(proc_cgroup, fs_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def loader_workers(requested: int, free_cpus: int) -> int:
    """DataLoader workers for ``requested`` on ``free_cpus`` cores: at most one per core beyond the one the
    training step runs on (0 = load in the main process on a single core)."""
    return max(0, min(requested, free_cpus - 1))


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already mapped into this process (then the wait policy comes too late)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "torch" in sys.modules
    return any(lib in maps for lib in _OPENMP_LIBS)


def configure_cpu_threads(environ: MutableMapping[str, str] | None = None, *, restart: bool = False) -> ThreadPlan:
    """Set OpenMP's passive wait policy and the intra-op thread count (the free cores) in ``environ``
    (default ``os.environ``) where the user has not set them; where torch is already imported, lower its
    intra-op threads to the free cores (never raise them). Call it before torch is imported.

    ``restart=True`` (command-line entry points only): when the OpenMP runtime was already loaded by an
    earlier import, so that the policy would come too late, re-execute the same command line once with the
    variables set (the process keeps its id, arguments and environment)."""
    env = os.environ if environ is None else environ
    free = free_cpu_count()
    if env.get(OFF_VARIABLE, "").lower() in ("off", "0", "false", "no"):
        return ThreadPlan(free_cpus=free, off=True)
    user_threads = any(v in env for v in THREAD_VARIABLES)
    wanted = {WAIT_POLICY[0]: WAIT_POLICY[1]}
    if not user_threads:
        wanted["OMP_NUM_THREADS"] = str(free)
    plan = ThreadPlan(free_cpus=free)
    for name, value in wanted.items():
        if name not in env:
            env[name] = value
            plan.set_env[name] = value
    plan.in_time = not (plan.set_env.get(WAIT_POLICY[0]) and _openmp_loaded())
    if not plan.in_time and restart and environ is None and sys.platform.startswith("linux"):
        _restart_process()
    torch = sys.modules.get("torch")
    if torch is not None:
        if not user_threads and torch.get_num_threads() > free:
            torch.set_num_threads(free)
        plan.torch_threads = torch.get_num_threads()
    return plan


def _restart_process() -> None:  # pragma: no cover - replaces the process
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
