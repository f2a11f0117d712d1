"""Streamed download of a plain URL to a file: progress bar, ``.part`` file, length check, atomic move, sha256.

``HF_HUB_OFFLINE=1`` (read at call time, as well as huggingface_hub's own flag) refuses every download.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import IcmlmZooError, not_cached_error

_TRUE = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids network access, now."""
    if any((os.environ.get(k) or "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_parts(dest: Path) -> None:
    """Delete ``dest``'s ``.part`` files left by downloads whose process is gone (killed mid-download)."""
    for part in dest.parent.glob(f"{dest.name}.*.part"):
        pid = part.name[len(dest.name) + 1:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)


def download_url(url: str, dest: str | Path, *, progress: bool = True, timeout: float = 30.0,
                 name: str | None = None) -> str:
    """Download ``url`` to ``dest`` atomically; return the sha256 of the bytes written.

    The bytes go to ``dest.<pid>.<n>.part`` and are moved to ``dest`` only once complete (as many bytes as the
    server's ``Content-Length`` announced), so an interrupted download never leaves a file that could be reused.
    ``name`` (the weight's name) is used in the error raised when offline.
    """
    dest = Path(dest)
    if is_offline():
        raise not_cached_error(name or dest.name, url, "HF_HUB_OFFLINE is set: no download is attempted")
    import requests
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest)
    h = hashlib.sha256()
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
    try:
        with open(tmp, "xb") as out, requests.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise IcmlmZooError(f"Downloading {url} failed: HTTP {resp.status_code} {resp.reason}.")
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            written = out.tell()
        if total is not None and written != total:
            raise IcmlmZooError(f"Downloading {url} stopped after {written} of {total} bytes; nothing was kept, "
                                f"run again.")
        os.replace(tmp, dest)
    except requests.RequestException as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise IcmlmZooError(f"Downloading {url} failed ({reason}); nothing was kept, run again. If it keeps "
                            f"failing, check the network, or download the file by hand and convert it with "
                            f"`icmlm-zoo convert FILE --model NAME --out DIR`.") from e
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()
