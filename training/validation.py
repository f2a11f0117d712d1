"""Held-out evaluation of a training run, with its image-use controls.

Every evaluation of a run with a masked-word head reports, next to masked-word top-1, the same metric with the
images shuffled across the batch (each caption meets another image: what the text alone gives), and the
visual-word top-1 against its blind chance. The *image-use gap* is visual-word top-1 with the real images minus
with the shuffled ones: the share of the visual words the model got from the image.

Which masked words count as visual is a :class:`VisualWords` hook: on the embedded scenes the colour, shape,
size and count words (blind chance: 1/|class|); on caption data sets every tag word (blind chance: the share of
the most frequent masked word).
"""
from __future__ import annotations

from collections import Counter

import torch

from .amp import autocast
from .config_sections import Config
from .data.synthetic import CLASS_SIZES, NUMBERS, WORD_CLASSES
from .distributed import DistInfo, all_reduce_sum

__all__ = ["VisualWords", "visual_words_for", "evaluate", "run_evaluation", "eval_line", "to_device",
           "topk_hits"]


class VisualWords:
    """Which masked tokens are visual words, and their blind chance. ``classes`` maps a token to its class;
    ``class_sizes`` gives each class's size (chance 1/size). Without classes every masked token counts and the
    chance is the majority-word share (computed from the targets seen)."""

    def __init__(self, classes: dict[str, str] | None = None, class_sizes: dict[str, int] | None = None) -> None:
        self.classes, self.class_sizes = classes, class_sizes or {}

    def chance(self, token: str) -> float | None:
        """1/|class| of a visual token, None for a non-visual one (majority rule when there are no classes)."""
        if self.classes is None:
            return 0.0
        cls = self.classes.get(token)
        return 1.0 / self.class_sizes[cls] if cls in self.class_sizes else None


def visual_words_for(data_kind: str) -> VisualWords:
    """The embedded scenes' attribute words, or every tag word on caption data."""
    if data_kind != "synthetic":
        return VisualWords()
    classes = {w: c for w, c in WORD_CLASSES.items() if c != "count" or w in NUMBERS.values()}
    return VisualWords(classes, dict(CLASS_SIZES))


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch on ``device``."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def topk_hits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(top-1 hits, top-5 hits) of ``logits`` (M, V) against ``targets`` (M,)."""
    if len(targets) == 0:
        return 0, 0
    top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    return int((top[:, 0] == targets).sum()), int((top == targets[:, None]).any(-1).sum())


def _score_masks(sums: Counter, seen: Counter, out: dict, shuffled: dict, tokenizer, visual: VisualWords) -> None:
    t = out["targets"]
    t1, t5 = topk_hits(out["logits"], t)
    sums.update(top1=t1, top5=t5, masked=len(t), mlm_loss=float(out["mlm_loss"]),
                top1_shuffled=topk_hits(shuffled["logits"], t)[0])
    if tokenizer is None:
        return
    tokens = tokenizer.convert_ids_to_tokens(t.tolist())
    real, shuf = out["logits"].argmax(-1).tolist(), shuffled["logits"].argmax(-1).tolist()
    for tok, target, p, q in zip(tokens, t.tolist(), real, shuf):
        chance = visual.chance(tok)
        if chance is None:
            continue
        seen[target] += 1
        sums.update(vis_n=1, vis_hit=int(p == target), vis_hit_shuffled=int(q == target), vis_chance=chance)


_KEYS = ["batches", "loss", "tp_loss", "mlm_loss", "top1", "top5", "masked", "top1_shuffled", "vis_n", "vis_hit",
         "vis_hit_shuffled", "vis_chance"]


