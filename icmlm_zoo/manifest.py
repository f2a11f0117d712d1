"""The weights manifest: the one source of truth for every ICMLM weight the zoo knows.

The shipped file is ``weights_manifest.json`` (inside the installed package). ``ICMLM_ZOO_MANIFEST`` points
the package at another file (a private zoo, a mirror, a test). The schema is described in docs/manifest.md and
enforced by :func:`icmlm_zoo.manifest_schema.validate_manifest`.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import ManifestError
from .manifest_schema import (
    LOADABLE_STATUSES,
    PIN_ON_FIRST_USE,
    PREPROCESSING_KEYS,
    STATUS_MEANINGS,
    STATUSES,
    UNVERIFIED_LABEL,
    validate_manifest,
)

__all__ = ["LOADABLE_STATUSES", "MANIFEST_ENV", "Manifest", "ManifestError", "PIN_ON_FIRST_USE", "PREPROCESSING_KEYS",
           "STATUSES", "STATUS_MEANINGS", "UNVERIFIED_LABEL", "WeightEntry", "load_manifest", "manifest_path",
           "timm_pretrained_fields", "validate_manifest"]

MANIFEST_ENV = "ICMLM_ZOO_MANIFEST"
SHIPPED_MANIFEST = Path(__file__).with_name("weights_manifest.json")


def timm_pretrained_fields(preprocessing: dict[str, Any], *, family: str, license: str | None,
                           paper: dict[str, Any]) -> dict[str, Any]:
    """The timm ``PretrainedCfg`` fields every ICMLM weight carries: preprocessing, head-less head, provenance.
    ``family`` is the model's manifest family ("resnet" or "vgg"): it names the first conv and the classifier."""
    vgg = family == "vgg"
    return dict(
        input_size=tuple(preprocessing["input_size"]),
        pool_size=tuple(int(d) // 32 for d in preprocessing["input_size"][1:]),  # every ICMLM trunk has stride 32
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
        crop_pct=preprocessing["crop_pct"],
        interpolation=preprocessing["interpolation"],
        num_classes=0,
        classifier="head.fc" if vgg else "fc",
        first_conv="features.0" if vgg else "conv1",
        license=license or "unknown",
        paper_name=paper.get("title"),
        paper_ids=paper.get("id"),
        origin_url=paper.get("url"),
    )


@dataclass(frozen=True)
class WeightEntry:
    """One weight of the zoo: a (model, tag) pair with its source, preprocessing and provenance."""

    model: str
    tag: str
    status: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """``model.tag``, the name to give ``timm.create_model``."""
        return f"{self.model}.{self.tag}"

    @property
    def hub(self) -> dict[str, Any] | None:
        return self.raw.get("hub")

    @property
    def source(self) -> dict[str, Any] | None:
        return self.raw.get("source")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.raw["preprocessing"]

    @property
    def integrity(self) -> str:
        """How the bytes are checked: "verified (published sha256)", "unverified (no published hash)", or "-"
        for a recipe (nothing to load)."""
        if self.status == "published":
            return "verified (published sha256)"
        if self.status == "convertible" and self.source:
            return "verified (published sha256)" if self.source.get("sha256") else UNVERIFIED_LABEL
        return "-"

    @property
    def is_default(self) -> bool:
        return bool(self.raw.get("default", False))

    @property
    def has_weights(self) -> bool:
        """Whether ``pretrained=True`` loads weights for this tag (a recipe has none)."""
        return self.status in LOADABLE_STATUSES

    @property
    def data_config(self) -> dict[str, Any]:
        """timm's data config of these weights (input_size, mean, std, crop_pct, interpolation)."""
        return {k: self.preprocessing[k] for k in PREPROCESSING_KEYS}

    @property
    def train_command(self) -> str:
        """The ``icmlm-train`` command line that trains these weights."""
        pre = self.raw["pretraining"]
        sets = "".join(f" --set {s}" for s in pre.get("set") or [])
        return f"icmlm-train --preset {pre['preset']}{sets}"

    def timm_cfg(self, paper: dict[str, Any], family: str) -> dict[str, Any]:
        """The timm ``PretrainedCfg`` fields for this weight (weights source + preprocessing + provenance)."""
        cfg = timm_pretrained_fields(self.preprocessing, family=family, license=self.raw.get("license"),
                                     paper=paper)
        cfg.update(description=self.raw.get("description"), notes=(f"status: {self.status}",))
        hub = self.hub
        if self.status == "published" and hub:
            cfg["hf_hub_id"] = f"{hub['repo']}@{hub['revision']}"
            cfg["hf_hub_filename"] = hub.get("filename", "model.safetensors")
        elif self.status == "convertible" and self.source:
            cfg["url"] = self.source["url"]
        return cfg


@dataclass
class Manifest:
    """The parsed manifest: models, their weights, and the paper they come from."""

    data: dict[str, Any]
    path: Path

    @property
    def paper(self) -> dict[str, Any]:
        return self.data["paper"]

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.data["models"]

    def family(self, model: str) -> str:
        """The model's architecture family ("resnet" or "vgg")."""
        return self.models[model]["family"]

    def timm_cfg(self, entry: WeightEntry) -> dict[str, Any]:
        """The timm ``PretrainedCfg`` fields of ``entry``."""
        return entry.timm_cfg(self.paper, self.family(entry.model))

    def entries(self, model: str | None = None) -> Iterator[WeightEntry]:
        """All weight entries, or those of one model."""
        for raw in self.data["weights"]:
            if model is None or raw["model"] == model:
                yield WeightEntry(model=raw["model"], tag=raw["tag"], status=raw["status"], raw=raw)

    def tags(self, model: str) -> list[str]:
        return [e.tag for e in self.entries(model)]

    def default_tag(self, model: str) -> str:
        entries = list(self.entries(model))
        if not entries:
            raise KeyError(self._unknown_model_message(model))
        return next((e.tag for e in entries if e.is_default), entries[0].tag)

    def entry(self, model: str, tag: str | None = None) -> WeightEntry:
        """The entry for ``model.tag`` (default tag when ``tag`` is None); a KeyError lists the valid names."""
        if model not in self.models:
            raise KeyError(self._unknown_model_message(model))
        tag = tag or self.default_tag(model)
        for e in self.entries(model):
            if e.tag == tag:
                return e
        valid = ", ".join(f"{model}.{t}" for t in self.tags(model))
        raise KeyError(f"Unknown tag '{tag}' for {model}. Valid weights: {valid}. `icmlm-zoo list` shows them all.")

    def _unknown_model_message(self, model: str) -> str:
        return (f"Unknown ICMLM model '{model}'. Known models: {', '.join(sorted(self.models))} "
                f"(manifest: {self.path}).")

    def write(self, path: str | Path | None = None) -> Path:
        """Validate, then write atomically (to ``path`` or the file it was read from)."""
        errors = validate_manifest(self.data)
        if errors:
            raise ManifestError(f"Refusing to write an invalid manifest to {path or self.path}: {'; '.join(errors)}")
        target = Path(path or self.path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, target.resolve() if target.is_symlink() else target)
        return target


def manifest_path() -> Path:
    """The manifest in use: ``$ICMLM_ZOO_MANIFEST`` if set, else the file shipped in the package."""
    env = os.environ.get(MANIFEST_ENV)
    return Path(env) if env else SHIPPED_MANIFEST


_LOADED: dict[Path, tuple[tuple[int, int], dict]] = {}  # path -> ((mtime_ns, size), validated data)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and validate a manifest (default: :func:`manifest_path`). A file is parsed and validated once per
    process (again only when it changes on disk); each call gets its own copy of the data."""
    path = Path(path) if path else manifest_path()
    hint = f" (set by {MANIFEST_ENV}: fix the file, or unset {MANIFEST_ENV} to use the shipped manifest)" \
        if os.environ.get(MANIFEST_ENV) and path == manifest_path() else ""
    try:
        st = path.stat()
    except OSError as e:
        raise ManifestError(f"Weights manifest {path} cannot be read ({e.strerror or type(e).__name__}){hint}.") \
            from None
    key = (st.st_mtime_ns, st.st_size)
    cached = _LOADED.get(path)
    if cached is None or cached[0] != key:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"Weights manifest {path} is not valid JSON ({e}){hint}.") from None
        errors = validate_manifest(data)
        if errors:
            raise ManifestError(f"Weights manifest {path} breaks the schema (docs/manifest.md){hint}: "
                                f"{'; '.join(errors)}.")
        cached = _LOADED[path] = (key, data)
    return Manifest(data=copy.deepcopy(cached[1]), path=path)
