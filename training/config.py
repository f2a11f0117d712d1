"""Configuration: defaults, YAML presets, ``key=value`` overrides and strict key checking.

A config is a nested dict. Every key must exist in :data:`DEFAULTS`; an unknown key is an error that names
the valid keys at that level. Presets live in ``training/presets/*.yaml`` and are shipped with the package.
"""
from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_schema import SCHEMA, ConfigError, Spec, validate

__all__ = ["DEFAULTS", "ConfigError", "list_presets", "load_preset", "load_config", "apply_overrides",
           "merge", "validate", "dump", "SCHEMA", "Spec"]


DEFAULTS: dict[str, Any] = {
    "run": {
        "name": "run",            # run folder prefix: runs/<name>-<timestamp>
        "seed": 0,
        "device": "auto",         # auto | cpu | cuda
        "retain_memory": "auto",  # keep freed memory in the process (glibc): auto = on for CPU training
        "log_every": 10,          # steps between log lines / CSV rows
        "ckpt_every": 500,        # steps between checkpoints (one is always written at the end)
        "keep_last": 3,           # checkpoints kept on disk
        "stop_after": None,       # stop (with a checkpoint) after this global step, e.g. to test resume
        "max_failure_rate": 0.05,  # stop when this fraction of samples failed to load ...
        "failure_min_samples": 200,  # ... once at least this many samples were seen
        "progress": True,         # tqdm progress bar
        "tensorboard": True,
        "export": {"model": None, "tag": None},  # export the backbone at the end (see `icmlm-train export`)
    },
    "data": {
        "kind": "synthetic",      # synthetic | coco | vg | pairs | webdataset
        "num_workers": 0,
        "pin_memory": "auto",     # auto (= on CUDA) | true | false
        "prefetch_factor": 2,     # batches prefetched per worker
        "image_size": 96,         # training crop size
        "scale_min": 0.7,         # RandomResizedCrop lower scale bound (1.0 = plain resize)
        "hflip": False,           # off by default: captions say "left"/"right"
        "eval_crop_pct": None,    # eval resize = image_size / crop_pct, centre crop; None = backbone cfg
        "synthetic": {"num_images": 4000, "image_size": 96, "seed": 0,
                      "val_images": 400, "val_seed": 10000},
        "coco": {"captions": None, "instances": None, "images": None,
                 "val_captions": None, "val_instances": None, "val_images": None},
        "vg": {"regions": None, "images": None, "image_data": None, "min_region_frac": 0.0},
        "pairs": {"file": None, "image_root": None, "val_file": None},
        # epoch_samples: samples per process per epoch; shuffle: sample shuffle buffer; shard_shuffle: true
        # (permute the shard list each epoch) | N (shard shuffle buffer) | false; resampled: draw shards with
        # replacement per worker (open_clip's --dataset-resampled) instead of splitting them
        "webdataset": {"urls": None, "epoch_samples": 10000, "shuffle": 1000, "shard_shuffle": True,
                       "resampled": False, "image_keys": "jpg;jpeg;png;webp", "caption_keys": "txt;caption"},
    },
    "text": {
        "model": "minilm",        # "minilm" = the embedded MiniLM; else any BERT-style name or local path
        "max_length": 40,         # longer captions are truncated (and counted)
        "mlm_head": "auto",       # auto | pretrained | tied
        "precision": "auto",      # frozen encoder dtype: auto (AMP dtype, else bf16 where native) | fp32 | bf16 | fp16
        "cache_size": 0,          # LRU cache of encoder outputs per (ids, mask) row, in captions; 0 = off
    },
    "tags": {
        "file": None,             # tag vocabulary file (from `icmlm-train build-tags`)
        "source": "mine",         # file | mine (mine from the training captions at start) | labels
        "pos": ["NOUN", "ADJ", "VERB"],
        "min_count": 5,
        "top_k": 1000,
        "max_captions": 2000,     # captions read when mining at start
    },
    "masking": {
        "strategy": "tags",       # tags | random (BERT-style ablation)
        "k": 1,                   # tag words masked per caption (all their wordpieces)
        "no_tag": "skip",         # skip | random_word: what to do with captions without a tag word
        "random_prob": 0.15,
        "together": "none",       # none | pos: also mask the caption's other tag words of a chosen word's POS
    },
    "model": {
        "backbone": "icmlm_resnet_tiny",
        "heads": ["attfc", "tp"],  # any of attfc, tfm, tp (at least one)
        "channels_last": False,
        "logits": "masked",       # masked | all (MLM logits at every position: the slow baseline, P2)
        "fusion_impl": "fast",    # fast | reference: same parameters and results, see training/heads/attention.py
        "tp": {"hidden": 0, "dropout": 0.0, "weight": 1.0, "targets": "caption",  # targets: caption | labels
               "reduction": "sum"},  # BCE summed over tags (mean over images) | mean (over tags too)
        "attfc": {"heads": 4, "hidden": 1024, "dropout": 0.1},
        "tfm": {"layers": 2, "heads": 4, "ff": 1024, "dropout": 0.1, "max_grid": 32},
    },
    "optim": {
        "lr": 1.0e-3,
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        "warmup_steps": 50,
        "min_lr_ratio": 0.01,     # cosine decays to lr * min_lr_ratio
        "grad_clip": 1.0,         # 0 = off
        "accum_steps": 1,
        "impl": "auto",           # AdamW kernel: auto (fused where supported) | fused | foreach | loop
        "lr_mult": {"backbone": 1.0, "fusion": 1.0, "mlm_head": 1.0, "tp": 1.0},  # lr of each part = lr * mult
    },
    "train": {
        "batch_size": 32,         # per process
        "epochs": 1,
        "max_steps": None,        # optimizer steps in total; default: epochs * steps per epoch
        "amp": "none",            # none | bf16 | fp16
        "max_nonfinite_steps": 5,  # stop after this many optimizer steps in a row with a NaN/Inf loss or gradient
        "max_idle_samples": 5000,  # stop when this many samples in a row give no optimizer step
    },
    "eval": {
        "at_end": True,
        "every": 0,               # steps between evaluations (0 = only at the end)
        "max_batches": 50,
    },
}


