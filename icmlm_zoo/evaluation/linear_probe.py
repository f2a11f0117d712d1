"""Linear probe on frozen features for any ImageFolder (the ImageNet linear-classification protocol).

The backbone is frozen (eval mode, no gradients); a linear layer on the pooled features of one stage is trained
with SGD (momentum 0.9) and a per-iteration cosine schedule, on random-resized-crop + flip augmentation.
Top-1/top-5 on the validation folder. A checkpoint is written after every epoch; ``resume=True`` continues
exactly (per-epoch seeding makes an interrupted run end with the same head as an uninterrupted one).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from icmlm_zoo.backbone_factory import load_backbone
from icmlm_zoo.transforms import create_image_transform

from .features import PooledFeatures, resolve_stage
from .reporting import markdown_table

CHECKPOINT = "linear_probe.pt"


@dataclass
class ProbeConfig:
    """Hyper-parameters of the probe (defaults follow common ImageNet linear-eval settings, scaled down)."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    stage: int | str = -1
    image_size: int | None = None
    min_scale: float = 0.08
    seed: int = 0
    num_workers: int = 0


def find_splits(data: str | Path, val_data: str | Path | None = None) -> tuple[Path, Path]:
    """``data/train`` + ``data/val`` (ImageNet layout), or ``data`` + ``val_data``."""
    data = Path(data)
    if val_data is not None:
        return data, Path(val_data)
    if (data / "train").is_dir() and (data / "val").is_dir():
        return data / "train", data / "val"
    raise FileNotFoundError(f"{data}: expected an ImageFolder layout {data}/train/<class>/*.jpg and "
                            f"{data}/val/<class>/*.jpg, or pass --val-data VAL_FOLDER")


def accuracy(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Top-k accuracies (k clipped to the number of classes), as fractions."""
    out = []
    for k in ks:
        k = min(k, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        out.append(float((top == target[:, None]).any(dim=1).float().mean()))
    return out


@torch.no_grad()
def evaluate(features: nn.Module, head: nn.Module, loader: DataLoader, device="cpu") -> dict[str, float]:
    """Top-1/top-5 and mean loss of ``head(features(x))`` over a loader."""
    head.eval()
    n, top1, top5, loss = 0, 0.0, 0.0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = head(features(x))
        a1, a5 = accuracy(logits, y)
        b = y.shape[0]
        n += b
        top1, top5 = top1 + a1 * b, top5 + a5 * b
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n}


def _train_epoch(features: nn.Module, head: nn.Linear, opt, sched, train_set, cfg: ProbeConfig, epoch: int,
                 device: str, progress: bool) -> float:
    """One epoch of the linear layer on frozen features; returns the mean training loss. Augmentation and order
    depend only on (seed, epoch), so a resumed probe ends where an uninterrupted one does."""
    torch.manual_seed(cfg.seed * 1000 + epoch)
    random.seed(cfg.seed * 1000 + epoch)  # timm's random crop draws from Python's generator
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers)
    head.train()
    total, n = 0.0, 0
    for x, y in tqdm(loader, desc=f"linear probe epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress):
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(head(features(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total, n = total + loss.item() * y.shape[0], n + y.shape[0]
    return total / max(n, 1)


def run_linear_probe(model: str, data: str | Path, out_dir: str | Path, *, val_data: str | Path | None = None,
                     arch: str | None = None, config: ProbeConfig | None = None, resume: bool = False,
                     device: str = "cpu", progress: bool = True, stop_after_epoch: int | None = None) -> dict:
    """Train (or resume) the probe, evaluate, and return the result dict; checkpoints go to ``out_dir``.

    ``stop_after_epoch`` ends this call early (as an interruption would); ``resume=True`` continues later.
    """
    cfg = config or ProbeConfig()
    train_dir, val_dir = find_splits(data, val_data)
    loaded = load_backbone(model, arch=arch, device=device, image_size=cfg.image_size)
    size = cfg.image_size or loaded.data_config["input_size"][-1]
    train_set = ImageFolder(str(train_dir), create_image_transform(loaded.data_config, training=True, image_size=size,
                                                                    scale_min=cfg.min_scale, hflip=True))
    val_set = ImageFolder(str(val_dir), loaded.transform)
    if train_set.classes != val_set.classes:
        raise ValueError(f"train classes {train_set.classes} differ from val classes {val_set.classes}")
    features = PooledFeatures(loaded.model, cfg.stage).to(device).eval()
    dim = int(features(torch.zeros(1, 3, size, size, device=device)).shape[1])
    torch.manual_seed(cfg.seed)
    head = nn.Linear(dim, len(train_set.classes)).to(device)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, start, history = out / CHECKPOINT, 0, []
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["num_classes"] != len(train_set.classes) or ckpt["dim"] != dim:
            raise ValueError(f"{ckpt_path} was made for another model/data set "
                             f"({ckpt['num_classes']} classes, dim {ckpt['dim']}); use a new --out")
        head.load_state_dict(ckpt["head"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, history = ckpt["epoch"], ckpt["history"]
    elif ckpt_path.is_file():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it or choose another --out")
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    for epoch in range(start, cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)):
        train_loss = _train_epoch(features, head, opt, sched, train_set, cfg, epoch, device, progress)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "lr": sched.get_last_lr()[0]})
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"head": head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": epoch + 1, "history": history, "num_classes": len(train_set.classes), "dim": dim}, tmp)
        tmp.replace(ckpt_path)
    metrics = evaluate(features, head, val_loader, device)
    features.remove()
    return {"task": "linear_probe", "model": model, "arch": loaded.name,
            "stage": resolve_stage(loaded.model, cfg.stage), "classes": train_set.classes, "n_train": len(train_set),
            "n_val": len(val_set), "feature_dim": dim,
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "history": history, **metrics}


def markdown(result: dict) -> str:
    """Human-readable summary of a probe result."""
    row = (f"{100 * result['top1']:.2f}", f"{100 * result['top5']:.2f}", f"{result['loss']:.4f}",
           len(result["classes"]), result["n_train"], result["n_val"], result["config"]["epochs"])
    lines = [f"# Linear probe — `{result['model']}` ({result['stage']})", "",
             *markdown_table(("top-1 (%)", "top-5 (%)", "val loss", "classes", "train", "val", "epochs"), [row],
                             "rrrrrrr")]
    return "\n".join(lines) + "\n"
