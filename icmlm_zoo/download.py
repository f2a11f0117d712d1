"""Streamed download of a plain URL to a file: progress bar, temp file, atomic move, sha256 on the fly."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import IcmlmZooError


def download_url(url: str, dest: str | Path, *, progress: bool = True, timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` atomically; return the sha256 of the bytes written.

    The file appears at ``dest`` only once complete, so an interrupted download never leaves a truncated file.
    """
    import requests
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, requests.get(url, stream=True, timeout=timeout) as resp:
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
            raise IcmlmZooError(f"Downloading {url} stopped after {written} of {total} bytes; run again.")
        os.replace(tmp, dest)
    except requests.RequestException as e:
        raise IcmlmZooError(f"Downloading {url} failed: {e}. Check the network or download the file by hand and "
                            f"convert it with `icmlm-zoo convert FILE --model NAME --out DIR`.") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return h.hexdigest()
