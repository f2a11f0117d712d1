"""The config's sections as typed dataclasses: each key's default, its type and range (a :class:`Spec`) and what
it means, written once. :data:`DEFAULTS` (the nested dict presets and ``--set`` overrides merge into) and
:data:`SCHEMA` (what :func:`~icmlm_zoo.training.config.validate` checks) are derived from them, and
:func:`sections` turns a validated config into a :class:`Config` whose sections the modules receive
(``build_optimizer(model, cfg.optim)``).

Why dataclasses: the standard library, static types an editor and mypy see, ``asdict`` for the YAML the run
folder keeps; OmegaConf's structured configs are built on the same dataclasses but would add a dependency and a
second merge/override syntax next to the one users already have.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .choices import AMP_MODES, DATA_KINDS, FUSION_IMPLS, LOGITS_AT, OPTIM_IMPLS, TEXT_PRECISIONS
from .config_schema import Either, Spec, choice, floating, integer

__all__ = ["Config", "RunSection", "DataSection", "TextSection", "TagsSection", "MaskingSection", "ModelSection",
           "OptimSection", "TrainSection", "EvalSection", "DEFAULTS", "SCHEMA", "sections"]

_B, _S, _PATH = Spec("bool"), Spec("str"), Spec("str", none=True)
_P = floating(0.0, 1.0, hi_open=True)  # a dropout / probability-like fraction


def key(default: Any, spec: Spec, doc: str = "") -> Any:
    """A config key: its default, its :class:`Spec` and a one-line meaning."""
    meta = {"spec": spec, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested section with its own defaults."""
    return field(default_factory=cls)


@dataclass
class ExportSection:
    model: str | None = key(None, _PATH, "export the backbone at the end (see `icmlm-train export`)")
    tag: str | None = key(None, _PATH)


@dataclass
class RunSection:
    name: str = key("run", _S, "run folder prefix: runs/<name>-<timestamp>")
    seed: int = key(0, integer(0, 2**32 - 1))
    device: str = key("auto", choice("auto", "cpu", "cuda"))
    threads: str | int = key("auto", Either(choice("auto"), integer(1)),
                             "CPU training's intra-op threads: auto = the cores other processes leave idle at the "
                             "start; the number used is saved in RUN/config.yaml, so a resume uses it too")
    retain_memory: str | bool = key("auto", choice("auto", True, False),
                                    "keep freed memory in the process (glibc): auto = on for CPU training")
    log_every: int = key(10, integer(1), "steps between log lines / CSV rows")
    ckpt_every: int = key(500, integer(1), "steps between checkpoints (one is always written at the end)")
    keep_last: int = key(3, integer(0), "checkpoints kept on disk")
    stop_after: int | None = key(None, integer(1, none=True),
                                 "stop (with a checkpoint) after this global step, e.g. to test resume")
    max_failure_rate: float = key(0.05, floating(0.0, 1.0), "stop when this fraction of samples failed to load ...")
    failure_min_samples: int = key(200, integer(0), "... once at least this many samples were seen")
    progress: bool = key(True, _B, "tqdm progress bar")
    tensorboard: bool = key(True, _B)
    export: ExportSection = section(ExportSection)


@dataclass
class SyntheticData:
    num_images: int = key(4000, integer(1))
    image_size: int = key(96, integer(8))
    seed: int = key(0, integer(0))
    val_images: int = key(400, integer(0))
    val_seed: int = key(10000, integer(0))


@dataclass
class CocoData:
    captions: str | None = key(None, _PATH)
    instances: str | None = key(None, _PATH)
    images: str | None = key(None, _PATH)
    val_captions: str | None = key(None, _PATH)
    val_instances: str | None = key(None, _PATH)
    val_images: str | None = key(None, _PATH)


@dataclass
class VGData:
    regions: str | None = key(None, _PATH)
    images: str | None = key(None, _PATH)
    image_data: str | None = key(None, _PATH)
    min_region_frac: float = key(0.0, floating(0.0, 1.0))


@dataclass
class PairsData:
    file: str | None = key(None, _PATH)
    image_root: str | None = key(None, _PATH)
    val_file: str | None = key(None, _PATH)


@dataclass
class WebDatasetData:
    urls: str | list[str] | None = key(None, Spec("paths", none=True), "shards: brace patterns or a list")
    epoch_samples: int = key(10000, integer(1), "samples per process per epoch")
    shuffle: int = key(1000, integer(0), "sample shuffle buffer")
    shard_shuffle: bool | int = key(True, Either(_B, integer(1)),
                                    "true (permute the shard list each epoch) | N (shard shuffle buffer) | false")
    resampled: bool = key(False, _B, "draw shards with replacement per worker (open_clip's --dataset-resampled)")
    image_keys: str = key("jpg;jpeg;png;webp", _S)
    caption_keys: str = key("txt;caption", _S)


