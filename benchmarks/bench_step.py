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
import statistics
import sys
import time
from typing import Callable

import _env  # noqa: F401  (first: sys.path and the environment, before torch)
import timm
import torch
import torch.nn.functional as F
from common import report
from step_inputs import icmlm_config, make_batch, make_text_side
from step_verdicts import step_goals, step_table

import icmlm_zoo  # noqa: F401
from icmlm_zoo.training.memory import retain_freed_memory
from icmlm_zoo.training.model import build_model
from icmlm_zoo.training.optim import build_optimizer, optimizer_kwargs
from icmlm_zoo.training.step import STRAIGHTFORWARD_OVERRIDES, TrainStep
from icmlm_zoo.training.text import TextSide
from icmlm_zoo.training.text_runner import FrozenTextRunner


def _parse_args(argv) -> argparse.Namespace:
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
    return args


def _amp(prec: str) -> str:
    return "bf16" if prec == "bf16" else "none"


class _Steps:
    """The steps the variants time, on one batch: the bare supervised step, and ICMLM steps through the trainer's
    step (forward under autocast, backward, clip, AdamW); models and text runners are made once and shared."""

    def __init__(self, args: argparse.Namespace, text: TextSide, batch: dict) -> None:
        self.args, self.text, self.batch = args, text, batch
        self.models: dict = {}
        self.runners: dict = {}
        bare_name = "icmlm_resnet_tiny" if args.quick else "resnet50"
        self.bare_model = timm.create_model(bare_name, num_classes=1000).to(memory_format=torch.channels_last).train()
        self.bare_params = [p for p in self.bare_model.parameters() if p.requires_grad]
        self.bare_opt = torch.optim.AdamW(self.bare_params, lr=1e-4, **optimizer_kwargs("auto", self.bare_params))

    def bare(self, prec: str) -> Callable[[], object]:
        """The bare supervised step: timm classifier + cross-entropy, channels_last."""
        def forward(module, b):
            return {"loss": F.cross_entropy(module(b["images"].contiguous(memory_format=torch.channels_last)),
                                            b["classes"])}
        step = TrainStep(self.bare_model, self.bare_opt, amp=_amp(prec), grad_clip=1.0, params=self.bare_params,
                         forward=forward)
        return lambda: step(self.batch)

    def model(self, kind: str, straight: bool | str):
        """(model, optimizer, trained parameters, config) of a preset's ICMLM, made once."""
        key = (kind, straight)
        if key not in self.models:
            preset = "coco_r50_attfc" if kind == "attfc" else "coco_r50_tfm"
            overrides = list(STRAIGHTFORWARD_OVERRIDES) if straight else []
            if straight == "fast fusion":
                overrides = [o for o in overrides if not o.startswith("model.fusion_impl=")]
            cfg = icmlm_config(preset, overrides, self.args.quick)
            torch.manual_seed(0)
            m = build_model(cfg, self.text, self.args.num_tags).train()
            opt = build_optimizer(m, dataclasses.replace(cfg.optim, lr=1e-4))
            params = [p for p in m.parameters() if p.requires_grad]
            self.models[key] = (m, opt, params, cfg)
        return self.models[key]

    def icmlm(self, kind: str, prec: str, *, straight: bool | str = False, cache: bool = False,
              text_precision: str = "auto", update_head: bool = True, nchw_grad: bool = False) -> Callable[[], None]:
        """One ICMLM optimizer step (optionally the straightforward form, a warm text cache, the fusion head's
        update dropped, or the heads' gradient handed to the trunk in NCHW)."""
        m, opt, params, cfg = self.model(kind, straight)
        rkey = (id(m), _amp(prec), cache, text_precision)
        if rkey not in self.runners:
            tp = "fp32" if straight else text_precision
            self.runners[rkey] = FrozenTextRunner(m.text, tp, _amp(prec), 100_000 if cache else 0)
        runner = self.runners[rkey]
        if not update_head:  # breakdown: the fusion head's gradients are computed, then dropped
            head = list(m.fusion.parameters())
            params = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith("fusion.")]
            opt = torch.optim.AdamW(params, lr=1e-4, **optimizer_kwargs("auto", params))
        step = TrainStep(m, opt, amp=_amp(prec), grad_clip=cfg.optim.grad_clip, params=params)

        def fn():
            m.text_runner = runner
            m.channels_last_grad = m.channels_last and not nchw_grad
            step.micro_batch(self.batch)
            if not update_head:
                for p in head:
                    p.grad = None
            step.grad_norm()
            step.apply()
        return fn

    def trunk_tp(self, prec: str) -> Callable[[], object]:
        """The att-fc model's trunk and TP head alone (no text, no fusion head)."""
        m, _, _, cfg = self.model("attfc", False)
        params = [p for n, p in m.named_parameters() if n.startswith(("backbone.", "tp."))]
        opt = torch.optim.AdamW(params, lr=1e-4, **optimizer_kwargs("auto", params))

        def forward(module, b):
            return {"loss": module.tp.loss(module.tp(module.features(b["images"])), b["tp"])}
        step = TrainStep(m, opt, amp=_amp(prec), grad_clip=cfg.optim.grad_clip, params=params, forward=forward)
        return lambda: step(self.batch)

    def encoder_only(self, prec: str) -> Callable[[], object]:
        runner = FrozenTextRunner(self.text.encoder, "auto", _amp(prec), 0)
        return lambda: runner(self.batch["input_ids"], self.batch["attention_mask"])


