"""The speed levers of training/speed.py keep the model's results: cache, logits at every position, encoder
precision, optimizer implementation, data-loader settings, config keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train_fixtures import TAG_WORDS, text_side  # noqa: F401

from training.config import ConfigError, load_config
from training.speed import (STRAIGHTFORWARD_OVERRIDES, FrozenTextRunner, TextFeatureCache, loader_kwargs,
                            optimizer_kwargs, resolve_text_dtype)


def _batch(text, n=6, seed=0):
    from training.data.collate import Collator
    from training.data.synthetic import SyntheticScenes
    from training.masking import CaptionMasker
    scenes = SyntheticScenes(n, 32, seed)
    masker = CaptionMasker(text.tokenizer, TAG_WORDS)
    samples = []
    for i in range(n):
        m = masker(scenes.caption(i), np.random.default_rng(i))
        samples.append({"caption": "", "image": torch.randn(3, 32, 32), "input_ids": m.input_ids, "labels": m.labels})
    return Collator(text.tokenizer.pad_token_id)(samples)


def _model(text, *overrides, heads="[attfc]"):
    from training.model import build_model
    cfg = load_config(None, None, [f"model.heads={heads}", "model.attfc.dropout=0", "model.tfm.dropout=0",
                                   "model.attfc.hidden=64", "model.tfm.ff=64", "model.tfm.layers=1", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, text, 0).eval()


@pytest.mark.parametrize("heads", ["[attfc]", "[tfm]"])
def test_logits_all_and_cache_match_the_default(text_side, heads):
    b = _batch(text_side)
    args = (b["images"], b["input_ids"], b["attention_mask"], b["labels"])
    base = _model(text_side, "text.precision=fp32", heads=heads)(*args)
    every = _model(text_side, "text.precision=fp32", "model.logits=all", heads=heads)(*args)
    assert torch.equal(every["rows"], base["rows"]) and torch.equal(every["cols"], base["cols"])
    assert torch.allclose(every["logits"], base["logits"], atol=1e-4)
    assert every["attention"].shape == base["attention"].shape
    cached = _model(text_side, "text.precision=fp32", "text.cache_size=100", heads=heads)
    first = cached(*args)
    second = cached(*args)
    stats = cached.text_runner.cache.stats()
    assert stats["hits"] == len(b["input_ids"]) and stats["entries"] == len(b["input_ids"])
    assert torch.allclose(first["logits"], base["logits"], atol=1e-4)
    assert torch.equal(first["logits"], second["logits"])


def test_cached_rows_equal_encoder_rows_and_gradients_flow(text_side):
    b = _batch(text_side)
    runner = FrozenTextRunner(text_side.encoder, "fp32", "none", cache_size=3)
    plain = FrozenTextRunner(text_side.encoder, "fp32", "none")(b["input_ids"], b["attention_mask"])
    out = runner(b["input_ids"], b["attention_mask"])
    assert len(runner.cache) == 3  # LRU bound
    att = b["attention_mask"].bool()
    assert torch.allclose(out[att], plain[att], atol=1e-5)
    assert not out.is_inference() and not plain.is_inference()
    w = torch.nn.Parameter(torch.ones(out.shape[-1]))
    (out.float() * w).sum().backward()  # usable in autograd (no inference-tensor error)
    assert w.grad is not None


def test_reduced_precision_encoder_is_a_copy(text_side):
    b = _batch(text_side, n=2)
    runner = FrozenTextRunner(text_side.encoder, "bf16", "none")
    out = runner(b["input_ids"], b["attention_mask"])
    assert out.dtype == torch.bfloat16
    assert next(text_side.encoder.parameters()).dtype == torch.float32  # the original (tied head) stays fp32
    ref = FrozenTextRunner(text_side.encoder, "fp32", "none")(b["input_ids"], b["attention_mask"])
    att = b["attention_mask"].bool()
    assert torch.allclose(out.float()[att], ref[att], atol=0.1, rtol=0.05)


def test_resolve_text_dtype():
    cpu = torch.device("cpu")
    assert resolve_text_dtype("fp32", "bf16", cpu) == torch.float32
    assert resolve_text_dtype("auto", "bf16", cpu) == torch.bfloat16
    assert resolve_text_dtype("fp16", "none", cpu) == torch.bfloat16  # no fp16 encoder on CPU
    assert resolve_text_dtype("auto", "none", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError):
        resolve_text_dtype("int8", "none", cpu)


def test_text_feature_cache_lru():
    c = TextFeatureCache(2)
    for k in (b"a", b"b", b"c"):
        c.put(k, torch.zeros(1))
    assert c.get(b"a") is None and c.get(b"c") is not None and len(c) == 2
    assert c.stats()["hits"] == 1 and c.stats()["misses"] == 1


def test_optimizer_and_loader_settings():
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert optimizer_kwargs("loop", p) == {"foreach": False}
    assert optimizer_kwargs("foreach", p) == {"foreach": True}
    assert optimizer_kwargs("auto", p) in ({"fused": True}, {"foreach": True})
    torch.optim.AdamW(p, **optimizer_kwargs("auto", p)).step()
    with pytest.raises(ValueError):
        optimizer_kwargs("turbo", p)
    assert loader_kwargs({"pin_memory": "auto", "num_workers": 2, "prefetch_factor": 3}, "cpu") == \
        {"pin_memory": False, "prefetch_factor": 3}
    assert loader_kwargs({"pin_memory": "auto", "num_workers": 0}, "cuda") == {"pin_memory": True}


def test_speed_config_keys():
    cfg = load_config("demo", None, list(STRAIGHTFORWARD_OVERRIDES) + ["optim.impl=loop"])
    assert cfg["model"]["logits"] == "all" and cfg["text"]["precision"] == "fp32" and not cfg["model"]["channels_last"]
    for bad in ("text.precision=fp8", "model.logits=some", "optim.impl=turbo"):
        with pytest.raises(ConfigError):
            load_config("demo", None, [bad])


def test_tfm_last_layer_only_at_masked_positions_matches_full():
    from training.heads.tfm import TfmHead
    torch.manual_seed(0)
    head = TfmHead(64, 32, layers=2, heads=4, ff=64, dropout=0.1).eval()
    fmap, text = torch.randn(3, 64, 4, 4), torch.randn(3, 7, 32)
    att = torch.ones(3, 7, dtype=torch.long)
    att[1, 5:] = 0
    sel = torch.zeros(3, 7, dtype=torch.bool)
    sel[0, 2] = sel[0, 4] = sel[2, 1] = True  # two masks in row 0, none in row 1
    rows, cols = sel.nonzero(as_tuple=True)
    fast, a_fast = head(fmap, text, att, rows, cols)
    head.last_layer_at_masked = False
    full, a_full = head(fmap, text, att, rows, cols)
    assert torch.allclose(fast, full, atol=1e-5) and torch.allclose(a_fast, a_full, atol=1e-6)
    assert a_fast.shape == (3, 16)
    empty = torch.zeros(0, dtype=torch.long)
    head.last_layer_at_masked = True
    f, a = head(fmap, text, att, empty, empty)
    assert f.shape == (0, 32) and a.shape == (0, 16)


def test_straightforward_mode_computes_the_full_tfm(text_side):
    assert _model(text_side, heads="[tfm]").fusion.last_layer_at_masked
    assert not _model(text_side, "model.logits=all", heads="[tfm]").fusion.last_layer_at_masked
