"""Shared by bench_contention.py, bench_demo.py and bench_memory.py: run the demo (``icmlm-train --preset demo``,
maybe shortened) in a child process and measure it — wall time, the CPU time of the child and its DataLoader
workers (``getrusage(RUSAGE_CHILDREN)``), and, when asked, the peak proportional set size (PSS) of its process
tree, sampled from ``/proc/PID/smaps_rollup`` — and start CPU-bound processes beside it."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["demo_command", "run_measured", "cpu_hogs", "tree_memory_mb", "child_env"]

# One CPU-bound process: pure Python arithmetic, no I/O, stopped by the benchmark (and by itself after an hour).
HOG_CODE = "import time\nt=time.time()+3600\nx=0\nwhile time.time()<t:\n    for i in range(100000): x+=i*i\n"


def demo_command(out: Path, steps: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The demo as a user runs it (``python -m icmlm_zoo.training``), writing to ``out``; ``steps`` shortens it
    (``train.max_steps``); ``overrides`` are ``key=value`` config overrides."""
    cmd = [sys.executable, "-m", "icmlm_zoo.training", "--preset", "demo", "--out", str(out),
           "--set", "run.progress=false"]
    if steps:
        cmd += ["--set", f"train.max_steps={steps}"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def child_env(defaults: bool = True, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measured child: this one without any thread setting (so the entry point decides),
    with ``ICMLM_ZOO_THREADS=off`` when ``defaults`` is False (torch's own defaults, as before this round)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_BLOCKTIME", "GOMP_SPINCOUNT",
                        "ICMLM_ZOO_THREADS", "ICMLM_ZOO_SET_ENV")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    if not defaults:
        env["ICMLM_ZOO_THREADS"] = "off"
    env.update(extra or {})
    return env


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def tree_memory_mb(pid: int) -> dict[int, dict[str, float]]:
    """Memory in MB of ``pid`` and each of its descendants, from /proc/PID/smaps_rollup: ``pss`` (a page shared by
    N processes counts 1/N in each, so the values add up to what the tree holds), ``rss`` and ``uss`` (private
    pages only)."""
    out: dict[int, dict[str, float]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        kb = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
        if "Pss" in kb:
            out[p] = {"pss": kb["Pss"] / 1024, "rss": kb.get("Rss", 0) / 1024,
                      "uss": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024}
        todo += _children(p)
    return out


def run_measured(cmd: list[str], env: dict[str, str], log: Path, *, memory: bool = False,
                 timeout: float | None = None, interval: float = 0.25) -> dict:
    """Run ``cmd`` to its end; wall seconds, CPU seconds (user, sys) of it and its descendants, and with
    ``memory`` the peak PSS of its process tree (sampled every ``interval`` s). Raises on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = {"pss_mb": 0.0, "processes": 0}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                tree = tree_memory_mb(proc.pid)
                main = tree.get(proc.pid, {"pss": 0.0, "rss": 0.0, "uss": 0.0})
                others = [m for p, m in tree.items() if p != proc.pid]
                total = sum(m["pss"] for m in tree.values())
                if total > peak["pss_mb"]:
                    peak.update(pss_mb=total, processes=len(tree), main_pss_mb=main["pss"],
                                others_pss_mb=total - main["pss"])
                # what the tree would hold where no other process maps its pages (torch's libraries are shared
                # with every other torch process here): the main process's RSS plus the workers' private pages
                alone = main["rss"] + sum(m["uss"] for m in others)
                peak["alone_mb"] = max(peak.get("alone_mb", 0.0), alone)
                peak["main_peak_rss_mb"] = max(peak.get("main_peak_rss_mb", 0.0), main["rss"])
                peak["workers_peak_uss_mb"] = max(peak.get("workers_peak_uss_mb", 0.0),
                                                  sum(m["uss"] for m in others))
        sampler = threading.Thread(target=sample, daemon=True) if memory else None
        if sampler:
            sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with status {rc}; see {log}")
    out = {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime}
    out["cpu_s"] = out["user_s"] + out["sys_s"]
    if memory:
        out.update(peak)
    return out


@contextmanager
def cpu_hogs(n: int, delay: float = 0.0):
    """``n`` CPU-bound Python processes beside the block (none for 0), started ``delay`` seconds into it;
    always stopped when it ends."""
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()
    done = threading.Event()

    def start() -> None:
        with lock:
            for _ in range(n if not done.is_set() else 0):
                procs.append(subprocess.Popen([sys.executable, "-c", HOG_CODE], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
    timer = threading.Timer(delay, start)
    try:
        if delay > 0:
            timer.start()
        else:
            start()
        yield procs
    finally:
        timer.cancel()
        with lock:
            done.set()
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for run folders and logs."""
    return tempfile.TemporaryDirectory(prefix=prefix)
