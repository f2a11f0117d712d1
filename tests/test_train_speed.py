"""The speed levers (training/text_runner.py, optim.py, memory.py, model.py, data/loader_options.py) keep the
model's results: cache, logits at every position, encoder precision, optimizer implementation, data-loader
settings, config keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from train_fixtures import TAG_WORDS

from icmlm_zoo.training.config import ConfigError, load_config
from icmlm_zoo.training.data.loader_options import loader_kwargs
from icmlm_zoo.training.optim import optimizer_kwargs
from icmlm_zoo.training.step import STRAIGHTFORWARD_OVERRIDES
from icmlm_zoo.training.text_runner import FrozenTextRunner, TextFeatureCache, resolve_text_dtype


def _batch(text, n=6, seed=0):
    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.synthetic import SyntheticScenes
    from icmlm_zoo.training.masking import CaptionMasker
    scenes = SyntheticScenes(n, 32, seed)
    masker = CaptionMasker(text.tokenizer, TAG_WORDS)
    samples = []
    for i in range(n):
        m = masker(scenes.caption(i), np.random.default_rng(i))
        samples.append({"caption": "", "image": torch.randn(3, 32, 32), "input_ids": m.input_ids, "labels": m.labels})
    return Collator(text.tokenizer.pad_token_id)(samples)


def _model(text, *overrides, heads="[attfc]", num_tags=0):
    from icmlm_zoo.training.model import build_model
    cfg = load_config(None, None, [f"model.heads={heads}", "model.attfc.dropout=0", "model.tfm.dropout=0",
                                   "model.attfc.hidden=64", "model.tfm.ff=64", "model.tfm.layers=1", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, text, num_tags).eval()


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


@pytest.mark.parametrize("heads", ["[attfc,tp]", "[tfm]"])
def test_forward_pair_equals_two_forwards_with_rolled_images(text_side, heads):
    """The evaluation's image-use control runs the trunk and the text encoder once: the same logits and TP
    scores as forward(images) and forward(images.roll(1, 0)) (per-sample in eval mode)."""
    b = _batch(text_side)
    args = (b["input_ids"], b["attention_mask"], b["labels"])
    model = _model(text_side, "text.precision=fp32", heads=heads, num_tags=5 if "tp" in heads else 0).train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_pair(b["images"], *args)
    model.eval()
    with torch.no_grad():
        real, rolled = model(b["images"], *args), model(b["images"].roll(1, 0), *args)
    pair = model.forward_pair(b["images"], *args)
    for got, want in zip(pair, (real, rolled)):
        assert torch.equal(got["targets"], want["targets"])
        assert torch.allclose(got["logits"], want["logits"], atol=1e-5)
        assert (got["logits"].argmax(-1) == want["logits"].argmax(-1)).all()
        if "tp_logits" in want:
            assert torch.allclose(got["tp_logits"], want["tp_logits"], atol=1e-5)
    assert not torch.allclose(pair[0]["logits"], pair[1]["logits"], atol=1e-3)  # the roll changed the images


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
    # on the CPU the bf16 copy attends with plain matmul + softmax (faster than torch's CPU SDPA kernel at caption
    # lengths); the fp32 original keeps its own attention
    assert runner._frozen_copy.get(torch.bfloat16, torch.device("cpu")).config._attn_implementation == "eager"
    assert text_side.encoder.config._attn_implementation != "eager"
    assert (out.float()[att] - ref[att]).abs().mean() < 0.01


def test_text_side_kept_in_bf16_computes_what_the_bf16_copy_does(text_side):
    """CPU training under bf16 autocast loads the frozen text model in bf16 only (no fp32 original beside a copy):
    the encoder's states and the tied MLM head's logits are bit-identical to the copy's, at a third of the
    memory."""
    from icmlm_zoo.training.pipeline import frozen_text_dtype
    from icmlm_zoo.training.text import load_text_side
    bf16 = load_text_side("minilm", cache=False, dtype=torch.bfloat16)
    params = list(bf16.encoder.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and bf16.encoder.config._attn_implementation == "eager"
    b = _batch(text_side, n=3)
    copy_path = FrozenTextRunner(text_side.encoder, "bf16", "bf16")(b["input_ids"], b["attention_mask"])
    in_place = FrozenTextRunner(bf16.encoder, "bf16", "bf16")(b["input_ids"], b["attention_mask"])
    assert torch.equal(copy_path, in_place)
    torch.manual_seed(0)
    head_copy = text_side.make_mlm_head()
    torch.manual_seed(0)
    head_bf16 = bf16.make_mlm_head()
    x = torch.randn(5, text_side.width)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(head_copy(x), head_bf16(x))
    assert frozen_text_dtype(load_config("demo", None, ["train.amp=bf16"]), torch.device("cpu")) == torch.bfloat16
    for amp, device in (("none", "cpu"), ("bf16", "cuda")):  # no autocast: the tied head computes in fp32
        assert frozen_text_dtype(load_config("demo", None, [f"train.amp={amp}"]), torch.device(device)) is None


def test_resolve_text_dtype():
    cpu = torch.device("cpu")
    assert resolve_text_dtype("fp32", "bf16", cpu) == torch.float32
    assert resolve_text_dtype("auto", "bf16", cpu) == torch.bfloat16
    assert resolve_text_dtype("fp16", "none", cpu) == torch.bfloat16  # no fp16 encoder on CPU
    assert resolve_text_dtype("auto", "none", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match=r"text.precision='int8' is not valid: choose one of auto, fp32"):
        load_config("demo", None, ["text.precision=int8"])  # checked once, where the config is read


def test_amp_auto_is_bf16_exactly_where_the_device_has_native_bf16(monkeypatch):
    from icmlm_zoo.training import amp as amp_module
    from icmlm_zoo.training import text_runner
    cpu = torch.device("cpu")
    assert load_config("demo", None, ["train.amp=auto"]).train.amp == "auto"
    for native, amp, dtype in ((True, "bf16", torch.bfloat16), (False, "none", torch.float32)):
        monkeypatch.setattr(amp_module, "fast_bf16", lambda device, n=native: n)
        monkeypatch.setattr(text_runner, "fast_bf16", lambda device, n=native: n)
        assert amp_module.resolve_amp("auto", cpu) == amp
        assert resolve_text_dtype("auto", "auto", cpu) == dtype
        with amp_module.autocast("auto", cpu):
            assert torch.is_autocast_enabled("cpu") == native
    assert amp_module.resolve_amp("none", cpu) == "none" and amp_module.resolve_amp("bf16", cpu) == "bf16"


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
    from icmlm_zoo.training.config_sections import DataSection
    assert loader_kwargs(DataSection(pin_memory="auto", num_workers=2, prefetch_factor=3), "cpu") == \
        {"num_workers": 2, "pin_memory": False, "prefetch_factor": 3}
    assert loader_kwargs(DataSection(pin_memory="auto", num_workers=0), "cuda") == \
        {"num_workers": 0, "pin_memory": True}
    assert loader_kwargs(DataSection(num_workers=2), "cpu", num_workers=0) == \
        {"num_workers": 0, "pin_memory": False}  # eval.num_workers for the held-out split


def test_speed_config_keys():
    cfg = load_config("demo", None, list(STRAIGHTFORWARD_OVERRIDES) + ["optim.impl=loop"])
    assert cfg.model.logits == "all" and cfg.text.precision == "fp32" and not cfg.model.channels_last
    for bad in ("text.precision=fp8", "model.logits=some", "optim.impl=turbo"):
        with pytest.raises(ConfigError):
            load_config("demo", None, [bad])


def _perturbed(head):
    with torch.no_grad():  # move LayerNorms/biases off their init so every parameter matters
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return head


def _fast_and_reference(head, fmap, text, att, rows, cols):
    """Outputs, attention, input gradient and parameter gradients of both implementations (train mode)."""
    res = []
    for fast in (True, False):
        head.fast = fast
        fmap.grad = None
        head.zero_grad()
        f, a = head(fmap, text, att, rows, cols)
        (f.square().sum() + (a * torch.arange(a.shape[-1])).sum()).backward()
        res.append((f.detach(), a.detach(), fmap.grad.clone(),
                    {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}))
    return res


@pytest.mark.parametrize("kind,layers", [("tfm", 2), ("tfm", 1), ("attfc", 0)])
@pytest.mark.parametrize("where", ["masked", "every"])
def test_fast_fusion_matches_the_reference(kind, layers, where):
    """model.fusion_impl=fast (queries grouped per image, keys/values folded, tfm over the real tokens, last
    layer at the asked positions) gives the reference's outputs and gradients, for a few or many queries."""
    from icmlm_zoo.training.heads import AttFCHead, TfmHead
    torch.manual_seed(0)
    head = (TfmHead(64, 32, layers=layers, heads=4, ff=64, dropout=0.0) if kind == "tfm"
            else AttFCHead(64, 32, heads=4, hidden=64, dropout=0.0))
    _perturbed(head).train()
    fmap, text = torch.randn(3, 64, 4, 4, requires_grad=True), torch.randn(3, 7, 32)
    att = torch.ones(3, 7, dtype=torch.long)
    att[1, 5:] = 0
    sel = torch.zeros(3, 7, dtype=torch.bool)
    sel[0, 2] = sel[0, 4] = sel[2, 1] = True  # two masks in row 0, none in row 1
    rows, cols = (sel if where == "masked" else att.bool()).nonzero(as_tuple=True)
    (f1, a1, g1, p1), (f2, a2, g2, p2) = _fast_and_reference(head, fmap, text, att, rows, cols)
    assert f1.shape == (len(rows), 32) and a1.shape == (len(rows), 16)
    assert torch.allclose(f1, f2, atol=1e-5) and torch.allclose(a1, a2, atol=1e-6)
    assert torch.allclose(g1, g2, atol=1e-5)
    assert set(p1) == set(p2)
    for name in p2:
        assert torch.allclose(p1[name], p2[name], atol=1e-4, rtol=1e-4), name
    head.fast = True
    empty = torch.zeros(0, dtype=torch.long)
    f, a = head(fmap, text, att, empty, empty)
    assert f.shape == (0, 32) and a.shape == (0, 16)


