"""The shipped detectron2 / mmdetection configs carry the settings ICMLM weights need."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "docs" / "configs"
MEAN255 = [123.675, 116.28, 103.53]
STD255 = [58.395, 57.12, 57.375]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_d2(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    base = cfg.pop("_BASE_", None)
    return _merge(_load_d2(path.parent / base), cfg) if base else cfg


@pytest.mark.parametrize("name", ["icmlm_R50_C4_voc07+12_24k.yaml", "icmlm_R50_FPN_coco_1x.yaml"])
def test_detectron2_configs(name):
    cfg = _load_d2(CONFIGS / "detectron2" / name)
    assert cfg["INPUT"]["FORMAT"] == "RGB"
    assert cfg["MODEL"]["PIXEL_MEAN"] == pytest.approx(MEAN255)
    assert cfg["MODEL"]["PIXEL_STD"] == pytest.approx(STD255)
    assert cfg["MODEL"]["RESNETS"]["STRIDE_IN_1X1"] is False
    assert cfg["MODEL"]["RESNETS"]["DEPTH"] == 50
    assert cfg["MODEL"]["BACKBONE"]["FREEZE_AT"] == 0
    assert cfg["MODEL"]["WEIGHTS"].endswith(".pkl")


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "mmdet").glob("*.py")))
def test_mmdet_configs(name):
    ns: dict = {}
    exec((CONFIGS / "mmdet" / name).read_text(), ns)  # plain python dicts, no mmengine needed
    assert "icmlm_zoo" in ns["custom_imports"]["imports"]
    model = ns["model"]
    bb = model["backbone"]
    assert bb["type"] == "mmpretrain.TIMMBackbone" and bb["features_only"] and bb["_delete_"]
    assert model["data_preprocessor"]["bgr_to_rgb"] is True
    assert model["data_preprocessor"]["mean"] == pytest.approx(MEAN255)
    try:
        import icmlm_zoo.models  # noqa: F401
    except ImportError:  # pragma: no cover - registry not importable yet
        pytest.skip("icmlm_zoo.models not importable")
    arch = bb["model_name"].split(".")[0]
    assert timm.is_model(arch)
    m = timm.create_model(arch, pretrained=False, features_only=True, out_indices=bb["out_indices"])
    assert model["neck"]["in_channels"] == m.feature_info.channels()
    cfg = timm.models.get_pretrained_cfg(bb["model_name"])
    if cfg is not None:
        assert [255 * x for x in cfg.mean] == pytest.approx(MEAN255)
