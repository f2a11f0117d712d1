"""The training loop: run folder, tags, data, model, optimizer, AMP, accumulation, clipping, DDP,
checkpoints with exact resume, metrics, evaluation and the optional export at the end."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import dump
from .attention_figure import held_out_figure_quietly
from .curves import plot_run_quietly
from .data import Collator, SampleBuilder, build_loader, build_source
from .data.transforms import backbone_norm, eval_transform, train_transform
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, gather_objects, is_main
from .evaluation import autocast, eval_line, evaluate, to_device, topk_hits, visual_words_for
from .masking import CaptionMasker
from .metrics_log import MetricsLogger
from .model import ICMLM, build_model
from .optim import build_optimizer, build_scheduler
from .speed import resolve_retain_memory, retain_freed_memory

__all__ = ["DataFailureError", "RunFolderError", "NonFiniteError", "NoProgressError", "prepare_run_dir",
           "resolve_tags", "build_pipeline", "train",
           "run_evaluation"]

log = logging.getLogger("icmlm-train")


class DataFailureError(RuntimeError):
    """Too many samples failed to load."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used (it exists and --resume was not given, ...)."""


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/Inf loss or gradient."""


class NoProgressError(RuntimeError):
    """Too many samples in a row gave no optimizer step (all skipped or failed)."""


def _say(msg: str, info: DistInfo) -> None:
    if is_main(info):
        try:
            from tqdm import tqdm
            tqdm.write(msg)
        except ImportError:  # pragma: no cover
            print(msg, flush=True)


def prepare_run_dir(out: str | Path | None, name: str, resume: bool, info: DistInfo) -> tuple[Path, bool]:
    """Choose the run folder (:func:`train` creates it). Returns (folder, resuming). An existing non-empty folder
    without ``--resume`` is refused; ``--resume`` on a folder without checkpoints starts a new run there."""
    if out is None:
        if resume:
            raise RunFolderError("--resume needs --out RUN_DIR (the run folder to continue)")
        stamp = broadcast_object(time.strftime("%Y%m%d-%H%M%S"), info)
        out = Path("runs") / f"{name}-{stamp}"
    run_dir = Path(out)
    has_ckpt = bool(ckpt.list_checkpoints(run_dir / "checkpoints"))
    non_empty = run_dir.exists() and any(run_dir.iterdir())
    if resume and has_ckpt:
        return run_dir, True
    if resume and non_empty and not (run_dir / "config.yaml").exists():
        raise RunFolderError(f"{run_dir} is not empty and holds no training run (no config.yaml); "
                             "choose another --out")
    if not resume and non_empty:
        raise RunFolderError(f"run folder {run_dir} exists and is not empty; continue it with --resume "
                             "or choose another --out (nothing is overwritten)")
    # a new run, or --resume of a run killed before its first checkpoint (started over in place)
    return run_dir, False


def _open_run_dir(run_dir: Path, info: DistInfo) -> set[Path] | None:
    """Create the run folder; return what it held before (None: it did not exist), for :func:`_undo_setup`."""
    before = set(run_dir.iterdir()) if run_dir.is_dir() else None
    barrier(info)
    if is_main(info):
        run_dir.mkdir(parents=True, exist_ok=True)
        stale = ckpt.remove_stale_temps(run_dir / "checkpoints")
        if stale:
            _say(f"removed {len(stale)} temporary file(s) left by an interrupted checkpoint write: "
                 f"{', '.join(p.name for p in stale)}", info)
    barrier(info)
    return before


def _undo_setup(run_dir: Path, before: set[Path] | None, info: DistInfo) -> None:
    """A run refused during set-up leaves the folder as it found it (removes only what this start created)."""
    import shutil
    if not is_main(info) or not run_dir.is_dir():
        return
    for p in set(run_dir.iterdir()) - (before or set()):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    if before is None and not any(run_dir.iterdir()):
        run_dir.rmdir()


class _Guards:
    """Stops a run that cannot progress: NaN/Inf steps (skipped and counted; too many in a row stop the run)
    and samples that never give an optimizer step (e.g. no caption holds a tag word)."""

    def __init__(self, cfg: dict, info: DistInfo, counters: Counter) -> None:
        t = cfg["train"]
        self.info, self.counters, self.max_bad = info, counters, t["max_nonfinite_steps"]
        per_step = t["batch_size"] * info.world_size * cfg["optim"]["accum_steps"]
        self.max_idle = max(t["max_idle_samples"], 2 * per_step)
        self.bad_loss, self.bad_in_row, self.seen_at_step = False, 0, counters["seen"]

    def skip_step(self, grad_norm: torch.Tensor | None, step: int, lr: float, run_dir: Path) -> bool:
        """True when this optimizer step must be skipped (non-finite loss or gradient on any rank)."""
        bad = self.bad_loss or (grad_norm is not None and not math.isfinite(float(grad_norm)))
        self.bad_loss = False
        if all_reduce_sum([float(bad)], self.info)[0] == 0:
            return False
        self.counters["nonfinite_steps"] += 1
        self.bad_in_row += 1
        if is_main(self.info) and self.bad_in_row == 1:
            log.warning("non-finite (NaN/Inf) loss or gradient at step %d (lr %.3g): step skipped, weights unchanged",
                        step + 1, lr)
        if self.bad_in_row >= self.max_bad:
            good = ckpt.list_checkpoints(run_dir / "checkpoints")
            raise NonFiniteError(
                f"{self.bad_in_row} optimizer steps in a row had a non-finite (NaN/Inf) loss or gradient "
                f"(train.max_nonfinite_steps={self.max_bad}; from step {step + 1}, lr {lr:.3g}); stopped without "
                f"writing a checkpoint. Last checkpoint: {good[-1] if good else 'none'}. Lower optim.lr, set "
                f"optim.grad_clip, or check the data")
        return True

    def stepped(self) -> None:
        self.bad_in_row, self.seen_at_step = 0, self.counters["seen"]

    def check_progress(self, tags: list[str] | None) -> None:
        """Raise :class:`NoProgressError` once ``max_idle`` samples in a row gave no optimizer step."""
        c = self.counters
        idle = c["seen"] - self.seen_at_step
        if idle < self.max_idle:
            return
        skipped = {k[8:]: v for k, v in c.items() if k.startswith("skipped_")}
        failed = {k[7:]: v for k, v in c.items() if k.startswith("failed_")}
        hint = (f"no caption has a word of the {len(tags or [])}-word tag vocabulary (RUN/tags.txt); check tags.file or "
                "set masking.no_tag=random_word" if skipped.get("no_tag") else "check the data")
        raise NoProgressError(
            f"no optimizer step in the last {idle} samples (limit train.max_idle_samples={self.max_idle}); "
            f"of {c['seen']} samples read so far {c['skipped']} were skipped {skipped or ''} and {c['failed']} "
            f"failed to load {failed or ''}: {hint}")


def resolve_tags(cfg: dict, run_dir: Path, source, info: DistInfo) -> list[str] | None:
    """The tag vocabulary; always copied to ``RUN/tags.txt`` and the config pointed at it."""
    from .tags import load_tags, mine_tags, write_tags
    heads = cfg["model"]["heads"]
    needs = "tp" in heads or (cfg["masking"]["strategy"] == "tags" and any(h in heads for h in ("attfc", "tfm")))
    if not needs:
        return None
    t = cfg["tags"]
    local = run_dir / "tags.txt"
    if t["file"] and not Path(t["file"]).is_absolute() and (run_dir / t["file"]).is_file():
        return load_tags(run_dir / t["file"])
    if is_main(info) and not local.exists():
        if t["source"] == "file":
            if not t["file"]:
                raise ValueError("tags.source=file needs tags.file (make one with `icmlm-train build-tags`)")
            words = load_tags(t["file"])
            write_tags(words, local, source=f"copied from {t['file']}")
        elif t["source"] == "labels":
            if source is None or not hasattr(source, "label_names") or not source.label_names():
                raise ValueError("tags.source=labels needs a data set with object labels (COCO with "
                                 "data.coco.instances, synthetic, or a pairs file with 'labels')")
            write_tags(list(source.label_names()), local, source="data set labels")
        else:
            if source is None or not hasattr(source, "caption"):
                raise ValueError("tags.source=mine needs a map-style data set; for WebDataset run "
                                 "`icmlm-train build-tags` first and set tags.source=file")
            n = min(len(source), t["max_captions"])
            caps = [source.caption(i) for i in range(n)]
            mined = mine_tags(caps, pos=t["pos"], min_count=t["min_count"], top_k=t["top_k"])
            if not mined:
                raise ValueError(f"no tag reached tags.min_count={t['min_count']} in {n} captions; lower it")
            write_tags(mined, local, source=f"mined from {n} training captions")
    barrier(info)
    cfg["tags"]["file"], cfg["tags"]["source"] = "tags.txt", "file"
    return load_tags(local)


def build_pipeline(cfg: dict, run_dir: Path, info: DistInfo, *, text=None):
    """Everything but the loop: text side, tags, transforms, loaders and the model."""
    from .tags import load_tag_pos
    from .text import load_text_side
    heads = cfg["model"]["heads"]
    fusion = any(h in heads for h in ("attfc", "tfm"))
    if text is None and fusion:
        text = load_text_side(cfg["text"]["model"])
    train_source = build_source(cfg, "train")
    tags = resolve_tags(cfg, run_dir, train_source, info)
    masker = None
    if fusion:
        m = cfg["masking"]
        masker = CaptionMasker(text.tokenizer, tags, max_length=cfg["text"]["max_length"], strategy=m["strategy"],
                               k=m["k"], no_tag=m["no_tag"], random_prob=m["random_prob"],
                               groups=load_tag_pos(run_dir / "tags.txt") if m["together"] == "pos" else None)
    tag_index = {w: i for i, w in enumerate(tags)} if ("tp" in heads and tags) else None
    norm = backbone_norm(cfg["model"]["backbone"])
    d = cfg["data"]
    size = d["image_size"]
    ttf = train_transform(size, norm["mean"], norm["std"], scale_min=d["scale_min"], hflip=d["hflip"],
                          interpolation=norm.get("interpolation", "bilinear"))
    etf = eval_transform(size, norm["mean"], norm["std"], crop_pct=d["eval_crop_pct"] or norm.get("crop_pct", 0.875),
                         interpolation=norm.get("interpolation", "bilinear"))
    tp_targets = cfg["model"]["tp"]["targets"]
    seed = cfg["run"]["seed"]
    collator = Collator(text.tokenizer.pad_token_id if text else 0)
    train = build_loader(cfg, "train", SampleBuilder(ttf, masker, tag_index, tp_targets=tp_targets, seed=seed),
                         collator, rank=info.rank, world_size=info.world_size, source=train_source)
    val = build_loader(cfg, "val", SampleBuilder(etf, masker, tag_index, tp_targets=tp_targets, seed=seed + 1),
                       collator, rank=info.rank, world_size=info.world_size)
    model = build_model(cfg, text, len(tags) if tags else 0)
    return dict(text=text, tags=tags, train=train, val=val, model=model, eval_transform=etf)


def run_evaluation(model: ICMLM, loader, cfg: dict, info: DistInfo, tokenizer=None) -> dict[str, float]:
    """:func:`icmlm_zoo.training.evaluation.evaluate` with the run's settings and visual words."""
    return evaluate(model, loader, amp=cfg["train"]["amp"], max_batches=cfg["eval"]["max_batches"], info=info,
                    tokenizer=tokenizer, visual=visual_words_for(cfg["data"]["kind"]))


