"""PASCAL VOC 2007 classification with linear SVMs on frozen features (the ICMLM/VirTex protocol).

Per class: ``LinearSVC`` (class weights 2:1 positive:negative) for each cost, 3-fold cross-validated average
precision on trainval picks the cost, refit on all of trainval, AP on test. Difficult examples (``0`` in the
ImageSets files) are left out of training and of the test AP. AP is scikit-learn's non-interpolated
``average_precision_score``; mAP is the mean over classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from icmlm_zoo.backbone_factory import load_backbone
from icmlm_zoo.cli_support import require_extras

from .features import ImageList, cache_key, extract, resolve_stage, source_fingerprint

# sklearn (the [eval] extra) is imported inside the SVM functions: the VOC reader and features need only the core
from .reporting import markdown_table

DEFAULT_COSTS = (0.01, 0.1, 1.0, 10.0)

LAYOUT = """expected the PASCAL VOC 2007 layout:
  VOC2007/JPEGImages/<id>.jpg
  VOC2007/ImageSets/Main/{cls}_trainval.txt and {cls}_test.txt   (lines: '<id> 1|-1|0'; 0 = difficult)
  VOC2007/Annotations/<id>.xml                                  (optional here)
pass --data pointing at VOC2007/ (or at a folder holding VOC2007/ or VOCdevkit/VOC2007/)"""


@dataclass
class VocSplit:
    """Image paths and a ``(N, C)`` label matrix in {1, 0 (difficult), -1} for one split."""

    ids: list[str]
    paths: list[Path]
    labels: np.ndarray


def find_voc_root(path: str | Path) -> Path:
    """The folder holding ``JPEGImages`` and ``ImageSets/Main``; raises with the expected layout if none."""
    path = Path(path)
    for cand in (path, path / "VOC2007", path / "VOCdevkit" / "VOC2007"):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Main").is_dir():
            return cand
    raise FileNotFoundError(f"{path}: no JPEGImages/ and ImageSets/Main/ found.\n{LAYOUT}")


def discover_classes(root: Path) -> list[str]:
    """Classes that have both ``{cls}_trainval.txt`` and ``{cls}_test.txt`` (20 for real VOC07)."""
    main = root / "ImageSets" / "Main"
    train = {p.name[: -len("_trainval.txt")] for p in main.glob("*_trainval.txt")}
    test = {p.name[: -len("_test.txt")] for p in main.glob("*_test.txt")}
    missing = sorted(train ^ test)
    if missing:
        raise FileNotFoundError(f"{main}: classes {missing} lack a trainval or a test list.\n{LAYOUT}")
    if not train:
        raise FileNotFoundError(f"{main}: no {{cls}}_trainval.txt / {{cls}}_test.txt files.\n{LAYOUT}")
    return sorted(train)


def load_split(root: Path, split: str, classes: Sequence[str]) -> VocSplit:
    """Read ``{cls}_{split}.txt`` for every class into a label matrix (ids in file order of the first class)."""
    per_class: list[dict[str, int]] = []
    for cls in classes:
        f = root / "ImageSets" / "Main" / f"{cls}_{split}.txt"
        entries: dict[str, int] = {}
        for n, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                raise ValueError(f"{f}:{n}: expected '<id> 1|-1|0', got {line!r}\n{LAYOUT}")
            entries[parts[0]] = int(parts[1])
        per_class.append(entries)
    ids = list(per_class[0])
    for cls, entries in zip(classes, per_class):
        if set(entries) != set(ids):
            raise ValueError(f"{cls}_{split}.txt lists other image ids than {classes[0]}_{split}.txt")
    labels = np.array([[e[i] for e in per_class] for i in ids], dtype=np.int64)
    paths = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of the {split} split are missing, e.g. {missing[0]}\n{LAYOUT}")
    return VocSplit(ids, paths, labels)


def train_class_svm(x_train: np.ndarray, y_train: np.ndarray, costs: Sequence[float] = DEFAULT_COSTS,
                    folds: int = 3, seed: int = 0):
    """Pick the cost by cross-validated AP and refit; ``y`` in {1, -1}. Returns ``(svm, cost, cv_scores)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    def svm(c: float) -> LinearSVC:
        return LinearSVC(C=c, class_weight={1: 2, -1: 1}, max_iter=2000, random_state=seed)

    n_pos, n_neg = int((y_train == 1).sum()), int((y_train == -1).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a class needs positives and negatives in trainval (got {n_pos} / {n_neg})")
    k = min(folds, n_pos, n_neg)
    scores: dict[float, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if k >= 2:
            cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            for c in costs:
                scores[c] = float(np.mean(cross_val_score(svm(c), x_train, y_train, cv=cv,
                                                          scoring="average_precision")))
            best = max(costs, key=lambda c: (scores[c], -c))
        else:
            best = 1.0 if 1.0 in costs else costs[len(costs) // 2]
        model = svm(best).fit(x_train, y_train)
    return model, best, scores


def evaluate(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             classes: Sequence[str], costs: Sequence[float] = DEFAULT_COSTS, seed: int = 0) -> dict:
    """Per-class SVMs on L2-normalised features; returns ``{"mAP", "per_class": {cls: {AP, C}}}`` (AP in [0,1])."""
    from sklearn.metrics import average_precision_score

    per_class = {}
    for j, cls in enumerate(tqdm(classes, desc=f"SVMs ({len(costs)} costs x 3-fold CV)", unit="class", leave=False)):
        keep = train_y[:, j] != 0
        model, cost, cv = train_class_svm(train_x[keep], train_y[keep, j], costs, seed=seed)
        tkeep = test_y[:, j] != 0
        y = test_y[tkeep, j] == 1
        ap = float(average_precision_score(y, model.decision_function(test_x[tkeep]))) if y.any() else float("nan")
        per_class[cls] = {"AP": ap, "C": cost, "cv_AP": cv, "n_train_pos": int((train_y[keep, j] == 1).sum()),
                          "n_test_pos": int(y.sum())}
    aps = [v["AP"] for v in per_class.values() if not np.isnan(v["AP"])]
    return {"mAP": float(np.mean(aps)) if aps else float("nan"), "per_class": per_class}


def run_voc07(model: str, data: str | Path, *, arch: str | None = None, stage: int | str = -1,
              image_size: int | None = None, batch_size: int = 32, costs: Sequence[float] = DEFAULT_COSTS,
              cache_dir: str | Path | None = None, device: str = "cpu", seed: int = 0,
              num_workers: int = 0) -> dict:
    """The whole protocol for one model spec; returns the result dict (see :func:`evaluate`) plus metadata."""
    require_extras("the VOC07 SVMs", ["eval"], ["sklearn"])  # before the long feature extraction

    root = find_voc_root(data)
    classes = discover_classes(root)
    train, test = load_split(root, "trainval", classes), load_split(root, "test", classes)
    loaded = load_backbone(model, arch=arch, device=device, image_size=image_size)
    transform = loaded.transform
    feats = {}
    for name, split in (("trainval", train), ("test", test)):
        cache = None
        if cache_dir is not None:
            key = cache_key(source_fingerprint(model), arch, str(stage), repr(transform), str(root), split.ids)
            cache = Path(cache_dir) / f"voc07_{name}_{key}.npz"
        feats[name], _ = extract(loaded.model, ImageList(split.paths, transform), stage=stage, batch_size=batch_size,
                                 device=device, l2_normalize=True, cache=cache, desc=f"voc07 {name}",
                                 num_workers=num_workers)
    result = evaluate(feats["trainval"], train.labels, feats["test"], test.labels, classes, costs, seed)
    result.update({"task": "voc07_svm", "model": model, "arch": loaded.name,
                   "stage": resolve_stage(loaded.model, stage), "feature_dim": int(feats["test"].shape[1]),
                   "n_trainval": len(train.ids), "n_test": len(test.ids), "costs": list(costs), "data": str(root)})
    return result


def markdown(result: dict) -> str:
    """A human-readable table of per-class AP and the mAP."""
    rows = [(cls, f"{100 * v['AP']:.2f}", f"{v['C']:g}", v["n_train_pos"], v["n_test_pos"])
            for cls, v in result["per_class"].items()]
    lines = [f"# VOC07 linear SVM — `{result.get('model', '?')}` ({result.get('stage', '')})", "",
             f"**mAP: {100 * result['mAP']:.2f}**", "",
             *markdown_table(("class", "AP (%)", "C", "train pos", "test pos"), rows, "lrrrr")]
    return "\n".join(lines) + "\n"
