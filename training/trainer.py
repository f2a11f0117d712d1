"""The training loop: from a config and a run folder to trained weights, with exact resume.

The parts live in their own modules: the run folder (:mod:`.run_folder`), what a run is built from
(:mod:`.pipeline`), the step (:mod:`.step`), what stops a run that cannot progress (:mod:`.guards`),
checkpoints (:mod:`.checkpoint`) and held-out validation (:mod:`.validation`). This module sets them up and loops.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from icmlm_zoo.cpu_threads import threads_for_run

from . import checkpoint as ckpt
from .attention_figure import held_out_figure_quietly
from .config import Config, dump
from .curves import plot_run_quietly
from .data.transforms import PREPROCESSING_FILE
from .distributed import DistInfo, barrier, gather_objects, is_main, say
from .guards import DataFailureError, Guards, NonFiniteError, NoProgressError
from .memory import resolve_retain_memory, retain_freed_memory
from .metrics_log import MetricsLogger
from .optim import build_optimizer, build_scheduler
from .pipeline import Pipeline, build_pipeline
from .run_folder import RunFolderError, open_run_dir, prepare_run_dir, undo_setup
from .step import TrainStep
from .validation import eval_line, run_evaluation, to_device, topk_hits

__all__ = ["train", "prepare_run_dir", "LoopState", "DataFailureError", "RunFolderError",
           "NonFiniteError", "NoProgressError"]

log = logging.getLogger("icmlm-train")


@dataclass
class LoopState:
    """Where the loop is: what a checkpoint stores (besides the model, optimizer, scheduler, scaler and RNG
    states) to resume exactly. ``batch_in_epoch`` counts the loader's batches read in ``epoch``."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    counters: Counter = field(default_factory=Counter)


def train(cfg: Config, run_dir: Path, info: DistInfo, *, resume: bool = False, text=None) -> dict[str, Any]:
    """Train as ``cfg`` (the validated config :func:`~icmlm_zoo.training.config.load_config` returns) says in
    ``run_dir``; returns a summary (final step, losses, last evaluation, model)."""
    seed = cfg.run.seed
    random.seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    torch.manual_seed(seed + info.rank)
    if resolve_retain_memory(cfg.run.retain_memory, info.device.type):
        retain_freed_memory(True)  # before the DataLoader workers fork
    before = open_run_dir(run_dir, info)
    try:
        loop = _Loop(cfg, run_dir, info, resume, text)
    except BaseException:
        if not resume:  # a refused start leaves --out as it was (a rerun is not blocked by tags.txt, ...)
            undo_setup(run_dir, before, info)
        raise
    return loop.run()


def _set_cpu_threads(cfg: Config, info: DistInfo) -> None:
    """Set torch's intra-op threads for ``run.threads`` and write the number into ``cfg`` (saved in the run's
    config.yaml: a resume runs on the same count, which the floating-point results depend on)."""
    current = torch.get_num_threads()
    if info.enabled and cfg.run.threads == "auto":  # ranks share the machine: their launcher set the count
        n, why = current, "the launcher's setting"
    else:
        n, why = threads_for_run(cfg.run.threads, current)
    if n != current:
        torch.set_num_threads(n)
    cfg.run.threads = n
    say(f"CPU threads: {n} ({why}; run.threads=N sets it)", info)


class _Window:
    """Training metrics summed since the last log line."""

    def __init__(self) -> None:
        self.sums: Counter = Counter()
        self.t0 = time.perf_counter()

    def add(self, out: dict[str, Any], loss: float, n_images: int) -> None:
        s = self.sums
        s["loss"] += loss
        s["n_loss"] += 1
        s["images"] += n_images
        for k in ("mlm_loss", "tp_loss"):
            if k in out:
                s[k] += float(out[k].detach())
        if "logits" in out:
            t1, t5 = topk_hits(out["logits"].detach(), out["targets"])
            s["top1"], s["top5"], s["masked"] = s["top1"] + t1, s["top5"] + t5, s["masked"] + len(out["targets"])

    def values(self, world_size: int) -> dict[str, float]:
        s, n = self.sums, max(1, self.sums["n_loss"])
        vals = {"loss": s["loss"] / n,
                "images_per_s": s["images"] * world_size / max(1e-9, time.perf_counter() - self.t0)}
        vals.update({k: s[k] / n for k in ("mlm_loss", "tp_loss") if s[k]})
        if s["masked"]:
            vals["top1"], vals["top5"] = s["top1"] / s["masked"], s["top5"] / s["masked"]
        self.sums.clear()
        self.t0 = time.perf_counter()
        return vals


