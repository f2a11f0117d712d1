"""Upload a weight folder to the Hub (an allow-list of files, private by default) and make its manifest entry.

Only ``model.safetensors``, ``config.json`` and the model card ``README.md`` are uploaded. A folder holding a
symlink or a dotfile (a ``.env`` with a token, say) is refused before anything is sent. The folder itself is
never modified, and the manifest entry is written only where the user asks (or into a checkout's manifest),
never into an installed package.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from . import manifest as _manifest
from .cache import sha256_file
from .card import card_for_upload
from .convert import WEIGHT_FOLDER_FILES
from .errors import IcmlmZooError
from .manifest import MANIFEST_ENV, PREPROCESSING_KEYS, Manifest, load_manifest


class PublishError(IcmlmZooError):
    """A folder cannot be published as it is (missing files, symlinks, dotfiles, unknown model)."""


@dataclass
class UploadPlan:
    """What ``publish`` sends: the allow-listed files of ``folder`` and what it leaves behind."""

    folder: Path
    config: dict[str, Any]
    sha256: str
    bytes: int
    skipped: list[str] = field(default_factory=list)

    def describe(self, repo_id: str, private: bool) -> str:
        """Lines saying what will be uploaded where, and what will not."""
        lines = [f"uploading to {repo_id} ({'private' if private else 'PUBLIC'} repo if it is created now):",
                 f"  model.safetensors  {self.bytes} bytes, sha256 {self.sha256}",
                 "  config.json",
                 "  README.md (model card; hf-hub:ORG/REPO filled in, metadata completed)"]
        if self.skipped:
            lines.append(f"not uploaded (only {', '.join(WEIGHT_FOLDER_FILES)} are): {', '.join(self.skipped)}")
        return "\n".join(lines)


def plan_upload(folder: str | Path) -> UploadPlan:
    """Check ``folder`` and list what would be uploaded; raises :class:`PublishError` naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: publish a weight folder written by `icmlm-zoo convert` or "
                           f"`icmlm-train export`.")
    entries = sorted(folder.iterdir())
    links = [p.name for p in entries if p.is_symlink()]
    dotfiles = [p.name for p in entries if p.name.startswith(".") and not p.is_symlink()]
    if links or dotfiles:
        what = "; ".join(x for x in (f"symlinks: {', '.join(links)}" if links else "",
                                     f"dotfiles: {', '.join(dotfiles)}" if dotfiles else "") if x)
        raise PublishError(f"Refusing to publish {folder}: it holds {what}. Move them out of the folder (a link may "
                           f"point anywhere, a dotfile may hold a secret); nothing was uploaded.")
    missing = [n for n in WEIGHT_FOLDER_FILES if not (folder / n).is_file()]
    if missing:
        raise PublishError(f"{folder} lacks {', '.join(missing)}: publish a folder written by `icmlm-zoo convert` "
                           f"or `icmlm-train export`.")
    weights = folder / "model.safetensors"
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise PublishError(f"{folder / 'config.json'} is not valid JSON ({e}).") from None
    return UploadPlan(folder=folder, config=config, sha256=sha256_file(weights), bytes=weights.stat().st_size,
                      skipped=[p.name for p in entries if p.name not in WEIGHT_FOLDER_FILES])


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub call raises: HfHubHTTPError, OSError, and the HTTP client's own HTTPError (requests or
    httpx, depending on the huggingface_hub version)."""
    return (OSError, HfHubHTTPError) + tuple(b for b in HfHubHTTPError.__mro__ if b.__name__ == "HTTPError")


def default_manifest_target() -> Path | None:
    """Where ``publish`` writes the entry when ``--manifest`` is not given: ``$ICMLM_ZOO_MANIFEST`` if set, the
    checkout's ``weights_manifest.json`` when running from a source checkout, else ``None`` (print only)."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    shipped = _manifest.SHIPPED_MANIFEST  # icmlm_zoo/weights_manifest.json (a link to the top-level file in a checkout)
    installed = any(part in ("site-packages", "dist-packages") for part in shipped.absolute().parts)
    if not installed and (shipped.absolute().parent.parent / "pyproject.toml").is_file():
        return shipped
    return None


def manifest_entry(manifest: Manifest, plan: UploadPlan, model: str, tag: str, hub: dict[str, Any]) -> dict:
    """The manifest entry of a published folder: the existing (model, tag) entry updated, or a new one."""
    meta = plan.config.get("icmlm", {})
    raw = next((r for r in manifest.data["weights"] if r["model"] == model and r["tag"] == tag), None)
    if raw is None:
        pre = plan.config["pretrained_cfg"]
        raw = dict(
            model=model,
            tag=tag,
            description=meta.get("description") or f"{model} pretrained with ICMLM ({tag})",
            pretraining=dict(meta.get("pretraining") or {"preset": (meta.get("recipe") or {}).get("preset", "custom")}),
            preprocessing={k: pre[k] for k in PREPROCESSING_KEYS},
            license=pre.get("license") or "unknown",
            source=None,
            converter=None,
            metrics=meta.get("metrics") or [],
        )
        raw["pretraining"].setdefault("preset", "custom")
        manifest.data["weights"].append(raw)
    raw.update(status="published", hub=hub, num_params=meta.get("num_params"))
    return raw


def publish_folder(
        folder: str | Path,
        repo_id: str,
        *,
        model: str | None = None,
        tag: str | None = None,
        manifest_path: str | Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        private: bool = True,
        commit_message: str = "Add ICMLM weights",
        echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path | None]:
    """Upload ``folder``'s allow-listed files to ``repo_id`` and make its manifest entry.

    The entry gets ``status: published``, the commit the upload created, the weight's sha256 and size. It is
    written to ``manifest_path`` (a new file starts from the manifest in use), else to
    :func:`default_manifest_target`; with neither it is only printed. Returns the entry and the file written.
    """
    plan = plan_upload(folder)
    meta = plan.config.get("icmlm", {})
    model, tag = model or meta.get("model"), tag or meta.get("tag")
    if not model or not tag:
        raise PublishError("The folder's config.json names no model/tag: pass --model and --tag.")
    target = Path(manifest_path) if manifest_path else default_manifest_target()
    manifest = load_manifest(target) if target is not None and target.exists() else load_manifest()
    if model not in manifest.models:
        raise PublishError(f"Unknown model '{model}'. Known: {', '.join(sorted(manifest.models))}.")
    card = card_for_upload((plan.folder / "README.md").read_text(), plan.config, repo_id)
    echo(plan.describe(repo_id, private))

    api = HfApi(endpoint=endpoint, token=token, library_name="icmlm-zoo")
    operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(plan.folder / n))
                  for n in ("model.safetensors", "config.json")]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    except _hub_errors() as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PublishError(f"Uploading to {repo_id} at {api.endpoint} failed ({first}); no manifest entry was "
                           f"made. Check the network, --endpoint, and your token (huggingface-cli login or "
                           f"HF_TOKEN).") from None

    hub = dict(repo=repo_id, revision=commit.oid, filename="model.safetensors", sha256=plan.sha256,
               bytes=plan.bytes)
    raw = manifest_entry(manifest, plan, model, tag, hub)
    echo("manifest entry:\n" + json.dumps(raw, indent=2))
    if target is None:
        echo(f"manifest not written: this icmlm-zoo is an installed package ({_manifest.SHIPPED_MANIFEST}). Pass "
             f"--manifest PATH to write the entry into a manifest file (use it with {MANIFEST_ENV}=PATH), or add it "
             f"to icmlm_zoo/weights_manifest.json in a checkout.")
        return raw, None
    return raw, manifest.write(target)
