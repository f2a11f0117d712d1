"""Streamed download of a plain URL to a file: progress bar, ``.part`` file, length check, atomic move, sha256;
and a quick check that a host can be reached at all, so that no download waits on a missing network.

``HF_HUB_OFFLINE=1`` (read at call time, see :func:`icmlm_zoo.cache.is_offline`) refuses every download.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from .cache import is_offline
from .errors import IcmlmZooError

#: seconds allowed to resolve a host and open a connection to it (all together)
CONNECT_TIMEOUT = 4.0
OFFLINE_WHY = "HF_HUB_OFFLINE is set: no download is attempted"
READ_TIMEOUT = 30.0


class UnreachableError(IcmlmZooError):
    """A host cannot be resolved, refuses the connection, or does not answer in time (nothing was downloaded)."""


def _target(url: str) -> tuple[str, int]:
    """``(host, port)`` a request for ``url`` connects to: its proxy when the environment names one for it."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default


def _resolve(host: str, port: int, timeout: float) -> list | str:
    """``getaddrinfo`` with a deadline (it has none of its own: a missing name server can hold it ~20 s);
    the addresses, or why there are none."""
    found: dict = {}

    def run() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            found["error"] = e

    worker = threading.Thread(target=run, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"the name {host} could not be resolved within {timeout:g} s"
    if "error" in found:
        return f"the name {host} cannot be resolved: no network or no DNS"
    return found["addresses"]


def unreachable_reason(url: str, timeout: float | None = None) -> str | None:
    """None when a connection to ``url``'s host (or its proxy) opens within ``timeout`` seconds
    (:data:`CONNECT_TIMEOUT`); else why not, in words. One try, no retries."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    host, port = _target(url)
    addresses = _resolve(host, port, timeout)
    if isinstance(addresses, str):
        return addresses
    reason = f"{host}:{port} has no address"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None
        except ConnectionRefusedError:
            reason = f"{host}:{port} refused the connection"
        except TimeoutError:
            reason = f"{host}:{port} did not answer within {timeout:g} s"
        except OSError as e:
            reason = f"{host}:{port} cannot be reached ({e.strerror or type(e).__name__})"
    return reason


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


def download_url(url: str, dest: str | Path, *, progress: bool = True, timeout: float = READ_TIMEOUT) -> str:
    """Download ``url`` to ``dest`` atomically; return the sha256 of the bytes written.

    The bytes go to ``dest.<pid>.<n>.part`` and are moved to ``dest`` only once complete (as many bytes as the
    server's ``Content-Length`` announced), so an interrupted download never leaves a file that could be reused.
    Raises :class:`UnreachableError` at once when offline (:func:`icmlm_zoo.cache.is_offline`) or when the host
    cannot be reached (:func:`unreachable_reason`).
    """
    import requests  # only a download needs it: importing it would cost every `import icmlm_zoo` ~0.1 s

    dest = Path(dest)
    reason = OFFLINE_WHY if is_offline() else unreachable_reason(url)
    if reason:
        raise UnreachableError(reason)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest)
    h = hashlib.sha256()
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
    try:
        with open(tmp, "xb") as out, requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, timeout)) as resp:
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
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise IcmlmZooError(f"Downloading {url} failed ({type(e).__name__}: {reason}); nothing was kept, run "
                            f"again.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()
