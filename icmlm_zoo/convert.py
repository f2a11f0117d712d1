"""Original ICMLM checkpoints → zoo weight folders (``model.safetensors`` + timm ``config.json`` + model card).

The NAVER release is a ``torch.save`` dict whose visual trunk sits under ``"cnn"`` with torchvision ResNet-50
key names (``module.`` prefixes possible; other keys belong to the text side and are not needed). Checkpoints
are read with ``torch.load(weights_only=True)`` only: a pickle that tries to run code is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from safetensors.torch import load_file, save

from .cache import sha256_file
from .card import build_card
from .constants import HEAD_PREFIXES
from .errors import ConversionError
from .manifest import load_manifest, timm_pretrained_fields

# keys under which a checkpoint may keep the visual trunk, tried in order when none is named
TRUNK_KEYS = ("cnn", "backbone", "visual", "state_dict", "model")
# classifier weights a trunk may carry; a head-less backbone drops them (and says so)


def read_checkpoint_file(path: str | Path) -> Any:
    """Read any checkpoint file safely (tensors and plain containers only): an original NAVER release, a plain
    state dict or safetensors (a training run's checkpoints: ``training.checkpoint.load_checkpoint``)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConversionError(
            f"Refusing to load {path}: it is not a plain tensor checkpoint (torch.load(weights_only=True) said: "
            f"{str(e).splitlines()[0]}). Loading it fully could run arbitrary code; if you trust its origin, "
            f"re-save its tensors with torch.save(state_dict) and convert that file.") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def extract_trunk(checkpoint: Any, trunk_key: str | None = None) -> dict[str, torch.Tensor]:
    """The visual trunk's state dict inside ``checkpoint``, with ``module.`` (DataParallel) prefixes removed."""
    if _is_state_dict(checkpoint) and trunk_key is None:
        sd = dict(checkpoint)
    else:
        if not isinstance(checkpoint, Mapping):
            raise ConversionError(f"Expected a dict checkpoint, got {type(checkpoint).__name__}.")
        keys = [trunk_key] if trunk_key else [k for k in TRUNK_KEYS if k in checkpoint]
        found = [k for k in keys if k in checkpoint and _is_state_dict(checkpoint[k])]
        if not found:
            raise ConversionError(
                f"No visual trunk found in the checkpoint (looked under {keys or list(TRUNK_KEYS)}; its top-level "
                f"keys are {sorted(map(str, checkpoint))[:20]}). Name the key with --trunk-key.")
        sd = dict(checkpoint[found[0]])
    while any(k.startswith("module.") for k in sd):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    for prefix in ("cnn.", "backbone.", "visual.", "trunk."):
        sd = _strip_prefix(sd, prefix)
    return sd


