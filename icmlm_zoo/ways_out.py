"""The error for weights that are neither in the cache nor reachable, naming every way out with real paths."""
from __future__ import annotations

from huggingface_hub import constants as hf_constants

from .cache import CACHE_ENV, cache_root, download_path
from .download import OFFLINE_WHY
from .errors import WeightsUnreachableError
from .manifest import WeightEntry

__all__ = ["OFFLINE_WHY", "hub_unreachable", "original_unreachable"]


def original_unreachable(entry: WeightEntry, why: str) -> WeightsUnreachableError:
    """For a convertible weight: prefetch elsewhere and copy the zoo cache, put a hand-downloaded original where it
    is picked up, or convert it and load the folder."""
    url = entry.source["url"]
    return WeightsUnreachableError(
        f"{entry.name}: {url} is neither in the cache nor reachable ({why}). Ways out: "
        f"(1) on a machine with network run `icmlm-zoo download {entry.name}`, copy that machine's zoo cache "
        f"({CACHE_ENV}, default ~/.cache/icmlm_zoo) to {cache_root()} here ({CACHE_ENV} moves it), then load with "
        f"HF_HUB_OFFLINE=1; "
        f"(2) download the file by hand and put it at {download_path(url)}: the next load checks it and converts "
        f"it (or pass it as pretrained_cfg_overlay=dict(file='FILE.pth')); "
        f"(3) `icmlm-zoo convert FILE.pth --model {entry.model} --tag {entry.tag} --out DIR`, then "
        f"timm.create_model('local-dir:DIR', pretrained=True).")


def hub_unreachable(entry: WeightEntry, where: str, why: str) -> WeightsUnreachableError:
    """For a published weight: prefetch elsewhere and copy the Hugging Face cache, or load a hand-downloaded file."""
    filename = (entry.hub or {}).get("filename", "model.safetensors")
    return WeightsUnreachableError(
        f"{entry.name}: {where} is neither in the cache nor reachable ({why}). Ways out: "
        f"(1) on a machine with network run `icmlm-zoo download {entry.name}`, copy that machine's Hugging Face "
        f"cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub) to {hf_constants.HF_HUB_CACHE} here (HF_HUB_CACHE "
        f"moves it), then load with HF_HUB_OFFLINE=1; "
        f"(2) download {where} by hand and load it with timm.create_model('{entry.name}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='{filename}')), or put it in a folder with its config.json and use "
        f"'local-dir:DIR'.")
