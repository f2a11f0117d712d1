"""A head-less VGG16 convolutional trunk (conv1_1 … conv5_3 + pool5) with torchvision key names.

timm's own VGG always owns fc6/fc7 (``pre_logits``), so a conv-only ICMLM checkpoint cannot load strictly into
it. This trunk holds exactly ``features.*`` (torchvision's indices), and adds a classifier only when
``num_classes > 0`` is asked for.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from timm.layers import ClassifierHead

VGG16_LAYOUT: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _normalize_indices(indices: int | Sequence[int] | None, num_levels: int) -> list[int]:
    """timm's convention: an int n takes the last n levels; a list takes those levels (negatives allowed)."""
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(f"indices={indices} must be in 1..{num_levels}")
        return list(range(num_levels - indices, num_levels))
    out = [i % num_levels if -num_levels <= i < num_levels else None for i in indices]
    if None in out:
        raise ValueError(f"indices {list(indices)} out of range for {num_levels} feature levels")
    return sorted(out)


class IcmlmVGG(nn.Module):
    """VGG convolutional trunk; ``forward_features`` gives the pool5 map (B, 512, H/32, W/32)."""

    def __init__(
            self,
            layout: Sequence = VGG16_LAYOUT,
            num_classes: int = 0,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.feature_info: list[dict] = []
        prev, reduction = in_chans, 1
        for v in layout:
            if v == "M":
                # the feature tapped before each pool (timm's VGG convention), then pool5 as the last level
                self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"features.{len(layers) - 1}"))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
            else:
                layers += [nn.Conv2d(prev, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                prev = v
        self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = prev
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.global_pool = global_pool or self.global_pool
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=self.global_pool, drop_rate=self.drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | Sequence[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ):
        """timm's intermediate-feature API: the maps before each pool and after pool5."""
        if output_fmt != "NCHW":
            raise ValueError("IcmlmVGG only outputs NCHW feature maps")
        take = _normalize_indices(indices, len(self.feature_info))
        tap_at = {int(info["module"].split(".")[1]): level for level, info in enumerate(self.feature_info)}
        last_layer = int(self.feature_info[max(take)]["module"].split(".")[1]) if stop_early else len(self.features) - 1
        intermediates = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if tap_at.get(i) in take:
                intermediates.append(x)
            if i == last_layer:
                break
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the layers after the last requested level (and the head if asked)."""
        take = _normalize_indices(indices, len(self.feature_info))
        last = int(self.feature_info[max(take)]["module"].split(".")[1])
        self.features = self.features[:last + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take
