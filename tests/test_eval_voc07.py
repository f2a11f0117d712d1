"""VOC07 SVM protocol on a tiny generated VOC-layout folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from icmlm_zoo.analysis.cli import main
from icmlm_zoo.evaluation import voc07

CLASSES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
TINY = "random:icmlm_resnet_tiny"


def make_voc(root, n_trainval=12, n_test=9, size=32, seed=0):
    """VOC2007/{JPEGImages,ImageSets/Main,Annotations}; a class is present when a square of its colour is drawn."""
    rng = np.random.default_rng(seed)
    voc = root / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    names = list(CLASSES)
    for split, n, offset in (("trainval", n_trainval, 0), ("test", n_test, 1000)):
        lines = {c: [] for c in names}
        for i in range(n):
            iid = f"{offset + i:06d}"
            img = np.full((size, size, 3), 128, np.uint8)
            present = {names[i % 3]} | ({names[(i + 1) % 3]} if rng.random() < 0.3 else set())
            for c in present:
                x, y = rng.integers(0, size // 2, 2)
                img[y:y + size // 2, x:x + size // 2] = CLASSES[c]
            Image.fromarray(img).save(voc / "JPEGImages" / f"{iid}.jpg")
            for c in names:
                flag = "1" if c in present else "-1"
                if c not in present and i == 5:
                    flag = "0"  # one difficult entry per class
                lines[c].append(f"{iid} {flag}")
        for c in names:
            (voc / "ImageSets" / "Main" / f"{c}_{split}.txt").write_text("\n".join(lines[c]) + "\n")
    return voc


def test_voc07_map_in_unit_interval(tmp_path):
    root = make_voc(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["voc07", "--model", TINY, "--data", str(tmp_path / "data"), "--image-size", "32",
                 "--costs", "0.1", "1", "--out", str(out)]) == 0
    result = json.loads((out / "voc07.json").read_text())
    assert 0.0 <= result["mAP"] <= 1.0
    assert set(result["per_class"]) == set(CLASSES)
    assert all(0.0 <= v["AP"] <= 1.0 and v["C"] in (0.1, 1.0) for v in result["per_class"].values())
    assert "mAP" in (out / "voc07.md").read_text()
    assert len(list((out / "cache").glob("*.npz"))) == 2  # trainval + test features cached
    # cached features give the same numbers; an earlier stage works too
    again = voc07.run_voc07(TINY, root, image_size=32, costs=(0.1, 1.0), cache_dir=out / "cache")
    assert again["mAP"] == pytest.approx(result["mAP"])
    early = voc07.run_voc07(TINY, root, image_size=32, costs=(1.0,), stage="layer2")
    assert early["stage"] == "layer2" and early["feature_dim"] == 64


def test_wrong_layout_names_expected_layout(tmp_path, capsys):
    (tmp_path / "VOC2007" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        voc07.find_voc_root(tmp_path)
    msg = str(err.value)
    assert "VOC2007/JPEGImages" in msg and "ImageSets/Main/{cls}_trainval.txt" in msg and "Annotations" in msg
    assert main(["voc07", "--model", TINY, "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "ImageSets/Main" in capsys.readouterr().err


def test_bad_label_line_and_missing_test_list(tmp_path):
    voc = make_voc(tmp_path, n_trainval=3, n_test=3)
    (voc / "ImageSets" / "Main" / "red_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="lack a trainval or a test list"):
        voc07.discover_classes(voc)
    (voc / "ImageSets" / "Main" / "red_test.txt").write_text("001000 yes\n")
    with pytest.raises(ValueError, match="expected '<id> 1|-1|0'"):
        voc07.load_split(voc, "test", ["red"])


def test_svm_separates_separable_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = np.where(x[:, 0] > 0, 1, -1)
    labels = y[:, None]
    res = voc07.evaluate(x[:200], labels[:200], x[200:], labels[200:], ["a"], costs=(1.0, 10.0))
    assert res["mAP"] > 0.95