def train(cfg: dict, run_dir: Path, info: DistInfo, *, resume: bool = False, text=None) -> dict[str, Any]:
    """Train as ``cfg`` says in ``run_dir``; returns a summary (final step, last metrics, eval, export)."""
    seed = cfg["run"]["seed"]
    random.seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    torch.manual_seed(seed + info.rank)
    if resolve_retain_memory(cfg["run"]["retain_memory"], info.device.type):
        retain_freed_memory(True)  # before the DataLoader workers fork
    before = _open_run_dir(run_dir, info)
    try:
        setup = _setup(cfg, run_dir, info, resume, text)
    except BaseException:
        if not resume:  # a refused start leaves --out as it was (a rerun is not blocked by tags.txt, ...)
            _undo_setup(run_dir, before, info)
        raise
    return _loop(cfg, run_dir, info, **setup)


def _setup(cfg: dict, run_dir: Path, info: DistInfo, resume: bool, text) -> dict[str, Any]:
    """Pipeline, optimizer, resumed state and logger; nothing here has trained yet."""
    device = info.device
    pipe = build_pipeline(cfg, run_dir, info, text=text)
    model: ICMLM = pipe["model"].to(device)
    o, t = cfg["optim"], cfg["train"]
    accum = o["accum_steps"]
    steps_per_epoch = max(1, pipe["train"][1].batches_per_epoch() // accum)
    total = int(t["max_steps"] or t["epochs"] * steps_per_epoch)
    opt = build_optimizer(model, o)
    sched = build_scheduler(opt, total, o)
    scaler = torch.amp.GradScaler(device.type, enabled=t["amp"] == "fp16" and device.type == "cuda")
    step, epoch, batch_in_epoch = 0, 0, 0
    counters: Counter = Counter()
    if resume:
        path, st = ckpt.load_newest_good(run_dir / "checkpoints", warn=lambda m: is_main(info) and log.warning(m),
                                         set_aside=is_main(info))
        model.load_trainable_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        step, epoch, batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
        counters.update(st.get("counters", {}))
        rngs = st["rng"]
        ckpt.set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
        _say(f"resumed {run_dir} from {path.name} (step {step}, epoch {epoch}, batch {batch_in_epoch})", info)
    elif is_main(info):
        saved = json.loads(json.dumps(cfg))
        saved["run"]["stop_after"] = None
        (run_dir / "config.yaml").write_text(dump(saved))
    barrier(info)
    ddp = model
    if info.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    logger = MetricsLogger(run_dir, enabled=is_main(info), tensorboard=cfg["run"]["tensorboard"], resume_step=step)
    return dict(pipe=pipe, model=model, ddp=ddp, opt=opt, sched=sched, scaler=scaler, logger=logger, total=total,
                steps_per_epoch=steps_per_epoch, state=(step, epoch, batch_in_epoch), counters=counters)


def _loop(cfg: dict, run_dir: Path, info: DistInfo, *, pipe: dict, model: ICMLM, ddp, opt, sched, scaler,
          logger: MetricsLogger, total: int, steps_per_epoch: int, state: tuple[int, int, int],
          counters: Counter) -> dict[str, Any]:
    """The training loop proper, from ``state`` = (step, epoch, batch in epoch) to ``total`` steps."""
    device = info.device
    step, epoch, batch_in_epoch = state
    resume = step > 0
    stop_after = cfg["run"]["stop_after"]
    train_loader, position = pipe["train"]
    tok = pipe["text"].tokenizer if pipe["text"] else None
    o, t = cfg["optim"], cfg["train"]
    accum = o["accum_steps"]

    def save() -> Path | None:
        rng_all = gather_objects(ckpt.rng_state(), info)
        if not is_main(info):
            return None
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "model": model.trainable_state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                 "rng": rng_all, "counters": dict(counters), "world_size": info.world_size}
        return ckpt.save_checkpoint(state, run_dir / "checkpoints", step, cfg["run"]["keep_last"])

    bar = None
    if is_main(info) and cfg["run"]["progress"]:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
    window: Counter = Counter()
    t_window = time.perf_counter()
    first_loss = last_loss = None
    last_saved = step if resume else -1
    stopped = False
    model.train()
    micro = 0
    r = cfg["run"]
    params = [p for p in model.parameters() if p.requires_grad]
    guard = _Guards(cfg, info, counters)
    _say(f"run folder {run_dir}: {total} steps ({steps_per_epoch}/epoch), batch {t['batch_size']}x{info.world_size}"
         f"x{accum}, heads {cfg['model']['heads']}, backbone {cfg['model']['backbone']}, device {device}", info)
    while step < total and not stopped:
        skip = 0
        if hasattr(position, "start"):            # map-style: the sampler starts at the saved batch
            position.set_epoch(epoch, batch_in_epoch)
            position.dataset.set_epoch(epoch)
        else:                                     # streamed: read past the batches already consumed
            position.set_epoch(epoch)
            skip, batch_in_epoch = batch_in_epoch, 0
        for batch in train_loader:
            batch_in_epoch += 1
            if skip:
                skip -= 1
                continue
            failed = sum(batch["errors"].values())
            flags = all_reduce_sum([float(batch["n"] == 0), failed, batch["n_seen"], sum(batch["skipped"].values()),
                                    batch["truncated"]], info)
            counters["failed"] += int(flags[1])
            counters["seen"] += int(flags[2])
            counters["skipped"] += int(flags[3])
            counters["truncated"] += int(flags[4])
            for k, v in batch["errors"].items():
                counters[f"failed_{k}"] += v
            for k, v in batch["skipped"].items():
                counters[f"skipped_{k}"] += v
            if batch["error_details"] and is_main(info) and counters["failed"] <= 5:
                log.warning("skipped bad sample(s): %s", "; ".join(batch["error_details"]))
            if counters["seen"] >= r["failure_min_samples"] and counters["failed"] > r["max_failure_rate"] * counters["seen"]:
                reasons = {k[7:]: v for k, v in counters.items() if k.startswith("failed_")}
                raise DataFailureError(
                    f"{counters['failed']} of {counters['seen']} samples failed to load "
                    f"({counters['failed'] / counters['seen']:.1%} > run.max_failure_rate={r['max_failure_rate']}); "
                    f"by reason: {reasons}. Fix the data or raise run.max_failure_rate.")
            guard.check_progress(pipe["tags"])
            if flags[0] > 0:
                continue  # some rank has nothing usable in this batch: every rank skips it
            micro += 1
            boundary = micro % accum == 0
            batch = to_device(batch, device)
            sync = contextlib.nullcontext() if (boundary or not info.enabled) else ddp.no_sync()
            with sync:
                with autocast(cfg["train"]["amp"], device):
                    out = ddp(batch["images"], batch.get("input_ids"), batch.get("attention_mask"),
                              batch.get("labels"), batch.get("tp"))
                loss = out["loss"]
                scaler.scale(loss / accum).backward()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                guard.bad_loss = True
                if not boundary:
                    continue
            else:
                window["loss"] += loss_value
                window["n_loss"] += 1
                window["images"] += batch["n"]
                for k in ("mlm_loss", "tp_loss"):
                    if k in out:
                        window[k] += float(out[k].detach())
                if "logits" in out:
                    t1, t5 = topk_hits(out["logits"].detach(), out["targets"])
                    window["top1"] += t1
                    window["top5"] += t5
                    window["masked"] += len(out["targets"])
            if not boundary:
                continue
            if o["grad_clip"]:
                scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, o["grad_clip"])
            elif not scaler.is_enabled():
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            else:
                grad_norm = None  # fp16: the GradScaler skips steps with Inf/NaN gradients itself
            if guard.skip_step(grad_norm, step, sched.get_last_lr()[0], run_dir):
                if scaler.is_enabled():
                    scaler.step(opt)  # skipped by the scaler (non-finite gradients); resets its state
                    scaler.update()
                opt.zero_grad(set_to_none=True)
                continue
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            guard.stepped()
            if bar is not None:
                bar.update(1)
            if step % r["log_every"] == 0 or step == total or step == stop_after:
                dt = max(1e-9, time.perf_counter() - t_window)
                nl = max(1, window["n_loss"])
                vals = {"epoch": epoch, "lr": sched.get_last_lr()[0], "loss": window["loss"] / nl,
                        "images_per_s": window["images"] * info.world_size / dt, "failed": counters["failed"],
                        "skipped": counters["skipped"], "truncated": counters["truncated"], "samples": counters["seen"]}
                for k in ("mlm_loss", "tp_loss"):
                    if window[k]:
                        vals[k] = window[k] / nl
                if window["masked"]:
                    vals["top1"], vals["top5"] = window["top1"] / window["masked"], window["top5"] / window["masked"]
                logger.log(step, "train", vals)
                first_loss = vals["loss"] if first_loss is None else first_loss
                last_loss = vals["loss"]
                if bar is not None:
                    bar.set_postfix(loss=f"{vals['loss']:.3f}", top1=f"{vals.get('top1', 0):.2f}",
                                    img_s=f"{vals['images_per_s']:.0f}")
                else:
                    _say(f"step {step}/{total} loss {vals['loss']:.4f} top1 {vals.get('top1', 0):.3f} "
                         f"{vals['images_per_s']:.1f} img/s", info)
                window.clear()
                t_window = time.perf_counter()
            if step % r["ckpt_every"] == 0 or step == total or step == stop_after:
                save()
                last_saved = step
            ev = cfg["eval"]["every"]
            if ev and step % ev == 0 and step != total and pipe["val"] is not None:
                res = run_evaluation(model, pipe["val"][0], cfg, info, tok)
                logger.log(step, "val", res)
            if step == stop_after:
                stopped = True
            if step >= total or stopped:
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            continue
        break
    if bar is not None:
        bar.close()
    if last_saved != step:
        save()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": step, "total_steps": total, "stopped": stopped,
                               "first_loss": first_loss, "last_loss": last_loss, "counters": dict(counters)}
    if stopped:
        _say(f"stopped after step {step} (run.stop_after); continue with --resume --out {run_dir}", info)
    elif cfg["eval"]["at_end"] and pipe["val"] is not None:
        res = run_evaluation(model, pipe["val"][0], cfg, info, tok)
        logger.log(step, "val", res)
        summary["eval"] = res
        _say(eval_line(res), info)
    logger.close()
    if counters["failed"] or counters["truncated"] or counters["skipped"]:
        _say(f"data: {counters['failed']} failed, {counters['skipped']} skipped (policy), {counters['truncated']} "
             f"truncated of {counters['seen']} samples", info)
    if counters["nonfinite_steps"]:
        _say(f"{counters['nonfinite_steps']} optimizer step(s) skipped for a NaN/Inf loss or gradient", info)
    if is_main(info):
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        summary["curves"] = plot_run_quietly(run_dir)  # RUN/curves.png from metrics.csv (icmlm-train plot RUN)
        if cfg["data"]["kind"] == "synthetic" and not stopped and model.fusion_kind is not None:
            summary["attention_figure"] = held_out_figure_quietly(run_dir)  # RUN/attention.png
    summary["model"] = model
    return summary
