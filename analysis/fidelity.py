"""The fidelity experiment: does ICMLM pretraining give the backbone what tag prediction alone does not?

``python -m icmlm_zoo.analysis.fidelity --out DIR [--quick]`` (also ``icmlm-eval fidelity``) trains, on the
embedded scenes with the demo preset's budget and the same seeds, TP_postag, ICMLM att-fc + TP, ICMLM tfm + TP
and ICMLM att-fc without TP; then scores every frozen backbone, a randomly initialised one and a feature-less
guesser with the probes of :mod:`~icmlm_zoo.analysis.scene_probes` (``FIDELITY_TASKS``: presence, count, binding,
relation) and the runs' masked-word heads with :mod:`~icmlm_zoo.analysis.grounding` (visual-word top-1 with real
and with shuffled images, binding of masked colours, pointing). Writes ``DIR/fidelity.json`` and ``DIR/fidelity.md``
(mean ± std over seeds). Runs and scores already in ``DIR`` are reused, so an interrupted experiment resumes
and several processes (e.g. one per ``--seeds`` subset) can fill one folder before a last call writes the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icmlm_zoo.backbone_factory import load_backbone
from icmlm_zoo.evaluation.reporting import markdown_table
from icmlm_zoo.training.cli import main as train_main
from icmlm_zoo.training.config import load_config
from icmlm_zoo.training.data.synthetic import SyntheticScenes
from icmlm_zoo.training.tags import mine_tags, write_tags

from .grounding import run_grounding
from .scene_probes import FIDELITY_TASKS, held_out_scenes, probe_chance, probe_scores, scene_features, scene_targets

__all__ = ["VARIANTS", "run_fidelity", "markdown", "main"]

VARIANTS: dict[str, list[str]] = {
    "TP_postag": ["model.heads=[tp]"],
    "ICMLM att-fc + TP": ["model.heads=[attfc,tp]"],
    "ICMLM tfm + TP": ["model.heads=[tfm,tp]"],
    "ICMLM att-fc (no TP)": ["model.heads=[attfc]"],
}
# The published table's recipe (docs/fidelity.md) was trained with the demo preset as it was before issue 21 moved
# the demo to bf16 autocast, channels_last, no periodic evaluations and 450 steps; those are pinned here until the
# table is re-run at the new settings (overrides given by the user still win).
RECIPE = ["train.amp=none", "model.channels_last=false", "eval.every=200", "train.max_steps=600",
          "optim.warmup_steps=60"]
QUICK = ["train.max_steps=6", "train.batch_size=4", "data.synthetic.num_images=64", "data.synthetic.val_images=8",
         "run.ckpt_every=1000", "eval.max_batches=2", "model.attfc.hidden=64", "model.tfm.ff=64",
         "model.tfm.layers=1"]
MLM_COLUMNS = [("visual_top1", "visual-word top-1"), ("visual_top1_shuffled", "… shuffled images"),
               ("binding_top1", "masked binding"), ("pointing", "pointing")]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def train_run(run_dir: Path, overrides: Sequence[str], tags_file: Path) -> None:
    if (run_dir / "summary.json").is_file():
        return
    args = ["--preset", "demo", "--out", str(run_dir), "--set", "run.progress=false", "run.export.model=null",
            "run.export.tag=null", "tags.source=file", f"tags.file={tags_file}", *overrides]
    if run_dir.exists():
        args.append("--resume")
    if train_main(args) != 0:
        raise RuntimeError(f"training {run_dir} failed (see the messages above)")


def mine_demo_tags(out: Path, overrides: Sequence[str], min_count: int | None = None) -> Path:
    """One tag vocabulary for every run (mined from the demo's training captions as the demo does)."""
    path = out / "tags.txt"
    if not path.is_file():
        cfg = load_config("demo", None, list(overrides))
        s, t = cfg.data.synthetic, cfg.tags
        scenes = SyntheticScenes(s.num_images, s.image_size, s.seed)
        caps = [scenes.caption(i) for i in range(min(len(scenes), t.max_captions))]
        write_tags(mine_tags(caps, pos=t.pos, min_count=min_count or t.min_count, top_k=t.top_k), path,
                   source=f"mined from {len(caps)} demo training captions")
    return path


def _probe_sets(num_train: int, num_test: int, image_size: int, seed: int):
    train, test = held_out_scenes(num_train, num_test, image_size, seed)
    return (train, scene_targets(train)), (test, scene_targets(test))


def _score_backbone(spec: str, sets, image_size: int, seed: int) -> dict[str, float]:
    """The fidelity probes of one backbone (a run folder or ``random:NAME@SEED``): its final feature map, the
    whole scene resized to ``image_size`` and normalised with the backbone's own mean/std."""
    loaded = load_backbone(spec, image_size=image_size, full_view=True)
    (train, ttr), (test, tte) = sets
    feats = [scene_features(loaded.model, scenes, loaded.transform, flat=True, batch_size=64)
             for scenes in (train, test)]
    return probe_scores(feats[0], ttr, feats[1], tte, FIDELITY_TASKS, max_iter=500, seed=seed)


def run_fidelity(out_dir: str | Path, *, seeds: Sequence[int] = (0, 1, 2), quick: bool = False,
                 overrides: Sequence[str] = (), num_train: int = 1500, num_test: int = 600,
                 grounding_scenes: int = 400) -> dict[str, Any]:
    """Train every variant for every seed (or reuse finished runs) and score them; returns the JSON result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = RECIPE + (QUICK if quick else []) + list(overrides)
    if quick:
        num_train, num_test, grounding_scenes = 80, 40, 16
    cfg = load_config("demo", None, base)
    size, backbone = cfg.data.image_size, cfg.model.backbone
    tags = mine_demo_tags(out, base, min_count=2 if quick else None)  # the quick mode has 64 captions
    sets = _probe_sets(num_train, num_test, size, seed=0)
    t0 = time.time()
    rows: dict[str, list[dict[str, float]]] = {}
    for name, variant in VARIANTS.items():
        for seed in seeds:
            run_dir = out / "runs" / f"{slug(name)}-s{seed}"
            train_run(run_dir, [*base, *variant, f"run.seed={seed}"], tags)
            scores = run_dir / "fidelity_scores.json"  # scored once: a rerun (or a parallel one) reuses it
            if scores.is_file():
                res = json.loads(scores.read_text())
            else:
                res = _score_backbone(str(run_dir), sets, size, seed)
                g = run_grounding(str(run_dir), num_scenes=grounding_scenes, seed=seed)  # a TP-only run: no floats
                res.update({k: v for k, v in g.items() if isinstance(v, float)})
                scores.write_text(json.dumps(res, indent=2))
            rows.setdefault(name, []).append(res)
    for seed in seeds:  # the same weights as torch.manual_seed(seed) before creating the trunk
        rows.setdefault("random init", []).append(_score_backbone(f"random:{backbone}@{seed}", sets, size, seed))
    chance = probe_chance(sets[0][1], sets[1][1], FIDELITY_TASKS)
    mlm_chance = {k: v for k, v in rows["ICMLM att-fc + TP"][0].items()
                  if k in ("visual_chance", "binding_chance", "binding_bag_of_colors", "pointing_chance")}
    result = {"seeds": list(seeds), "quick": quick, "overrides": base, "image_size": size, "backbone": backbone,
              "probe_scenes": {"train": num_train, "test": num_test, "seeds": [sets[0][0].seed, sets[1][0].seed]},
              "grounding_scenes": grounding_scenes, "rows": {k: _mean_std(v) for k, v in rows.items()},
              "per_seed": rows, "chance": {**chance, **mlm_chance}, "seconds": round(time.time() - t0, 1)}
    (out / "fidelity.json").write_text(json.dumps(result, indent=2))
    (out / "fidelity.md").write_text(markdown(result))
    return result


def _mean_std(values: list[dict[str, float]]) -> dict[str, list[float]]:
    keys = sorted({k for v in values for k in v})
    return {k: [float(np.mean([v[k] for v in values if k in v])), float(np.std([v[k] for v in values if k in v]))]
            for k in keys}


def _mean_std_text(ms: list[float] | None) -> str:
    """``mean ± std`` in percent, ``–`` when missing."""
    if ms is None or ms[0] != ms[0]:
        return "–"
    return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The fidelity table (percentages, mean ± std over seeds) with random-init and chance rows."""
    cols = [(t.key, t.label) for t in FIDELITY_TASKS] + MLM_COLUMNS
    ch = result["chance"]
    rows = [(name, *(_mean_std_text(row.get(k)) for k, _ in cols)) for name, row in result["rows"].items()]
    rows.append(("*chance*", *(f"{100 * ch[k]:.1f}" if ch.get(k) is not None else "–" for k, _ in cols)))
    lines = [f"# Fidelity on held-out scenes ({len(result['seeds'])} seeds, {result['backbone']}, "
             f"{result['image_size']} px{', QUICK smoke run' if result['quick'] else ''})", "",
             *markdown_table(("pretraining", *(c for _, c in cols)), rows, "l" + "r" * len(cols))]
    if ch.get("binding_bag_of_colors") is not None:
        lines.append(f"\nMasked binding: a model that only knows which colours are present scores about "
                     f"{100 * ch['binding_bag_of_colors']:.1f}.")
    lines += ["", f"Frozen-backbone probes: {result['probe_scenes']['train']} / {result['probe_scenes']['test']} "
              f"held-out scenes (seeds {result['probe_scenes']['seeds']}); masked-word columns: "
              f"{result['grounding_scenes']} held-out scenes per run. {result['seconds']:.0f} s in all."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="icmlm-eval fidelity", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the runs, fidelity.json and fidelity.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every variant")
    p.add_argument("--quick", action="store_true", help="a minute-long smoke run (tiny budget; not a result)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides applied to every variant (e.g. train.max_steps=1200)")
    a = p.parse_args(argv)
    res = run_fidelity(a.out, seeds=a.seeds, quick=a.quick, overrides=a.set)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
