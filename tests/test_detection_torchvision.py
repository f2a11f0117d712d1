"""The torchvision Faster R-CNN recipe trains on generated boxes (CPU, a few iterations)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torchvision.ops import FrozenBatchNorm2d

from icmlm_zoo.detection.torchvision_recipe import (
    build_faster_rcnn,
    freeze_batchnorm,
    generated_boxes,
    main,
    train_steps,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny() -> str:
    try:
        import icmlm_zoo.models  # noqa: F401
        return "icmlm_resnet_tiny"
    except ImportError:  # pragma: no cover
        return "resnet18"


def _detector(trainable_layers: int = 5):
    torch.manual_seed(0)
    trunk = timm.create_model(_tiny(), pretrained=False, num_classes=0)
    return build_faster_rcnn(trunk, num_classes=3, trainable_layers=trainable_layers, min_size=64, max_size=64,
                             anchor_sizes=(8, 16, 32, 64, 128), rpn_batch_size_per_image=64,
                             box_batch_size_per_image=64)


def test_loss_finite_and_decreasing():
    det = _detector()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in det.modules())
    torch.manual_seed(0)
    losses = train_steps(det, generated_boxes(2, 64, seed=0), steps=12, progress=False)
    assert all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses


def test_trainable_layers_and_frozen_stats():
    det = _detector(trainable_layers=2)
    body = det.backbone.body
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    bn = body.layer1[0].bn1
    before = bn.running_mean.clone()
    det.train()
    det([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])}])
    assert torch.equal(bn.running_mean, before)
    with pytest.raises(ValueError, match="0..5"):
        _detector(trainable_layers=6)


def test_freeze_batchnorm_preserves_output():
    torch.manual_seed(0)
    m = timm.create_model(_tiny(), pretrained=False, num_classes=0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    m.eval()
    x = torch.rand(1, 3, 32, 32)
    ref = m(x)
    assert torch.allclose(freeze_batchnorm(m)(x), ref, atol=1e-5)


def test_recipe_cli(capsys):
    assert main(["--model", f"random:{_tiny()}", "--steps", "2", "--images", "1", "--size", "64"]) == 0
    assert "loss first" in capsys.readouterr().out
