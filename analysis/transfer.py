"""The transfer experiment: does a pretraining help a backbone that is fine-tuned downstream?

``icmlm-eval transfer --out DIR [--quick] [--runs FIDELITY_DIR] [--seeds 0 1 2]`` takes the fidelity
experiment's pretrainings (TP_postag, ICMLM att-fc + TP, ICMLM tfm + TP, ICMLM att-fc without TP; reused from
``FIDELITY_DIR/runs`` or trained through :mod:`~icmlm_zoo.analysis.fidelity`'s own code) and random init as
the control, and for every pretraining × seed × label budget fine-tunes, on held-out generated scenes:

* **detection** (:mod:`~icmlm_zoo.analysis.transfer_detection`): Faster R-CNN on an FPN over the unfrozen
  backbone, label sets ``shape`` and ``shape_colour``, scored with pycocotools (AP, AP50);
* **classification** (:mod:`~icmlm_zoo.analysis.transfer_classification`): the colour of a named shape,
  backbone unfrozen and frozen;

each scored on a test set and on the same test scenes drawn by a shifted renderer
(:mod:`~icmlm_zoo.analysis.transfer_shift`) without retraining. One record per pretraining × task × budget ×
seed lands in ``DIR/records/`` as soon as it is done (a rerun, or a parallel process, skips it); the last
call writes ``DIR/transfer.json`` and ``DIR/transfer.md`` (:mod:`~icmlm_zoo.analysis.transfer_report`).
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icmlm_zoo.backbone_factory import load_backbone

from .detection_scenes import LABEL_SETS, category_names, coco_dataset, detection_scenes, shape_of_category
from .fidelity import QUICK as FIDELITY_QUICK
from .fidelity import RECIPE as FIDELITY_RECIPE
from .fidelity import VARIANTS, mine_demo_tags, slug, train_run
from .transfer_args import PRETRAININGS, RANDOM, RECIPES, add_arguments
from .transfer_classification import ClassificationRecipe, fine_tune_classification
from .transfer_detection import DetectionRecipe, fine_tune_detection
from .transfer_report import collect, markdown

__all__ = ["PRETRAININGS", "RANDOM", "run_transfer", "add_arguments", "run_from_args", "main"]

FULL = {"budgets": (100, 1000), "num_test": 200, "det_iters": {100: 150, 1000: 200}, "cls_iters": 200}
QUICK = {"budgets": (8, 16), "num_test": 8, "det_iters": {8: 3, 16: 3}, "cls_iters": 3}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _record_path(out: Path, pretraining: str, task: str, budget: int, seed: int) -> Path:
    return out / "records" / f"{slug(pretraining)}--{slug(task)}--b{budget}--s{seed}.json"


def _trunk(pretraining: str, seed: int, runs: Path, *, quick: bool, train: bool, tags: Path | None,
           checkpoint: int | None = None):
    """(trunk, mean, std, source) of one pretraining × seed, or None when its run is missing and not trained.
    ``checkpoint``: the run's checkpoint at that step instead of the finished run (equal steps for all)."""
    if pretraining == RANDOM:
        spec = f"random:icmlm_resnet_tiny@{seed}"
    else:
        run_dir = runs / "runs" / f"{slug(pretraining)}-s{seed}"
        if checkpoint is not None:
            found = [d / f"ckpt_{checkpoint:07d}.pt" for d in (run_dir / "checkpoints", run_dir / "kept")]
            ckpt = next((f for f in found if f.is_file()), None)  # kept/: hard links that outlive pruning
            if ckpt is None:
                return None
            loaded = load_backbone(str(run_dir), checkpoint=str(ckpt))
            return loaded.model, loaded.mean, loaded.std, str(ckpt)
        if not (run_dir / "summary.json").is_file():
            if not train:
                return None
            recipe = [*FIDELITY_RECIPE, *(FIDELITY_QUICK if quick else [])]  # the runs of the fidelity table
            train_run(run_dir, [*recipe, *VARIANTS[pretraining], f"run.seed={seed}"], tags)
        spec = str(run_dir)
    loaded = load_backbone(spec)
    return loaded.model, loaded.mean, loaded.std, spec


class _Data:
    """Held-out scenes, rendered once per process: the training pool (stream 0), the test set (stream 1) and
    the same test scenes drawn by the shifted renderer, for each label set, with their COCO ground truth."""

    def __init__(self, pool: int, num_test: int, size: int) -> None:
        self.pool: dict[str, list] = {}
        self.tests: dict[str, dict[str, tuple[list, dict]]] = {}
        for ls in LABEL_SETS:
            self.pool[ls] = detection_scenes(pool, seed=0, size=size, label_set=ls)
            test = detection_scenes(num_test, seed=1, size=size, label_set=ls)
            shifted = detection_scenes(num_test, seed=1, size=size, label_set=ls, shifted=True)
            self.tests[ls] = {"test": (test, coco_dataset(test, ls)), "shifted": (shifted, coco_dataset(shifted, ls))}

    def subset(self, label_set: str, budget: int, seed: int) -> list:
        """``budget`` training scenes, a different draw from the pool for each seed."""
        pool = self.pool[label_set]
        idx = np.random.default_rng([seed, budget, 31]).permutation(len(pool))[:budget]
        return [pool[i] for i in sorted(idx)]


