"""CPU thread settings that survive a busy machine: OpenMP's passive wait policy and thread counts from the cores
actually free to the process (its CPU affinity, its cgroup's CPU quota, and the load other processes put on them).

With OpenMP's default wait policy the threads of torch's pool spin after every parallel region; on cores that
other processes hold, each spinning thread takes time the others need and small ops become many times slower
(docs/performance.md, "Contention"). The policy is read once, when the OpenMP runtime is loaded, i.e. when torch
is imported: :func:`configure_cpu_threads` must run before that, which is why this module imports nothing but
the standard library. The command-line entry points call it on their first line.

:func:`configure_cpu_threads` also samples the CPU time of the machine and of the process; a training run
calls :func:`threads_for_run` once its start-up is over, and runs on the cores that other processes left idle
meanwhile (two intra-op threads sharing one core with another busy process wait for each other at every op:
docs/performance.md, "Contention").

A setting the user made in the environment always wins; ``ICMLM_ZOO_THREADS=off`` turns all of this off.
"""
from __future__ import annotations

import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import MutableMapping

__all__ = ["ThreadPlan", "CpuSample", "configure_cpu_threads", "free_cpu_count", "cgroup_cpu_limit",
           "loader_workers", "cpu_sample", "others_load", "threads_for_load", "threads_for_run", "OFF_VARIABLE"]

OFF_VARIABLE = "ICMLM_ZOO_THREADS"
SET_BY_US = "ICMLM_ZOO_SET_ENV"  # the variables above that we set, not the user (read after a restart)
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
    user_threads: bool = False              # the user set OMP_NUM_THREADS / MKL_NUM_THREADS
    start: CpuSample | None = None          # CPU time when it ran (the command's start)
    command: bool = False                   # made by a command line's entry point (restart=True)


@dataclass(frozen=True)
class CpuSample:
    """CPU time at one moment: seconds the CPUs this process may use have been busy (all processes, from
    /proc/stat), and this process's own CPU seconds (its threads and its children that have ended)."""
    when: float    # time.monotonic()
    busy: float    # busy seconds summed over the CPUs in ``cpus``
    own: float     # this process's user + system seconds
    cpus: int      # how many CPUs ``busy`` covers


_PLAN: ThreadPlan | None = None  # the last configure_cpu_threads() of this process


def cpu_sample(stat_text: str | None = None, cpus: set[int] | None = None, own: float | None = None) -> \
        CpuSample | None:
    """The machine's and this process's CPU time now (arguments: for tests); ``None`` where /proc/stat cannot
    be read (not Linux). Busy = user + nice + system + irq + softirq + steal (steal: time the hypervisor gave to
    others, which this process cannot have either)."""
    try:
        text = Path("/proc/stat").read_text() if stat_text is None else stat_text
        allowed = os.sched_getaffinity(0) if cpus is None else cpus
    except (OSError, AttributeError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy, seen = 0, 0
    for line in text.splitlines():
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed):
            continue
        v = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
        busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        seen += 1
    if not seen:
        return None
    if own is None:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return CpuSample(time.monotonic(), busy / hz, own, seen)


def others_load(before: CpuSample | None, after: CpuSample | None, min_window: float = 0.5) -> float | None:
    """Cores' worth of CPU that other processes used on this process's CPUs between two samples (``None`` when
    a sample is missing or the window is shorter than ``min_window`` seconds)."""
    if before is None or after is None or after.when - before.when < min_window:
        return None
    used = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, used / (after.when - before.when))


def threads_for_load(free_cpus: int, cpus: int, others: float | None) -> int:
    """Intra-op threads on ``free_cpus`` cores (affinity and quota) of which ``cpus`` are in the sample, when
    other processes keep ``others`` cores busy: the idle cores, rounded to the nearest (a process using under
    half a core costs no thread), at least 1."""
    if others is None:
        return free_cpus
    return max(1, min(free_cpus, math.floor(cpus - others + 0.5)))


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
        return _remember(ThreadPlan(free_cpus=free, off=True), environ)
    ours = set(env.get(SET_BY_US, "").split(",")) - {""}  # set by an earlier call (before a restart, a parent)
    user_threads = any(v in env and v not in ours for v in THREAD_VARIABLES)
    wanted = {WAIT_POLICY[0]: WAIT_POLICY[1]}
    if not user_threads:
        wanted["OMP_NUM_THREADS"] = str(free)
    plan = ThreadPlan(free_cpus=free, user_threads=user_threads, start=cpu_sample(), command=restart)
    for name, value in wanted.items():
        if name not in env:
            env[name] = value
            plan.set_env[name] = value
    if plan.set_env:
        env[SET_BY_US] = ",".join(sorted(ours | set(plan.set_env)))
    plan.in_time = not (plan.set_env.get(WAIT_POLICY[0]) and _openmp_loaded())
    if not plan.in_time and restart and environ is None and sys.platform.startswith("linux"):
        _restart_process()
    torch = sys.modules.get("torch")
    if torch is not None:
        if not user_threads and torch.get_num_threads() > free:
            torch.set_num_threads(free)
        plan.torch_threads = torch.get_num_threads()
    return _remember(plan, environ)


def _remember(plan: ThreadPlan, environ: MutableMapping[str, str] | None) -> ThreadPlan:
    """Keep the plan of a call on this process's own environment for :func:`threads_for_run`."""
    global _PLAN
    if environ is None:
        _PLAN = plan
    return plan


def threads_for_run(setting: str | int, current: int) -> tuple[int, str]:
    """The intra-op threads of a CPU training run for ``run.threads`` = ``setting``, and why: a number is used
    as given; ``auto`` gives the cores that other processes left idle since the command started
    (:func:`configure_cpu_threads` from a command line's entry point), or keeps ``current`` where the user set
    the count in the environment, turned these defaults off, or no command started this process (``train()``
    or ``main(argv)`` called from Python: the caller's setting stands)."""
    if setting != "auto":
        return int(setting), "run.threads"
    plan = _PLAN
    if plan is None or not plan.command or plan.off or plan.user_threads:
        why = ("the caller's setting" if plan is None or not plan.command else f"{OFF_VARIABLE}=off" if plan.off
               else "the thread count set in the environment")
        return current, why
    now = cpu_sample()
    others = others_load(plan.start, now)
    n = threads_for_load(plan.free_cpus, now.cpus if now else plan.free_cpus, others)
    if others is None:
        return n, f"{plan.free_cpus} free cores"
    return n, (f"{plan.free_cpus} free cores, other processes kept {others:.1f} of them busy during "
               f"the {now.when - plan.start.when:.0f} s start-up")


def _restart_process() -> None:  # pragma: no cover - replaces the process
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