def _variants(args: argparse.Namespace, steps: _Steps, precisions: list[str], heads: list[str]) -> list[tuple]:
    """(precision, label, step function) of every row to time, in the order of the table."""
    keep = ({"bare"} | {v.strip() for v in args.variants.split(",")}) if args.variants else None
    variants: list[tuple[str, str, Callable]] = []

    def add(prec, label, make):
        if keep is None or label in keep:
            variants.append((prec, label, make()))

    for prec in precisions:
        add(prec, "bare", lambda: steps.bare(prec))
        for kind in heads:
            add(prec, kind, lambda: steps.icmlm(kind, prec))
        if "attfc" in heads:
            add(prec, "attfc+cache", lambda: steps.icmlm("attfc", prec, cache=True))
        for kind in heads:
            add(prec, f"{kind} straightforward", lambda: steps.icmlm(kind, prec, straight=True))
            if keep is not None:
                add(prec, f"{kind} straightforward (fast fusion)",
                    lambda: steps.icmlm(kind, prec, straight="fast fusion"))
                add(prec, f"{kind} (NCHW trunk gradient)", lambda: steps.icmlm(kind, prec, nchw_grad=True))
        if keep is not None and "attfc" in heads:
            add(prec, "attfc+cache (head not updated)",
                lambda: steps.icmlm("attfc", prec, cache=True, update_head=False))
            add(prec, "trunk+TP only", lambda: steps.trunk_tp(prec))
        if prec == "fp32" and "attfc" in heads:
            add(prec, "attfc, fp32 encoder", lambda: steps.icmlm("attfc", prec, text_precision="fp32"))
        add(prec, "text encoder alone", lambda: steps.encoder_only(prec))
    return variants


def _time_rounds(args: argparse.Namespace, variants: list[tuple]) -> tuple[dict, dict]:
    """Round-robin timing (order reversed every other round): per variant, the clock's and the wall times."""
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
    return times, wall


def _settings(args, precisions, heads, text, batch, steps: _Steps, retained: bool, t_start: float) -> dict:
    return {"batch": args.batch, "size": args.size, "repeats": args.repeats, "warmup": args.warmup,
            "precisions": precisions, "heads": heads, "num_tags": args.num_tags,
            "text_encoder": text.name, "text_width": text.width, "masked_tokens": int((batch["labels"] != -100).sum()),
            "caption_tokens": int(batch["attention_mask"].sum()), "caption_length": int(batch["input_ids"].shape[1]),
            "quick": args.quick, "clock": args.clock, "threads": torch.get_num_threads(),
            "malloc": args.malloc, "freed_memory_retained": retained,
            "optimizer": "AdamW " + str(optimizer_kwargs("auto", steps.bare_params)),
            "total_s": time.perf_counter() - t_start}


def main(argv=None) -> int:
    args = _parse_args(argv)
    name = args.name or ("step_quick" if args.quick else "step")
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
    steps = _Steps(args, text, batch)
    variants = _variants(args, steps, precisions, heads)
    t_start = time.perf_counter()
    times, wall = _time_rounds(args, variants)
    rows, ratios = step_table(args, variants, precisions, times, wall)
    goals = [] if args.quick else step_goals(precisions, heads, ratios)
    cache_stats = {f"{k[1]}/{k[2]}": r.cache.stats() for k, r in steps.runners.items() if r.cache is not None}
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = {"variants": {k: {"median_s": med[k], "min_s": min(v), "max_s": max(v), "times_s": v,
                              "wall_s": wall[k]} for k, v in times.items()},
             "ratios": ratios, "cache": cache_stats,
             "settings": _settings(args, precisions, heads, text, batch, steps, retained, t_start)}
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
