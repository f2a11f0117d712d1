"""Turn a ``--model`` argument (timm name, weight file/folder, training run) into a frozen backbone."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icmlm_zoo.constants import DEFAULT_DATA_CONFIG

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
RANDOM_PREFIX = "random:"


@dataclass
class LoadedBackbone:
    """A head-less timm backbone plus what is needed to feed it."""

    model: nn.Module
    name: str  # the timm architecture name
    source: str  # what the user passed
    data_config: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.data_config.get("mean", DEFAULT_DATA_CONFIG["mean"]))  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.data_config.get("std", DEFAULT_DATA_CONFIG["std"]))  # type: ignore[return-value]


def _register() -> None:
    """Import the package that registers the ``icmlm_*`` architectures in timm."""
    import icmlm_zoo.models  # noqa: F401


def _data_config(model: nn.Module) -> dict[str, Any]:
    import timm

    try:
        return dict(timm.data.resolve_model_data_config(model))
    except Exception:  # pragma: no cover - non-timm modules
        return dict(DEFAULT_DATA_CONFIG)


def _read_config(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """``(architecture, model_args)`` from a timm ``config.json`` in ``folder`` (``(None, {})`` if absent)."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None, {}
    data = json.loads(cfg.read_text())
    arch = data.get("architecture") or data.get("pretrained_cfg", {}).get("architecture")
    return arch, dict(data.get("model_args") or {})


def _find_weights(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def _is_run_dir(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("checkpoints", "config.yaml", "resolved_config.yaml"))


def load_backbone(spec: str, *, arch: str | None = None, device: str | torch.device = "cpu",
                  checkpoint: str = "last") -> LoadedBackbone:
    """Load a frozen, head-less backbone in eval mode.

    ``spec`` is one of: a timm name (``icmlm_resnet50.attfc_coco``, pretrained weights),
    ``random:NAME[@SEED]`` (seeded random init, the baseline), a weight file (``.safetensors``/``.pth``; ``arch`` or a
    ``config.json`` beside it names the architecture), a weight folder (``model.safetensors`` +
    ``config.json``) or an ``icmlm-train`` run folder.
    """
    import timm

    _register()
    path = Path(spec).expanduser()
    if spec.startswith(RANDOM_PREFIX):
        name, _, seed = spec[len(RANDOM_PREFIX):].partition("@")
        with torch.random.fork_rng(devices=[]):  # the same random baseline every time (random:NAME@SEED)
            torch.manual_seed(int(seed or 0))
            model = timm.create_model(name, pretrained=False, num_classes=0)
    elif path.is_dir():
        weights = _find_weights(path)
        if weights is not None:
            cfg_arch, _ = _read_config(path)
            if arch:
                name, model = arch, _create_from_file(arch, weights)
            elif cfg_arch:  # timm's own folder loader: architecture, model_args and pretrained_cfg
                name = cfg_arch
                model = timm.create_model(f"local-dir:{path.resolve()}", pretrained=True, num_classes=0)
            else:
                raise ValueError(f"weight folder {path} has no config.json with an 'architecture'; "
                                 "pass --arch NAME (e.g. icmlm_resnet50)")
        elif _is_run_dir(path):
            model, name = _load_run_backbone(path, checkpoint)
        else:
            raise FileNotFoundError(
                f"{path} is neither a weight folder (model.safetensors + config.json) nor an icmlm-train run "
                "folder (checkpoints/, config.yaml)")
    elif path.suffix in WEIGHT_SUFFIXES or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"weight file {path} does not exist")
        cfg_arch, model_args = _read_config(path.parent)
        name = arch or cfg_arch
        if not name:
            raise ValueError(f"cannot tell the architecture of {path}: pass --arch NAME "
                             "(e.g. icmlm_resnet50) or put the timm config.json beside it")
        model = _create_from_file(name, path, **({} if arch else model_args))
    else:
        if not timm.is_model(spec.split(".")[0]):
            known = ", ".join(timm.list_models("icmlm_*")) or "(none registered)"
            raise ValueError(f"unknown model {spec!r}: not a file, folder or timm model. "
                             f"ICMLM architectures: {known}; prefix 'random:' for random init")
        name = spec.split(".")[0]
        model = timm.create_model(spec, pretrained=True, num_classes=0)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedBackbone(model=model, name=name, source=spec, data_config=_data_config(model))


def _create_from_file(name: str, weights: Path, **model_args: Any) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=True, num_classes=0,
                             pretrained_cfg_overlay=dict(file=str(weights)), **model_args)


def _load_run_backbone(run_dir: Path, checkpoint: str) -> tuple[nn.Module, str]:
    try:
        from icmlm_zoo.training.inference import load_run
    except ImportError as exc:  # pragma: no cover - depends on the trainer being installed
        raise RuntimeError(f"{run_dir} looks like a training run but icmlm_zoo.training.inference is unavailable: "
                           f"{exc}. Export it first (icmlm-train export) and pass the weight folder.") from exc
    run = load_run(run_dir, checkpoint=checkpoint)
    return run.model.backbone, str(getattr(run, "backbone_name", "backbone"))


def describe(spec: str) -> str:
    """A short label for tables: the folder/file name or the timm name."""
    if spec.startswith(RANDOM_PREFIX):
        return spec
    p = Path(spec)
    return p.name if p.exists() else spec
