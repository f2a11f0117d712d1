"""Shared helpers for the training tests: the real MiniLM loaded once, a synthetic tag file, tiny CLI args."""
from __future__ import annotations

from pathlib import Path

import pytest

TAG_WORDS = ["red", "green", "blue", "yellow", "purple", "white", "circle", "square", "triangle", "diamond",
             "small", "large", "left", "right", "center", "middle", "corner", "shapes"]


@pytest.fixture(scope="session")
def text_side():
    """The real pretrained MiniLM (tokenizer + frozen encoder), loaded once per session."""
    from icmlm_zoo.training.text import load_text_side
    return load_text_side("minilm")


@pytest.fixture(scope="session")
def tag_file(tmp_path_factory) -> Path:
    from icmlm_zoo.training.tags import write_tags
    return write_tags(TAG_WORDS, tmp_path_factory.mktemp("tags") / "tags.txt")


def tiny_args(tag_file: Path, *extra: str, steps: int = 8, size: int = 64, images: int = 24) -> list[str]:
    """``icmlm-train`` arguments for a seconds-long run on the synthetic data."""
    sets = {
        "data.synthetic.num_images": images, "data.synthetic.image_size": size, "data.image_size": size,
        "data.synthetic.val_images": 8, "data.num_workers": 0, "train.batch_size": 4,
        "train.max_steps": steps, "run.progress": "false", "run.tensorboard": "false", "run.export.model": "null",
        "run.log_every": 1, "run.ckpt_every": 4, "optim.warmup_steps": 2, "eval.max_batches": 2,
        "tags.file": str(tag_file), "tags.source": "file", "model.attfc.hidden": 256,
    }
    args = ["--preset", "demo"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def read_metrics(run: Path, split: str = "train") -> list[dict]:
    import csv
    with (run / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]
