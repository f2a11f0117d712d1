"""Faster R-CNN on an ICMLM ResNet with torchvision: ``BackboneWithFPN`` + ``FrozenBatchNorm2d``.

Run a few CPU iterations on generated boxes (a smoke test of the whole recipe)::

    python -m icmlm_zoo.detection.torchvision_recipe --model icmlm_resnet50.attfc_coco --steps 20

Inputs are RGB tensors in [0, 1]; torchvision's transform normalises them with the backbone's own
mean/std (from its pretrained cfg).
"""

from __future__ import annotations

import argparse
import math
import random
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from tqdm import tqdm

from icmlm_zoo.backbone_factory import load_backbone, model_data_config

_TRAINABLE_ORDER = ["layer4", "layer3", "layer2", "layer1", "conv1"]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` holding the same statistics."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight if child.affine else torch.ones(child.num_features))
                frozen.bias.copy_(child.bias if child.affine else torch.zeros(child.num_features))
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def resnet_fpn_backbone(trunk: nn.Module, *, trainable_layers: int = 3,
                        returned_layers: Sequence[int] = (1, 2, 3, 4), out_channels: int = 256,
                        freeze_bn: bool = True) -> BackboneWithFPN:
    """Wrap a timm/torchvision ResNet trunk (``conv1, bn1, layer1..4``) into an FPN backbone.

    Batch norm is frozen (``freeze_bn=False`` keeps it trainable, as torchvision does for a trunk trained from
    scratch); only the last ``trainable_layers`` stages (0-5, as torchvision) get gradients.
    """
    if not hasattr(trunk, "layer4"):
        raise ValueError(f"{type(trunk).__name__} is not a ResNet trunk (no layer1..layer4); the FPN recipe "
                         "needs icmlm_resnet* backbones")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    if freeze_bn:
        trunk = freeze_batchnorm(trunk)
    train = _TRAINABLE_ORDER[:trainable_layers]
    for name, p in trunk.named_parameters():
        p.requires_grad_(any(name.startswith(t + ".") for t in train))
    channels = {}
    for info in getattr(trunk, "feature_info", []):
        channels[info["module"]] = info["num_chs"]
    if not channels:  # torchvision ResNet
        channels = {f"layer{i}": getattr(trunk, f"layer{i}")[-1].conv1.in_channels for i in range(1, 5)}
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    in_channels = [channels[f"layer{k}"] for k in returned_layers]
    return BackboneWithFPN(trunk, return_layers, in_channels, out_channels, extra_blocks=LastLevelMaxPool())


def build_faster_rcnn(model: str | nn.Module, num_classes: int, *, arch: str | None = None,
                      trainable_layers: int = 3, min_size: int = 800, max_size: int = 1333,
                      anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      **rcnn_kwargs) -> FasterRCNN:
    """Faster R-CNN (FPN) on an ICMLM backbone; ``num_classes`` counts object classes (background added).

    ``model`` is a loaded trunk or anything ``load_backbone`` accepts (timm name, weight file/folder, run);
    ``mean``/``std`` default to the trunk's own (its timm data config; an error when it has none).
    """
    if isinstance(model, str):
        loaded = load_backbone(model, arch=arch)
        trunk, data_config = loaded.model, loaded.data_config
    else:
        trunk = model
        data_config = model_data_config(trunk) if mean is None or std is None else {}
    mean, std = mean or data_config["mean"], std or data_config["std"]
    trunk.train()
    backbone = resnet_fpn_backbone(trunk, trainable_layers=trainable_layers)
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=min_size, max_size=max_size,
                      image_mean=list(mean), image_std=list(std),
                      rpn_anchor_generator=anchors, **rcnn_kwargs)


COLORS = [(220, 40, 40), (40, 200, 60), (50, 80, 230)]


def generated_boxes(num_images: int, size: int = 128, max_objects: int = 3, seed: int = 0
                    ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Images of coloured rectangles on a grey noisy background; label = colour index + 1."""
    g = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_images):
        img = 0.5 + 0.05 * torch.randn(3, size, size, generator=gen)
        boxes, labels = [], []
        for _ in range(g.randint(1, max_objects)):
            w, h = g.randint(size // 6, size // 2), g.randint(size // 6, size // 2)
            x0, y0 = g.randint(0, size - w), g.randint(0, size - h)
            c = g.randrange(len(COLORS))
            img[:, y0:y0 + h, x0:x0 + w] = torch.tensor(COLORS[c]).view(3, 1, 1) / 255.0
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(c + 1)
        out.append((img.clamp(0, 1), {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                      "labels": torch.tensor(labels, dtype=torch.int64)}))
    return out


def train_steps(detector: FasterRCNN, batch: list[tuple[torch.Tensor, dict]], steps: int, *,
                lr: float = 0.01, progress: bool = True) -> list[float]:
    """SGD on one repeated batch (a convergence smoke test); returns the total loss per step."""
    params = [p for p in detector.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    images = [img for img, _ in batch]
    targets = [t for _, t in batch]
    detector.train()
    losses = []
    for _ in tqdm(range(steps), desc="faster-rcnn", disable=not progress):
        loss_dict = detector(images, targets)
        loss = sum(loss_dict.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite loss {loss_dict}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv: list[str] | None = None) -> int:
    """CLI: a few Faster R-CNN iterations on generated boxes with an ICMLM backbone."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="icmlm_resnet50.attfc_coco", help="timm name, weight file/folder or run")
    p.add_argument("--arch", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--trainable-layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    det = build_faster_rcnn(args.model, num_classes=len(COLORS), arch=args.arch,
                            trainable_layers=args.trainable_layers, min_size=args.size, max_size=args.size,
                            anchor_sizes=tuple(args.size // 8 * 2 ** i for i in range(5)))
    losses = train_steps(det, generated_boxes(args.images, args.size, seed=args.seed), args.steps, lr=args.lr)
    print(f"loss first {losses[0]:.4f} -> last {losses[-1]:.4f} over {len(losses)} steps")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
