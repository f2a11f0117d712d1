"""A run's preprocessing record and image transforms: :func:`icmlm_zoo.transforms.create_image_transform` with
the backbone's pretrained cfg (mean/std/interpolation/crop_pct, from the core's
:func:`icmlm_zoo.backbone_factory.architecture_data_config`) and the run's ``data`` section (size, scale_min,
hflip, eval_crop_pct). The trainer writes the record to ``RUN/preprocessing.json``; inference, evaluation and
export read it from there."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from icmlm_zoo.backbone_factory import architecture_data_config
from icmlm_zoo.transforms import create_image_transform

from ..backbones import ensure_registered
from ..config_sections import Config, DataSection

__all__ = ["run_preprocessing", "read_run_preprocessing", "run_transforms", "PREPROCESSING_FILE"]


PREPROCESSING_FILE = "preprocessing.json"


def run_preprocessing(backbone: str, d: DataSection) -> dict[str, Any]:
    """The evaluation preprocessing of a run (timm data-config keys): the run's size and ``eval_crop_pct``, the
    backbone's mean/std/interpolation (and crop_pct unless the run sets one)."""
    ensure_registered(backbone)
    norm = architecture_data_config(backbone)
    size = int(d.image_size)
    return {"input_size": [3, size, size], "mean": [float(v) for v in norm["mean"]],
            "std": [float(v) for v in norm["std"]], "interpolation": norm.get("interpolation", "bilinear"),
            "crop_pct": float(d.eval_crop_pct or norm.get("crop_pct", 0.875))}


def read_run_preprocessing(run_dir: str | Path, cfg: Config) -> dict[str, Any]:
    """What the run recorded in ``RUN/preprocessing.json`` (runs from before that file: derived from its
    config as the trainer did)."""
    path = Path(run_dir) / PREPROCESSING_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return run_preprocessing(cfg.model.backbone, cfg.data)


def run_transforms(pre: dict[str, Any], d: DataSection) -> tuple[Callable, Callable]:
    """(training transform, evaluation transform) of a run: its preprocessing record (:func:`run_preprocessing`)
    and the augmentation settings of its ``data`` section."""
    train = create_image_transform(pre, training=True, scale_min=d.scale_min, hflip=d.hflip)
    return train, create_image_transform(pre)