@torch.no_grad()
def evaluate(model, loader, *, amp: str, max_batches: int, info: DistInfo, tokenizer=None,
             visual: VisualWords | None = None) -> dict[str, float]:
    """Losses, masked-word top-1/top-5 (per masked wordpiece) and, for a masked-word head, the image-use
    controls: ``top1_shuffled``, ``visual_top1`` / ``visual_top1_shuffled`` / ``visual_chance`` and
    ``image_use_gap`` (see the module docstring). Images are shuffled by rolling the batch by one."""
    visual = visual or VisualWords()
    was_training = model.training
    model.eval()
    sums: Counter = Counter()
    seen: Counter = Counter()
    for b, batch in enumerate(loader):
        if b >= max_batches:
            break
        if batch["n"] == 0:
            continue
        batch = to_device(batch, info.device)
        args = (batch.get("input_ids"), batch.get("attention_mask"), batch.get("labels"), batch.get("tp"))
        with autocast(amp, info.device):
            if hasattr(model, "forward_pair"):  # ICMLM: the trunk and the text encoder run once for both
                out, shuffled = model.forward_pair(batch["images"], *args)
            else:
                out = model(batch["images"], *args)
                shuffled = model(batch["images"].roll(1, 0), *args) if "logits" in out else None
        sums.update(batches=1, loss=float(out["loss"]))
        if "tp_loss" in out:
            sums["tp_loss"] += float(out["tp_loss"])
        if shuffled is not None and "logits" in out:
            _score_masks(sums, seen, out, shuffled, tokenizer, visual)
    red = dict(zip(_KEYS, all_reduce_sum([float(sums[k]) for k in _KEYS], info)))
    # approximate across ranks (sum of per-rank maxima)
    majority = sum(all_reduce_sum([float(max(seen.values()) if seen else 0)], info))
    model.train(was_training)
    return _results(red, majority, visual)


def _results(red: dict[str, float], majority: float, visual: VisualWords) -> dict[str, float]:
    res: dict[str, float] = {}
    nb = max(1.0, red["batches"])
    res["loss"] = red["loss"] / nb
    if red["tp_loss"]:
        res["tp_loss"] = red["tp_loss"] / nb
    if red["masked"]:
        n = red["masked"]
        res.update(mlm_loss=red["mlm_loss"] / nb, top1=red["top1"] / n, top5=red["top5"] / n,
                   top1_shuffled=red["top1_shuffled"] / n, masked=n)
    if red["vis_n"]:
        n = red["vis_n"]
        chance = majority / n if visual.classes is None else red["vis_chance"] / n
        res.update(visual_top1=red["vis_hit"] / n, visual_top1_shuffled=red["vis_hit_shuffled"] / n,
                   visual_chance=chance, visual_n=n)
        res["image_use_gap"] = res["visual_top1"] - res["visual_top1_shuffled"]
    return res


def eval_line(res: dict[str, float]) -> str:
    """The one-line summary printed after an evaluation (the image-use gap first when there is one)."""
    parts = [f"eval: loss {res['loss']:.4f}"]
    if "visual_top1" in res:
        ratio = res["visual_top1"] / res["visual_chance"] if res["visual_chance"] else float("nan")
        parts.append(f"image-use gap {res['image_use_gap']:+.3f} (visual-word top-1 {res['visual_top1']:.3f} with "
                     f"the images, {res['visual_top1_shuffled']:.3f} with them shuffled; blind chance "
                     f"{res['visual_chance']:.3f}, {ratio:.1f}x) over {int(res['visual_n'])} visual words")
    if "top1" in res:
        parts.append(f"masked-word top-1 {res['top1']:.3f} (shuffled images {res['top1_shuffled']:.3f}), "
                     f"top-5 {res['top5']:.3f} over {int(res['masked'])} masked tokens")
    return "; ".join(parts)


def run_evaluation(model, loader, cfg: Config, info: DistInfo, tokenizer=None) -> dict[str, float]:
    """:func:`evaluate` with a run's settings (``train.amp``, ``eval.max_batches``) and its data's visual words."""
    return evaluate(model, loader, amp=cfg.train.amp, max_batches=cfg.eval.max_batches, info=info,
                    tokenizer=tokenizer, visual=visual_words_for(cfg.data.kind))