def test_folded_attention_equals_multihead_attention():
    from icmlm_zoo.training.heads.attention import attend, fold_is_cheaper, folded_attention, group_queries
    torch.manual_seed(0)
    mha = _perturbed(torch.nn.MultiheadAttention(48, 6, batch_first=True)).eval()
    q, kv = torch.randn(2, 3, 48), torch.randn(2, 10, 48)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 7:] = True
    out, w = folded_attention(mha, q, kv, pad)
    ref, ref_w = mha(q, kv, kv, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-6)
    assert float(w[1, :, 7:].detach().abs().max()) == 0.0
    assert fold_is_cheaper(1, 49, 768, 12) and not fold_is_cheaper(40, 49, 768, 12)
    assert torch.allclose(attend(mha, q, kv, pad)[0], ref, atol=1e-5)
    grouped, slot = group_queries(torch.tensor([2, 0, 2, 2, 0]), torch.arange(5.0)[:, None], 4)
    assert slot.tolist() == [0, 0, 1, 2, 1] and grouped.shape[1] == 3
    assert grouped[:, :, 0].tolist() == [[1, 4, 0], [0, 0, 0], [0, 2, 3], [0, 0, 0]]
    with pytest.raises(ValueError, match="packed"):
        mha = torch.nn.MultiheadAttention(48, 6, kdim=20, vdim=20, batch_first=True)
        folded_attention(mha, q, torch.randn(2, 10, 20))


