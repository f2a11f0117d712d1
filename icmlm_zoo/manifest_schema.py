"""The weights manifest's schema: its statuses, keys and rules, checked by :func:`validate_manifest`.

docs/manifest.md describes the schema in prose; this module is what enforces it.
"""
from __future__ import annotations

import re
from typing import Any

#: every weight status, and what each means (the CLI's --status choices and the docs come from here)
STATUS_MEANINGS = {
    "published": "on the Hugging Face Hub at a pinned commit, sha256 checked",
    "convertible": "an original checkpoint, downloaded and converted on first use",
    "recipe": "no weights: the preset that trains them is shipped",
}
STATUSES = tuple(STATUS_MEANINGS)
LOADABLE_STATUSES = ("published", "convertible")  # the statuses whose weights pretrained=True loads
PIN_ON_FIRST_USE = "pin-on-first-use"  # source.integrity of a source with no published sha256
UNVERIFIED_LABEL = "unverified (no published hash)"
PREPROCESSING_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")  # timm's data-config keys
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


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
    pretraining = raw.get("pretraining") if isinstance(raw.get("pretraining"), dict) else {}
    if not isinstance(pretraining.get("preset"), str):
        errors.append(f"{where}: pretraining.preset must name the training preset")
    sets = pretraining.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
        errors.append(f"{where}: pretraining.set must be a list of KEY=VALUE overrides of the preset")
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