def merge(base: dict, update: dict, *, path: str = "") -> dict:
    """Return ``base`` updated recursively by ``update``; unknown keys raise :class:`ConfigError`."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in out:
            valid = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key '{where}'; valid keys{' under ' + path[:-1] if path else ''}: {valid}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}' is a section; give a mapping, not {value!r}")
            out[key] = merge(out[key], value, path=where + ".")
        else:
            out[key] = _coerce(value, out[key], where)
    return out


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """YAML reads ``1e-3`` as text: turn number-looking text into a number where numbers are expected."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        if isinstance(default, bool):
            return value
        if isinstance(default, int) and not isinstance(default, bool) and float(value).is_integer() and "." not in value and "e" not in value.lower():
            return int(value)
        if isinstance(default, (int, float)) or default is None:
            return float(value)
    return value


def list_presets() -> list[str]:
    """Names of the presets shipped in ``icmlm_zoo/training/presets`` (``training/presets`` in the repository)."""
    root = resources.files(__package__) / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def load_preset(name: str) -> dict:
    """Defaults updated by the preset ``name``."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(names)}")
    text = (resources.files(__package__) / "presets" / f"{name}.yaml").read_text()
    return merge(DEFAULTS, _read_yaml(text, f"preset {name}"))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value, e.g. optim.lr=3e-4")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) with strict key checking."""
    for item in overrides or []:
        keys, value = parse_override(item)
        update: Any = value
        for k in reversed(keys):
            update = {k: update}
        cfg = merge(cfg, update)
    return cfg


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> dict:
    """Resolve a config: defaults ← preset ← YAML file ← overrides; validated."""
    cfg = load_preset(preset) if preset else copy.deepcopy(DEFAULTS)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        cfg = merge(cfg, _read_yaml(path.read_text(), str(path)))
    cfg = apply_overrides(cfg, overrides or [])
    return validate(cfg)


def dump(cfg: dict) -> str:
    """YAML text of a config."""
    return yaml.safe_dump(cfg, sort_keys=False)
