"""Attention figures: where a masked word looks in the image, with the top-5 predicted words (paper Fig. 1).

``render`` draws one PNG per masked word (matplotlib's object API: the global backend, e.g. a notebook's inline
one, is left as it is); ``held_out_figure`` draws the figure the demo writes at the end of a run: one held-out
scene of the embedded data, its first object's colour masked.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from icmlm_zoo.cli_support import MissingExtraError, require_extras

from .data.synthetic import SyntheticScenes
from .inference import load_run, predict_masked

# matplotlib (the [eval] extra) is imported inside render(): a run without it ends with a note, not a failure

__all__ = ["upsample", "render", "held_out_figure", "held_out_figure_quietly"]


def upsample(attention, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``h x w`` map to ``(W, H)`` pixels, scaled to [0, 1]."""
    att = torch.as_tensor(np.asarray(attention.detach().cpu() if hasattr(attention, "detach") else attention),
                          dtype=torch.float32)
    W, H = size
    up = F.interpolate(att[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def render(image, caption: str, masks: Sequence[dict[str, Any]], out_dir: str | Path, *,
           prefix: str = "attention") -> list[Path]:
    """One PNG per masked word: the image, and the heatmap overlay titled with the top-5 words.

    Uses matplotlib's object API (``Figure`` + Agg canvas): the global backend, e.g. a notebook's inline one,
    is left as it is."""
    require_extras("attention maps", ["eval"], ["matplotlib"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, m in enumerate(masks):
        words = ", ".join(f"{t} ({p:.2f})" for t, p in zip(m["topk_tokens"], m["topk_probs"]))
        fig = Figure(figsize=(8, 4.4))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        axes[0].imshow(image)
        axes[0].set_title("image", fontsize=9)
        axes[1].imshow(image)
        if m.get("attention") is not None:
            axes[1].imshow(upsample(m["attention"], image.size), cmap="jet", alpha=0.5)
            axes[1].set_title(f"[MASK] #{k + 1} attention", fontsize=9)
        else:
            axes[1].set_title(f"[MASK] #{k + 1}: this head returns no attention map", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"{caption}\ntop-5: {words}", fontsize=9)
        fig.tight_layout()
        path = out / f"{prefix}_{k + 1}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def held_out_figure(run_dir: str | Path, *, seed: int = 10_000, index: int = 0, text=None) -> Path | None:
    """``RUN/attention.png``: a held-out embedded scene (``seed``, ``index``) with its first object's colour word
    masked, and where the run's masked-word head looks (``text``: the run's loaded text side, if at hand). None
    when the run has no masked-word head."""
    run = load_run(run_dir, text=text)
    if run.model.fusion_kind is None:
        return None
    size = int(run.config.data.image_size)
    for i in range(index, index + 50):  # the first scene with two or more objects: binding is visible
        s = SyntheticScenes(i + 1, size, seed).scene(i)
        if len(s["objects"]) >= 2:
            break
    color = s["objects"][0]["color"]
    caption = re.sub(rf"\b{color}\b", "[MASK]", s["caption"])
    x = run.transform(s["image"].resize((size, size)))[None]
    masks = predict_masked(run, x, [caption])[0]["masks"][:1]
    out = render(s["image"], caption, masks, Path(run_dir), prefix="attention")[0]
    return out.replace(out.with_name("attention.png"))


def held_out_figure_quietly(run_dir: str | Path, text=None) -> Path | None:
    """:func:`held_out_figure` at the end of a run: prints its path; a missing matplotlib is a one-line note,
    never a failed run."""
    try:
        path = held_out_figure(run_dir, text=text)
    except (MissingExtraError, OSError) as e:
        print(f"note: no attention figure: {e}", file=sys.stderr)
        return None
    if path is not None:
        print(f"attention map of a held-out scene: {path}", flush=True)
    return path
