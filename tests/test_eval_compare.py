"""Held-out probes compare several checkpoints in one table (markdown + JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import icmlm_zoo.models  # noqa: F401  (registers icmlm_resnet_tiny)
from icmlm_zoo.analysis import compare as cmp
from icmlm_zoo.analysis.cli import main
from icmlm_zoo.analysis.scene_probes import COMPARE_TASKS, held_out_scenes, probe_scores, scene_targets

pytest.importorskip("icmlm_zoo.training.data.synthetic")


def _weights(path, seed: int, folder: bool = False):
    torch.manual_seed(seed)
    model = timm.create_model("icmlm_resnet_tiny", pretrained=False, num_classes=0)
    if folder:
        path.mkdir(parents=True)
        save_file(model.state_dict(), str(path / "model.safetensors"))
        # the layout icmlm-train export writes: a plain timm architecture + model_args (loads without our package)
        (path / "config.json").write_text(json.dumps({
            "architecture": "resnet18", "num_classes": 0,
            "model_args": {"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256]},
            "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225], "crop_pct": 1.0, "interpolation": "bilinear"}}))
        return path
    save_file(model.state_dict(), str(path))
    return path


def test_compare_table_over_checkpoints(tmp_path):
    a = _weights(tmp_path / "a.safetensors", 1)
    b = _weights(tmp_path / "ckpt_b", 2, folder=True)
    out = tmp_path / "out"
    args = ["compare", f"seed1={a}", str(b), "random=random:icmlm_resnet_tiny", "--arch", "icmlm_resnet_tiny",
            "--num-train", "32", "--num-test", "24", "--image-size", "32", "--out", str(out)]
    assert main(args) == 0
    res = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in res["rows"]] == ["seed1", "ckpt_b", "random"]
    for r in res["rows"]:
        for key, _ in cmp.COMPARE_COLUMNS:
            assert r[key] is None or 0.0 <= r[key] <= 1.0
    table = (out / "compare.md").read_text()
    assert "| seed1 |" in table and "| ckpt_b |" in table and "*chance*" in table
    # fixed seeds: the same evaluation gives the same numbers
    again = cmp.compare(["random=random:icmlm_resnet_tiny"], num_train=32, num_test=24, image_size=32)
    assert json.loads(json.dumps(again["rows"][0])) == res["rows"][2]


def test_weight_folder_with_model_args_loads_exactly(tmp_path):
    from icmlm_zoo.backbone_factory import load_backbone

    folder = _weights(tmp_path / "w", 3, folder=True)
    torch.manual_seed(3)
    ref = timm.create_model("icmlm_resnet_tiny", pretrained=False, num_classes=0).state_dict()
    for spec in (str(folder), str(folder / "model.safetensors")):
        got = load_backbone(spec).model.state_dict()
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


def test_parse_models_rejects_duplicates():
    assert cmp.parse_models(["x=random:a", "random:b"]) == [("x", "random:a"), ("random:b", "random:b")]
    with pytest.raises(ValueError, match="duplicate"):
        cmp.parse_models(["x=random:a", "x=random:b"])


def test_probes_learn_from_informative_features():
    train, test = held_out_scenes(120, 60, image_size=32)
    ytr, yte = scene_targets(train), scene_targets(test)
    # features that encode the labels (plus noise) must beat chance by far
    rng = np.random.default_rng(0)

    def feats(y):
        return np.hstack([y["shape_presence"], y["color_presence"], np.eye(6)[y["largest_color"]],
                          np.eye(4)[y["largest_shape"]], np.eye(4)[y["count"]]]) + 0.05 * rng.normal(
            size=(len(y["count"]), 24))

    m = probe_scores({"pooled": feats(ytr)}, ytr, {"pooled": feats(yte)}, yte, COMPARE_TASKS)
    assert m["shape_presence_mAP"] > 0.95 and m["largest_color_acc"] > 0.9 and m["count_acc"] > 0.9
    assert train.seed >= 10_000 and test.seed != train.seed
