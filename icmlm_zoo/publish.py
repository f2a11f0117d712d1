"""Upload a weight folder to the Hub and record it in the manifest (revision, sha256, bytes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cache import sha256_file
from .manifest import load_manifest


def publish_folder(
        folder: str | Path,
        repo_id: str,
        *,
        model: str | None = None,
        tag: str | None = None,
        manifest_path: str | Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        private: bool = False,
        commit_message: str = "Add ICMLM weights",
) -> dict[str, Any]:
    """Upload ``folder`` (made by ``icmlm-zoo convert`` or ``icmlm-train export``) and write its manifest entry.

    The entry becomes ``status: published`` with the commit the upload created, the safetensors' sha256 and
    size; a new tag gets a full entry built from the folder's ``config.json``. Returns the entry.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    weights, config_path = folder / "model.safetensors", folder / "config.json"
    for required in (weights, config_path, folder / "README.md"):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: publish a folder written by `icmlm-zoo convert` "
                                    f"or `icmlm-train export`.")
    config = json.loads(config_path.read_text())
    meta = config.get("icmlm", {})
    model = model or meta.get("model")
    tag = tag or meta.get("tag")
    if not model or not tag:
        raise ValueError("The folder's config.json names no model/tag: pass --model and --tag.")
    manifest = load_manifest(manifest_path)
    if model not in manifest.models:
        raise ValueError(f"Unknown model '{model}'. Known: {', '.join(sorted(manifest.models))}.")
    digest, size = sha256_file(weights), weights.stat().st_size

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)

    hub = dict(repo=repo_id, revision=commit.oid, filename="model.safetensors", sha256=digest, bytes=size)
    raw = next((r for r in manifest.data["weights"] if r["model"] == model and r["tag"] == tag), None)
    if raw is None:
        pre = config["pretrained_cfg"]
        raw = dict(
            model=model,
            tag=tag,
            description=meta.get("description") or f"{model} pretrained with ICMLM ({tag})",
            pretraining=meta.get("pretraining") or {"preset": (meta.get("recipe") or {}).get("preset", "custom")},
            preprocessing={k: pre[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation")},
            license=pre.get("license") or "unknown",
            source=None,
            converter=None,
            metrics=meta.get("metrics") or [],
        )
        raw["pretraining"].setdefault("preset", "custom")
        manifest.data["weights"].append(raw)
    raw.update(status="published", hub=hub, num_params=meta.get("num_params"))
    manifest.write()
    return raw
