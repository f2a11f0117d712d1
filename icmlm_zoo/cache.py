"""Where the zoo keeps its own files (downloads of original checkpoints, converted weights, hash stamps, pins).

Layout under :func:`cache_root`: ``downloads/NAME`` (original checkpoints) with ``downloads/NAME.pin.json`` (the
sha256 pinned on first use for a source with no published hash), ``converted/MODEL.TAG/`` (converted weights and
their ``integrity.json``) and ``verified.json`` (size/mtime/inode stamps that let a warm load skip re-hashing).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

CACHE_ENV = "ICMLM_ZOO_CACHE"
_TRUE = {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set to 1/true/yes/on (any case), read now: no download is to be tried."""
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE


def cache_root() -> Path:
    """``$ICMLM_ZOO_CACHE``, else ``$XDG_CACHE_HOME/icmlm_zoo``, else ``~/.cache/icmlm_zoo``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "icmlm_zoo"


def sha256_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _stamp_file() -> Path:
    return cache_root() / "verified.json"


def _fingerprint(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _read_stamps() -> dict:
    try:
        return json.loads(_stamp_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically; a read-only cache is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(3).hex()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def verified_sha256(path: str | Path) -> str:
    """sha256 of ``path``, reusing a stamp recorded when this exact file (size, mtime, inode) was hashed."""
    path = Path(path).resolve()
    stamps = _read_stamps()
    stamp = stamps.get(str(path))
    fingerprint = _fingerprint(path)
    if stamp and stamp["fingerprint"] == fingerprint:
        return stamp["sha256"]
    digest = sha256_file(path)
    stamps[str(path)] = {"fingerprint": fingerprint, "sha256": digest}
    _write_json(_stamp_file(), stamps)
    return digest


def record_stamp(path: str | Path, digest: str) -> None:
    """Record that ``path`` as it is now has sha256 ``digest`` (just computed while writing it)."""
    path = Path(path).resolve()
    stamps = _read_stamps()
    stamps[str(path)] = {"fingerprint": _fingerprint(path), "sha256": digest}
    _write_json(_stamp_file(), stamps)


def forget_stamp(path: str | Path) -> None:
    """Drop the hash stamp of ``path`` (after deleting a bad file)."""
    stamps = _read_stamps()
    if stamps.pop(str(Path(path).resolve()), None) is not None:
        _write_json(_stamp_file(), stamps)


def download_path(url: str) -> Path:
    """Where the original file downloaded from ``url`` is kept."""
    return cache_root() / "downloads" / url.rstrip("/").rsplit("/", 1)[-1]


def pin_path(url: str) -> Path:
    """The pin record of ``url``: next to its download, and kept when the download is deleted."""
    original = download_path(url)
    return original.with_name(original.name + ".pin.json")


def read_pin(url: str) -> dict | None:
    """The pin recorded for ``url`` (``{url, sha256, bytes, pinned_at}``), or None when it was never pinned."""
    try:
        pin = json.loads(pin_path(url).read_text())
    except (OSError, ValueError):
        return None
    if pin.get("url") != url or not isinstance(pin.get("sha256"), str):
        return None
    return pin


def write_pin(url: str, sha256: str, size: int) -> dict:
    """Pin ``url`` to ``sha256`` unless it is pinned already (the first digest seen wins); returns the pin."""
    existing = read_pin(url)
    if existing:
        return existing
    pin = {"url": url, "sha256": sha256, "bytes": size,
           "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(pin_path(url), pin)
    return pin
