"""End to end with a real (tiny) icmlm-train run: pointing game, attention PNGs, compare, detectron2 export."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

pytest.importorskip("icmlm_zoo.training.inference")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from icmlm_zoo.training.cli import main as train_main

    out = tmp_path_factory.mktemp("evalrun") / "run"
    sets = ["data.synthetic.num_images=32", "data.synthetic.val_images=8", "data.image_size=64",
            "data.synthetic.image_size=64", "train.batch_size=16", "run.tensorboard=false", "run.progress=false",
            "tags.min_count=1", "run.export={model: null, tag: null}", "data.num_workers=0", "eval.max_batches=1"]
    args = ["--preset", "demo", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert train_main(args) == 0
    return out


def test_pointing_attention_compare_export(run_dir, tmp_path):
    from icmlm_zoo.analysis.cli import main
    from icmlm_zoo.backbone_factory import load_backbone
    from icmlm_zoo.detection.detectron2 import detectron2_to_timm, export_detectron2
    from icmlm_zoo.training.data.synthetic import SyntheticScenes

    assert main(["pointing", "--run", str(run_dir), "--num-scenes", "12", "--out", str(tmp_path / "pg")]) == 0
    pg = json.loads((tmp_path / "pg" / "pointing.json").read_text())
    assert 0 <= pg["pointing_acc"] <= 1 and pg["n_masked"] > 0 and pg["n_without_attention"] == 0

    img = tmp_path / "scene.png"
    SyntheticScenes(1, 64, seed=30_000).scene(0)["image"].save(img)
    assert main(["attention", "--run", str(run_dir), "--image", str(img), "--caption", "a [MASK] on the [MASK].",
                 "--out", str(tmp_path / "att")]) == 0
    res = json.loads((tmp_path / "att" / "scene_attention.json").read_text())
    assert len(res["masks"]) == 2 and all(len(m["topk_tokens"]) == 5 for m in res["masks"])
    assert all((tmp_path / "att" / f"scene_attention_{k}.png").is_file() for k in (1, 2))

    assert main(["compare", f"run={run_dir}", "random=random:icmlm_resnet_tiny", "--num-train", "32", "--num-test",
                 "24", "--pointing-scenes", "8", "--image-size", "64", "--out", str(tmp_path / "cmp")]) == 0
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert "pointing_acc" in rows[0] and "pointing_acc" not in rows[1]

    backbone = load_backbone(str(run_dir)).model
    out = export_detectron2(str(run_dir), tmp_path / "run.pkl")
    with open(out, "rb") as f:
        back = detectron2_to_timm(pickle.load(f))
    ref = backbone.state_dict()
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)


def test_binding_diagnosis_quick(run_dir, tmp_path):
    """``icmlm-eval binding-diagnosis --quick`` on a real run: the frozen MiniLM state at a binding mask tells
    which object its phrase names (well above the majority shape), the trunk probes and the fresh heads
    are reported with their controls, and the table is written."""
    from icmlm_zoo.analysis.cli import main

    out = tmp_path / "bd"
    assert main(["binding-diagnosis", "--run", str(run_dir), "--quick", "--masks", "single", "binding",
                 "--out", str(out)]) == 0
    res = json.loads((out / "binding_diagnosis.json").read_text())
    assert res["text_named_shape"] > res["text_named_shape_majority"] + 0.2
    assert set(res["heads"]) == {"single", "binding"}
    for head in res["heads"].values():
        assert {"binding", "binding_shuffled", "visual", "pointing", "curve"} <= set(head) and 0 <= head["binding"] <= 1
    assert 0.3 < res["binding_bag_of_colors"] < 0.5 and 0 <= res["trunk_color_multi_object"] <= 1
    assert "| binding masks |" in (out / "binding_diagnosis.md").read_text()
    assert res["trunk"] == "the run's" and res["head_init"] == "random"
    # heads on a random trunk (the control of what pretraining gave the trunk), started from the run's head
    # (and a mix at a set dose of binding items)
    assert main(["binding-diagnosis", "--run", str(run_dir), "--quick", "--masks", "binding", "mix", "--trunk",
                 "random", "--start-from-run-head", "--binding-share", "0.25", "--batch-size", "8",
                 "--out", str(tmp_path / "bd_random")]) == 0
    rnd = json.loads((tmp_path / "bd_random" / "binding_diagnosis.json").read_text())
    assert rnd["trunk"] == "random" and rnd["head_init"] == "the run's head"
    assert list(rnd["heads"]) == ["binding", "mix"]
    assert rnd["binding_share"] == 0.25 and rnd["batch_size"] == 8
    assert "Copies of the run’s attfc heads" in (tmp_path / "bd_random" / "binding_diagnosis.md").read_text()
    assert rnd["text_named_shape"] == res["text_named_shape"]  # the frozen text side does not depend on the trunk
    with pytest.raises(SystemExit):
        main(["binding-diagnosis", "--run", str(run_dir), "--masks", "every"])
