"""Shared builders for the zoo tests: tiny weights, manifests with extra entries, Hub repos."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

PRE = {"input_size": [3, 64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_pct": 1.0,
       "interpolation": "bicubic"}


def tiny_state_dict(seed: int = 0, model: str = "icmlm_resnet_tiny") -> dict[str, torch.Tensor]:
    """A randomly initialised (but seeded, with non-trivial BN stats) state dict of a registered model."""
    import timm

    torch.manual_seed(seed)
    m = timm.create_model(model, pretrained=False)
    sd = m.state_dict()
    for k, v in sd.items():
        if k.endswith("running_mean"):
            v.normal_()
        elif k.endswith("running_var"):
            v.uniform_(0.5, 2.0)
    return sd


def safetensors_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in sd.items()})


def write_manifest(path: Path, entries: list[dict]) -> Path:
    """The shipped manifest plus ``entries``, written to ``path``."""
    from icmlm_zoo.manifest import SHIPPED_MANIFEST

    data = json.loads(SHIPPED_MANIFEST.read_text())
    data["weights"].extend(entries)
    path.write_text(json.dumps(data, indent=2))
    return path


def published_entry(model: str, tag: str, repo: str, revision: str, data: bytes) -> dict:
    return {
        "model": model, "tag": tag, "status": "published", "description": "test weights",
        "pretraining": {"method": "ICMLM_att-fc", "dataset": "synthetic", "preset": "demo"},
        "preprocessing": PRE, "license": "bsd-3-clause", "source": None, "converter": None, "metrics": [],
        "hub": {"repo": repo, "revision": revision, "filename": "model.safetensors",
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
    }


def convertible_entry(model: str, tag: str, url: str, sha256: str | None) -> dict:
    """A convertible entry; ``sha256=None`` gives a source with no published hash (pinned on first use)."""
    source = {"url": url, "sha256": sha256, "format": "naver_icmlm", "trunk_key": "cnn"}
    if sha256 is None:
        source["integrity"] = "pin-on-first-use"
    return {
        "model": model, "tag": tag, "status": "convertible", "description": "test original checkpoint",
        "pretraining": {"method": "ICMLM_att-fc", "dataset": "synthetic", "preset": "demo"},
        "preprocessing": PRE, "license": "unknown", "hub": None, "metrics": [],
        "source": source, "converter": "naver_icmlm",
    }


def naver_checkpoint(sd: dict[str, torch.Tensor]) -> dict:
    """A checkpoint in the NAVER release's shape: trunk under 'cnn' with DataParallel prefixes, plus text parts."""
    return {
        "cnn": {f"module.{k}": v.clone() for k, v in sd.items()},
        "fc": {"weight": torch.randn(8, 4)},
        "tp_head": {"module.weight": torch.randn(10, 256)},
        "epoch": 5,
        "args": {"arch": "resnet50", "lr": 0.1},
    }


def assert_same_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


def refused_port() -> int:
    """A loopback port nothing listens on: bound, then closed (a connection to it is refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    """``torch.save`` bytes of a NAVER-format checkpoint holding ``sd`` as its trunk."""
    import io

    buf = io.BytesIO()
    torch.save(naver_checkpoint(sd), buf)
    return buf.getvalue()


def assert_one_exception(err: BaseException) -> None:
    """``err`` would print as one traceback: no cause, no context shown."""
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), repr(err.__context__)


@dataclass(frozen=True)
class Served:
    """Test weights put on the loopback Hub stand-in (``tests/fakehub.py``), with the manifest entry listing them."""

    sd: dict[str, torch.Tensor]
    data: bytes
    entry: dict
    repo: str | None = None  # published weights: the Hub repo and its commit
    revision: str | None = None
    name: str | None = None  # an original checkpoint: its file name and plain URL
    url: str | None = None


def publish_tiny(fake_hub, seed: int, prefix: str) -> Served:
    """A tiny trunk's weights committed to the Hub stand-in as ``model.safetensors`` in a fresh repo
    ``icmlm-test/PREFIX-…``, listed as ``icmlm_resnet_tiny.hubtest``."""
    sd = tiny_state_dict(seed=seed)
    data = safetensors_bytes(sd)
    repo = f"icmlm-test/{prefix}-{os.urandom(4).hex()}"
    revision = fake_hub.commit(repo, {"model.safetensors": data})
    return Served(sd, data, published_entry("icmlm_resnet_tiny", "hubtest", repo, revision, data), repo=repo,
                  revision=revision)


def serve_original(fake_hub, seed: int, prefix: str) -> Served:
    """A tiny trunk as a NAVER-format checkpoint served at a plain URL of the stand-in (``PREFIX-….pth``), listed
    as ``icmlm_resnet_tiny.orig`` with no published hash (pinned on first use)."""
    sd = tiny_state_dict(seed=seed)
    data = checkpoint_bytes(sd)
    name = f"{prefix}-{os.urandom(4).hex()}.pth"
    fake_hub.static[name] = data
    url = f"{fake_hub.url}/static/{name}"
    return Served(sd, data, convertible_entry("icmlm_resnet_tiny", "orig", url, None), name=name, url=url)
