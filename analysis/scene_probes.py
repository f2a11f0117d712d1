"""The probe suite: frozen-backbone linear probes on held-out generated scenes (never seen in training: seeds
from 20_000 on; probes are fitted on one scene set and scored on another).

Standardised features, scikit-learn logistic regression (C = 1, lbfgs, fixed seed). Targets, per scene:

* **presence** of each shape and each colour word (mean AP over labels);
* the colour and the shape of the **largest** object, and the **count** of objects (1-3) (accuracy);
* **binding**: the colour of the object of a named shape, in scenes with 2-3 objects where that shape occurs
  once; one classifier per shape (accuracy averaged over shapes). A bag of tags (which colours and which shapes
  are present) does not tell which colour goes with which shape;
* **relation**: is the object of named shape A left of (above) the object of named shape B? One classifier per
  ordered shape pair and relation, on scenes where both occur once and are not in the same column (row),
  accuracy averaged over pairs. Global pooling discards position, so this probe reads the flattened map (h·w·C).

Two protocols use it, fixed before any tuning: :data:`COMPARE_TASKS` (``icmlm-eval compare``/``probes``: one
stage's pooled features, scenes at 96 px) and :data:`FIDELITY_TASKS` (``icmlm-eval fidelity``: the final map at the
run's input size). Both see the whole scene (plain resize, no crop). Chance: a feature-less guesser (label
frequency for presence AP, the training majority for accuracies).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icmlm_zoo.backbone_factory import load_backbone
from icmlm_zoo.evaluation.features import PooledFeatures, resolve_stage
from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SyntheticScenes
from icmlm_zoo.transforms import eval_transform

# sklearn (the [eval] extra) is imported inside the fitting functions: the scenes and targets need only the core

__all__ = ["HELD_OUT_SEED", "ProbeTask", "COMPARE_TASKS", "FIDELITY_TASKS", "held_out_scenes", "SceneImages",
           "scene_targets", "scene_features", "standardize", "probe_scores", "probe_chance", "run_probes"]

HELD_OUT_SEED = 20_000  # training uses seed 0 and validates on 10_000: both differ


class ProbeTask(NamedTuple):
    """One probe: its result key and column label, ``ap`` (mean AP over label columns) or ``acc`` (accuracy,
    averaged over the sub-tasks of a dict target), the target it reads and the features (``pooled``/``flat``)."""

    key: str
    label: str
    kind: str
    target: str
    features: str = "pooled"


COMPARE_TASKS = (ProbeTask("shape_presence_mAP", "shape pres. mAP", "ap", "shape_presence"),
                 ProbeTask("color_presence_mAP", "colour pres. mAP", "ap", "color_presence"),
                 ProbeTask("largest_shape_acc", "largest shape acc", "acc", "largest_shape"),
                 ProbeTask("largest_color_acc", "largest colour acc", "acc", "largest_color"),
                 ProbeTask("count_acc", "count acc", "acc", "count"))
FIDELITY_TASKS = (ProbeTask("presence_mAP", "presence mAP", "ap", "presence"),
                  ProbeTask("count_acc", "count", "acc", "count"),
                  ProbeTask("binding_acc", "binding", "acc", "binding"),
                  ProbeTask("relation_acc", "relation", "acc", "relation", "flat"))
MAX_ITER = {"compare": 1000, "fidelity": 500}  # lbfgs iterations of each protocol


def held_out_scenes(num_train: int, num_test: int, image_size: int = 64,
                    seed: int = 0) -> tuple[SyntheticScenes, SyntheticScenes]:
    """The two held-out scene sets (fit the probes / score them) for an evaluation seed."""
    base = HELD_OUT_SEED + 2 * seed
    return (SyntheticScenes(num_train, image_size=image_size, seed=base),
            SyntheticScenes(num_test, image_size=image_size, seed=base + 1))


class SceneImages(Dataset):
    """``SyntheticScenes`` as ``(tensor, index)`` items through an image transform."""

    def __init__(self, scenes, transform):
        self.scenes, self.transform = scenes, transform

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int):
        return self.transform(self.scenes.scene(i)["image"]), i


def scene_targets(scenes) -> dict[str, Any]:
    """Every probe's targets, arrays over scenes (-1 where a scene has no answer): ``shape_presence`` (N, 4),
    ``color_presence`` (N, 6) and ``presence`` (both) multi-hot; ``largest_shape``, ``largest_color`` class indices;
    ``count``; ``binding[shape]`` a colour index; ``relation[(a, b, 'left'|'above')]`` 1/0."""
    n = len(scenes)
    t: dict[str, Any] = {"shape_presence": np.zeros((n, len(SHAPES)), int),
                         "color_presence": np.zeros((n, len(COLORS)), int), "largest_shape": np.zeros(n, int),
                         "largest_color": np.zeros(n, int), "count": np.zeros(n, int),
                         "binding": {s: np.full(n, -1) for s in SHAPES},
                         "relation": {(a, b, r): np.full(n, -1) for a, b in itertools.permutations(SHAPES, 2)
                                      for r in ("left", "above")}}
    for i in range(n):
        objs = scenes.objects(i)
        t["count"][i] = len(objs)
        for o in objs:
            t["shape_presence"][i, SHAPES.index(o["shape"])] = 1
            t["color_presence"][i, COLORS.index(o["color"])] = 1
        big = max(objs, key=lambda o: (o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]))
        t["largest_shape"][i], t["largest_color"][i] = SHAPES.index(big["shape"]), COLORS.index(big["color"])
        once = {o["shape"]: o for o in objs if sum(p["shape"] == o["shape"] for p in objs) == 1}
        if len(objs) >= 2:
            for s, o in once.items():
                t["binding"][s][i] = COLORS.index(o["color"])
        for (a, b) in itertools.permutations(once, 2):
            (ra, ca), (rb, cb) = once[a]["cell"], once[b]["cell"]
            if ca != cb:
                t["relation"][(a, b, "left")][i] = int(ca < cb)
            if ra != rb:
                t["relation"][(a, b, "above")][i] = int(ra < rb)
    t["presence"] = np.hstack([t["shape_presence"], t["color_presence"]])
    return t


def scene_features(model: torch.nn.Module, scenes, transform, *, stage: int | str = -1, flat: bool = False,
                   batch_size: int = 32, device: str = "cpu", desc: str = "probe features") -> dict[str, np.ndarray]:
    """``pooled`` (N, C): one stage's map, globally average-pooled, for every scene; with ``flat`` also the map
    flattened, ``flat`` (N, h·w·C)."""
    stage_features = PooledFeatures(model.to(device).eval(), stage)
    pooled, flats = [], []
    for x, _ in tqdm(DataLoader(SceneImages(scenes, transform), batch_size=batch_size), desc=desc, leave=False):
        fmap = stage_features.stage_map(x.to(device))
        pooled.append(fmap.mean((2, 3)).cpu().numpy())
        if flat:
            flats.append(fmap.flatten(1).cpu().numpy())
    stage_features.remove()
    return {"pooled": np.concatenate(pooled), **({"flat": np.concatenate(flats)} if flat else {})}


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled with the training set's per-feature mean and standard deviation."""
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return (train - mu) / sd, (test - mu) / sd


