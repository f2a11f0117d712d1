"""A 2-process torchrun (gloo, CPU) training run: DDP, sharded data, rank-0 logging, per-rank RNG in checkpoints."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from train_fixtures import tiny_args


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, tag_file):
    run = tmp_path / "ddp"
    args = tiny_args(tag_file, "--out", str(run), "--set", "run.device=cpu", steps=4, size=32, images=32)
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "icmlm_zoo.training", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from icmlm_zoo.training.checkpoint import load_checkpoint, resolve_checkpoint
    st = load_checkpoint(resolve_checkpoint(run))
    assert st["step"] == 4 and st["world_size"] == 2 and len(st["rng"]) == 2
    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len([r for r in rows if ",train," in r]) == 4  # only rank 0 writes
    # 32 images over 2 ranks, batch 4: 4 batches per rank per epoch, 2 x 4 x 4 samples seen
    assert st["counters"]["seen"] == 32
