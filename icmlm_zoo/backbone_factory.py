"""The one factory for a frozen backbone and its preprocessing: NAME | ``random:NAME@SEED`` | weight file | weight
folder | a folder a registered *source* reads (an ``icmlm-train`` run) -> model, data config, eval transform.

The core does not know what a training run is. Packages above it (the trainer) declare a :class:`BackboneSource`
under the entry-point group ``icmlm_zoo.backbone_sources`` in their ``pyproject.toml`` (or call
:func:`register_backbone_source`); :func:`load_backbone` asks the sources about a folder that holds no weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from torch import nn

import icmlm_zoo.models  # noqa: F401  (registers the icmlm_* architectures in timm)
from icmlm_zoo.transforms import eval_transform

__all__ = ["LoadedBackbone", "BackboneSource", "SOURCE_GROUP", "load_backbone", "register_backbone_source",
           "backbone_sources", "source_of", "read_timm_config", "find_weights", "model_data_config",
           "architecture_data_config", "describe", "WEIGHT_SUFFIXES", "RANDOM_PREFIX"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WEIGHT_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")
RANDOM_PREFIX = "random:"
SOURCE_GROUP = "icmlm_zoo.backbone_sources"


@dataclass(frozen=True)
class BackboneSource:
    """A kind of folder the core cannot read itself. ``claims(folder)`` says whether it is one;
    ``load(folder, checkpoint, device)`` returns ``(head-less trunk, timm architecture name)``."""

    name: str
    claims: Callable[[Path], bool]
    load: Callable[[Path, str, Any], tuple[nn.Module, str]]


@dataclass
class LoadedBackbone:
    """A frozen, head-less timm backbone in eval mode, its timm data config and its evaluation transform."""

    model: nn.Module
    name: str  # the timm architecture name
    source: str  # what the user passed
    data_config: dict[str, Any] = field(default_factory=dict)
    transform: Callable | None = None

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.data_config["mean"])  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.data_config["std"])  # type: ignore[return-value]


_REGISTERED: list[BackboneSource] = []


def register_backbone_source(source: BackboneSource) -> None:
    """Make :func:`load_backbone` read another kind of folder (the entry-point group does this on install)."""
    if all(s.name != source.name for s in _REGISTERED):
        _REGISTERED.append(source)


def backbone_sources() -> list[BackboneSource]:
    """Registered sources, then those installed packages declare in the ``icmlm_zoo.backbone_sources`` group."""
    found = list(_REGISTERED)
    for ep in entry_points(group=SOURCE_GROUP):
        try:
            source = ep.load()
        except ImportError as exc:  # the package is there but an extra it needs is not
            raise RuntimeError(f"the backbone source {ep.name!r} ({ep.value}) cannot be imported: {exc}. "
                               "Install what it needs, e.g. pip install 'icmlm-zoo[train]'.") from exc
        if all(s.name != source.name for s in found):
            found.append(source)
    return found


def source_of(folder: str | Path) -> BackboneSource | None:
    """The source that reads ``folder`` (None for a weight folder, a file or a folder no source claims)."""
    path = Path(folder)
    if not path.is_dir() or find_weights(path) is not None:
        return None
    return next((s for s in backbone_sources() if s.claims(path)), None)


def read_timm_config(folder: str | Path) -> tuple[str | None, dict[str, Any]]:
    """``(architecture, model_args)`` from a timm ``config.json`` in ``folder`` (``(None, {})`` if absent)."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None, {}
    data = json.loads(cfg.read_text())
    arch = data.get("architecture") or data.get("pretrained_cfg", {}).get("architecture")
    return arch, dict(data.get("model_args") or {})


def find_weights(folder: str | Path) -> Path | None:
    """The weight file of a weight folder (``model.safetensors`` or ``pytorch_model.bin``), else None."""
    return next((Path(folder) / n for n in WEIGHT_FOLDER_FILES if (Path(folder) / n).is_file()), None)


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """timm's data config of a model (input size, mean, std, interpolation, crop_pct)."""
    try:
        cfg = dict(timm.data.resolve_model_data_config(model))
    except Exception as exc:  # a module timm cannot describe
        raise ValueError(f"cannot tell the preprocessing of {type(model).__name__}: {exc}. Load it through timm "
                         "(a timm name, or a weight folder with a timm config.json holding mean/std)") from exc
    if not cfg.get("mean") or not cfg.get("std"):
        raise ValueError(f"{type(model).__name__} has no normalisation (mean/std) in its timm pretrained cfg; "
                         "add them to its config.json (pretrained_cfg) or load it by a timm name")
    return cfg


