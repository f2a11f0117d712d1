"""Where the zoo keeps its own files (downloads of original checkpoints, converted weights, hash stamps)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_ENV = "ICMLM_ZOO_CACHE"


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


def verified_sha256(path: str | Path) -> str:
    """sha256 of ``path``, reusing a stamp recorded when this exact file (size, mtime, inode) was hashed."""
    path = Path(path).resolve()
    stamps_path = _stamp_file()
    try:
        stamps = json.loads(stamps_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    stamp = stamps.get(str(path))
    fingerprint = _fingerprint(path)
    if stamp and stamp["fingerprint"] == fingerprint:
        return stamp["sha256"]
    digest = sha256_file(path)
    stamps[str(path)] = {"fingerprint": fingerprint, "sha256": digest}
    try:
        stamps_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamps_path.with_name(f"verified.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stamps))
        os.replace(tmp, stamps_path)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def forget_stamp(path: str | Path) -> None:
    """Drop the hash stamp of ``path`` (after deleting a bad file)."""
    stamps_path = _stamp_file()
    try:
        stamps = json.loads(stamps_path.read_text())
    except (OSError, ValueError):
        return
    if stamps.pop(str(Path(path).resolve()), None) is not None:
        stamps_path.write_text(json.dumps(stamps))
