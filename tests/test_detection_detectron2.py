"""detectron2 export: MoCo/d2 key mapping, round trip, pickle format, config snippet."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch

from icmlm_zoo.detection.detectron2 import detectron2_to_timm, export_detectron2, resnet_depth, timm_to_detectron2


def _register() -> str:
    """The tiny ICMLM test architecture (falls back to timm resnet18 while the registry is unavailable)."""
    try:
        import icmlm_zoo.models  # noqa: F401
        return "icmlm_resnet_tiny"
    except ImportError:  # pragma: no cover
        return "resnet18"


def _moco_reference(key: str) -> str:
    """The string-replace mapping of MoCo's convert-pretrain-to-detectron2.py, re-stated as an oracle."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _d2_r50_keys() -> set[str]:
    """Parameter/buffer names of detectron2's build_resnet_backbone for R50 (BN with running stats)."""
    norm = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"stem.conv1.weight"} | {f"stem.conv1.norm.{n}" for n in norm}
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(blocks):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if b == 0 else [])
            for c in convs:
                keys.add(f"res{stage}.{b}.{c}.weight")
                keys |= {f"res{stage}.{b}.{c}.norm.{n}" for n in norm}
    return keys


@pytest.fixture(scope="module")
def r50_state() -> dict[str, torch.Tensor]:
    name = "icmlm_resnet50" if _register() != "resnet18" else "resnet50"
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0).state_dict()


def test_r50_keys_are_detectron2_names(r50_state):
    d2 = timm_to_detectron2(r50_state)
    assert set(d2) == _d2_r50_keys()
    assert all(isinstance(v, np.ndarray) for v in d2.values())
    # same names as MoCo's converter
    assert set(d2) == {_moco_reference(k) for k in r50_state}
    assert resnet_depth(r50_state) == 50


def test_round_trip_equals_original(r50_state):
    back = detectron2_to_timm(timm_to_detectron2(r50_state))
    assert set(back) == set(r50_state)
    for k, v in r50_state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_head_keys_dropped_and_vgg_refused():
    state = {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}
    assert set(timm_to_detectron2(state)) == {"stem.conv1.weight"}
    with pytest.raises(ValueError, match="no VGG backbone"):
        timm_to_detectron2({"features.0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="not a detectron2 ResNet key"):
        detectron2_to_timm({"backbone.fpn_lateral2.weight": np.zeros(1)})


def test_export_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    name = _register()
    torch.manual_seed(1)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    out = export_detectron2(str(weights), tmp_path / "d2" / "model.pkl", arch=name)
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "icmlm_zoo" and data["matching_heuristics"] is True
    back = detectron2_to_timm(data)
    ref = model.state_dict()
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    snippet = out.with_suffix(".yaml").read_text()
    assert 'FORMAT: "RGB"' in snippet and "PIXEL_MEAN: [123.675, 116.280, 103.530]" in snippet
    assert "STRIDE_IN_1X1: False" in snippet
    with pytest.raises(ValueError, match=r"\.pkl"):
        export_detectron2(str(weights), tmp_path / "model.pth", arch=name)
    with pytest.raises(ValueError, match="--arch"):
        export_detectron2(str(weights), tmp_path / "m.pkl")


def test_export_refuses_to_overwrite_without_overwrite(tmp_path, capsys):
    from safetensors.torch import save_file

    from icmlm_zoo.cli import main as zoo_main

    name = _register()
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model(name, pretrained=False, num_classes=0).state_dict(), str(weights))
    out = tmp_path / "model.pkl"
    out.with_suffix(".yaml").write_text("# my detectron2 settings\n")
    args = ["export-detectron2", str(weights), str(out), "--arch", name]
    assert zoo_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.yaml" in err and "--overwrite" in err
    assert out.with_suffix(".yaml").read_text() == "# my detectron2 settings\n" and not out.exists()
    assert zoo_main(args + ["--overwrite"]) == 0
    assert "PIXEL_MEAN" in out.with_suffix(".yaml").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_detectron2(str(weights), out, arch=name)


def test_export_converts_an_original_naver_checkpoint(tmp_path, capsys):
    from icmlm_zoo.cli import main as zoo_main

    name = _register()
    torch.manual_seed(2)
    ref = timm.create_model(name, pretrained=False, num_classes=0).state_dict()
    naver = {"cnn": {f"module.{k}": v for k, v in ref.items()}, "fc": {"weight": torch.randn(8, 4)}, "epoch": 5}
    ckpt = tmp_path / "icmlm-attfc.pth"
    torch.save(naver, ckpt)
    out = tmp_path / "naver.pkl"
    assert zoo_main(["export-detectron2", str(ckpt), str(out), "--arch", name]) == 0
    with open(out, "rb") as f:
        back = detectron2_to_timm(pickle.load(f))
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    assert 'FORMAT: "RGB"' in out.with_suffix(".yaml").read_text()
    # without an architecture: one line saying what to pass
    capsys.readouterr()
    assert zoo_main(["export-detectron2", str(ckpt), str(tmp_path / "x.pkl")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--arch" in err
