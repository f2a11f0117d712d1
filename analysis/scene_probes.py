"""Frozen-backbone probes of the fidelity experiment, on held-out generated scenes.

The protocol was fixed before any tuning: the backbone's final feature map at the run's input size (plain
resize, no crop); standardised features; scikit-learn logistic regression (C = 1, lbfgs, fixed seed), trained on
one held-out scene set and scored on another.

* **presence**: is each shape / colour word in the scene? (mean AP over the 10 words; global average pool)
* **count**: how many objects (1-3)? (accuracy; global average pool)
* **binding**: the colour of the object of a named shape, in scenes with 2-3 objects where that shape occurs
  once; one classifier per shape (accuracy averaged over shapes; global average pool). A bag of tags — which
  colours and which shapes are present — does not tell which colour goes with which shape.
* **relation**: is the object of named shape A left of (above) the object of named shape B? One classifier per
  ordered shape pair and relation, on scenes where both occur once and are not in the same column (row);
  accuracy averaged over pairs. Global pooling discards position, so this probe reads the flattened feature
  map (h·w·C).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import torch

from icmlm_zoo.training.data.synthetic import COLORS as _COLOR_RGB
from icmlm_zoo.training.data.synthetic import SHAPES

from .synthetic_probes import _standardize

__all__ = ["SceneTargets", "scene_targets", "backbone_features", "probe_scores", "probe_chance"]

COLORS = tuple(_COLOR_RGB)  # the generator's colour words, in its order


class SceneTargets(dict):
    """Targets per task; entries are arrays over scenes (-1 where a scene has no answer for that item)."""


def scene_targets(scenes) -> SceneTargets:
    """``presence`` (N, 10) multi-hot; ``count`` (N,); ``binding[shape]`` (N,) colour index or -1;
    ``relation[(a, b, 'left'|'above')]`` (N,) 1/0 or -1."""
    n = len(scenes)
    t = SceneTargets(presence=np.zeros((n, len(SHAPES) + len(COLORS)), int), count=np.zeros(n, int),
                     binding={s: np.full(n, -1) for s in SHAPES},
                     relation={(a, b, r): np.full(n, -1) for a, b in itertools.permutations(SHAPES, 2)
                               for r in ("left", "above")})
    for i in range(n):
        objs = scenes._layout(i)[0]
        t["count"][i] = len(objs)
        for o in objs:
            t["presence"][i, SHAPES.index(o["shape"])] = 1
            t["presence"][i, len(SHAPES) + COLORS.index(o["color"])] = 1
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
    return t


@torch.no_grad()
def backbone_features(model: torch.nn.Module, scenes, image_size: int, mean, std, *, batch_size: int = 64,
                      device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(pooled (N, C), flattened map (N, h·w·C)) of the backbone's final feature map for every scene."""
    from torchvision.transforms import v2 as T

    tf = T.Compose([T.ToImage(), T.Resize((image_size, image_size)), T.ToDtype(torch.float32, scale=True),
                    T.Normalize(list(mean), list(std))])
    model = model.to(device).eval()
    pooled, flat = [], []
    for start in range(0, len(scenes), batch_size):
        x = torch.stack([tf(scenes.scene(i)["image"]) for i in range(start, min(len(scenes), start + batch_size))])
        fmap = model.forward_features(x.to(device)).float()
        pooled.append(fmap.mean((2, 3)).cpu().numpy())
        flat.append(fmap.flatten(1).cpu().numpy())
    return np.concatenate(pooled), np.concatenate(flat)


def _accuracy(xtr, ytr, xte, yte, seed: int) -> float | None:
    from sklearn.linear_model import LogisticRegression

    mtr, mte = ytr >= 0, yte >= 0
    if mte.sum() == 0 or len(np.unique(ytr[mtr])) < 2:
        return None
    clf = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(xtr[mtr], ytr[mtr])
    return float((clf.predict(xte[mte]) == yte[mte]).mean())


def probe_scores(train_feats: tuple[np.ndarray, np.ndarray], train_t: SceneTargets,
                 test_feats: tuple[np.ndarray, np.ndarray], test_t: SceneTargets, *, seed: int = 0) -> dict[str, float]:
    """``presence_mAP``, ``count_acc``, ``binding_acc``, ``relation_acc`` of one backbone (see the module doc)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    ptr, pte = _standardize(train_feats[0], test_feats[0])
    ftr, fte = _standardize(train_feats[1], test_feats[1])
    res: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        aps = []
        for k in range(train_t["presence"].shape[1]):
            ytr, yte = train_t["presence"][:, k], test_t["presence"][:, k]
            if ytr.min() == ytr.max() or yte.max() == 0:
                continue
            clf = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(ptr, ytr)
            aps.append(average_precision_score(yte, clf.decision_function(pte)))
        res["presence_mAP"] = float(np.mean(aps))
        res["count_acc"] = _accuracy(ptr, train_t["count"], pte, test_t["count"], seed)
        accs = [_accuracy(ptr, train_t["binding"][s], pte, test_t["binding"][s], seed) for s in SHAPES]
        res["binding_acc"] = float(np.mean([a for a in accs if a is not None]))
        accs = [_accuracy(ftr, train_t["relation"][k], fte, test_t["relation"][k], seed) for k in train_t["relation"]]
        res["relation_acc"] = float(np.mean([a for a in accs if a is not None]))
    return res


def probe_chance(train_t: SceneTargets, test_t: SceneTargets) -> dict[str, float]:
    """A feature-less guesser: label frequency for presence AP, the training majority for accuracies."""
    def majority(ytr, yte):
        mtr, mte = ytr >= 0, yte >= 0
        if mte.sum() == 0 or mtr.sum() == 0:
            return None
        return float((yte[mte] == np.bincount(ytr[mtr]).argmax()).mean())

    res: dict[str, Any] = {"presence_mAP": float(test_t["presence"].mean()),
                           "count_acc": majority(train_t["count"], test_t["count"])}
    for task in ("binding", "relation"):
        vals = [majority(train_t[task][k], test_t[task][k]) for k in train_t[task]]
        res[f"{task}_acc"] = float(np.mean([v for v in vals if v is not None]))
    return res
