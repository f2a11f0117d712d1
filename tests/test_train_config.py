"""Config: presets parse and build their model; unknown keys are errors naming the valid keys."""
from __future__ import annotations

import pytest

from train_fixtures import text_side  # noqa: F401

from icmlm_zoo.training.config import ConfigError, list_presets, load_config, load_preset

PRESETS = ["demo", "coco_r50_tfm", "coco_r50_attfc", "coco_r50_tp_postag", "coco_r50_tp_label", "vg_r50_tfm",
           "coco_vgg16_tfm"]


def test_all_presets_are_shipped():
    assert set(PRESETS) <= set(list_presets())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_and_builds_its_model(name, text_side):
    import torch

    from icmlm_zoo.training.model import build_model
    cfg = load_config(name)
    assert cfg["run"]["export"]["model"] == cfg["model"]["backbone"]
    heads = cfg["model"]["heads"]
    # the real presets use bert-base-uncased (not shipped offline): build the same heads on the embedded MiniLM
    cfg = load_config(name, overrides=["text.model=minilm"])
    fusion = any(h in heads for h in ("attfc", "tfm"))
    model = build_model(cfg, text_side if fusion else None, num_tags=50)
    assert model.backbone.num_features in (256, 512, 2048)
    assert (model.tp is not None) == ("tp" in heads)
    assert model.fusion_kind == ("attfc" if "attfc" in heads else "tfm" if "tfm" in heads else None)
    if name == "coco_r50_tp_label":
        assert cfg["tags"]["source"] == "labels" and cfg["model"]["tp"]["targets"] == "labels"
    size = 64 if "resnet" in cfg["model"]["backbone"] else 64
    with torch.no_grad():
        x = torch.randn(1, 3, size, size)
        out = model(x, torch.tensor([[101, 103, 102]]), torch.ones(1, 3, dtype=torch.long),
                    torch.tensor([[-100, 2417, -100]]), torch.zeros(1, 50)) if fusion else model(x, tp=torch.zeros(1, 50))
    assert torch.isfinite(out["loss"])


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*valid keys under optim: .*lr"):
        load_config("demo", overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*demo"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("demo", overrides=["train.amp=fp8"])


def test_overrides_and_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-4\nmodel:\n  heads: [tfm, tp]\n")
    cfg = load_config("demo", f, ["train.batch_size=8", "model.tfm.layers=3", "run.stop_after=null"])
    assert cfg["optim"]["lr"] == pytest.approx(1e-4) and cfg["train"]["batch_size"] == 8
    assert cfg["model"]["heads"] == ["tfm", "tp"] and cfg["model"]["tfm"]["layers"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  sythetic: {}\n")
    with pytest.raises(ConfigError, match="data.sythetic"):
        load_config(config_file=bad)


def test_cli_reports_config_errors(capsys):
    from icmlm_zoo.training.cli import main
    assert main(["--preset", "demo", "--set", "nosuch.key=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["--preset", "demo", "--print-config", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