@dataclass
class DataSection:
    kind: str = key("synthetic", choice(*DATA_KINDS), "where the images and captions come from (training/data)")
    num_workers: int = key(0, integer(0))
    pin_memory: str | bool = key("auto", choice("auto", True, False), "auto (= on CUDA) | true | false")
    prefetch_factor: int = key(2, integer(1), "batches prefetched per worker")
    image_size: int = key(96, integer(8), "training crop size")
    scale_min: float = key(0.7, floating(0.0, 1.0, lo_open=True),
                           "random resized crop's lower scale bound (1.0 = plain resize)")
    hflip: bool = key(False, _B, "off by default: captions say 'left'/'right'")
    eval_crop_pct: float | None = key(None, floating(0.0, 1.0, lo_open=True, none=True),
                                      "eval resize = image_size / crop_pct, centre crop; None = backbone cfg")
    synthetic: SyntheticData = section(SyntheticData)
    coco: CocoData = section(CocoData)
    vg: VGData = section(VGData)
    pairs: PairsData = section(PairsData)
    webdataset: WebDatasetData = section(WebDatasetData)


@dataclass
class TextSection:
    model: str = key("minilm", _S, "'minilm' = the embedded MiniLM; else any BERT-style name or local path")
    max_length: int = key(40, integer(4), "longer captions are truncated (and counted)")
    mlm_head: str = key("auto", choice("auto", "pretrained", "tied"))
    precision: str = key("auto", choice(*TEXT_PRECISIONS),
                         "frozen encoder dtype: auto (AMP dtype, else bf16 where native) | fp32 | bf16 | fp16")
    cache_size: int = key(0, integer(0), "LRU cache of encoder outputs per (ids, mask) row, in captions; 0 = off")


@dataclass
class TagsSection:
    file: str | None = key(None, _PATH, "tag vocabulary file (from `icmlm-train build-tags`)")
    source: str = key("mine", choice("file", "mine", "labels"),
                      "file | mine (from the training captions at start) | labels")
    pos: list[str] = key(["NOUN", "ADJ", "VERB"], Spec("list", item=_S, length=(1, None)))
    min_count: int = key(5, integer(1))
    top_k: int = key(1000, integer(1))
    max_captions: int = key(2000, integer(1), "captions read when mining at start")


@dataclass
class MaskingSection:
    strategy: str = key("tags", choice("tags", "random"), "tags | random (BERT-style ablation)")
    k: int = key(1, integer(1), "tag words masked per caption (all their wordpieces, every occurrence)")
    no_tag: str = key("skip", choice("skip", "random_word"), "what to do with captions without a tag word")
    random_prob: float = key(0.15, floating(0.0, 1.0, lo_open=True))
    together: str = key("none", choice("none", "pos", "class"),
                        "none | pos | class: also mask the caption's other tag words of a chosen word's part of "
                        "speech (pos) or word class (class: masking.groups_file, or the synthetic scenes' own)")
    together_prob: float = key(1.0, floating(0.0, 1.0),
                               "chance per caption that the chosen words' groups are masked with them")
    groups_file: str | None = key(None, _PATH,
                                  "word<TAB>class lines for masking.together=class (e.g. colour, shape)")


@dataclass
class TPSection:
    hidden: int = key(0, integer(0))
    dropout: float = key(0.0, _P)
    weight: float = key(1.0, floating(0.0))
    targets: str = key("caption", choice("caption", "labels"))
    reduction: str = key("sum", choice("sum", "mean"), "BCE summed over tags (mean over images) | mean (over tags too)")


@dataclass
class AttFCSection:
    heads: int = key(4, integer(1))
    hidden: int = key(1024, integer(1))
    dropout: float = key(0.1, _P)


@dataclass
class TfmSection:
    layers: int = key(2, integer(1))
    heads: int = key(4, integer(1))
    ff: int = key(1024, integer(1))
    dropout: float = key(0.1, _P)
    max_grid: int = key(32, integer(1))