class _Loop:
    """A run set up (pipeline, optimizer, resumed state, logger) and the loop that trains it."""

    def __init__(self, cfg: Config, run_dir: Path, info: DistInfo, resume: bool, text) -> None:
        self.cfg, self.run_dir, self.info = cfg, run_dir, info
        self.pipe: Pipeline = build_pipeline(cfg, run_dir, info, text=text)
        if info.device.type == "cpu":
            _set_cpu_threads(cfg, info)  # after the start-up: the window that measures the other processes' load
        self.model = self.pipe.model.to(info.device)
        o, t = cfg.optim, cfg.train
        self.steps_per_epoch = max(1, self.pipe.train.batches_per_epoch // o.accum_steps)
        self.total = int(t.max_steps or t.epochs * self.steps_per_epoch)
        opt = build_optimizer(self.model, o)
        sched = build_scheduler(opt, self.total, o)
        scaler = torch.amp.GradScaler(info.device.type, enabled=t.amp == "fp16" and info.device.type == "cuda")
        self.state = LoopState()
        if resume:
            self._restore(opt, sched, scaler)
        elif is_main(info):
            saved = dataclasses.asdict(cfg)  # with the tag file the pipeline resolved
            saved["run"]["stop_after"] = None
            (run_dir / "config.yaml").write_text(dump(saved))
            (run_dir / PREPROCESSING_FILE).write_text(json.dumps(self.pipe.preprocessing, indent=2) + "\n")
        barrier(info)
        module = self.model
        if info.enabled:
            dev = info.device
            module = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.train_step = TrainStep(module, opt, scheduler=sched, scaler=scaler, amp=t.amp, accum_steps=o.accum_steps,
                                    grad_clip=o.grad_clip,
                                    params=[p for p in self.model.parameters() if p.requires_grad])
        self.logger = MetricsLogger(run_dir, enabled=is_main(info), tensorboard=cfg.run.tensorboard,
                                    resume_step=self.state.step)
        self.guards = Guards(cfg.run, t, o.accum_steps, info, self.state.counters)

    def _restore(self, opt, sched, scaler) -> None:
        main = is_main(self.info)
        path, st = ckpt.load_newest_good(self.run_dir / "checkpoints", warn=lambda m: main and log.warning(m),
                                         set_aside=main)
        self.model.load_trainable_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        self.state = LoopState(st["step"], st["epoch"], st["batch_in_epoch"], Counter(st.get("counters", {})))
        rngs = st["rng"]
        ckpt.set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        say(f"resumed {self.run_dir} from {path.name} (step {self.state.step}, epoch {self.state.epoch}, "
            f"batch {self.state.batch_in_epoch})", self.info)

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (every rank's RNG state, gathered on the main rank)."""
        rng_all = gather_objects(ckpt.rng_state(), self.info)
        if not is_main(self.info):
            return None
        s, st = self.state, self.train_step
        state = {"step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch,
                 "model": self.model.trainable_state_dict(), "optimizer": st.optimizer.state_dict(),
                 "scheduler": st.scheduler.state_dict(), "scaler": st.scaler.state_dict(), "rng": rng_all,
                 "counters": dict(s.counters), "world_size": self.info.world_size}
        return ckpt.save_checkpoint(state, self.run_dir / "checkpoints", s.step, self.cfg.run.keep_last)

    def _epoch_batches(self):
        """The loader's batches from where the state says the epoch stands (resume included)."""
        s = self.state
        skip = self.pipe.train.start_epoch(s.epoch, s.batch_in_epoch)  # streamed: read past the batches consumed
        s.batch_in_epoch -= skip  # ... which count again as they are read
        for batch in self.pipe.train:
            s.batch_in_epoch += 1
            if skip:
                skip -= 1
                continue
            yield batch

    def run(self) -> dict[str, Any]:
        cfg, info, s = self.cfg, self.info, self.state
        t = cfg.train
        self.bar = None
        if is_main(info) and cfg.run.progress:
            self.bar = tqdm(total=self.total, initial=s.step, desc="train", unit="step", dynamic_ncols=True,
                            mininterval=1.0)
        self.window, self.first_loss, self.last_loss = _Window(), None, None
        self.last_saved = s.step if s.step > 0 else -1
        self.stopped, self.micro = False, 0
        self.model.train()
        say(f"run folder {self.run_dir}: {self.total} steps ({self.steps_per_epoch}/epoch), batch {t.batch_size}x"
            f"{info.world_size}x{self.train_step.accum_steps}, heads {cfg.model.heads}, backbone "
            f"{cfg.model.backbone}, device {info.device}", info)
        while s.step < self.total and not self.stopped:
            if self._train_epoch():
                break
            s.epoch += 1
            s.batch_in_epoch = 0
        if self.bar is not None:
            self.bar.close()
        if self.last_saved != s.step:
            self.save()
        return self._finish()

    def _train_epoch(self) -> bool:
        """Train through the rest of the epoch; True when the run ended (or stopped) inside it."""
        for batch in self._epoch_batches():
            if not self.guards.usable(batch, self.pipe.tags):
                continue  # some rank has nothing usable in this batch: every rank skips it
            self.micro += 1  # counted across epochs: an accumulation may span an epoch's end
            last = self.micro % self.train_step.accum_steps == 0
            batch = to_device(batch, self.info.device)
            out = self.train_step.micro_batch(batch, last=last)
            loss = float(out["loss"].detach())
            if math.isfinite(loss):
                self.window.add(out, loss, batch["n"])
            else:
                self.guards.bad_loss = True
            if last and self._optimizer_step() and self._after_step():
                return True
        return False

    def _optimizer_step(self) -> bool:
        """Clip and apply (or discard a non-finite step); True when the weights were updated."""
        st, s = self.train_step, self.state
        grad_norm = st.grad_norm()
        if self.guards.skip_step(grad_norm, s.step, st.scheduler.get_last_lr()[0], self.run_dir):
            st.discard()
            return False
        st.apply()
        s.step += 1
        self.guards.stepped()
        if self.bar is not None:
            self.bar.update(1)
        return True

    def _after_step(self) -> bool:
        """Log, checkpoint and evaluate as the config says after an optimizer step; True when the run ends here."""
        r, s = self.cfg.run, self.state
        ends = s.step == r.stop_after
        if s.step % r.log_every == 0 or s.step == self.total or ends:
            self._log_train()
        if s.step % r.ckpt_every == 0 or s.step == self.total or ends:
            self.save()
            self.last_saved = s.step
        every = self.cfg.eval.every
        if every and s.step % every == 0 and s.step != self.total and self.pipe.val is not None:
            self.logger.log(s.step, "val", run_evaluation(self.model, self.pipe.val.loader, self.cfg, self.info,
                                                          self.pipe.tokenizer))
        self.stopped = ends
        return ends or s.step >= self.total

    def _log_train(self) -> None:
        s, c = self.state, self.state.counters
        w = self.window.values(self.info.world_size)
        vals = {"epoch": s.epoch, "lr": self.train_step.scheduler.get_last_lr()[0], "loss": w.pop("loss"),
                "images_per_s": w.pop("images_per_s"), "failed": c["failed"], "skipped": c["skipped"],
                "truncated": c["truncated"], "samples": c["seen"], **w}
        self.logger.log(s.step, "train", vals)
        self.first_loss = vals["loss"] if self.first_loss is None else self.first_loss
        self.last_loss = vals["loss"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{vals['loss']:.3f}", top1=f"{vals.get('top1', 0):.2f}",
                                 img_s=f"{vals['images_per_s']:.0f}")
        else:
            say(f"step {s.step}/{self.total} loss {vals['loss']:.4f} top1 {vals.get('top1', 0):.3f} "
                f"{vals['images_per_s']:.1f} img/s", self.info)

    def _finish(self) -> dict[str, Any]:
        """Final evaluation, data report, summary.json, the curve and attention figures."""
        cfg, info, s, c = self.cfg, self.info, self.state, self.state.counters
        summary: dict[str, Any] = {"run_dir": str(self.run_dir), "step": s.step, "total_steps": self.total,
                                   "stopped": self.stopped, "first_loss": self.first_loss,
                                   "last_loss": self.last_loss, "counters": dict(c)}
        if self.stopped:
            say(f"stopped after step {s.step} (run.stop_after); continue with --resume --out {self.run_dir}", info)
        elif cfg.eval.at_end and self.pipe.val is not None:
            res = run_evaluation(self.model, self.pipe.val.loader, cfg, info, self.pipe.tokenizer)
            self.logger.log(s.step, "val", res)
            summary["eval"] = res
            say(eval_line(res), info)
        self.logger.close()
        if c["failed"] or c["truncated"] or c["skipped"]:
            say(f"data: {c['failed']} failed, {c['skipped']} skipped (policy), {c['truncated']} truncated of "
                f"{c['seen']} samples", info)
        if c["nonfinite_steps"]:
            say(f"{c['nonfinite_steps']} optimizer step(s) skipped for a NaN/Inf loss or gradient", info)
        if is_main(info):
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            summary["curves"] = plot_run_quietly(self.run_dir)  # RUN/curves.png (icmlm-train plot RUN)
            if cfg.data.kind == "synthetic" and not self.stopped and self.model.fusion_kind is not None:
                # RUN/attention.png, with the run's own text side (not a second one loaded)
                summary["attention_figure"] = held_out_figure_quietly(self.run_dir, self.pipe.text)
        summary["model"] = self.model
        return summary
