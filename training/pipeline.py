"""Everything a run needs before its first step: the text side, the tag vocabulary, transforms, data loaders and
the model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .amp import resolve_amp
from .config_sections import Config, TagsSection
from .data import Collator, EpochLoader, SampleBuilder, build_loader, build_source
from .data.transforms import run_preprocessing, run_transforms
from .distributed import DistInfo, barrier, is_main
from .masking import CaptionMasker
from .model import ICMLM, build_model
from .tags import load_tags, masking_groups, mine_tags_apart, write_tags
from .text import TextSide, load_text_side
from .text_runner import resolve_text_dtype

__all__ = ["Pipeline", "build_pipeline", "resolve_tags", "frozen_text_dtype"]


@dataclass
class Pipeline:
    """What :func:`build_pipeline` made. ``train`` / ``val`` are the splits' loaders with their place in the epoch
    (``val`` None without held-out data); ``text`` is None without an MLM head, ``tags`` None without tags;
    ``preprocessing`` is the run's evaluation preprocessing record (``RUN/preprocessing.json``)."""
    text: TextSide | None
    tags: list[str] | None
    train: EpochLoader
    val: EpochLoader | None
    model: ICMLM
    preprocessing: dict[str, Any]

    @property
    def tokenizer(self):
        return self.text.tokenizer if self.text else None


def _write_run_tags(t: TagsSection, local: Path, source) -> None:
    """Write ``RUN/tags.txt`` from the ``tags`` config section: a copied file, the data set's labels, or tags
    mined from the training captions."""
    if t.source == "file":
        write_tags(load_tags(t.file), local, source=f"copied from {t.file}")
    elif t.source == "labels":
        if source is None or not hasattr(source, "label_names") or not source.label_names():
            raise ValueError("tags.source=labels needs a data set with object labels (COCO with "
                             "data.coco.instances, synthetic, or a pairs file with 'labels')")
        write_tags(list(source.label_names()), local, source="data set labels")
    else:
        if source is None or not hasattr(source, "caption"):
            raise ValueError("tags.source=mine needs a map-style data set; for WebDataset run "
                             "`icmlm-train build-tags` first and set tags.source=file")
        n = min(len(source), t.max_captions)
        mined = mine_tags_apart([source.caption(i) for i in range(n)], pos=t.pos, min_count=t.min_count,
                                top_k=t.top_k)
        if not mined:
            raise ValueError(f"no tag reached tags.min_count={t.min_count} in {n} captions; lower it")
        write_tags(mined, local, source=f"mined from {n} training captions")


def resolve_tags(cfg: Config, run_dir: Path, source, info: DistInfo) -> list[str] | None:
    """The tag vocabulary; always copied to ``RUN/tags.txt`` and the config's ``tags`` section pointed at it."""
    if not cfg.needs_tags:
        return None
    t = cfg.tags
    local = run_dir / "tags.txt"
    if t.file and not Path(t.file).is_absolute() and (run_dir / t.file).is_file():
        return load_tags(run_dir / t.file)
    if is_main(info) and not local.exists():
        _write_run_tags(t, local, source)
    barrier(info)
    t.file, t.source = "tags.txt", "file"
    return load_tags(local)


def frozen_text_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The dtype to load the frozen text model in for a run on ``device``: bf16 for CPU training under bf16
    autocast with a bf16 encoder (what the run computes with; no fp32 original kept beside it), else None (the
    checkpoint's own, with a reduced-precision copy made where the run needs one)."""
    if device.type != "cpu" or resolve_amp(cfg.train.amp, device) != "bf16":
        return None
    dtype = resolve_text_dtype(cfg.text.precision, cfg.train.amp, device)
    return dtype if dtype == torch.bfloat16 else None


def build_pipeline(cfg: Config, run_dir: Path, info: DistInfo, *, text=None) -> Pipeline:
    """Everything but the loop: text side, tags, transforms, loaders and the model."""
    heads = cfg.model.heads
    fusion = cfg.model.fusion is not None
    if text is None and fusion:
        text = load_text_side(cfg.text.model, dtype=frozen_text_dtype(cfg, info.device))
    train_source = build_source(cfg.data, "train")
    tags = resolve_tags(cfg, run_dir, train_source, info)
    masker = None
    if fusion:
        m = cfg.masking
        masker = CaptionMasker(text.tokenizer, tags, max_length=cfg.text.max_length, strategy=m.strategy, k=m.k,
                               no_tag=m.no_tag, random_prob=m.random_prob,
                               together_prob=m.together_prob,
                               groups=masking_groups(m.together, tag_file=run_dir / "tags.txt",
                                                     groups_file=m.groups_file, data_kind=cfg.data.kind))
    tag_index = {w: i for i, w in enumerate(tags)} if ("tp" in heads and tags) else None
    pre = run_preprocessing(cfg.model.backbone, cfg.data)
    train_tf, eval_tf = run_transforms(pre, cfg.data)
    tp_targets = cfg.model.tp.targets
    seed = cfg.run.seed
    collator = Collator(text.tokenizer.pad_token_id if text else 0)
    train = build_loader(cfg, "train", SampleBuilder(train_tf, masker, tag_index, tp_targets=tp_targets, seed=seed),
                         collator, rank=info.rank, world_size=info.world_size, source=train_source)
    val = build_loader(cfg, "val", SampleBuilder(eval_tf, masker, tag_index, tp_targets=tp_targets, seed=seed + 1),
                       collator, rank=info.rank, world_size=info.world_size)
    model = build_model(cfg, text, len(tags) if tags else 0)
    return Pipeline(text=text, tags=tags, train=train, val=val, model=model, preprocessing=pre)