def _one_backbone(out: Path, pretraining: str, seed: int, trunk, mean, std, source: str, data: _Data,
                  cfg: dict, size: int) -> int:
    """Run every missing task × budget of one pretraining × seed; returns how many records it wrote."""
    written = 0
    for budget in cfg["budgets"]:
        for ls in ("shape", "shape_colour"):
            path = _record_path(out, pretraining, f"detection {ls}", budget, seed)
            if path.is_file():
                continue
            recipe = DetectionRecipe(iters=cfg["det_iters"][budget], warmup=min(50, cfg["det_iters"][budget]),
                                     **RECIPES[cfg["recipe"]])
            t0, c0 = time.time(), _cpu()
            coarse = None
            if ls == "shape_colour":  # the same detections read as shapes: colour mistakes vs. finding objects
                coarse = {k: (v[1], shape_of_category()) for k, v in data.tests["shape"].items()}
            res = fine_tune_detection(copy.deepcopy(trunk), mean, std, train=data.subset(ls, budget, seed),
                                      tests=data.tests[ls], num_classes=len(category_names(ls)), size=size,
                                      recipe=recipe, seed=seed, coarse=coarse)
            _write(path, pretraining, f"detection {ls}", budget, seed, res, source, recipe.iters, t0, c0)
            written += 1
        tasks = [f"binding ({k})" for k in ("fine-tuned", "frozen")]
        if all(_record_path(out, pretraining, t, budget, seed).is_file() for t in tasks):
            continue
        t0, c0 = time.time(), _cpu()
        tests = {k: v[0] for k, v in data.tests["shape"].items()}
        res = fine_tune_classification(trunk, mean, std, train=data.subset("shape", budget, seed), tests=tests,
                                       recipe=ClassificationRecipe(iters=cfg["cls_iters"]), seed=seed)
        for kind, scores in res.items():
            _write(_record_path(out, pretraining, f"binding ({kind})", budget, seed), pretraining,
                   f"binding ({kind})", budget, seed, scores, source, cfg["cls_iters"], t0, c0)
            written += 1
    return written


def _write(path: Path, pretraining: str, task: str, budget: int, seed: int, metrics: dict, source: str,
           iters: int, t0: float, c0: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"pretraining": pretraining, "task": task, "budget": budget, "seed": seed, "metrics": metrics,
           "source": source, "iters": iters, "wall_s": round(time.time() - t0, 1), "cpu_s": round(_cpu() - c0, 1)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=2))
    tmp.replace(path)
    print(f"{pretraining} | {task} | {budget} scenes | seed {seed}: "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)


def run_transfer(out_dir: str | Path, *, runs: str | Path | None = None, seeds: Sequence[int] | None = None,
                 quick: bool = False, pretrainings: Sequence[str] = PRETRAININGS,
                 train_missing: bool = True, checkpoint: int | None = None,
                 table_only: bool = False, recipe: str = "standard",
                 budgets: Sequence[int] | None = None) -> dict[str, Any]:
    """Fill ``DIR/records`` for every pretraining × seed (reusing records already there), then write
    ``DIR/transfer.json`` and ``DIR/transfer.md`` from every record present; returns the JSON result.
    ``recipe``: a name in :data:`RECIPES` (detection only; records of one folder should share it); ``budgets``:
    a subset of the label budgets."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds if seeds is not None else ((0,) if quick else (0, 1, 2)))
    unknown = [p for p in pretrainings if p not in PRETRAININGS]
    if unknown:
        raise ValueError(f"unknown pretraining(s) {unknown}; choose from {PRETRAININGS}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {list(RECIPES)}")
    table = QUICK if quick else FULL
    cfg, size = {**table, "recipe": recipe}, 96
    if budgets:
        wrong = [b for b in budgets if b not in cfg["budgets"]]
        if wrong:
            raise ValueError(f"budget(s) {wrong} not in this table's {list(cfg['budgets'])}")
        cfg["budgets"] = tuple(budgets)
    runs_dir = Path(runs) if runs else out / "fidelity"
    tags = None
    if table_only:
        seeds, train_missing = [], False
    if train_missing and checkpoint is None and any(p != RANDOM for p in pretrainings):
        runs_dir.mkdir(parents=True, exist_ok=True)
        tags = mine_demo_tags(runs_dir, FIDELITY_QUICK if quick else [], min_count=2 if quick else None)
    # the pool of the whole table, not of --budgets: a budget's draw depends on the pool
    data = _Data(max(table["budgets"]), cfg["num_test"], size) if seeds else None
    t0, skipped = time.time(), []
    for seed in seeds:
        for name in pretrainings:
            loaded = _trunk(name, seed, runs_dir, quick=quick, train=train_missing, tags=tags, checkpoint=checkpoint)
            if loaded is None:
                skipped.append(f"{name} seed {seed}")
                continue
            _one_backbone(out, name, seed, *loaded, data, cfg, size)
    result = collect(out, quick=quick, config={**cfg, "detection_recipe": RECIPES[recipe],
                                                "det_iters": {str(k): v for k, v in cfg["det_iters"].items()},
                                                "image_size": size, "runs": str(runs_dir),
                                                "checkpoint": checkpoint if checkpoint is not None else "finished"})
    result["skipped_missing_runs"] = skipped
    result["seconds_this_call"] = round(time.time() - t0, 1)
    (out / "transfer.json").write_text(json.dumps(result, indent=2))
    (out / "transfer.md").write_text(markdown(result))
    return result


def run_from_args(args: argparse.Namespace) -> None:
    """Run the experiment from parsed flags; prints the table and where it was written."""
    result = run_transfer(args.out, runs=args.runs, seeds=args.seeds, quick=args.quick,
                          pretrainings=args.pretrainings, train_missing=not args.skip_missing,
                          checkpoint=args.checkpoint, table_only=args.table_only, recipe=args.recipe,
                          budgets=args.budgets)
    print(markdown(result))
    print(f"wrote {Path(args.out) / 'transfer.json'} and {Path(args.out) / 'transfer.md'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="icmlm-eval transfer", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    run_from_args(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
