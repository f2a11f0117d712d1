"""What ``icmlm-train`` checks before a run starts (the extras and demo assets a config needs, every ``--set``
value on its own), and how a run stopped by Ctrl-C reports where to continue. Imported by the command only
once it runs, not to build the parser."""
from __future__ import annotations

import re
from pathlib import Path

from icmlm_zoo.cli_support import MissingExtraError, require_extras

from . import demo_assets
from .checkpoint import list_checkpoints
from .config import DEFAULTS, SCHEMA, Config, apply_overrides
from .config_schema import check_tree
from .tags import missing_spacy_pipeline

TRAIN_EXTRA = ("transformers", "yaml")
# tensorboard (the [train] extra) is imported inside tensorboard_missing only: its absence is a warning, not an error


def check_train_extras(cfg: Config, run_out: str | None) -> None:
    """Fail fast, before any run folder is made, when the config needs a tool that is not installed."""
    require_extras("icmlm-train", ["train"], TRAIN_EXTRA)
    mines = cfg.tags.source == "mine" and not (run_out and (Path(run_out) / "tags.txt").is_file())
    if mines:
        require_extras("icmlm-train (tags.source=mine)", ["train"], ["spacy"])
    if cfg.data.kind == "webdataset":
        require_extras("icmlm-train (data.kind=webdataset)", ["train"], ["webdataset"])
    _check_text_assets(cfg.text.model, mines)


def _check_text_assets(text_model: str, mines_tags: bool) -> None:
    """The offline demo assets a config names ([demo] extra), and a spaCy pipeline for tag mining, are there."""
    if text_model in ("minilm", "embedded") and demo_assets.installed_folder(demo_assets.MINILM) is None:
        raise MissingExtraError(f"text.model={text_model} is the offline demo's text encoder: "
                                f"{demo_assets.DEMO_INSTALL} (or give an official model, e.g. "
                                "--set text.model=bert-base-uncased)")
    problem = missing_spacy_pipeline() if mines_tags else None
    if problem:
        raise MissingExtraError(problem)


def check_each_override(overrides: list[str]) -> None:
    """Every ``--set`` value is checked on its own (type and range), also one that a later value replaces."""
    for item in overrides:
        check_tree(apply_overrides(DEFAULTS, [item]), SCHEMA)


class TrainingInterrupted(Exception):
    """Ctrl-C during a run: where it stopped and how to continue."""

    def __init__(self, run_dir: Path) -> None:
        saved = list_checkpoints(run_dir / "checkpoints")
        step = re.findall(r"\d+", saved[-1].name) if saved else None
        cont = f"`icmlm-train --resume --out {run_dir}`"
        super().__init__(f"stopped at step {int(step[-1])}; continue with {cont}" if step else
                         f"stopped before the first checkpoint; start it again with {cont}")


def tensorboard_missing(cfg: Config) -> bool:
    if not cfg.run.tensorboard:
        return False
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return True
    return False
