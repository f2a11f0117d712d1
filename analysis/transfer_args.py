"""The flags of ``icmlm-eval transfer`` (argparse only: the command's parser is built without torch)."""
from __future__ import annotations

import argparse

RANDOM = "random init"
PRETRAININGS = ["TP_postag", "ICMLM att-fc + TP", "ICMLM tfm + TP", "ICMLM att-fc (no TP)", RANDOM]
# detection fine-tuning recipes (fields of transfer_detection.DetectionRecipe): "standard" trains every stage and the
# batch norm at one learning rate (one protocol for random init and pretrained trunks); "keep-features" is
# torchvision's treatment of a pretrained trunk (frozen batch norm) with the trunk at a tenth of the learning rate
RECIPES: dict[str, dict] = {"standard": {}, "keep-features": {"trunk_lr_mult": 0.1, "freeze_bn": True}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags (shared by ``icmlm-eval transfer`` and ``python -m``)."""
    p.add_argument("--out", required=True, help="folder for records/, transfer.json and transfer.md (resumable)")
    p.add_argument("--runs", default=None, help="an icmlm-eval fidelity --out folder whose runs/ to reuse "
                   "(missing runs are trained there); default: DIR/fidelity")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; 0 with --quick)")
    p.add_argument("--quick", action="store_true", help="the whole path at toy size (a smoke run, not a result)")
    p.add_argument("--pretrainings", nargs="+", default=PRETRAININGS, metavar="NAME",
                   help=f"a subset of {PRETRAININGS} (e.g. one per parallel process)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip pretrainings whose runs are not finished instead of training them")
    p.add_argument("--table-only", action="store_true",
                   help="fine-tune nothing: write transfer.json and transfer.md from the records already in DIR")
    p.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                   help="use every run's checkpoint at STEP (finished or not; runs without it are skipped) "
                   "instead of the finished runs: a comparison at equal, shorter pretraining")
    p.add_argument("--recipe", default="standard", choices=list(RECIPES),
                   help="detection fine-tuning: every stage and batch norm at one learning rate (standard), or the "
                   "trunk at 0.1x with batch norm frozen (keep-features); give each recipe its own --out")
    p.add_argument("--budgets", type=int, nargs="+", default=None, metavar="N",
                   help="only these label budgets (of 100 1000; 8 16 with --quick)")