def match_to_model(trunk: Mapping[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict, list[str]]:
    """Check ``trunk`` against ``model``'s keys and shapes strictly; return the state dict and notes.

    Classifier weights (``fc.*``, ``classifier.*``) are dropped and named in the notes; missing BatchNorm
    ``num_batches_tracked`` counters are filled with zeros and named. Any other missing or unexpected key, or a
    shape mismatch, raises with every offending name.
    """
    expected = model.state_dict()
    notes: list[str] = []
    sd = dict(trunk)
    dropped = sorted(k for k in sd if k not in expected and k.startswith(HEAD_PREFIXES))
    for k in dropped:
        del sd[k]
    if dropped:
        notes.append(f"dropped classifier keys (the backbone is head-less): {dropped}")
    filled = sorted(k for k in expected if k not in sd and k.endswith("num_batches_tracked"))
    for k in filled:
        sd[k] = torch.zeros_like(expected[k])
    if filled:
        notes.append(f"filled {len(filled)} missing BatchNorm num_batches_tracked counters with 0")
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in sd if k in expected and sd[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(f"missing from the checkpoint ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"not in the model ({len(unexpected)}): {unexpected}")
        if shapes:
            lines.append(f"shape mismatches ({len(shapes)}): {shapes}")
        raise ConversionError(
            "The checkpoint's trunk does not fit the architecture:\n  " + "\n  ".join(lines) +
            "\nCheck --model (e.g. icmlm_resnet50 vs icmlm_vgg16) and --trunk-key.")
    return {k: sd[k].detach().to(expected[k].dtype).contiguous() for k in expected}, notes


def checkpoint_state_dict(checkpoint: str | Path, model_name: str, trunk_key: str | None = None,
                          notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``model_name`` held in ``checkpoint`` (an original ICMLM checkpoint or a plain state dict):
    read safely, its trunk extracted and checked key by key and shape by shape (:func:`match_to_model`).
    Conversion notes are appended to ``notes``."""
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    state_dict, found = match_to_model(extract_trunk(read_checkpoint_file(checkpoint), trunk_key), model)
    if notes is not None:
        notes.extend(found)
    return state_dict


def parameter_count(model_name: str, state_dict: Mapping[str, torch.Tensor]) -> int:
    """How many parameters ``state_dict`` holds for ``model_name`` (its BatchNorm statistics are buffers, not
    parameters); the architecture is built on the meta device, which costs no memory."""
    with torch.device("meta"):
        names = {name for name, _ in timm.create_model(model_name, pretrained=False, num_classes=0).named_parameters()}
    return sum(v.numel() for k, v in state_dict.items() if k in names)


def _weight_meta(manifest, model_name: str, tag: str | None) -> tuple[dict, dict, dict | None]:
    """(model info, preprocessing, manifest entry or None) for a model and optional tag."""
    info = manifest.models.get(model_name)
    if info is None:
        raise ConversionError(f"Unknown model '{model_name}'. Known: {', '.join(sorted(manifest.models))}.")
    entry = None
    if tag is not None and tag in manifest.tags(model_name):
        entry = manifest.entry(model_name, tag)
    pre = (entry or manifest.entry(model_name)).preprocessing
    return info, dict(pre), (entry.raw if entry else None)


WEIGHT_FOLDER_FILES = ("model.safetensors", "config.json", "README.md")


def check_out_folder(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """``out_dir`` as a Path, after checking a weight folder may be written there.

    Raises ``FileExistsError`` naming the files already there (``model.safetensors``, ``config.json``,
    ``README.md``) unless ``overwrite``; other files in the folder are never touched.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder: choose another --out folder.")
    existing = [n for n in WEIGHT_FOLDER_FILES if (out / n).exists() or (out / n).is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; nothing was written. Choose another "
                              f"--out folder, or pass --overwrite to replace them.")
    return out


def _write_files(out: Path, files: dict[str, bytes]) -> None:
    """Write every file under a temporary name first, then move them into place (umask permissions; an
    existing symlink is replaced, never written through)."""
    out.mkdir(parents=True, exist_ok=True)
    tmps = {name: out / f".{name}.{os.getpid()}.tmp" for name in files}
    try:
        for name, data in files.items():
            with open(tmps[name], "wb") as f:  # open() applies the umask (safetensors' save_file gives 0600)
                f.write(data)
        for name in files:
            os.replace(tmps[name], out / name)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def save_weight_folder(
        state_dict: Mapping[str, torch.Tensor],
        model_name: str,
        out_dir: str | Path,
        *,
        tag: str | None = None,
        extra_meta: dict[str, Any] | None = None,
        overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors``, a timm ``config.json`` and a model card ``README.md`` into ``out_dir``.

    The folder loads with ``timm.create_model(model_name, pretrained=True,
    pretrained_cfg_overlay=dict(file=out_dir / "model.safetensors"))``, with ``local-dir:out_dir``, and once
    uploaded with ``hf-hub:ORG/REPO`` (plain timm for the ResNets). ``extra_meta`` may carry ``preprocessing``
    (overrides), ``description``, ``recipe``/``pretraining``, ``data`` and ``metrics``; it is kept in the
    config under ``"icmlm"`` and shown in the card. The same tensors always give the same bytes (and sha256).
    Existing files are replaced only with ``overwrite`` (see :func:`check_out_folder`).
    """
    out = check_out_folder(out_dir, overwrite=overwrite)
    meta = dict(extra_meta or {})
    manifest = load_manifest()
    info, pre, entry = _weight_meta(manifest, model_name, tag)
    pre.update(meta.pop("preprocessing", {}) or {})
    if entry:
        for key in ("description", "pretraining", "license"):
            meta.setdefault(key, entry.get(key))
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    # one metadata key only: safetensors writes its metadata map in a per-process random order
    weights = save(tensors, metadata={"format": "pt"})
    meta.update(model=model_name, tag=tag, sha256=hashlib.sha256(weights).hexdigest(), bytes=len(weights),
                num_params=parameter_count(model_name, tensors))
    pretrained_cfg = dict(tag=tag, **timm_pretrained_fields(pre, family=info["family"], license=meta.get("license"),
                                                            paper=manifest.paper))
    config = dict(
        architecture=info["timm_architecture"],
        num_classes=0,
        num_features=info["num_features"],
        global_pool="avg",
        model_args=dict(info["timm_model_args"]),
        pretrained_cfg=pretrained_cfg,
        icmlm=meta,
    )
    config_text = json.dumps(config, indent=2, default=str) + "\n"
    card = build_card(model_name, tag, json.loads(config_text))
    _write_files(out, {"model.safetensors": weights, "config.json": config_text.encode(),
                       "README.md": str(card).encode()})
    return out


def convert_checkpoint(
        checkpoint: str | Path,
        model_name: str,
        out_dir: str | Path,
        *,
        tag: str | None = None,
        trunk_key: str | None = None,
        extra_meta: dict[str, Any] | None = None,
        overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Convert an original checkpoint into a zoo weight folder; returns the folder and conversion notes.

    Files already in ``out_dir`` are refused before any work unless ``overwrite``."""
    check_out_folder(out_dir, overwrite=overwrite)
    notes: list[str] = []
    state_dict = checkpoint_state_dict(checkpoint, model_name, trunk_key, notes)
    meta = dict(extra_meta or {})
    if "converted_from" not in meta:  # the caller may already know the source and its digest
        meta["converted_from"] = {"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
    meta.setdefault("conversion_notes", notes)
    return save_weight_folder(state_dict, model_name, out_dir, tag=tag, extra_meta=meta,
                              overwrite=overwrite), notes
