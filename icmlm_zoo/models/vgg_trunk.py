"""A head-less VGG16 convolutional trunk (conv1_1 … conv5_3 + pool5) with torchvision key names.

timm's own VGG always owns fc6/fc7 (``pre_logits``), so a conv-only ICMLM checkpoint cannot load strictly into
it. This trunk holds exactly ``features.*`` (torchvision's indices), and adds a classifier only when
``num_classes > 0`` is asked for. It follows timm's model API like timm's own VGG does: FX tracing (also of the
traced graph into TorchScript), TorchScript, ``torch.compile``, ``features_only``/``forward_intermediates``,
and gradient checkpointing (one checkpoint per feature level).

No ``from __future__ import annotations`` here on purpose: FX copies ``forward``'s annotations into the code it
generates, and string annotations come out as names (``_torch_Tensor_``) TorchScript cannot resolve.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import ClassifierHead
from timm.models import checkpoint
from torch import nn

VGG16_LAYOUT: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _normalize_indices(indices: Union[int, Sequence[int], None], num_levels: int) -> List[int]:
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
        layers: List[nn.Module] = []
        self.feature_info = []
        self.feature_ends = []  # index in self.features of each feature_info tap (TorchScript infers List[int])
        prev, reduction = in_chans, 1
        for v in layout:
            if v == "M":
                # the feature tapped before each pool (timm's VGG convention), then pool5 as the last level
                self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"features.{len(layers) - 1}"))
                self.feature_ends.append(len(layers) - 1)
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
            else:
                layers += [nn.Conv2d(prev, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                prev = v
        self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.feature_ends.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.num_features = prev
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self._pooled_width()
        self._init_weights()

    def _pooled_width(self) -> int:
        """The head's pre-logits width (e.g. 2x num_features for 'catavgmax')."""
        return self.num_features * self.head.global_pool.feat_mult()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^features\.0", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint one feature level at a time (each segment starts at a conv or a pool, never at an
        in-place ReLU, so recomputation sees the same input)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "head.fc" if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh classifier with ``num_classes`` outputs (0: none); ``global_pool=''`` disables pooling."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        # a new head where the trunk lives (timm 1.0.16's ClassifierHead.reset cannot change in_features)
        ref = next(self.features.parameters())
        head = ClassifierHead(self.num_features, num_classes, pool_type=self.global_pool, drop_rate=self.drop_rate)
        self.head = head.to(device=ref.device, dtype=ref.dtype).train(self.training)
        self.head_hidden_size = self._pooled_width()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            start = 0
            for end in self.feature_ends:
                if start < len(self.features):
                    x = checkpoint(self.features[start:end + 1], x)
                start = end + 1
            return x
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's intermediate-feature API: the maps before each pool and after pool5."""
        if output_fmt != "NCHW":
            raise ValueError("IcmlmVGG only outputs NCHW feature maps")
        take = _normalize_indices(indices, len(self.feature_info))
        last_level = max(take) if stop_early else len(self.feature_ends) - 1
        intermediates = []
        start = 0
        for level, end in enumerate(self.feature_ends):
            if level > last_level or start >= len(self.features):
                break
            stage = self.features[start:end + 1]
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(stage, x)
            else:
                x = stage(x)
            if level in take:
                intermediates.append(x)
            start = end + 1
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the layers after the last requested level (and the head if asked, or if it no longer fits)."""
        take = _normalize_indices(indices, len(self.feature_info))
        last = max(take)
        self.features = self.features[:self.feature_ends[last] + 1]
        prune_end = last < len(self.feature_ends) - 1
        if prune_end:
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take
