"""Load a trained run and predict masked words (with attention maps) — the API the run analysis builds on.

    run = load_run("runs/demo-...")                       # model in eval mode, tokenizer, config, transform
    x = torch.stack([run.transform(img) for img in pil_images])
    out = predict_masked(run, x, ["a [MASK] circle on the left."] * len(x), topk=5)
    out[0]["masks"][0] -> {"position", "topk_tokens", "topk_probs", "attention" (h, w) or None}

``RUN_SOURCE`` lets the core's backbone factory (``icmlm_zoo.backbone_factory.load_backbone``) read a run folder
as a backbone: ``pyproject.toml`` declares it in the ``icmlm_zoo.backbone_sources`` entry-point group, so the core
never imports the trainer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from icmlm_zoo.backbone_factory import BackboneSource
from icmlm_zoo.transforms import create_image_transform

from . import checkpoint as ckpt
from .config import Config
from .data.transforms import read_run_preprocessing
from .masking import tokenize_words
from .model import ICMLM, build_model
from .run_folder import read_run_config
from .tags import load_tags, split_words
from .text import TextSide, load_text_side

__all__ = ["LoadedRun", "load_run", "encode_masked_captions", "predict_masked", "is_run_dir", "RUN_SOURCE"]

_MASK = re.compile(r"(\[MASK\])")


@dataclass
class LoadedRun:
    """A trained run ready for inference. ``model.backbone`` is the timm trunk; ``data_config`` the run's
    preprocessing record (timm keys: its input size, mean/std), ``transform`` its evaluation transform."""
    model: ICMLM
    tokenizer: Any
    config: Config
    transform: Callable
    backbone_name: str
    tags: list[str] | None = None
    run_dir: Path | None = None
    step: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_config: dict[str, Any] = field(default_factory=dict)


def load_run(run_dir: str | Path, checkpoint: str | int = "last", device: str | torch.device = "cpu", *,
             text: TextSide | None = None) -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its ``config.yaml`` and load a checkpoint (``last``, a step
    number or a file); the frozen text encoder is reloaded from its source (``text.model``), unless ``text``
    (the run's own, already loaded: the trainer at the end of a run) is given."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if cfg.model.fusion is None:
        text = None
    elif text is None:
        text = load_text_side(cfg.text.model)
    tags = None
    if cfg.tags.file:
        p = Path(cfg.tags.file)
        p = p if p.is_absolute() else run_dir / p
        if p.is_file():
            tags = load_tags(p)
    if "tp" in cfg.model.heads and not tags:
        raise FileNotFoundError(f"the run has a TP head but its tag file ({cfg.tags.file}) is missing")
    cfg.model.channels_last = False  # a training-speed layout: inference gives the exported backbone's numbers in timm
    model = build_model(cfg, text, len(tags) if tags else 0)
    state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run_dir, checkpoint))
    model.load_trainable_state_dict(state["model"])
    dev = torch.device(device)
    model.to(dev).eval()
    pre = read_run_preprocessing(run_dir, cfg)
    return LoadedRun(model=model, tokenizer=text.tokenizer if text else None, config=cfg,
                     transform=create_image_transform(pre), backbone_name=cfg.model.backbone, tags=tags,
                     run_dir=run_dir, step=int(state["step"]), device=dev, data_config=pre)


def is_run_dir(folder: str | Path) -> bool:
    """Whether ``folder`` looks like an ``icmlm-train`` run folder (checkpoints/ or its config)."""
    return any((Path(folder) / n).exists() for n in ("checkpoints", "config.yaml", "resolved_config.yaml"))


def _run_backbone(run_dir: Path, checkpoint: str, device) -> tuple[torch.nn.Module, str]:
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    return run.model.backbone, run.backbone_name


RUN_SOURCE = BackboneSource(name="icmlm-train run", claims=is_run_dir, load=_run_backbone)


def encode_masked_captions(tokenizer, captions: list[str], max_length: int | None = 64
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and a boolean mask of the ``[MASK]`` positions, padded to the longest caption.
    Each literal ``[MASK]`` in a caption is one masked token; other text is lower-cased and split into words as
    training does (:func:`~icmlm_zoo.training.masking.tokenize_words`); ``max_length=None``: no truncation."""
    rows = []
    for cap in captions:
        words: list[str] = []
        for part in _MASK.split(cap):
            if part == "[MASK]":
                words.append(tokenizer.mask_token)
            elif part.strip():
                words += split_words(part.lower())
        rows.append(tokenize_words(tokenizer, words, max_length)[0])
    L = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r)
        att[i, :len(r)] = 1
    return input_ids, att, input_ids == tokenizer.mask_token_id


@torch.no_grad()
def predict_masked(run: LoadedRun, images: torch.Tensor, captions: list[str], topk: int = 5) -> list[dict]:
    """Top-k words for every ``[MASK]`` in each caption, given its image (already transformed with
    ``run.transform``), and the masked token's head-averaged attention over the visual grid (h, w), summing
    to 1 (last layer for tfm). A TP-only run has no MLM head: its predictions are the top-k tags of the
    image (the same for every mask) and ``attention`` is None."""
    if images.ndim != 4 or len(images) != len(captions):
        raise ValueError(f"give images as (B, 3, H, W) and one caption per image; got {tuple(images.shape)} "
                         f"and {len(captions)} captions")
    model = run.model
    images = images.to(run.device)
    if model.fusion_kind is None:
        probs = torch.sigmoid(model(images)["tp_logits"])
        out = []
        for b, cap in enumerate(captions):
            n = len(_MASK.findall(cap))
            p, i = probs[b].topk(min(topk, probs.shape[-1]))
            out.append({"masks": [{"position": m, "topk_tokens": [run.tags[j] for j in i.tolist()],
                                   "topk_probs": p.tolist(), "attention": None} for m in range(n)]})
        return out
    ids, att, sel = encode_masked_captions(run.tokenizer, captions, run.config.text.max_length)
    if not sel.any(-1).all():
        bad = [c for c, s in zip(captions, sel.any(-1).tolist()) if not s]
        raise ValueError(f"every caption needs at least one [MASK]; these have none: {bad[:3]}")
    res = model(images, ids.to(run.device), att.to(run.device), mask_positions=sel.to(run.device))
    probs = res["logits"].float().softmax(-1)
    p, i = probs.topk(topk, dim=-1)
    out: list[dict] = [{"masks": []} for _ in captions]
    for m, (r, c) in enumerate(zip(res["rows"].tolist(), res["cols"].tolist())):
        out[r]["masks"].append({"position": c, "topk_tokens": run.tokenizer.convert_ids_to_tokens(i[m].tolist()),
                                "topk_probs": p[m].tolist(), "attention": res["attention"][m].float().cpu()})
    return out
