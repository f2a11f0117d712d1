"""``pretrained=True`` resolution: published Hub weight → original checkpoint + conversion → a clear error.

Never returns random weights when pretrained weights were asked for. A verified safetensors file is handed to timm
as its ``file`` source; an original checkpoint given as ``pretrained_cfg_overlay=dict(file=...)`` is converted here,
with the same checks as ``icmlm-zoo convert``, and handed over as a ``state_dict``.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file
from timm.models import PretrainedCfg

from .convert import checkpoint_state_dict
from .errors import WeightsNotAvailableError
from .hub import download_verified
from .manifest import Manifest, WeightEntry, load_manifest
from .original import fetch_and_convert, pin_report

_SOURCE_KEYS = ("state_dict", "file", "hf_hub_id", "url")


def _user_source(cfg: Any, overlay: dict) -> bool:
    """Whether the caller gave a weight source (file overlay, hf-hub:/local-dir: config, explicit cfg)."""
    if any(overlay.get(k) for k in _SOURCE_KEYS):
        return True
    if cfg is None or isinstance(cfg, str):
        return False
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    return bool(get("source") in ("hf-hub", "local-dir") or any(get(k) for k in _SOURCE_KEYS))


def _not_available(manifest: Manifest, entry: WeightEntry) -> WeightsNotAvailableError:
    loadable = [e.name for e in manifest.entries() if e.has_weights]
    return WeightsNotAvailableError(
        f"{entry.name} has no weights to load (status '{entry.status}': a recipe only). "
        f"Weights that load with pretrained=True: {', '.join(loadable) or 'none'}. To make this one: "
        f"`{entry.train_command}` then `icmlm-train export RUN --model {entry.model} --tag {entry.tag} "
        f"--out DIR` and load it with timm.create_model('local-dir:DIR', pretrained=True); or convert an "
        f"original checkpoint with `icmlm-zoo convert CHECKPOINT --model {entry.model} --out DIR`.")


def fetch_weights(entry: WeightEntry, manifest: Manifest | None = None, cache_dir: Any = None) -> str:
    """A local safetensors path holding the verified weights of ``entry``."""
    if entry.status == "published":
        return str(download_verified(entry, cache_dir=cache_dir))
    if entry.status == "convertible":
        return str(fetch_and_convert(entry))
    raise _not_available(manifest or load_manifest(), entry)


def integrity_report(entry: WeightEntry) -> str:
    """What was checked for the weights of ``entry`` just fetched: "verified" only against a published hash."""
    if entry.status == "published":
        return f"verified: sha256 {entry.hub['sha256']} matches the manifest's published hash"
    if entry.status == "convertible":
        checked = "; the converted weights match the digest recorded at conversion"
        return pin_report(entry) + checked
    return f"status '{entry.status}': nothing to check"


def weights_state_dict(variant: str, file: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``file`` for the ``variant`` architecture: a safetensors file as it is; a ``.pth``/``.pt``
    (an original ICMLM checkpoint, or a plain state dict) read with ``torch.load(weights_only=True)``, its trunk
    extracted and checked key by key and shape by shape, exactly as ``icmlm-zoo convert`` does."""
    if str(file).endswith(".safetensors"):
        return load_file(str(file))
    return checkpoint_state_dict(file, variant)


def resolve_pretrained(
        variant: str,
        pretrained: bool,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict | None = None,
        cache_dir: Any = None,
) -> tuple[Any, dict]:
    """The (pretrained_cfg, overlay) pair to hand ``timm.models.build_model_with_cfg``.

    A tag (or no tag: the default one) is looked up in the manifest; with ``pretrained=True`` its verified
    local file goes into the overlay's ``file`` (read by timm). A ``file`` the caller gave
    (``pretrained_cfg_overlay=dict(file=…)``) is used the same way, except an original ``.pth``/``.pt``
    checkpoint, converted on the way into the overlay's ``state_dict``; ``hf-hub:``/``local-dir:`` names and an
    explicit cfg are used as given.
    """
    overlay = dict(pretrained_cfg_overlay or {})
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        if pretrained and not _user_source(pretrained_cfg, overlay):
            raise WeightsNotAvailableError(
                f"pretrained=True for {variant} with a pretrained_cfg that names no weights (file, hf_hub_id, url "
                f"or state_dict). Give one, e.g. pretrained_cfg_overlay=dict(file='model.safetensors').")
        return pretrained_cfg, overlay
    manifest = load_manifest()
    try:
        entry = manifest.entry(variant, pretrained_cfg)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    cfg = PretrainedCfg(architecture=variant, tag=entry.tag, **manifest.timm_cfg(entry))
    if pretrained and not overlay.get("state_dict"):
        if not _user_source(None, overlay):
            overlay["file"] = fetch_weights(entry, manifest, cache_dir=cache_dir)
        if overlay.get("file") and not str(overlay["file"]).endswith(".safetensors"):
            # an original checkpoint: converted here; a safetensors file is read by timm itself (a state dict in
            # the overlay would be deep-copied by timm's PretrainedCfg.to_dict: +15 % on a warm ResNet-50 load)
            overlay["state_dict"] = weights_state_dict(variant, overlay["file"])
    return cfg, overlay


def _not_nameless(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Loaded  from checkpoint")


@contextlib.contextmanager
def without_nameless_checkpoint_log() -> Iterator[None]:
    """While timm builds one of our models: drop timm's "Loaded  from checkpoint '…'" line (its message for a file
    without a named state-dict key, with the key left blank); timm's "Loading pretrained weights from file (…)"
    still says where the weights came from. Other loads in the process are untouched."""
    log = logging.getLogger("timm.models._helpers")
    log.addFilter(_not_nameless)
    try:
        yield
    finally:
        log.removeFilter(_not_nameless)
