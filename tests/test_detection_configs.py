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


def _random_trunk_file(arch: str, path: Path) -> Path:
    """A trunk with random weights *and* random BatchNorm statistics saved as safetensors (a missed buffer would
    then change the features)."""
    import torch
    from safetensors.torch import save_file

    import icmlm_zoo.models  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("arch", ["icmlm_resnet18", "icmlm_resnet50"])
def test_exported_pkl_reproduces_the_trunk_in_detectron2(tmp_path, arch):
    """The documented FPN config + the exporter's .yaml build detectron2's stock ResNet-FPN, DetectionCheckpointer
    loads our .pkl into it, and its res2..res5 equal the timm trunk's stages (RGB/stride/BN stats all right)."""
    pytest.importorskip("detectron2")
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from icmlm_zoo.backbone_factory import load_backbone
    from icmlm_zoo.detection.detectron2 import export_detectron2

    weights = _random_trunk_file(arch, tmp_path / "trunk.safetensors")
    pkl = export_detectron2(str(weights), tmp_path / "trunk.pkl", arch=arch)
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "detectron2" / "icmlm_R50_FPN_coco_1x.yaml"))
    cfg.merge_from_file(str(pkl.with_suffix(".yaml")))  # the exporter's settings merge into detectron2's config
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN"])
    assert cfg.MODEL.WEIGHTS == str(pkl.resolve()) and cfg.INPUT.FORMAT == "RGB"
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    trunk = load_backbone(str(weights), arch=arch).model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d2 = model.backbone.bottom_up(x)
        h = trunk.maxpool(trunk.act1(trunk.bn1(trunk.conv1(x))))
        for i in range(1, 5):
            h = getattr(trunk, f"layer{i}")(h)
            torch.testing.assert_close(d2[f"res{i + 1}"], h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "mmdet").glob("*.py")))
def test_mmdet_configs_load_with_mmengine(name):
    """mmengine's own parser reads each config with mmdet's ``_base_`` files (``mmdet::``), and the merged model
    keeps our backbone (``_delete_`` dropped mmdet's ResNet: no ``depth``/``norm_eval`` left over), RGB input and a
    neck that matches the trunk. custom_imports are not run: mmpretrain 1.2 does not import under transformers 5
    (docs/detection.md)."""
    pytest.importorskip("mmdet")
    # mmengine resolves 'mmdet::' through pkg_resources, which setuptools >= 81 no longer ships
    pytest.importorskip("pkg_resources", reason="mmengine needs pkg_resources (setuptools < 81) to find mmdet's bases")
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / "mmdet" / name), import_custom_modules=False)
    bb = cfg.model.backbone
    assert bb.type == "mmpretrain.TIMMBackbone" and "depth" not in bb and "norm_eval" not in bb
    assert "icmlm_zoo" in cfg.custom_imports.imports
    assert cfg.model.data_preprocessor.bgr_to_rgb is True
    assert cfg.model.type in ("FasterRCNN", "MaskRCNN") and cfg.model.neck.type == "FPN"
    import icmlm_zoo.models  # noqa: F401

    trunk = timm.create_model(bb.model_name.split(".")[0], pretrained=False, features_only=True,
                              out_indices=bb.out_indices)
    assert cfg.model.neck.in_channels == trunk.feature_info.channels()