def test_straightforward_mode_uses_the_reference_fusion(text_side):
    assert _model(text_side, heads="[tfm]").fusion.fast
    assert not _model(text_side, *STRAIGHTFORWARD_OVERRIDES, heads="[tfm]").fusion.fast
    assert not _model(text_side, "model.fusion_impl=reference").fusion.fast
    with pytest.raises(ConfigError):
        load_config("demo", None, ["model.fusion_impl=quick"])


@pytest.mark.parametrize("heads", ["[attfc,tp]", "[tfm,tp]"])
def test_channels_last_trunk_gets_channels_last_gradients(text_side, heads):
    """The heads' gradients (TP pooling + fusion) reach the trunk's last block in channels_last, so the trunk's
    backward runs in the layout its forward ran in; without channels_last nothing is converted."""
    b = _batch(text_side)
    b["tp"] = torch.zeros(len(b["input_ids"]), 5)
    b["images"] = torch.randn(len(b["input_ids"]), 3, 64, 64)  # a 2x2 feature map: the layouts differ
    from icmlm_zoo.training.model import build_model
    for cl in (True, False):
        cfg = load_config(None, None, [f"model.heads={heads}", "model.attfc.hidden=64", "model.tfm.ff=64",
                                       "model.tfm.layers=1", f"model.channels_last={str(cl).lower()}"])
        model = build_model(cfg, text_side, 5).train()
        seen = []
        model.backbone.layer4.register_full_backward_hook(lambda mod, gi, go: seen.append(go[0]))
        model(b["images"], b["input_ids"], b["attention_mask"], b["labels"], b["tp"])["loss"].backward()
        assert len(seen) == 1
        assert seen[0].is_contiguous(memory_format=torch.channels_last) == cl


