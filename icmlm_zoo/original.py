"""Weights that exist only as an original (NAVER) checkpoint: download once, check, convert, cache."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .cache import cache_root, sha256_file
from .download import download_url
from .errors import WeightsIntegrityError
from .manifest import WeightEntry

_logger = logging.getLogger(__name__)


def converted_dir(entry: WeightEntry) -> Path:
    return cache_root() / "converted" / entry.name


def fetch_and_convert(entry: WeightEntry, progress: bool = True) -> Path:
    """The converted ``model.safetensors`` of a convertible entry, downloading and converting it if needed.

    The original file is checked against ``source.sha256`` when the manifest knows it; when it does not, the
    computed digest is printed so that it can be recorded.
    """
    from .convert import convert_checkpoint

    out = converted_dir(entry)
    weights = out / "model.safetensors"
    if weights.is_file():
        return weights
    source = entry.source
    url = source["url"]
    original = cache_root() / "downloads" / url.rstrip("/").rsplit("/", 1)[-1]
    if not original.is_file():
        digest = download_url(url, original, progress=progress)
    else:
        digest = sha256_file(original)
    expected = source.get("sha256")
    if expected and digest != expected:
        original.unlink()
        raise WeightsIntegrityError(
            f"{entry.name}: {url} gave a file with sha256 {digest}, the manifest expects {expected}. The download "
            f"was deleted; run again, and if it repeats the server's file has changed: do not use it.")
    if not expected:
        msg = (f"{entry.name}: the manifest records no sha256 for {url}; the downloaded file has sha256 {digest}. "
               f"Record it as source.sha256 in weights_manifest.json.")
        _logger.warning(msg)
        print(msg)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent if out.parent.exists() else None))
    try:
        folder, notes = convert_checkpoint(
            original, entry.model, tmp / "w", tag=entry.tag, trunk_key=source.get("trunk_key"),
            extra_meta={"converted_from": {"url": url, "sha256": digest}})
        for note in notes:
            print(f"{entry.name}: {note}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():  # a concurrent conversion finished first
            shutil.rmtree(folder)
        else:
            folder.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return weights
