"""Frozen, globally average-pooled features from any stage of a timm backbone, cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icmlm_zoo.transforms import eval_transform

__all__ = ["stage_modules", "resolve_stage", "PooledFeatures", "eval_transform", "cache_key", "source_fingerprint",
           "extract", "ImageList"]  # eval_transform: the transform factory's (icmlm_zoo.transforms), named here too


def stage_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs are the backbone's stages (timm ``feature_info``), shallow to deep."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no timm feature_info; cannot select a stage")
    return [i["module"] for i in (info.get_dicts() if hasattr(info, "get_dicts") else info)]


def resolve_stage(model: nn.Module, stage: int | str = -1) -> str:
    """``stage`` as an index into :func:`stage_modules` (``-1`` = last) or a module name (``layer3``)."""
    names = stage_modules(model)
    if isinstance(stage, str) and not stage.lstrip("-").isdigit():
        if stage not in names:
            raise ValueError(f"unknown stage {stage!r}; this backbone has {names} (or indices 0..{len(names) - 1})")
        return stage
    idx = int(stage)
    if not -len(names) <= idx < len(names):
        raise ValueError(f"stage index {idx} out of range; this backbone has {len(names)} stages: {names}")
    return names[idx]


class PooledFeatures(nn.Module):
    """Wraps a backbone; ``forward`` returns the global-average-pooled output of one stage, ``(B, C)``, and
    :meth:`stage_map` the output itself."""

    def __init__(self, model: nn.Module, stage: int | str = -1):
        super().__init__()
        self.model = model
        self.stage = resolve_stage(model, stage)
        self._out: torch.Tensor | None = None
        self._handle = model.get_submodule(self.stage).register_forward_hook(self._keep)

    def remove(self) -> None:
        """Detach the hook from the backbone."""
        self._handle.remove()

    def _keep(self, _module, _inp, out) -> None:
        self._out = out

    @torch.no_grad()
    def stage_map(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output itself, ``(B, C, h, w)`` (float32), before pooling."""
        self._out = None
        if hasattr(self.model, "forward_features"):
            self.model.forward_features(x)
        else:  # pragma: no cover - plain nn.Module trunks
            self.model(x)
        assert self._out is not None
        return self._out.float()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage_map(x)
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out


def cache_key(*parts: Any) -> str:
    """A stable hash of anything JSON-serialisable (model spec, file stats, stage, image list, transform)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(spec: str) -> list[Any]:
    """What identifies a model spec for caching: the spec plus size/mtime of a file or folder behind it."""
    p = Path(spec)
    if not p.exists():
        return [spec]
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())[:50]
    return [spec] + [(str(q), q.stat().st_size, q.stat().st_mtime_ns) for q in files]


def extract(model: nn.Module, dataset: Dataset, *, stage: int | str = -1, batch_size: int = 32,
            num_workers: int = 0, device: str | torch.device = "cpu", l2_normalize: bool = False,
            cache: str | Path | None = None, desc: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled features (and labels, when items are ``(image, label)``) for a dataset, with a progress bar.

    With ``cache`` (an ``.npz`` path) the result is reused when the file exists and written otherwise.
    """
    if cache is not None and Path(cache).is_file():
        data = np.load(cache)
        feats = data["features"]
        labels = data["labels"] if "labels" in data.files else None
        return (_l2(feats) if l2_normalize else feats), labels
    pooled = PooledFeatures(model, stage).to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    bar = tqdm(total=len(dataset), desc=desc, unit="img", leave=False)  # type: ignore[arg-type]
    for batch in loader:
        images, target = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        feats.append(pooled(images.to(device)).cpu().numpy())
        bar.update(len(images))
        if target is not None:
            labels.append(np.asarray(target))
    bar.close()
    pooled.remove()
    out = np.concatenate(feats).astype(np.float32)
    lab = np.concatenate(labels) if labels else None
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(cache) + ".tmp.npz")
        np.savez(tmp, features=out, **({"labels": lab} if lab is not None else {}))
        tmp.replace(cache)
    return (_l2(out) if l2_normalize else out), lab


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ImageList(Dataset):
    """Images from file paths (RGB), each passed through ``transform``; items are ``(tensor, index)``."""

    def __init__(self, paths: Sequence[str | Path], transform):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), i
