"""Held-out probes on the embedded procedural scenes (never seen in training: seeds from 20_000 on).

Frozen pooled features of held-out scenes feed simple linear classifiers (scikit-learn logistic regression,
fixed seeds): shape presence and colour presence (multi-label, mean AP over labels), the colour and the shape of
the largest object (attributes, accuracy) and the number of objects (accuracy). Train and test scenes come from
two different held-out seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

HELD_OUT_SEED = 20_000  # training uses seed 0 and validates on 10_000: both differ


def _scenes_module():
    try:
        from icmlm_zoo.training.data import synthetic
    except ImportError as exc:  # pragma: no cover - the trainer ships with the package
        raise RuntimeError(f"the held-out probes need icmlm_zoo.training.data.synthetic (the embedded scenes): {exc}") from exc
    return synthetic


class SceneImages(Dataset):
    """``SyntheticScenes`` as ``(tensor, index)`` items through an image transform."""

    def __init__(self, scenes, transform):
        self.scenes, self.transform = scenes, transform

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int):
        return self.transform(self.scenes.scene(i)["image"]), i


def scene_labels(scenes) -> dict[str, np.ndarray]:
    """Targets per task: ``shape_presence`` / ``color_presence`` (N, K) in {0,1}; ``largest_color``,
    ``largest_shape``, ``count`` (N,) class indices."""
    syn = _scenes_module()
    shapes, colors = list(syn.SHAPES), list(syn.COLORS)
    out: dict[str, list] = {k: [] for k in ("shape_presence", "color_presence", "largest_color", "largest_shape",
                                            "count")}
    for i in range(len(scenes)):
        objs = scenes._layout(i)[0] if hasattr(scenes, "_layout") else scenes.scene(i)["objects"]
        out["shape_presence"].append([int(any(o["shape"] == s for o in objs)) for s in shapes])
        out["color_presence"].append([int(any(o["color"] == c for o in objs)) for c in colors])
        big = max(objs, key=lambda o: (o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]))
        out["largest_color"].append(colors.index(big["color"]))
        out["largest_shape"].append(shapes.index(big["shape"]))
        out["count"].append(len(objs))
    return {k: np.asarray(v) for k, v in out.items()}


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return (train - mu) / sd, (test - mu) / sd


def fit_probes(x_train: np.ndarray, y_train: dict[str, np.ndarray], x_test: np.ndarray,
               y_test: dict[str, np.ndarray], *, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Train one linear classifier per task on ``x_train`` and score it on ``x_test`` (metrics in [0, 1])."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    x_train, x_test = _standardize(x_train, x_test)
    res: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for task in ("shape_presence", "color_presence"):
            aps = []
            for k in range(y_train[task].shape[1]):
                yt, ye = y_train[task][:, k], y_test[task][:, k]
                if yt.min() == yt.max() or ye.max() == 0:
                    continue
                clf = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x_train, yt)
                aps.append(average_precision_score(ye, clf.decision_function(x_test)))
            res[f"{task}_mAP"] = float(np.mean(aps)) if aps else float("nan")
        for task in ("largest_color", "largest_shape", "count"):
            if len(np.unique(y_train[task])) < 2:
                res[f"{task}_acc"] = float("nan")
                continue
            clf = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x_train, y_train[task])
            res[f"{task}_acc"] = float((clf.predict(x_test) == y_test[task]).mean())
    return res


def chance_levels(y_train: dict[str, np.ndarray], y_test: dict[str, np.ndarray]) -> dict[str, float]:
    """What a feature-less guesser gets: label frequency for presence AP, majority class for accuracies."""
    res = {}
    for task in ("shape_presence", "color_presence"):
        res[f"{task}_mAP"] = float(y_test[task].mean())
    for task in ("largest_color", "largest_shape", "count"):
        major = np.bincount(y_train[task]).argmax()
        res[f"{task}_acc"] = float((y_test[task] == major).mean())
    return res


def held_out_scenes(num_train: int, num_test: int, image_size: int = 64, seed: int = 0):
    """The two held-out scene sets (train probes / test probes) for a given evaluation seed."""
    syn = _scenes_module()
    base = HELD_OUT_SEED + 2 * seed
    return (syn.SyntheticScenes(num_train, image_size=image_size, seed=base),
            syn.SyntheticScenes(num_test, image_size=image_size, seed=base + 1))


def run_probes(model: str, *, arch: str | None = None, num_train: int = 300, num_test: int = 200,
               image_size: int = 96, stage: int | str = -1, batch_size: int = 32, seed: int = 0,
               device: str = "cpu", loaded: Any = None) -> dict[str, Any]:
    """Held-out presence/attribute probes for one model spec; returns metrics plus chance levels."""
    from icmlm_zoo.evaluation.features import eval_transform, extract, resolve_stage
    from icmlm_zoo.evaluation.model_loading import load_backbone

    loaded = loaded or load_backbone(model, arch=arch, device=device)
    train, test = held_out_scenes(num_train, num_test, image_size, seed)
    transform = eval_transform({**loaded.data_config, "crop_pct": 1.0}, image_size)
    feats = []
    for name, scenes in (("train", train), ("test", test)):
        f, _ = extract(loaded.model, SceneImages(scenes, transform), stage=stage, batch_size=batch_size,
                       device=device, desc=f"probe features ({name})")
        feats.append(f)
    y_train, y_test = scene_labels(train), scene_labels(test)
    metrics = fit_probes(feats[0], y_train, feats[1], y_test, seed=seed)
    return {"model": model, "arch": loaded.name, "stage": resolve_stage(loaded.model, stage), "metrics": metrics,
            "chance": chance_levels(y_train, y_test), "num_train": num_train, "num_test": num_test,
            "image_size": image_size, "seed": seed, "scene_seeds": [train.seed, test.seed]}
