"""PNG heatmaps of where a masked word looks in the image, with the top-5 predicted words (paper Fig. 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def upsample(attention, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``h x w`` map to ``(W, H)`` pixels, scaled to [0, 1]."""
    import torch
    import torch.nn.functional as F

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
    from icmlm_zoo.cli_support import require_extras

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


def attention_maps(run_dir: str, image_path: str | Path, caption: str, out_dir: str | Path, *,
                   checkpoint: str = "last", topk: int = 5) -> dict[str, Any]:
    """Predict the masked words of ``caption`` for one image with a training run and write PNGs + JSON.

    The whole image is resized to the run's square input (no crop), so the map covers the full image."""
    from PIL import Image

    if "[MASK]" not in caption:
        raise ValueError(f"the caption must contain at least one [MASK] word, e.g. 'a man rides a [MASK]'; "
                         f"got {caption!r}")
    if not Path(image_path).is_file():
        raise FileNotFoundError(f"image {image_path} does not exist")
    try:
        from icmlm_zoo.training.inference import load_run
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError(f"attention maps need icmlm_zoo.training.inference (load_run, predict_masked): {exc}") from exc
    run = load_run(run_dir, checkpoint=checkpoint)
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    from .pointing_game import run_predictor

    masks = run_predictor(run, topk=topk)([image], [caption])[0]["masks"]
    stem = Path(image_path).stem
    pngs = render(image, caption, masks, out_dir, prefix=f"{stem}_attention")
    result = {"run": str(run_dir), "image": str(image_path), "caption": caption, "figures": [str(p) for p in pngs],
              "masks": [{"position": m.get("position"), "topk_tokens": list(m["topk_tokens"]),
                         "topk_probs": [float(p) for p in m["topk_probs"]],
                         "has_attention": m.get("attention") is not None} for m in masks]}
    (Path(out_dir) / f"{stem}_attention.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
