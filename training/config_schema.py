"""The type and range of every config key (:data:`SCHEMA`, the same shape as the defaults) and
:func:`validate`, which checks a whole config at once and names the key that is wrong and what it expects."""
from __future__ import annotations

import math
from typing import Any

from .choices import AMP_MODES, FUSION_IMPLS, LOGITS_AT, OPTIM_IMPLS, TEXT_PRECISIONS

__all__ = ["ConfigError", "Spec", "SCHEMA", "validate"]


class ConfigError(ValueError):
    """A config file, preset or override is invalid."""


class Spec:
    """The expected type and range of one config value; :meth:`check` returns the (normalised) value or raises."""

    def __init__(self, kind: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, none: bool = False, choices: tuple = (), item: "Spec | None" = None,
                 length: tuple[int, int | None] = (0, None)) -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.none, self.choices, self.item, self.length = none, choices, item, length

    def describe(self) -> str:
        if self.kind == "choice":
            d = "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
        elif self.kind == "list":
            n, m = self.length
            count = f"{n}" if n == m else f"at least {n}" if m is None else f"{n} to {m}"
            d = f"a list of {count} values, each {self.item.describe()}"
        else:
            d = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a non-empty text",
                 "paths": "a path/URL or a list of them"}[self.kind]
            if self.lo is not None and self.hi is not None:
                d += f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            elif self.lo is not None:
                d += f" {'>' if self.lo_open else '>='} {self.lo:g}"
        return d + (" or null" if self.none else "")

    def check(self, v: Any) -> Any:
        if v is None and self.none:
            return v
        if self.kind == "choice":
            ok = any(v is c or (type(v) is type(c) and v == c) for c in self.choices)
        elif self.kind == "list":
            n, m = self.length
            ok = isinstance(v, list) and len(v) >= n and (m is None or len(v) <= m)
            if ok:
                v = [self.item.check(x) for x in v]
        elif self.kind == "bool":
            ok = isinstance(v, bool)
        elif self.kind == "str":
            ok = isinstance(v, str) and v.strip() != ""
        elif self.kind == "paths":
            ok = (isinstance(v, str) and v.strip() != "") or (
                isinstance(v, list) and bool(v) and all(isinstance(x, str) and x.strip() for x in v))
        else:
            if self.kind == "int" and isinstance(v, float) and v.is_integer():
                v = int(v)  # YAML reads 1e4 as a float
            types = (int,) if self.kind == "int" else (int, float)
            ok = isinstance(v, types) and not isinstance(v, bool) and math.isfinite(v)
            if ok and self.lo is not None:
                ok = v > self.lo if self.lo_open else v >= self.lo
            if ok and self.hi is not None:
                ok = v < self.hi if self.hi_open else v <= self.hi
        if not ok:
            raise _Bad(self)
        return v


class _Bad(Exception):
    def __init__(self, spec: Spec) -> None:
        self.spec = spec


class _Either(Spec):
    """A value that passes any of ``specs`` (the first that accepts it normalises it)."""

    def __init__(self, *specs: Spec) -> None:
        super().__init__("either")
        self.specs = specs

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def check(self, v: Any) -> Any:
        for s in self.specs:
            try:
                return s.check(v)
            except _Bad:
                pass
        raise _Bad(self)


def _i(lo: int | None = 0, hi: int | None = None, none: bool = False) -> Spec:
    return Spec("int", lo, hi, none=none)


def _f(lo: float | None = 0.0, hi: float | None = None, *, none: bool = False, lo_open: bool = False,
       hi_open: bool = False) -> Spec:
    return Spec("float", lo, hi, none=none, lo_open=lo_open, hi_open=hi_open)


def _c(*choices: Any) -> Spec:
    return Spec("choice", choices=choices)


_B, _S, _PATH = Spec("bool"), Spec("str"), Spec("str", none=True)
_P = _f(0.0, 1.0, hi_open=True)  # a dropout / probability-like fraction