@dataclass
class ModelSection:
    backbone: str = key("icmlm_resnet_tiny", _S)
    heads: list[str] = key(["attfc", "tp"], Spec("list", item=choice("attfc", "tfm", "tp"), length=(1, 3)),
                           "any of attfc, tfm, tp (at least one)")
    channels_last: bool = key(False, _B)
    logits: str = key("masked", choice(*LOGITS_AT),
                      "masked | all (MLM logits at every position: the slow baseline, P2)")
    fusion_impl: str = key("fast", choice(*FUSION_IMPLS),
                           "fast | reference: same parameters and results, see training/heads/attention.py")
    tp: TPSection = section(TPSection)
    attfc: AttFCSection = section(AttFCSection)
    tfm: TfmSection = section(TfmSection)

    @property
    def fusion(self) -> str | None:
        """The MLM head (``attfc`` or ``tfm``), None for TP alone."""
        return next((h for h in self.heads if h in ("attfc", "tfm")), None)


@dataclass
class LrMult:
    backbone: float = key(1.0, floating(0.0))
    fusion: float = key(1.0, floating(0.0))
    mlm_head: float = key(1.0, floating(0.0))
    tp: float = key(1.0, floating(0.0))


@dataclass
class OptimSection:
    lr: float = key(1.0e-3, floating(0.0, lo_open=True))
    weight_decay: float = key(0.01, floating(0.0))
    betas: list[float] = key([0.9, 0.999], Spec("list", item=floating(0.0, 1.0, hi_open=True), length=(2, 2)))
    warmup_steps: int = key(50, integer(0))
    min_lr_ratio: float = key(0.01, floating(0.0, 1.0), "cosine decays to lr * min_lr_ratio")
    grad_clip: float = key(1.0, floating(0.0), "0 = off")
    accum_steps: int = key(1, integer(1))
    impl: str = key("auto", choice(*OPTIM_IMPLS), "AdamW kernel: auto (fused where supported) | fused | foreach | loop")
    lr_mult: LrMult = section(LrMult)


@dataclass
class TrainSection:
    batch_size: int = key(32, integer(1), "per process")
    epochs: int = key(1, integer(1))
    max_steps: int | None = key(None, integer(1, none=True),
                                "optimizer steps in total; default: epochs * steps per epoch")
    amp: str = key("none", choice(*AMP_MODES), "autocast: none | bf16 | fp16 (CUDA) | auto (bf16 where the device "
                   "computes it natively: CUDA with bf16, CPUs with AMX/AVX512-BF16; else none)")
    max_nonfinite_steps: int = key(5, integer(1),
                                   "stop after this many optimizer steps in a row with a NaN/Inf loss or gradient")
    max_idle_samples: int = key(5000, integer(1), "stop when this many samples in a row give no optimizer step")


@dataclass
class EvalSection:
    at_end: bool = key(True, _B)
    every: int = key(0, integer(0), "steps between evaluations (0 = only at the end)")
    max_batches: int = key(50, integer(1))
    num_workers: int | None = key(None, integer(0, none=True),
                                  "loader workers of the held-out evaluation (null = data.num_workers)")


@dataclass
class Config:
    """A whole validated config, section by section."""
    run: RunSection = section(RunSection)
    data: DataSection = section(DataSection)
    text: TextSection = section(TextSection)
    tags: TagsSection = section(TagsSection)
    masking: MaskingSection = section(MaskingSection)
    model: ModelSection = section(ModelSection)
    optim: OptimSection = section(OptimSection)
    train: TrainSection = section(TrainSection)
    eval: EvalSection = section(EvalSection)

    @property
    def needs_tags(self) -> bool:
        """Whether the run needs a tag vocabulary: for the TP head, or to mask tag words for an MLM head."""
        return "tp" in self.model.heads or (self.masking.strategy == "tags" and self.model.fusion is not None)


def _schema(cls: type) -> dict[str, Any]:
    return {f.name: f.metadata["spec"] if "spec" in f.metadata else _schema(_nested(cls, f))
            for f in dataclasses.fields(cls)}


def _nested(cls: type, f: dataclasses.Field) -> type:
    return type(f.default_factory())  # a section's class, from its default


def _build(cls: type, values: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = values[f.name]
        kwargs[f.name] = v if "spec" in f.metadata else _build(_nested(cls, f), v)
    return cls(**kwargs)


def sections(cfg: dict[str, Any]) -> Config:
    """The typed view of a config dict whose keys :func:`~icmlm_zoo.training.config.validate` checked (what
    :func:`~icmlm_zoo.training.config.load_config` returns last)."""
    if not isinstance(cfg, dict):
        raise TypeError(f"sections() takes a config dict, not {type(cfg).__name__}: load_config already returns "
                        "the typed Config")
    return _build(Config, cfg)


DEFAULTS: dict[str, Any] = dataclasses.asdict(Config())
"""Every key and its default, as the nested dict presets and overrides are merged into."""

SCHEMA: dict[str, Any] = _schema(Config)
"""The expected type and range of every key of :data:`DEFAULTS` (same shape)."""
