"""Export a run's trained backbone as a zoo weight folder (safetensors + timm config.json + model card)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import timm
import torch

from icmlm_zoo.convert import save_weight_folder

from . import checkpoint as ckpt
from .backbones import ensure_registered
from .data.transforms import read_run_preprocessing
from .run_folder import read_run_config

__all__ = ["backbone_state_dict", "export_run", "verify_export"]


def backbone_state_dict(model_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.`` part of a trained ICMLM state dict, prefix removed."""
    sd = {k[len("backbone."):]: v for k, v in model_sd.items() if k.startswith("backbone.")}
    if not sd:
        raise ValueError("the checkpoint holds no backbone weights (no 'backbone.' keys)")
    return sd


def export_run(run_dir: str | Path, model_name: str | None, tag: str, out_dir: str | Path, *,
               checkpoint: str = "last", overwrite: bool = False) -> Path:
    """Write the weight folder for ``run_dir``'s backbone into ``out_dir`` (refused if it holds weights, unless
    ``overwrite``).

    ``model_name`` defaults to the run's backbone; a different name is accepted only if the weights load
    strictly into it. The model card carries the recipe (config), data and the run's eval metrics.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    model_name = model_name or cfg.model.backbone
    ensure_registered(model_name)
    path = ckpt.resolve_checkpoint(run_dir, checkpoint)
    state = ckpt.load_checkpoint(path)  # refuses damaged checkpoints and NaN/Inf weights
    sd = backbone_state_dict(state["model"])
    bad = ckpt.nonfinite_tensors(sd)
    if bad:  # nothing is written: no NaN model.safetensors
        raise ValueError(f"{path} holds non-finite (NaN/Inf) backbone weights ({', '.join(bad[:3])}); export "
                         f"refused: choose an earlier checkpoint with --checkpoint STEP")
    probe = timm.create_model(model_name, pretrained=False, num_classes=0)
    missing, unexpected = probe.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"the run trained {cfg.model.backbone!r}; its weights do not fit {model_name!r} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]}); use --model {cfg.model.backbone}")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    ev = summary.get("eval") or {}
    data_desc = {"kind": cfg.data.kind, **dataclasses.asdict(getattr(cfg.data, cfg.data.kind))}
    metrics = [{"name": f"masked_word_{k}", "value": round(float(ev[k]), 4), "protocol": "icmlm-train eval (val split)",
                "dataset": cfg.data.kind, "provenance": f"measured by icmlm-train, {path.name}"}
               for k in ("top1", "top5", "visual_top1") if k in ev]
    pre = read_run_preprocessing(run_dir, cfg)  # what the run trained and evaluated with
    recipe = {"method": "ICMLM", "heads": cfg.model.heads, "text_model": cfg.text.model, "steps": state["step"],
              "batch_size": cfg.train.batch_size, "optim": dataclasses.asdict(cfg.optim),
              "masking": dataclasses.asdict(cfg.masking), "checkpoint": path.name}
    out = save_weight_folder(sd, model_name, out_dir, tag=tag, overwrite=overwrite,
                             extra_meta={"recipe": recipe, "data": data_desc, "metrics": metrics, "preprocessing": pre,
                                         "description": f"ICMLM ({'+'.join(cfg.model.heads)}) trained by icmlm-train"})
    return Path(out)


def verify_export(out_dir: str | Path, model_name: str,
                  reference: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Reload the exported folder through ``timm.create_model(..., pretrained=True)`` with a file overlay and,
    given the reference backbone state dict, check every tensor is equal."""
    ensure_registered(model_name)
    f = Path(out_dir) / "model.safetensors"
    m = timm.create_model(model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(f)))
    if reference is not None:
        got = m.state_dict()
        bad = [k for k, v in reference.items() if k not in got or not torch.equal(got[k].cpu(), v.cpu())]
        if bad:
            raise AssertionError(f"reloaded weights differ from the trained backbone at {bad[:5]}")
    return m.eval()