SCHEMA: dict[str, Any] = {
    "run": {"name": _S, "seed": _i(0, 2**32 - 1), "device": _c("auto", "cpu", "cuda"),
            "retain_memory": _c("auto", True, False), "log_every": _i(1), "ckpt_every": _i(1), "keep_last": _i(0),
            "stop_after": _i(1, none=True), "max_failure_rate": _f(0.0, 1.0), "failure_min_samples": _i(0),
            "progress": _B, "tensorboard": _B, "export": {"model": _PATH, "tag": _PATH}},
    "data": {"kind": _c("synthetic", "coco", "vg", "pairs", "webdataset"), "num_workers": _i(0),
             "pin_memory": _c("auto", True, False), "prefetch_factor": _i(1), "image_size": _i(8), "scale_min":
             _f(0.0, 1.0, lo_open=True), "hflip": _B, "eval_crop_pct": _f(0.0, 1.0, lo_open=True, none=True),
             "synthetic": {"num_images": _i(1), "image_size": _i(8), "seed": _i(0), "val_images": _i(0),
                           "val_seed": _i(0)},
             "coco": dict.fromkeys(("captions", "instances", "images", "val_captions", "val_instances",
                                    "val_images"), _PATH),
             "vg": {"regions": _PATH, "images": _PATH, "image_data": _PATH, "min_region_frac": _f(0.0, 1.0)},
             "pairs": {"file": _PATH, "image_root": _PATH, "val_file": _PATH},
             "webdataset": {"urls": Spec("paths", none=True), "epoch_samples": _i(1), "shuffle": _i(0),
                            "shard_shuffle": _Either(_B, _i(1)), "resampled": _B, "image_keys": _S,
                            "caption_keys": _S}},
    "text": {"model": _S, "max_length": _i(4), "mlm_head": _c("auto", "pretrained", "tied"),
             "precision": _c(*TEXT_PRECISIONS), "cache_size": _i(0)},
    "tags": {"file": _PATH, "source": _c("file", "mine", "labels"), "pos": Spec("list", item=_S, length=(1, None)),
             "min_count": _i(1), "top_k": _i(1), "max_captions": _i(1)},
    "masking": {"strategy": _c("tags", "random"), "k": _i(1), "no_tag": _c("skip", "random_word"),
                "random_prob": _f(0.0, 1.0, lo_open=True), "together": _c("none", "pos")},
    "model": {"backbone": _S, "heads": Spec("list", item=_c("attfc", "tfm", "tp"), length=(1, 3)),
              "channels_last": _B, "logits": _c(*LOGITS_AT), "fusion_impl": _c(*FUSION_IMPLS),
              "tp": {"hidden": _i(0), "dropout": _P, "weight": _f(0.0), "targets": _c("caption", "labels"),
                     "reduction": _c("sum", "mean")},
              "attfc": {"heads": _i(1), "hidden": _i(1), "dropout": _P},
              "tfm": {"layers": _i(1), "heads": _i(1), "ff": _i(1), "dropout": _P, "max_grid": _i(1)}},
    "optim": {"lr": _f(0.0, lo_open=True), "weight_decay": _f(0.0),
              "betas": Spec("list", item=_f(0.0, 1.0, hi_open=True), length=(2, 2)), "warmup_steps": _i(0),
              "min_lr_ratio": _f(0.0, 1.0), "grad_clip": _f(0.0), "accum_steps": _i(1),
              "impl": _c(*OPTIM_IMPLS),
              "lr_mult": dict.fromkeys(("backbone", "fusion", "mlm_head", "tp"), _f(0.0))},
    "train": {"batch_size": _i(1), "epochs": _i(1), "max_steps": _i(1, none=True), "amp": _c(*AMP_MODES),
              "max_nonfinite_steps": _i(1), "max_idle_samples": _i(1)},
    "eval": {"at_end": _B, "every": _i(0), "max_batches": _i(1)},
}
"""The expected type and range of every key of :data:`DEFAULTS` (same shape)."""


def _check_tree(cfg: dict, schema: dict, path: str) -> None:
    for key, spec in schema.items():
        where = f"{path}{key}"
        if isinstance(spec, dict):
            if not isinstance(cfg.get(key), dict):
                raise ConfigError(f"config key '{where}' is a section; give a mapping, not {cfg.get(key)!r}")
            _check_tree(cfg[key], spec, where + ".")
            continue
        try:
            cfg[key] = spec.check(cfg.get(key))
        except _Bad:
            want = spec.describe().replace("one of", "choose one of", 1) if spec.kind == "choice" else \
                f"expected {spec.describe()}"
            raise ConfigError(f"{where}={cfg.get(key)!r} is not valid: {want}") from None


def validate(cfg: dict) -> dict:
    """Check every key against :data:`SCHEMA` (type and range) and the rules across keys; return ``cfg``.

    Runs before anything is written, so a refused config leaves no trace. Errors name the key and what is
    expected, e.g. ``train.batch_size='abc' is not valid: expected an integer >= 1``."""
    _check_tree(cfg, SCHEMA, "")
    heads = cfg["model"]["heads"]
    if len(set(heads)) != len(heads):
        raise ConfigError(f"model.heads={heads!r}: each head at most once")
    if "attfc" in heads and "tfm" in heads:
        raise ConfigError("model.heads: choose one MLM head (attfc or tfm), not both")
    return cfg