_FAULTS = """
import resource, sys, torch
from icmlm_zoo.training.memory import retain_freed_memory
applied = retain_freed_memory(True) if sys.argv[1] == "retain" else False
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                          torch.nn.Conv2d(64, 64, 3, padding=1))
x = torch.randn(8, 3, 64, 64)
def step():  # activations and gradients allocated and freed, as in a training step
    net(x).square().mean().backward()
    net.zero_grad(set_to_none=True)
step()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc mallopt only")
def test_retained_memory_is_not_faulted_in_again():
    """run.retain_memory: what a training step frees is reused by the next, not unmapped and faulted in again
    page by page."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = {}
    for mode in ("default", "retain"):
        # the baseline with a fixed mmap threshold: glibc's dynamic one may or may not have grown past the
        # step's block sizes yet, which made the default's fault count vary from run to run
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072") if mode == "default" else None
        res = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=root, capture_output=True, text=True,
                             timeout=120, check=True, env=env)
        applied, faults = res.stdout.split()
        out[mode] = (applied, int(faults))
    assert out["retain"][0] == "True"
    assert out["default"][1] > 3000, out  # thousands of 4 KB pages faulted in again at every step
    assert out["retain"][1] < out["default"][1] / 4, out
    from icmlm_zoo.training.memory import resolve_retain_memory
    assert resolve_retain_memory("auto", "cpu") and not resolve_retain_memory("auto", "cuda")
    assert not resolve_retain_memory(False, "cpu")
    for bad in ("run.retain_memory=sometimes", "data.pin_memory=sometimes"):
        with pytest.raises(ConfigError, match="choose one of"):
            load_config("demo", None, [bad])


def test_pretrained_mlm_head_casts_its_frozen_copy_once():
    from transformers import BertConfig, BertForMaskedLM

    from icmlm_zoo.training.text import PretrainedMLMHead
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)).eval()
    for p in mlm.parameters():
        p.requires_grad_(False)
    head = PretrainedMLMHead(mlm.cls)
    x = torch.randn(5, 32, requires_grad=True)
    assert torch.equal(head(x), mlm.cls(x))  # fp32: the head itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = head(x), mlm.cls(x)
        copy = head._cast._copy
        head(x)
        assert head._cast._copy is copy  # cast once, reused
    assert out.dtype == torch.bfloat16 and next(copy.parameters()).dtype == torch.bfloat16
    assert next(mlm.cls.parameters()).dtype == torch.float32  # the original is untouched
    assert torch.allclose(out.float(), ref.float(), atol=0.05, rtol=0.02)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pretrained_mlm_head_moves_with_the_model_and_stays_out_of_checkpoints():
    """model.to(...) must move the frozen pretrained MLM head too (a bert-base run on CUDA with amp=none, or
    predict_masked on CUDA, failed with a device mismatch); it is reloaded from text.model, never saved."""
    from transformers import BertConfig, BertForMaskedLM

    from icmlm_zoo.training.backbones import create_backbone
    from icmlm_zoo.training.model import ICMLM
    from icmlm_zoo.training.text import TextSide
    cfg = load_config("demo", None, ["model.attfc.heads=2", "model.attfc.hidden=32"]).model
    mlm = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)).eval()
    for p in mlm.parameters():
        p.requires_grad_(False)
    side = TextSide(encoder=mlm.bert, tokenizer=None, width=32, pretrained_head=mlm.cls, name="tiny-bert")
    model = ICMLM(create_backbone("icmlm_resnet_tiny"), side, fusion="attfc", num_tags=0, cfg_model=cfg,
                  text_precision="fp32").eval()
    model.double()  # stands in for .to("cuda"): every submodule must follow
    assert mlm.cls.predictions.transform.dense.weight.dtype == torch.float64
    ids = torch.tensor([[2, 5, 7, 3]])
    labels = torch.tensor([[-100, 5, -100, -100]])
    out = model(torch.randn(1, 3, 64, 64, dtype=torch.float64), ids, torch.ones_like(ids), labels)
    assert out["logits"].shape == (1, 100) and torch.isfinite(out["loss"])
    keys = model.trainable_state_dict().keys()
    assert not any(k.startswith(("text.", "mlm_head.frozen.")) for k in keys)
    assert any(k.startswith("fusion.") for k in keys)
    model.load_trainable_state_dict(model.trainable_state_dict())  # strict on what is saved
