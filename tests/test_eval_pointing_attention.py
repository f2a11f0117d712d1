"""Pointing game scoring and attention-map rendering (with a stand-in predictor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from icmlm_zoo.analysis.attention_maps import render, upsample
from icmlm_zoo.analysis.cli import main
from icmlm_zoo.analysis.pointing_game import chance_hit_rate, mask_object_word, peak_point, pointing_game

pytest.importorskip("icmlm_zoo.training.data.synthetic")


def _scenes(n=12, size=64):
    from icmlm_zoo.training.data.synthetic import SyntheticScenes

    return SyntheticScenes(n, image_size=size, seed=10_123)


def _oracle(grid: int, hit: bool):
    """A predictor whose attention peaks on the masked object's box centre (or on the farthest cell)."""
    def predict(images, captions):
        outs = []
        for img, cap in zip(images, captions):
            obj = _lookup[cap]
            x0, y0, x1, y1 = obj["box"]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            W, H = img.size
            r, c = min(int(cy / H * grid), grid - 1), min(int(cx / W * grid), grid - 1)
            if not hit:
                r, c = grid - 1 - r, grid - 1 - c
            att = torch.zeros(grid, grid)
            att[r, c] = 1.0
            outs.append({"masks": [{"position": 1, "topk_tokens": [obj["shape"], "x"], "topk_probs": [0.9, 0.1],
                                    "attention": att}]})
        return outs
    return predict


_lookup: dict = {}


def test_pointing_game_hits_and_misses():
    scenes = _scenes()
    for i in range(len(scenes)):
        s = scenes.scene(i)
        m = mask_object_word(s["caption"], s["objects"])
        if m:
            _lookup[m[0]] = m[1]
    good = pointing_game(_oracle(16, True), scenes, batch_size=5)
    assert good["pointing_acc"] == 1.0 and good["masked_shape_top1"] == 1.0 and good["n_masked"] > 0
    assert 0.0 < good["pointing_chance"] < 0.5
    bad = pointing_game(_oracle(16, False), scenes)
    assert bad["pointing_acc"] < good["pointing_acc"]


def test_mask_and_geometry_helpers():
    objs = [{"shape": "circle", "box": (0, 0, 10, 10)}, {"shape": "square", "box": (20, 20, 40, 40)}]
    cap, obj = mask_object_word("a red circle and a blue circle and a square.", objs)
    assert cap == "a red circle and a blue circle and a [MASK]." and obj["shape"] == "square"
    assert mask_object_word("two circles", objs) is None
    assert peak_point(np.array([[0, 0], [0, 1.0]]), (64, 64)) == (48.0, 48.0)
    assert chance_hit_rate((2, 2), (64, 64), (0, 0, 32, 32), 0) == 0.25


def test_render_attention_png(tmp_path):
    img = Image.new("RGB", (48, 48), (30, 30, 30))
    masks = [{"topk_tokens": ["circle", "square", "a", "b", "c"], "topk_probs": [0.5, 0.2, 0.1, 0.1, 0.1],
              "attention": torch.rand(3, 3)},
             {"topk_tokens": ["red"], "topk_probs": [1.0], "attention": None}]
    paths = render(img, "a [MASK] [MASK]", masks, tmp_path)
    assert [p.name for p in paths] == ["attention_1.png", "attention_2.png"]
    assert all(Image.open(p).size[0] > 100 for p in paths)
    up = upsample(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), (8, 8))
    assert up.shape == (8, 8) and up.max() == 1.0 and up.min() == 0.0


def test_attention_cli_errors(tmp_path, capsys):
    assert main(["attention", "--run", str(tmp_path), "--image", str(tmp_path / "x.png"),
                 "--caption", "no mask here"]) == 2
    assert "[MASK]" in capsys.readouterr().err


def test_tp_only_predictions_are_not_scored():
    scenes = _scenes(6)

    def tags_only(images, captions):
        return [{"masks": [{"position": 0, "topk_tokens": ["circle"], "topk_probs": [0.9], "attention": None}]}
                for _ in images]

    res = pointing_game(tags_only, scenes)
    assert res["n_without_attention"] == res["n_masked"] > 0
    assert np.isnan(res["pointing_acc"]) and np.isnan(res["masked_shape_top1"])
