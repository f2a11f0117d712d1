"""Hugging Face Hub downloads with the manifest's sha256 check, and the mirror settings.

Mirrors: ``ICMLM_ZOO_HUB_ENDPOINT`` sends our downloads to another Hub endpoint (a self-hosted mirror serving the
same repos and commits); ``ICMLM_ZOO_HUB_ORG`` replaces the organisation of every repo id (a copy of the zoo
under your own org: the pinned revision is then not used, since copies get new commits, and the sha256 check
alone guards the bytes).
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .cache import forget_stamp, is_offline, verified_sha256
from .download import unreachable_reason
from .errors import IcmlmZooError, WeightsIntegrityError
from .manifest import WeightEntry
from .registration import installed_version
from .ways_out import OFFLINE_WHY, hub_unreachable

HUB_ENDPOINT_ENV = "ICMLM_ZOO_HUB_ENDPOINT"
HUB_ORG_ENV = "ICMLM_ZOO_HUB_ORG"


def hub_location(entry: WeightEntry) -> tuple[str, str | None, str | None]:
    """``(repo_id, revision, endpoint)`` for a published entry, with the mirror settings applied."""
    hub = entry.hub or {}
    repo_id, revision = hub["repo"], hub["revision"]
    org = os.environ.get(HUB_ORG_ENV)
    if org:
        repo_id, revision = f"{org}/{repo_id.split('/', 1)[1]}", None
    return repo_id, revision, os.environ.get(HUB_ENDPOINT_ENV) or None


def _delete_cached(path: Path) -> None:
    """Remove a cached Hub file: the snapshot link and the blob it points to."""
    forget_stamp(path)
    target = path.resolve()
    for p in {path, target}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _http_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP client huggingface_hub uses (httpx2, httpx or requests by release)."""
    errors = []
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        errors.append(getattr(mod, "HTTPError", None) or getattr(mod, "RequestException"))
    return tuple(errors)


def _hub_file(entry: WeightEntry, cache_dir: str | Path | None) -> Path:
    """The cached or downloaded Hub file of ``entry``. When the endpoint cannot be reached (checked once, in a few
    seconds, before huggingface_hub's own retries) only the cache is used."""
    repo_id, revision, endpoint = hub_location(entry)
    filename = entry.hub.get("filename", "model.safetensors")
    where = f"{repo_id}@{revision or 'main'}/{filename}"
    why = OFFLINE_WHY if is_offline() else unreachable_reason(endpoint or hf_constants.ENDPOINT)
    try:
        return Path(hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            local_files_only=why is not None,
            library_name="icmlm_zoo",
            library_version=installed_version(),
        ))
    except LocalEntryNotFoundError:
        raise hub_unreachable(entry, where, why or "the Hub cannot be reached") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise IcmlmZooError(
            f"{entry.name}: {where} is not on the Hub ({type(e).__name__}). If you use a mirror "
            f"({HUB_ORG_ENV}/{HUB_ENDPOINT_ENV}/HF_ENDPOINT), check that it holds this repo.") from None
    except (OSError, *_http_errors()) as e:  # interrupted body, size mismatch, HTTP 5xx
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise IcmlmZooError(
            f"{entry.name}: downloading {where} failed ({type(e).__name__}: {reason}). Nothing incomplete was "
            f"kept in the cache; run the same command again to retry. If it keeps failing, check the network or "
            f"the endpoint ({endpoint or hf_constants.ENDPOINT}).") from None


def download_verified(entry: WeightEntry, cache_dir: str | Path | None = None) -> Path:
    """Download (or find in the cache) a published weight file and check its sha256 against the manifest.

    A mismatch deletes the cached file, so that the next call downloads it again, and raises.
    """
    path = _hub_file(entry, cache_dir)
    repo_id, _, _ = hub_location(entry)
    filename = entry.hub.get("filename", "model.safetensors")
    expected = entry.hub["sha256"]
    actual = verified_sha256(path)
    if actual != expected:
        size = path.stat().st_size
        _delete_cached(path)
        raise WeightsIntegrityError(
            f"{entry.name}: {repo_id}/{filename} has sha256 {actual} ({size} bytes) but the manifest records "
            f"{expected} ({entry.hub.get('bytes')} bytes). The bad cached copy was deleted: run again to "
            f"download it afresh. If it fails again, the file on the Hub is not the one the manifest pins; "
            f"report it and do not use that file."
        )
    return path
