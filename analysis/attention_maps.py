"""PNG heatmaps of where a masked word looks in the image, with the top-5 predicted words (paper Fig. 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from icmlm_zoo.training.attention_figure import render, upsample  # noqa: F401  (upsample: public here too)
from icmlm_zoo.training.inference import load_run

from .pointing_game import run_predictor


def attention_maps(run_dir: str, image_path: str | Path, caption: str, out_dir: str | Path, *,
                   checkpoint: str = "last", topk: int = 5) -> dict[str, Any]:
    """Predict the masked words of ``caption`` for one image with a training run and write PNGs + JSON.

    The whole image is resized to the run's square input (no crop), so the map covers the full image."""
    if "[MASK]" not in caption:
        raise ValueError(f"the caption must contain at least one [MASK] word, e.g. 'a man rides a [MASK]'; "
                         f"got {caption!r}")
    if not Path(image_path).is_file():
        raise FileNotFoundError(f"image {image_path} does not exist")
    run = load_run(run_dir, checkpoint=checkpoint)
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    masks = run_predictor(run, topk=topk)([image], [caption])[0]["masks"]
    stem = Path(image_path).stem
    pngs = render(image, caption, masks, out_dir, prefix=f"{stem}_attention")
    result = {"run": str(run_dir), "image": str(image_path), "caption": caption, "figures": [str(p) for p in pngs],
              "masks": [{"position": m.get("position"), "topk_tokens": list(m["topk_tokens"]),
                         "topk_probs": [float(p) for p in m["topk_probs"]],
                         "has_attention": m.get("attention") is not None} for m in masks]}
    (Path(out_dir) / f"{stem}_attention.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
