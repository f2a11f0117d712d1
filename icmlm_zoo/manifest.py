"""The weights manifest: the one source of truth for every ICMLM weight the zoo knows.

The shipped file is ``weights_manifest.json`` (inside the installed package). ``ICMLM_ZOO_MANIFEST`` points
the package at another file (a private zoo, a mirror, a test). The schema is described in docs/manifest.md and
enforced by :func:`validate_manifest`.
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

MANIFEST_ENV = "ICMLM_ZOO_MANIFEST"
SHIPPED_MANIFEST = Path(__file__).with_name("weights_manifest.json")

STATUSES = ("published", "convertible", "recipe")
PIN_ON_FIRST_USE = "pin-on-first-use"  # source.integrity of a source with no published sha256
UNVERIFIED_LABEL = "unverified (no published hash)"
PREPROCESSING_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class ManifestError(ValueError):
    """The manifest file is missing, unreadable or breaks the schema."""


def timm_pretrained_fields(preprocessing: dict[str, Any], *, vgg: bool, license: str | None,
                           paper: dict[str, Any]) -> dict[str, Any]:
    """The timm ``PretrainedCfg`` fields every ICMLM weight carries: preprocessing, head-less head, provenance."""
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

    def timm_cfg(self, paper: dict[str, Any]) -> dict[str, Any]:
        """The timm ``PretrainedCfg`` fields for this weight (weights source + preprocessing + provenance)."""
        cfg = timm_pretrained_fields(self.preprocessing, vgg=self.model.startswith("icmlm_vgg"),
                                     license=self.raw.get("license"), paper=paper)
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
            raise ManifestError("Refusing to write an invalid manifest:\n  " + "\n  ".join(errors))
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
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ManifestError(f"Weights manifest not found at {path}. Unset {MANIFEST_ENV} or point it at a file.")
    key = (st.st_mtime_ns, st.st_size)
    cached = _LOADED.get(path)
    if cached is None or cached[0] != key:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"Weights manifest {path} is not valid JSON: {e}")
        errors = validate_manifest(data)
        if errors:
            raise ManifestError(f"Weights manifest {path} breaks the schema (docs/manifest.md):\n  " + "\n  ".join(errors))
        cached = _LOADED[path] = (key, data)
    return Manifest(data=copy.deepcopy(cached[1]), path=path)


def _check_hub(where: str, hub: Any, errors: list[str]) -> None:
    if not isinstance(hub, dict):
        errors.append(f"{where}: 'hub' must be an object for a published weight")
        return
    if not _REPO_ID.match(str(hub.get("repo", ""))):
        errors.append(f"{where}: hub.repo must be 'org/name', got {hub.get('repo')!r}")
    if not _COMMIT.match(str(hub.get("revision", ""))):
        errors.append(f"{where}: hub.revision must be a 40-hex commit id, got {hub.get('revision')!r}")
    if not _SHA256.match(str(hub.get("sha256", ""))):
        errors.append(f"{where}: hub.sha256 must be 64 lowercase hex digits")
    if not isinstance(hub.get("bytes"), int) or hub["bytes"] <= 0:
        errors.append(f"{where}: hub.bytes must be a positive integer")
    if not str(hub.get("filename", "")).endswith(".safetensors"):
        errors.append(f"{where}: hub.filename must be a .safetensors file")


def _check_source(where: str, source: Any, errors: list[str]) -> None:
    if not isinstance(source, dict) or not str(source.get("url", "")).startswith(("http://", "https://")):
        errors.append(f"{where}: a convertible weight needs source.url (http/https)")
        return
    sha, integrity = source.get("sha256"), source.get("integrity")
    if sha is None and integrity != PIN_ON_FIRST_USE:
        errors.append(f"{where}: source.sha256 is null, so the entry must say so explicitly with "
                      f"\"integrity\": \"{PIN_ON_FIRST_USE}\" (no published hash: the first download's digest is "
                      f"pinned), or record the published sha256")
    elif sha is not None and not _SHA256.match(str(sha)):
        errors.append(f"{where}: source.sha256 must be 64 lowercase hex digits (or null with "
                      f"\"integrity\": \"{PIN_ON_FIRST_USE}\")")
    elif sha is not None and integrity is not None:
        errors.append(f"{where}: source.integrity {integrity!r} contradicts the published source.sha256; "
                      f"drop source.integrity")


def _check_entry(i: int, raw: Any, models: dict[str, Any], errors: list[str]) -> None:
    where = f"weights[{i}]"
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be an object")
        return
    where = f"weights[{i}] ({raw.get('model')}.{raw.get('tag')})"
    for key in ("model", "tag", "status", "description", "pretraining", "preprocessing", "license", "metrics"):
        if key not in raw:
            errors.append(f"{where}: missing key '{key}'")
    if raw.get("model") not in models:
        errors.append(f"{where}: model {raw.get('model')!r} is not in 'models'")
    if not _TAG.match(str(raw.get("tag", ""))):
        errors.append(f"{where}: tag must be lowercase letters, digits and '_'")
    status = raw.get("status")
    if status not in STATUSES:
        errors.append(f"{where}: status must be one of {STATUSES}, got {status!r}")
    pre = raw.get("preprocessing") or {}
    missing = [k for k in PREPROCESSING_KEYS if k not in pre]
    if missing:
        errors.append(f"{where}: preprocessing lacks {missing}")
    elif len(pre["input_size"]) != 3 or len(pre["mean"]) != 3 or len(pre["std"]) != 3:
        errors.append(f"{where}: preprocessing input_size/mean/std must have 3 values")
    if not isinstance(raw.get("pretraining", {}).get("preset"), str):
        errors.append(f"{where}: pretraining.preset must name the training preset")
    if status == "published":
        _check_hub(where, raw.get("hub"), errors)
    if status == "convertible":
        _check_source(where, raw.get("source"), errors)
        if not raw.get("converter"):
            errors.append(f"{where}: a convertible weight needs a 'converter'")
    for j, metric in enumerate(raw.get("metrics") or []):
        for key in ("name", "value", "protocol", "dataset", "provenance"):
            if key not in metric:
                errors.append(f"{where}: metrics[{j}] lacks '{key}'")


def validate_manifest(data: Any) -> list[str]:
    """Every schema violation in ``data`` as a readable line; empty when the manifest is valid."""
    if not isinstance(data, dict):
        return ["the manifest must be a JSON object"]
    errors: list[str] = []
    if data.get("schema_version") != 1:
        errors.append("schema_version must be 1")
    paper = data.get("paper")
    if not isinstance(paper, dict) or not {"title", "id", "url"} <= set(paper):
        errors.append("paper must be an object with title, id and url")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        return errors + ["models must be a non-empty object"]
    for name, m in models.items():
        for key in ("family", "description", "timm_architecture", "timm_model_args", "num_features", "num_params"):
            if key not in m:
                errors.append(f"models.{name}: missing key '{key}'")
    weights = data.get("weights")
    if not isinstance(weights, list):
        return errors + ["weights must be a list"]
    seen: set[tuple[str, str]] = set()
    defaults: dict[str, int] = {}
    for i, raw in enumerate(weights):
        _check_entry(i, raw, models, errors)
        if isinstance(raw, dict):
            key = (raw.get("model"), raw.get("tag"))
            if key in seen:
                errors.append(f"weights[{i}]: duplicate entry {key[0]}.{key[1]}")
            seen.add(key)
            defaults[raw.get("model")] = defaults.get(raw.get("model"), 0) + bool(raw.get("default"))
    for name in models:
        if not any(m == name for m, _ in seen):
            errors.append(f"models.{name}: has no weight entry (every model needs at least one tag)")
        if defaults.get(name, 0) > 1:
            errors.append(f"models.{name}: more than one entry is marked default")
    return errors
