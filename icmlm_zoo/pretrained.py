"""``pretrained=True`` resolution: published Hub weight → original checkpoint + conversion → a clear error.

Never returns random weights when pretrained weights were asked for.
"""
from __future__ import annotations

from typing import Any

from .errors import WeightsNotAvailableError
from .manifest import Manifest, WeightEntry, load_manifest

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
    loadable = [e.name for e in manifest.entries() if e.status in ("published", "convertible")]
    preset = entry.raw["pretraining"]["preset"]
    return WeightsNotAvailableError(
        f"{entry.name} has no weights to load (status '{entry.status}': a recipe only). "
        f"Weights that load with pretrained=True: {', '.join(loadable) or 'none'}. To make this one: "
        f"`icmlm-train --preset {preset}` then `icmlm-train export RUN --model {entry.model} --tag {entry.tag} "
        f"--out DIR` and load it with pretrained_cfg_overlay=dict(file='DIR/model.safetensors'); or convert an "
        f"original checkpoint with `icmlm-zoo convert CHECKPOINT --model {entry.model} --out DIR`.")


def fetch_weights(entry: WeightEntry, manifest: Manifest | None = None, cache_dir: Any = None) -> str:
    """A local safetensors path holding the verified weights of ``entry``."""
    if entry.status == "published":
        from .hub import download_verified
        return str(download_verified(entry, cache_dir=cache_dir))
    if entry.status == "convertible":
        from .original import fetch_and_convert
        return str(fetch_and_convert(entry))
    raise _not_available(manifest or load_manifest(), entry)


def integrity_report(entry: WeightEntry) -> str:
    """What was checked for the weights of ``entry`` just fetched: "verified" only against a published hash."""
    if entry.status == "published":
        return f"verified: sha256 {entry.hub['sha256']} matches the manifest's published hash"
    if entry.status == "convertible":
        from .original import expected_source_sha256

        digest, how = expected_source_sha256(entry)
        checked = "; the converted weights match the digest recorded at conversion"
        if how == "published":
            return f"verified: the original's sha256 {digest} matches the manifest's published hash{checked}"
        pinned = f"pinned on first use to sha256 {digest}" if digest else "not pinned (the cache is not writable)"
        return f"{entry.integrity}: the original is {pinned}, not checked against any published hash{checked}"
    return f"status '{entry.status}': nothing to check"


def resolve_pretrained(
        variant: str,
        pretrained: bool,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict | None = None,
        cache_dir: Any = None,
) -> tuple[Any, dict]:
    """The (pretrained_cfg, overlay) pair to hand ``timm.models.build_model_with_cfg``.

    A tag (or no tag: the default one) is looked up in the manifest; with ``pretrained=True`` its verified
    local file becomes the ``file`` overlay. A source the caller gave (``pretrained_cfg_overlay=dict(file=…)``,
    ``hf-hub:``/``local-dir:`` names, an explicit cfg) is used as given.
    """
    from timm.models import PretrainedCfg

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
    cfg = PretrainedCfg(architecture=variant, tag=entry.tag, **entry.timm_cfg(manifest.paper))
    if pretrained and not _user_source(None, overlay):
        overlay["file"] = fetch_weights(entry, manifest, cache_dir=cache_dir)
    return cfg, overlay
