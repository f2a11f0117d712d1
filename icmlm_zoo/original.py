"""Weights that exist only as an original (NAVER) checkpoint: download once, check, convert, cache, re-check.

Integrity, on every load: the original must match the manifest's published ``source.sha256``, or, for a source
with no published hash (``"integrity": "pin-on-first-use"``), the digest pinned the first time it was converted.
The converted ``model.safetensors`` is checked against the digest recorded at conversion (``integrity.json``;
the size/mtime/inode stamp of :func:`cache.verified_sha256` keeps warm loads from re-hashing). A damaged
converted entry is deleted and rebuilt from the original; a damaged cached original is deleted and downloaded
again; a download that differs from the published or pinned digest raises :class:`WeightsIntegrityError`.
A pin file that is missing or damaged is restored from the source digest the converted weights recorded
(``integrity.json``); a damaged pin with nothing to restore it from raises :class:`PinError`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .cache import (
    cache_root,
    download_path,
    forget_stamp,
    pin_path,
    read_pin,
    record_stamp,
    sha256_file,
    verified_sha256,
    write_pin,
)
from .convert import convert_checkpoint
from .download import UnreachableError, download_url
from .errors import ConversionError, PinError, WeightsIntegrityError
from .manifest import UNVERIFIED_LABEL, WeightEntry
from .ways_out import original_unreachable

RECORD = "integrity.json"


def converted_dir(entry: WeightEntry) -> Path:
    """Where the converted weights of ``entry`` and their ``integrity.json`` are cached."""
    return cache_root() / "converted" / entry.name


def _say(msg: str) -> None:
    print(msg, flush=True)


def _recorded_source_digest(entry: WeightEntry) -> str | None:
    """The source sha256 the converted weights of ``entry`` recorded at conversion, if they name this URL."""
    try:
        record = json.loads((converted_dir(entry) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    digest = record.get("source_sha256") if isinstance(record, dict) else None
    if record.get("source_url") != entry.source["url"] or not isinstance(digest, str) or len(digest) != 64:
        return None
    return digest


def _restore_pin(entry: WeightEntry, damage: PinError | None) -> str | None:
    """Re-pin from the converted weights' ``integrity.json`` after the pin file was deleted or damaged; the digest,
    or None when nothing records one (raises :class:`PinError` for a damaged pin that cannot be restored)."""
    url, record = entry.source["url"], converted_dir(entry) / RECORD
    digest = _recorded_source_digest(entry)
    if digest is None:
        if damage is None:
            return None
        raise PinError(
            f"{entry.name}: {damage} Nothing else records the digest it pinned (no {record}), so a download could "
            f"not be checked; nothing was downloaded or loaded. If you trust the file at {url} now, delete "
            f"{pin_path(url)} and it is pinned afresh on first use.")
    what = "damaged" if damage else "missing"
    try:
        write_pin(url, digest, None, replace=True)
        _say(f"{entry.name}: the pin file {pin_path(url)} was {what}; restored it from {record} (sha256 {digest}).")
    except OSError as e:
        _say(f"{entry.name}: the pin file {pin_path(url)} is {what} and cannot be rewritten ({e.strerror}); "
             f"using the digest recorded in {record} (sha256 {digest}).")
    return digest


def expected_source_sha256(entry: WeightEntry) -> tuple[str | None, str]:
    """``(digest, how)``: the published ``source.sha256`` ("published"), else the pinned one ("pinned", restored
    from ``integrity.json`` when the pin file is missing or damaged), else ``(None, "unpinned")`` before first use."""
    published = entry.source.get("sha256")
    if published:
        return published, "published"
    try:
        pin, damage = read_pin(entry.source["url"]), None
    except PinError as e:
        pin, damage = None, e
    if pin:
        return pin["sha256"], "pinned"
    digest = _restore_pin(entry, damage)
    return (digest, "pinned") if digest else (None, "unpinned")


def pin_report(entry: WeightEntry) -> str:
    """How the original of a convertible ``entry`` is checked, as it stands now (after a fetch)."""
    digest, how = expected_source_sha256(entry)
    if how == "published":
        return f"verified: the original's sha256 {digest} matches the manifest's published hash"
    where = pin_path(entry.source["url"])
    if digest:
        return f"{UNVERIFIED_LABEL}: the original is pinned on first use to sha256 {digest} ({where})"
    return (f"{UNVERIFIED_LABEL}: the original is NOT pinned: no pin file at {where} (it could not be written), "
            f"so a changed file at the source would not be noticed")


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
        try:
            pinned_at = (read_pin(url) or {}).get("pinned_at") or "earlier"
        except PinError:
            pinned_at = "earlier"
        rule = f"the sha256 pinned on first use ({pinned_at}, no published hash) is {expected}"
    return WeightsIntegrityError(
        f"{entry.name}: {where or 'the download from'} {url} has sha256 {got}, but {rule}. The file was deleted. "
        f"If this repeats, the server's file has changed: do not use it (to accept a new file knowingly, delete "
        f"{pin_path(url)}).")


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
    try:
        digest = download_url(url, original, progress=progress)
    except UnreachableError as e:
        raise original_unreachable(entry, str(e)) from None
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


def _pin_first_use(entry: WeightEntry, original: Path, digest: str) -> None:
    """Pin the digest of the first original that converted, and say so once."""
    url = entry.source["url"]
    try:
        pin = write_pin(url, digest, original.stat().st_size)
    except OSError as e:
        _say(f"{entry.name}: the manifest publishes no sha256 for {url}, and its digest (sha256 {digest}) could not "
             f"be pinned: {pin_path(url)} cannot be written ({e.strerror}). Later downloads are NOT checked against "
             f"it.")
        return
    _say(f"{entry.name}: the manifest publishes no sha256 for {url}; its file (sha256 {pin['sha256']}) is now "
         f"pinned on first use ({pin_path(url)}): later downloads and loads must match it. Unverified: compare "
         f"this digest with one from a source you trust.")


def _convert(entry: WeightEntry, original: Path, digest: str, *, first_use: bool, fresh: bool) -> Path:
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
            _pin_first_use(entry, original, digest)
        if out.exists():  # a concurrent conversion finished first
            shutil.rmtree(folder)
        else:
            folder.rename(out)
            record_stamp(out / "model.safetensors", weights_digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "model.safetensors"