def _mean_ap(xtr, ytr, xte, yte, *, max_iter: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    aps = []
    for k in range(ytr.shape[1]):
        if ytr[:, k].min() == ytr[:, k].max() or yte[:, k].max() == 0:
            continue
        clf = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed).fit(xtr, ytr[:, k])
        aps.append(average_precision_score(yte[:, k], clf.decision_function(xte)))
    return float(np.mean(aps)) if aps else float("nan")


def _accuracy(xtr, ytr, xte, yte, *, max_iter: int, seed: int) -> float | None:
    from sklearn.linear_model import LogisticRegression

    mtr, mte = ytr >= 0, yte >= 0
    if mte.sum() == 0 or len(np.unique(ytr[mtr])) < 2:
        return None
    clf = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed).fit(xtr[mtr], ytr[mtr])
    return float((clf.predict(xte[mte]) == yte[mte]).mean())


def _majority(ytr, yte) -> float | None:
    mtr, mte = ytr >= 0, yte >= 0
    if mte.sum() == 0 or mtr.sum() == 0:
        return None
    return float((yte[mte] == np.bincount(ytr[mtr]).argmax()).mean())


def _mean_of(values) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def probe_scores(train_feats: dict[str, np.ndarray], train_t: dict[str, Any], test_feats: dict[str, np.ndarray],
                 test_t: dict[str, Any], tasks=FIDELITY_TASKS, *, max_iter: int = 500,
                 seed: int = 0) -> dict[str, float | None]:
    """Each task's score (in [0, 1]) of one backbone's features (:func:`scene_features`)."""
    from sklearn.exceptions import ConvergenceWarning

    std = {kind: standardize(train_feats[kind], test_feats[kind]) for kind in {t.features for t in tasks}}
    res: dict[str, float | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for task in tasks:
            (xtr, xte), ytr, yte = std[task.features], train_t[task.target], test_t[task.target]
            if task.kind == "ap":
                res[task.key] = _mean_ap(xtr, ytr, xte, yte, max_iter=max_iter, seed=seed)
            elif isinstance(ytr, dict):
                res[task.key] = _mean_of(_accuracy(xtr, ytr[k], xte, yte[k], max_iter=max_iter, seed=seed)
                                         for k in ytr)
            else:
                res[task.key] = _accuracy(xtr, ytr, xte, yte, max_iter=max_iter, seed=seed)
    return res


def probe_chance(train_t: dict[str, Any], test_t: dict[str, Any], tasks=FIDELITY_TASKS) -> dict[str, float | None]:
    """A feature-less guesser: label frequency for presence AP, the training majority for accuracies."""
    res: dict[str, float | None] = {}
    for task in tasks:
        ytr, yte = train_t[task.target], test_t[task.target]
        if task.kind == "ap":
            res[task.key] = float(yte.mean())
        elif isinstance(ytr, dict):
            res[task.key] = _mean_of(_majority(ytr[k], yte[k]) for k in ytr)
        else:
            res[task.key] = _majority(ytr, yte)
    return res


def run_probes(model: str, *, arch: str | None = None, num_train: int = 300, num_test: int = 200,
               image_size: int = 96, stage: int | str = -1, batch_size: int = 32, seed: int = 0,
               device: str = "cpu", loaded: Any = None) -> dict[str, Any]:
    """The :data:`COMPARE_TASKS` probes of one model spec (anything ``load_backbone`` reads), with chance levels."""
    loaded = loaded or load_backbone(model, arch=arch, device=device)
    train, test = held_out_scenes(num_train, num_test, image_size, seed)
    transform = eval_transform(loaded.data_config, image_size, full_view=True)
    feats = [scene_features(loaded.model, scenes, transform, stage=stage, batch_size=batch_size,
                            device=device, desc=f"probe features ({name})")
             for name, scenes in (("train", train), ("test", test))]
    y_train, y_test = scene_targets(train), scene_targets(test)
    metrics = probe_scores(feats[0], y_train, feats[1], y_test, COMPARE_TASKS, max_iter=MAX_ITER["compare"], seed=seed)
    return {"model": model, "arch": loaded.name, "stage": resolve_stage(loaded.model, stage),
            "metrics": {k: float("nan") if v is None else v for k, v in metrics.items()},
            "chance": probe_chance(y_train, y_test, COMPARE_TASKS), "num_train": num_train, "num_test": num_test,
            "image_size": image_size, "seed": seed, "scene_seeds": [train.seed, test.seed]}
