"""Weights that exist only as an original (NAVER) checkpoint: download once, check, convert, cache, re-check.

Integrity, on every load: the original must match the manifest's published ``source.sha256``, or, for a source
with no published hash (``"integrity": "pin-on-first-use"``), the digest pinned the first time it was converted.
The converted ``model.safetensors`` is checked against the digest recorded at conversion (``integrity.json``;
the size/mtime/inode stamp of :func:`cache.verified_sha256` keeps warm loads from re-hashing). A damaged
converted entry is deleted and rebuilt from the original; a damaged cached original is deleted and downloaded
again; a download that differs from the published or pinned digest raises :class:`WeightsIntegrityError`.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from .cache import (cache_root, download_path, forget_stamp, read_pin, record_stamp, sha256_file, verified_sha256,
                    write_pin)
from .download import download_url, is_offline
from .errors import ConversionError, WeightsIntegrityError, not_cached_error
from .manifest import WeightEntry

_logger = logging.getLogger(__name__)
RECORD = "integrity.json"


def converted_dir(entry: WeightEntry) -> Path:
    return cache_root() / "converted" / entry.name


def _say(msg: str) -> None:
    _logger.warning(msg)
    print(msg)


def expected_source_sha256(entry: WeightEntry) -> tuple[str | None, str]:
    """``(digest, how)``: the published ``source.sha256`` ("published"), else the pinned one ("pinned"), else
    ``(None, "unpinned")`` before first use."""
    published = entry.source.get("sha256")
    if published:
        return published, "published"
    pin = read_pin(entry.source["url"])
    return (pin["sha256"], "pinned") if pin else (None, "unpinned")


def _converted_problem(out: Path, expected_source: str | None) -> str | None:
    """Why the converted entry in ``out`` cannot be used, or None when it checks out."""
    try:
        record = json.loads((out / RECORD).read_text())
        recorded, source_digest = record["sha256"], record["source_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"it has no readable {RECORD} (written by an older version, or damaged)"
    if expected_source and source_digest != expected_source:
        return f"it was converted from a file with sha256 {source_digest}, not the expected {expected_source}"
    actual = verified_sha256(out / "model.safetensors")
    if actual != recorded:
        return f"model.safetensors has sha256 {actual}, but {recorded} was recorded at conversion"
    return None


def _remove_converted(out: Path) -> None:
    forget_stamp(out / "model.safetensors")
    shutil.rmtree(out, ignore_errors=True)


def _mismatch(entry: WeightEntry, url: str, got: str, expected: str, how: str, cached: bool) -> WeightsIntegrityError:
    where = "the cached download of" if cached else ""
    if how == "published":
        rule = f"the manifest's published sha256 is {expected}"
    else:
        pin = read_pin(url) or {}
        rule = (f"the sha256 pinned on first use ({pin.get('pinned_at', 'earlier')}, no published hash) is "
                f"{expected}")
    return WeightsIntegrityError(
        f"{entry.name}: {where or 'the download from'} {url} has sha256 {got}, but {rule}. The file was deleted. "
        f"If this repeats, the server's file has changed: do not use it (to accept a new file knowingly, delete "
        f"{download_path(url).name}.pin.json in {download_path(url).parent}).")


def _original(entry: WeightEntry, expected: str | None, how: str, progress: bool) -> tuple[Path, str, bool]:
    """The checked original file, its sha256 and whether it was downloaded now (a damaged cached copy is
    deleted and downloaded again)."""
    url = entry.source["url"]
    original = download_path(url)
    if original.is_file():
        digest = verified_sha256(original)
        if expected is None or digest == expected:
            return original, digest, False
        _say(str(_mismatch(entry, url, digest, expected, how, cached=True)) + " Downloading it again.")
        forget_stamp(original)
        original.unlink(missing_ok=True)
    if is_offline():
        raise not_cached_error(entry.name, url, "HF_HUB_OFFLINE is set: no download is attempted")
    digest = download_url(url, original, progress=progress, name=entry.name)
    if expected is not None and digest != expected:
        original.unlink(missing_ok=True)
        raise _mismatch(entry, url, digest, expected, how, cached=False)
    record_stamp(original, digest)
    return original, digest, True


def fetch_and_convert(entry: WeightEntry, progress: bool = True) -> Path:
    """The checked, converted ``model.safetensors`` of a convertible entry, downloading and converting if needed."""
    out = converted_dir(entry)
    weights = out / "model.safetensors"
    expected, how = expected_source_sha256(entry)
    if weights.is_file():
        problem = _converted_problem(out, expected)
        if problem is None:
            return weights
        _say(f"{entry.name}: the converted weights in {out} are not usable ({problem}); deleting them and "
             f"converting the original again.")
        _remove_converted(out)
    original, digest, fresh = _original(entry, expected, how, progress)
    return _convert(entry, original, digest, first_use=expected is None, fresh=fresh)


def _convert(entry: WeightEntry, original: Path, digest: str, *, first_use: bool, fresh: bool) -> Path:
    from .convert import convert_checkpoint

    url, out = entry.source["url"], converted_dir(entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        try:
            folder, notes = convert_checkpoint(
                original, entry.model, tmp / "w", tag=entry.tag, trunk_key=entry.source.get("trunk_key"),
                extra_meta={"converted_from": {"url": url, "sha256": digest}})
        except ConversionError as e:
            if not first_use:
                raise
            forget_stamp(original)
            original.unlink(missing_ok=True)  # an unverified file that is no checkpoint is never reused
            how = "downloaded" if fresh else "cached"
            raise ConversionError(
                f"{entry.name}: the {how} file from {url} (sha256 {digest}) is not a usable checkpoint, perhaps "
                f"an incomplete download; it was deleted, run again. ({str(e).splitlines()[0]})") from e
        for note in notes:
            print(f"{entry.name}: {note}")
        weights = folder / "model.safetensors"
        weights_digest = sha256_file(weights)
        (folder / RECORD).write_text(json.dumps({
            "sha256": weights_digest, "bytes": weights.stat().st_size, "source_url": url,
            "source_sha256": digest}, indent=2) + "\n")
        if first_use:
            pin = write_pin(url, digest, original.stat().st_size)
            _say(f"{entry.name}: the manifest publishes no sha256 for {url}; its file (sha256 {pin['sha256']}) "
                 f"is now pinned on first use in {original.parent}: later downloads and loads must match it. "
                 f"Unverified: record a published hash as source.sha256 in weights_manifest.json.")
        if out.exists():  # a concurrent conversion finished first
            shutil.rmtree(folder)
        else:
            folder.rename(out)
            record_stamp(out / "model.safetensors", weights_digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "model.safetensors"