def architecture_data_config(name: str) -> dict[str, Any]:
    """The data config of an architecture's default pretrained cfg (the model is built on the meta device)."""
    if not timm.is_model(name):
        raise ValueError(f"unknown architecture {name!r}; ICMLM architectures: {timm.list_models('icmlm_*')}")
    with torch.device("meta"):
        return model_data_config(timm.create_model(name, pretrained=False, num_classes=0))


def load_backbone(spec: str, *, arch: str | None = None, device: str | torch.device = "cpu",
                  checkpoint: str = "last", image_size: int | None = None, full_view: bool = False) -> LoadedBackbone:
    """Load a frozen, head-less backbone in eval mode, with its data config and evaluation transform.

    ``spec`` is one of: a timm name (``icmlm_resnet50.attfc_coco``, pretrained weights), ``random:NAME[@SEED]``
    (seeded random init, the baseline), a weight file (``.safetensors``/``.pth``; ``arch`` or a ``config.json``
    beside it names the architecture), a weight folder (``model.safetensors`` + ``config.json``) or a folder a
    :class:`BackboneSource` claims (an ``icmlm-train`` run: its ``checkpoint``). ``image_size`` overrides the
    transform's size; ``full_view`` resizes the whole image to a square instead of centre-cropping it.
    """
    path = Path(spec).expanduser()
    if spec.startswith(RANDOM_PREFIX):
        model, name = _random_init(spec[len(RANDOM_PREFIX):])
    elif path.is_dir():
        model, name = _from_folder(path, arch, checkpoint, device)
    elif path.suffix in WEIGHT_SUFFIXES or path.exists():
        model, name = _from_file(path, arch)
    else:
        model, name = _from_name(spec)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    data_config = model_data_config(model)
    return LoadedBackbone(model=model, name=name, source=spec, data_config=data_config,
                          transform=eval_transform(data_config, image_size, full_view=full_view))


def _random_init(name_seed: str) -> tuple[nn.Module, str]:
    name, _, seed = name_seed.partition("@")
    with torch.random.fork_rng(devices=[]):  # the same random baseline every time (random:NAME@SEED)
        torch.manual_seed(int(seed or 0))
        return timm.create_model(name, pretrained=False, num_classes=0), name


def _from_folder(path: Path, arch: str | None, checkpoint: str, device) -> tuple[nn.Module, str]:
    weights = find_weights(path)
    if weights is None:
        source = source_of(path)
        if source is None:
            raise FileNotFoundError(
                f"{path} is neither a weight folder (model.safetensors + config.json) nor a folder an installed "
                f"source reads ({', '.join(s.name for s in backbone_sources()) or 'none installed'}); an icmlm-train "
                "run folder (checkpoints/, config.yaml) needs the trainer: pip install -e '.[train]'")
        return source.load(path, checkpoint, device)
    cfg_arch, _ = read_timm_config(path)
    if arch:
        return _create_from_file(arch, weights), arch
    if cfg_arch:  # timm's own folder loader: architecture, model_args and pretrained_cfg
        return timm.create_model(f"local-dir:{path.resolve()}", pretrained=True, num_classes=0), cfg_arch
    raise ValueError(f"weight folder {path} has no config.json with an 'architecture'; "
                     "pass --arch NAME (e.g. icmlm_resnet50)")


def _from_file(path: Path, arch: str | None) -> tuple[nn.Module, str]:
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    cfg_arch, model_args = read_timm_config(path.parent)
    name = arch or cfg_arch
    if not name:
        raise ValueError(f"cannot tell the architecture of {path}: pass --arch NAME "
                         "(e.g. icmlm_resnet50) or put the timm config.json beside it")
    return _create_from_file(name, path, **({} if arch else model_args)), name


def _from_name(spec: str) -> tuple[nn.Module, str]:
    name = spec.split(".")[0]
    if not timm.is_model(name):
        known = ", ".join(timm.list_models("icmlm_*")) or "(none registered)"
        raise ValueError(f"unknown model {spec!r}: not a file, folder or timm model. "
                         f"ICMLM architectures: {known}; prefix 'random:' for random init")
    return timm.create_model(spec, pretrained=True, num_classes=0), name


def _create_from_file(name: str, weights: Path, **model_args: Any) -> nn.Module:
    return timm.create_model(name, pretrained=True, num_classes=0,
                             pretrained_cfg_overlay=dict(file=str(weights)), **model_args)


def describe(spec: str) -> str:
    """A short label for tables: the folder/file name or the timm name."""
    if spec.startswith(RANDOM_PREFIX):
        return spec
    p = Path(spec)
    return p.name if p.exists() else spec
