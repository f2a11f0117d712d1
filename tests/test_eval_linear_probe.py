"""Linear probe on a tiny separable ImageFolder; resume gives the same head as an uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from icmlm_zoo.analysis.cli import main
from icmlm_zoo.evaluation import linear_probe as lp

TINY = "random:icmlm_resnet_tiny"
COLORS = {"blue": (30, 60, 220), "red": (220, 30, 30), "yellow": (230, 220, 40)}


def make_folder(root, per_class=(8, 4), size=32, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for cls, rgb in COLORS.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_probe_learns_and_writes_results(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["linear", "--model", TINY, "--data", str(data), "--image-size", "32", "--epochs", "8",
                 "--batch-size", "8", "--lr", "1.0", "--out", str(out)]) == 0
    res = json.loads((out / "linear_probe.json").read_text())
    assert res["top1"] == 1.0 and res["top5"] == 1.0
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    assert (out / "linear_probe.md").is_file()
    # an existing checkpoint is never silently overwritten
    assert main(["linear", "--model", TINY, "--data", str(data), "--image-size", "32", "--epochs", "1",
                 "--out", str(out)]) == 2


def test_resume_matches_uninterrupted(tmp_path):
    data = make_folder(tmp_path / "data", per_class=(4, 2))
    cfg = lp.ProbeConfig(epochs=3, image_size=32, batch_size=4, lr=0.5)
    full = lp.run_linear_probe(TINY, data, tmp_path / "full", config=cfg, progress=False)
    lp.run_linear_probe(TINY, data, tmp_path / "part", config=cfg, progress=False, stop_after_epoch=2)
    assert torch.load(tmp_path / "part" / lp.CHECKPOINT, weights_only=True)["epoch"] == 2
    resumed = lp.run_linear_probe(TINY, data, tmp_path / "part", config=cfg, resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    a = torch.load(tmp_path / "full" / lp.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "part" / lp.CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])
    assert resumed["top1"] == pytest.approx(full["top1"]) and resumed["loss"] == pytest.approx(full["loss"])


def test_missing_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        lp.find_splits(tmp_path)
