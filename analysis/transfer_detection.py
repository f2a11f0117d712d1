"""Detection transfer: Faster R-CNN on an FPN over a backbone, fine-tuned unfrozen on labelled scenes.

The wiring is :func:`icmlm_zoo.detection.torchvision_recipe.resnet_fpn_backbone` (layers 2-4 + a max-pool
level, every stage trainable, batch norm trained as for a from-scratch trunk so random init and pretrained
trunks get one protocol), torchvision's ``FasterRCNN`` at the scene size with the trunk's own mean/std, and
the reduced RPN/RoI sampling measured on this CPU (docs: anchors 4.5). Scored by pycocotools (AP, AP50).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms

from icmlm_zoo.detection.torchvision_recipe import resnet_fpn_backbone

from .detection_scenes import coco_ap

__all__ = ["DetectionRecipe", "build_detector", "train_detector", "predict", "fine_tune_detection", "merge_classes"]


@dataclass(frozen=True)
class DetectionRecipe:
    """What a detection fine-tune uses (iterations per label budget: ``iters``)."""

    iters: int = 300
    batch_size: int = 8
    lr: float = 0.02
    warmup: int = 50
    fpn_channels: int = 64
    representation: int = 256
    trunk_lr_mult: float = 1.0  # the trunk's learning rate as a fraction of the detector's
    freeze_bn: bool = False  # True: the trunk's batch norm frozen (torchvision's choice for a pretrained trunk)


def build_detector(trunk: nn.Module, num_classes: int, *, size: int, mean: Sequence[float], std: Sequence[float],
                   recipe: DetectionRecipe = DetectionRecipe()) -> nn.Module:
    """Faster R-CNN (FPN over layer2-4 + pool) on ``trunk``, every stage trainable; ``num_classes`` objects."""
    for p in trunk.parameters():
        p.requires_grad_(True)
    backbone = resnet_fpn_backbone(trunk, trainable_layers=5, returned_layers=(2, 3, 4),
                                   out_channels=recipe.fpn_channels, freeze_bn=recipe.freeze_bn)
    sizes = tuple((max(4, size // 6) * 2 ** k,) for k in range(4))  # 16, 32, 64, 128 px at 96 px
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    roi = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=None, min_size=size, max_size=size, image_mean=list(mean),
                      image_std=list(std), rpn_anchor_generator=anchors, box_roi_pool=roi,
                      box_head=TwoMLPHead(recipe.fpn_channels * 49, recipe.representation),
                      box_predictor=FastRCNNPredictor(recipe.representation, num_classes + 1),
                      rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_batch_size_per_image=64,
                      box_score_thresh=0.01)


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def train_detector(detector: nn.Module, scenes: Sequence[dict[str, Any]], *, recipe: DetectionRecipe,
                   seed: int) -> list[float]:
    """SGD (momentum 0.9, warm-up then cosine) on shuffled batches of ``scenes``; returns the loss per step."""
    images = [_to_tensor(s["image"]) for s in scenes]
    targets = [{"boxes": torch.as_tensor(s["boxes"], dtype=torch.float32),
                "labels": torch.as_tensor(s["labels"], dtype=torch.int64)} for s in scenes]
    trunk = {id(p) for p in detector.backbone.body.parameters()}
    params = [p for p in detector.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in trunk], "lr": recipe.lr},
              {"params": [p for p in params if id(p) in trunk], "lr": recipe.lr * recipe.trunk_lr_mult}]
    opt = torch.optim.SGD([g for g in groups if g["params"]], momentum=0.9, weight_decay=1e-4)

    def factor(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - recipe.warmup) / max(1, recipe.iters - recipe.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = []
    detector.train()
    for _ in range(recipe.iters):
        if len(order) < recipe.batch_size:
            order += rng.permutation(len(scenes)).tolist()
        batch, order = order[:recipe.batch_size], order[recipe.batch_size:]
        loss = sum(detector([images[i] for i in batch], [targets[i] for i in batch]).values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"detection loss became {loss.item()}; lower the learning rate")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
    return losses


@torch.no_grad()
def predict(detector: nn.Module, scenes: Sequence[dict[str, Any]], *, batch_size: int = 32) -> list[dict[str, Any]]:
    """COCO detections (image ids 1..N in ``scenes`` order, bbox x, y, w, h) of the detector."""
    detector.eval()
    out = []
    for start in range(0, len(scenes), batch_size):
        images = [_to_tensor(s["image"]) for s in scenes[start:start + batch_size]]
        for k, res in enumerate(detector(images)):
            for box, label, score in zip(res["boxes"].tolist(), res["labels"].tolist(), res["scores"].tolist()):
                x0, y0, x1, y1 = box
                out.append({"image_id": start + k + 1, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score)})
    return out


def fine_tune_detection(trunk: nn.Module, mean, std, *, train: Sequence[dict], tests: dict[str, tuple[list, dict]],
                        num_classes: int, size: int, recipe: DetectionRecipe, seed: int,
                        coarse: dict[str, tuple[dict, dict[int, int]]] | None = None) -> dict[str, float]:
    """Fine-tune a detector on ``train`` and score it on every ``tests[name] = (scenes, coco gt)``:
    ``{"AP", "AP50", "AP_shifted", ...}`` plus the first and last training losses. ``coarse[name] = (gt,
    category map)`` also scores the detections with their classes merged (``AP_merged...``: e.g. a shape ×
    colour detector read as a shape detector, which separates colour mistakes from finding the objects)."""
    torch.manual_seed(seed)
    detector = build_detector(trunk, num_classes, size=size, mean=mean, std=std, recipe=recipe)
    losses = train_detector(detector, train, recipe=recipe, seed=seed)
    res: dict[str, float] = {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:]))}
    for name, (scenes, gt) in tests.items():
        suffix = "" if name == "test" else f"_{name}"
        dets = predict(detector, scenes)
        for k, v in coco_ap(gt, dets).items():
            res[k + suffix] = v
        if coarse and name in coarse:
            cgt, cmap = coarse[name]
            for k, v in coco_ap(cgt, merge_classes(dets, cmap)).items():
                res[f"{k}_merged{suffix}"] = v
    return res


def merge_classes(detections: Sequence[dict[str, Any]], category_map: dict[int, int],
                  iou: float = 0.5) -> list[dict[str, Any]]:
    """Detections relabelled through ``category_map``, then NMS per image and merged class (the detector's
    per-class NMS leaves one box per colour on an object; merged, those would count as duplicates)."""
    by_image: dict[int, list[dict]] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append({**d, "category_id": category_map[d["category_id"]]})
    out = []
    for dets in by_image.values():
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)], dtype=torch.float32)
        keep = batched_nms(boxes, torch.tensor([d["score"] for d in dets]),
                           torch.tensor([d["category_id"] for d in dets]), iou)
        out += [dets[i] for i in keep.tolist()]
    return out
