"""The ICMLM model: a timm CNN trunk (trained from scratch), a frozen BERT-style text encoder, an optional
fusion head (att-fc or tfm) feeding an MLM head, and an optional TP head."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import create_backbone
from .config_sections import Config, ModelSection
from .heads import AttFCHead, TfmHead, TPHead
from .text import TextSide
from .text_runner import FrozenTextRunner

__all__ = ["ICMLM", "build_model", "FROZEN_PREFIXES"]

# frozen pretrained parts, reloaded from text.model: never in checkpoints
FROZEN_PREFIXES = ("text.", "mlm_head.frozen.")


def _channels_last_grad(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous(memory_format=torch.channels_last)


class ICMLM(nn.Module):
    """``forward(images, input_ids=None, attention_mask=None, labels=None, tp=None)`` → dict with ``loss``,
    ``mlm_loss``, ``tp_loss``, ``logits`` (masked positions only, (M, vocab)), ``targets`` (M,),
    ``rows``/``cols`` (masked positions), ``attention`` (M, h, w) and ``tp_logits``."""

    def __init__(self, backbone: nn.Module, text: TextSide | None, *, fusion: str | None, num_tags: int,
                 cfg_model: ModelSection, mlm_head_mode: str = "auto", channels_last: bool = False,
                 text_precision: str = "fp32", amp: str = "none", text_cache_size: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last
        # hand the heads' gradient to the trunk in channels_last too (False only to measure what that buys)
        self.channels_last_grad = channels_last
        self.logits_at = cfg_model.logits  # masked | all (the straightforward baseline)
        C = int(backbone.num_features)
        self.fusion_kind = fusion
        if fusion is not None:
            if text is None:
                raise ValueError("an MLM head needs the text encoder")
            self.text = text.encoder
            # inference mode, reduced precision and the feature cache (training/text_runner.py); not a submodule
            self.text_runner = FrozenTextRunner(text.encoder, text_precision, amp, text_cache_size)
            width = text.width
            if fusion == "attfc":
                a = cfg_model.attfc
                self.fusion = AttFCHead(C, width, a.heads, a.hidden, a.dropout, cfg_model.tfm.max_grid)
            else:
                t = cfg_model.tfm
                self.fusion = TfmHead(C, width, t.layers, t.heads, t.ff, t.dropout, t.max_grid)
            self.fusion.fast = cfg_model.fusion_impl == "fast"
            self.mlm_head = text.make_mlm_head(mlm_head_mode)
        self.tp = None
        if num_tags:
            tp = cfg_model.tp
            self.tp = TPHead(C, num_tags, tp.hidden, tp.dropout)
        self.tp_weight = float(cfg_model.tp.weight)
        self.tp_reduction = cfg_model.tp.reduction

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "text"):
            self.text.eval()  # frozen: no dropout
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict without the frozen text encoder (which is reloaded from its source)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly load a :meth:`trainable_state_dict`; mismatching keys are reported by name."""
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith(FROZEN_PREFIXES)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing[:10]}, "
                               f"unexpected {unexpected[:10]}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        fmap = self.backbone.forward_features(images)
        if self.channels_last_grad and fmap.requires_grad:
            # The heads' gradients reach the feature map in NCHW (the sum of the TP pooling's expanded gradient
            # and the fusion head's): without this, the whole trunk backward runs on NCHW gradients.
            fmap.register_hook(_channels_last_grad)
        return fmap

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder states (B, L, width), through :class:`~icmlm_zoo.training.text_runner.FrozenTextRunner`."""
        return self.text_runner(input_ids, attention_mask)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                tp: torch.Tensor | None = None, mask_positions: torch.Tensor | None = None) -> dict[str, Any]:
        fmap = self.features(images)
        return self._heads(fmap, self._text(input_ids, attention_mask), attention_mask, labels, tp, mask_positions)

    @torch.no_grad()
    def forward_pair(self, images: torch.Tensor, input_ids: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                     tp: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Evaluation with the image-use control: ``(forward(images, ...), forward(images.roll(1, 0), ...))``,
        each caption also met with the previous image. The trunk and the frozen encoder run once; the heads
        twice, on the feature maps rolled by one. Same results as two calls in eval mode (no batch statistics)."""
        if self.training:
            raise RuntimeError("forward_pair is for evaluation: call model.eval() first")
        fmap, text = self.features(images), self._text(input_ids, attention_mask)
        args = (attention_mask, labels, tp, None)
        return self._heads(fmap, text, *args), self._heads(fmap.roll(1, 0), text, *args)

    def _text(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        if self.fusion_kind is None or input_ids is None:
            return None
        return self.encode_text(input_ids, attention_mask)

    def _heads(self, fmap: torch.Tensor, text: torch.Tensor | None, attention_mask, labels, tp,
               mask_positions) -> dict[str, Any]:
        """The heads and losses on a trunk feature map and the encoded caption (None: no MLM head or caption)."""
        out: dict[str, Any] = {}
        loss = fmap.new_zeros((), dtype=torch.float32)
        if text is not None:
            sel = (labels != -100) if mask_positions is None else mask_positions
            rows, cols = sel.nonzero(as_tuple=True)
            if self.logits_at == "all":  # straightforward baseline: fuse + logits everywhere, keep the masked
                ra, ca = attention_mask.bool().nonzero(as_tuple=True)
                fused, att = self.fusion(fmap, text, attention_mask, ra, ca)
                pick = sel[ra, ca]
                logits = self.mlm_head(fused).float()[pick]
                att, rows, cols = att[pick], ra[pick], ca[pick]
            else:
                fused, att = self.fusion(fmap, text, attention_mask, rows, cols)
                logits = self.mlm_head(fused).float()
            h, w = fmap.shape[-2:]
            out.update(logits=logits, rows=rows, cols=cols, attention=att.reshape(-1, h, w))
            if labels is not None:
                targets = labels[rows, cols]
                out["targets"] = targets
                out["mlm_loss"] = F.cross_entropy(logits, targets) if len(targets) else logits.sum() * 0
                loss = loss + out["mlm_loss"]
        if self.tp is not None:
            out["tp_logits"] = self.tp(fmap)
            if tp is not None:
                out["tp_loss"] = TPHead.loss(out["tp_logits"], tp, self.tp_reduction)
                loss = loss + self.tp_weight * out["tp_loss"]
        out["loss"] = loss
        return out


def build_model(cfg: Config, text: TextSide | None, num_tags: int) -> ICMLM:
    """Build the model the config describes (random trunk, frozen text encoder, heads) from its ``model`` and
    ``text`` sections and the training precision."""
    m, t = cfg.model, cfg.text
    backbone = create_backbone(m.backbone)
    if m.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    return ICMLM(backbone, text, fusion=m.fusion, num_tags=num_tags if "tp" in m.heads else 0, cfg_model=m,
                 mlm_head_mode=t.mlm_head, channels_last=m.channels_last, text_precision=t.precision,
                 amp=cfg.train.amp, text_cache_size=t.cache_size)
