"""icmlm-eval transfer: the COCO detection scenes, the pycocotools wiring, the shifted renderer, the quick path."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")


def _perfect(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
            for a in gt["annotations"]]


@pytest.mark.parametrize("label_set", ["shape", "shape_colour"])
def test_ground_truth_as_detections_scores_ap_one(label_set):
    from icmlm_zoo.analysis.detection_scenes import coco_ap, coco_dataset, detection_scenes

    gt = coco_dataset(detection_scenes(30, seed=5, size=64, label_set=label_set), label_set)
    assert coco_ap(gt, _perfect(gt)) == {"AP": 1.0, "AP50": 1.0}


def test_shuffled_boxes_score_near_zero():
    from icmlm_zoo.analysis.detection_scenes import coco_ap, coco_dataset, detection_scenes

    gt = coco_dataset(detection_scenes(60, seed=5, size=64), "shape")
    dets = _perfect(gt)
    rng = np.random.default_rng(0)
    boxes = [d["bbox"] for d in dets]
    order = rng.permutation(len(boxes))
    shuffled = [{**d, "bbox": boxes[j]} for d, j in zip(dets, order)]  # right classes, other scenes' boxes
    assert coco_ap(gt, shuffled)["AP"] < 0.1
    wrong_class = [{**d, "category_id": d["category_id"] % 4 + 1} for d in dets]  # right boxes, wrong classes
    assert coco_ap(gt, wrong_class) == {"AP": 0.0, "AP50": 0.0}
    assert coco_ap(gt, []) == {"AP": 0.0, "AP50": 0.0}


def test_colour_mistakes_cost_shape_colour_ap_but_not_the_merged_shape_ap():
    from icmlm_zoo.analysis.detection_scenes import coco_ap, coco_dataset, detection_scenes, shape_of_category

    gt = coco_dataset(detection_scenes(40, seed=5, size=64, label_set="shape_colour"), "shape_colour")
    shape_gt = coco_dataset(detection_scenes(40, seed=5, size=64, label_set="shape"), "shape")
    to_shape = shape_of_category()
    assert to_shape[1] == 1 and to_shape[7] == 2 and set(to_shape.values()) == {1, 2, 3, 4}
    recoloured = [{**d, "category_id": (d["category_id"] - 1) // 6 * 6 + d["category_id"] % 6 + 1}  # next colour
                  for d in _perfect(gt)]
    assert coco_ap(gt, recoloured)["AP"] == 0.0
    merged = [{**d, "category_id": to_shape[d["category_id"]]} for d in recoloured]
    assert coco_ap(shape_gt, merged) == {"AP": 1.0, "AP50": 1.0}
    # one box per colour on each object (what per-class NMS leaves): merged without NMS they are duplicates
    from icmlm_zoo.analysis.transfer_detection import merge_classes

    scores = np.random.default_rng(0).uniform(0.1, 1.0, size=2 * len(recoloured))
    doubled = [{**d, "score": float(sc)} for d, sc in zip(_perfect(gt) + recoloured, scores)]
    naive = [{**d, "category_id": to_shape[d["category_id"]]} for d in doubled]
    assert coco_ap(shape_gt, naive)["AP"] < 1.0
    assert coco_ap(shape_gt, merge_classes(doubled, to_shape)) == {"AP": 1.0, "AP50": 1.0}


def test_half_the_objects_found_scores_about_half():
    from icmlm_zoo.analysis.detection_scenes import coco_ap, coco_dataset, detection_scenes

    gt = coco_dataset(detection_scenes(60, seed=5, size=64), "shape")
    dets = _perfect(gt)[::2]
    assert 0.35 < coco_ap(gt, dets)["AP"] < 0.65


def test_boxes_come_from_the_generator_and_held_out_seeds_differ():
    from icmlm_zoo.analysis.detection_scenes import DETECTION_SEED_BASE, category_names, detection_scenes
    from icmlm_zoo.training.data.synthetic import SyntheticScenes

    scenes = detection_scenes(5, seed=2, size=64, label_set="shape_colour")
    gen = SyntheticScenes(5, image_size=64, seed=DETECTION_SEED_BASE + 2)
    names = category_names("shape_colour")
    for k, s in enumerate(scenes):
        objs = gen.scene(k)["objects"]
        assert s["boxes"].tolist() == [list(map(float, o["box"])) for o in objs]
        assert [names[c - 1] for c in s["labels"]] == [f"{o['color']} {o['shape']}" for o in objs]
    pretraining = SyntheticScenes(5, image_size=64, seed=0)
    assert all(pretraining.caption(k) != gen.caption(k) for k in range(5))
    with pytest.raises(ValueError, match="label_set"):
        category_names("colour")


def test_write_coco_files_load_in_pycocotools(tmp_path):
    from PIL import Image
    from pycocotools.coco import COCO

    from icmlm_zoo.analysis.detection_scenes import write_coco

    images, ann = write_coco(tmp_path / "coco", n_scenes=6, seed=1, size=64, label_set="shape_colour")
    coco = COCO(str(ann))
    assert len(coco.getImgIds()) == 6 and len(coco.getCatIds()) == 24
    for img in coco.loadImgs(coco.getImgIds()):
        assert Image.open(images / img["file_name"]).size == (img["width"], img["height"]) == (64, 64)
    for a in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["area"] == pytest.approx(w * h) and w > 0 and h > 0
        assert 0 <= x and x + w <= 64 and 0 <= y and y + h <= 64
    with pytest.raises(FileExistsError):
        write_coco(tmp_path / "coco", n_scenes=2, seed=1, size=64)
    assert json.loads(ann.read_text())["categories"][0] == {"id": 1, "name": "red circle", "supercategory": "shape"}


def test_shifted_scenes_keep_labels_and_move_boxes_onto_the_objects():
    from icmlm_zoo.analysis.detection_scenes import detection_scenes
    from icmlm_zoo.training.data.synthetic import COLOR_RGB

    plain = detection_scenes(20, seed=3, size=64)
    shifted = detection_scenes(20, seed=3, size=64, shifted=True)
    for p, s in zip(plain, shifted):
        assert p["labels"].tolist() == s["labels"].tolist()
        side_p = p["boxes"][:, 2] - p["boxes"][:, 0]
        side_s = s["boxes"][:, 2] - s["boxes"][:, 0]
        assert np.all(side_s < side_p) and np.all(side_s > 0.6 * side_p)
        arr = np.asarray(s["image"]).astype(float)
        for (x0, y0, x1, y1), obj in zip(s["boxes"], s["objects"]):
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            assert np.abs(arr[cy, cx] - COLOR_RGB[obj["color"]]).max() < 40  # the object's colour at its box centre
        assert not np.array_equal(np.asarray(p["image"]), np.asarray(s["image"]))


@pytest.mark.slow
@pytest.mark.usefixtures("text_side")  # the real MiniLM, loaded once per session
def test_transfer_quick_path_end_to_end_and_resumes(tmp_path):
    from icmlm_zoo.analysis.cli import main as eval_main
    from icmlm_zoo.analysis.transfer import PRETRAININGS

    out = tmp_path / "transfer"
    assert eval_main(["transfer", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "transfer.json").read_text())
    tasks = {"detection shape", "detection shape_colour", "binding (fine-tuned)", "binding (frozen)"}
    assert {(r["pretraining"], r["task"], r["budget"]) for r in res["records"]} == {
        (p, t, b) for p in PRETRAININGS for t in tasks for b in (8, 16)}
    for r in res["records"]:
        keys = ("AP", "AP50", "AP_shifted", "AP50_shifted") if r["task"].startswith("detection") else ("acc",
                                                                                                      "acc_shifted")
        assert all(0.0 <= r["metrics"][k] <= 1.0 for k in keys), r
        assert r["seed"] == 0 and r["cpu_s"] > 0
    assert res["rows"]["detection shape"]["8"]["random init"]["AP"][2] == 1  # mean, std, seeds
    md = (out / "transfer.md").read_text()
    assert "QUICK" in md and "| random init |" in md and "| TP_postag |" in md and "Targets" in md
    # every record is reused: a second call fine-tunes nothing and rewrites the same table
    before = {p: p.stat().st_mtime for p in (out / "records").glob("*.json")}
    assert eval_main(["transfer", "--quick", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime for p in (out / "records").glob("*.json")} == before
    assert json.loads((out / "transfer.json").read_text())["rows"] == res["rows"]


def test_keep_features_recipe_freezes_batch_norm_and_slows_the_trunk_only():
    import timm
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    import icmlm_zoo  # noqa: F401
    from icmlm_zoo.analysis.detection_scenes import detection_scenes
    from icmlm_zoo.analysis.transfer_args import RECIPES
    from icmlm_zoo.analysis.transfer_detection import DetectionRecipe, build_detector, train_detector

    scenes = detection_scenes(2, seed=0, size=64)
    for name, trunk_step in (("standard", 1.0), ("keep-features", 0.1)):
        recipe = DetectionRecipe(iters=1, warmup=1, batch_size=2, lr=0.01, **RECIPES[name])
        torch.manual_seed(0)
        det = build_detector(timm.create_model("icmlm_resnet_tiny"), 4, size=64, mean=(0.5,) * 3, std=(0.25,) * 3,
                             recipe=recipe)
        frozen = [m for m in det.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert bool(frozen) == (name == "keep-features")
        before = {n: p.detach().clone() for n, p in det.named_parameters()}
        train_detector(det, scenes, recipe=recipe, seed=0)  # one SGD step from zero momentum: lr × (grad + wd)
        grads = {n: p.grad for n, p in det.named_parameters()}
        moved = 0
        for n, p in det.named_parameters():
            if grads[n] is None:  # unused by the detector (e.g. the trunk's layer1 under a frozen stem): untouched
                assert torch.equal(p.detach(), before[n]), n
                continue
            expected = before[n] - recipe.lr * (trunk_step if n.startswith("backbone.body.") else 1.0) * (
                grads[n] + 1e-4 * before[n])
            assert torch.allclose(p.detach(), expected, atol=1e-6), n
            moved += n.startswith("backbone.body.")
        assert moved > 10  # the trunk is trained in both recipes


def test_transfer_rejects_an_unknown_recipe_or_budget(tmp_path):
    from icmlm_zoo.analysis.transfer import run_transfer

    with pytest.raises(ValueError, match="recipe"):
        run_transfer(tmp_path, recipe="gentle", table_only=True)
    with pytest.raises(ValueError, match="budget"):
        run_transfer(tmp_path, budgets=[50], table_only=True)


@pytest.mark.slow
def test_budgets_flag_keeps_the_same_draw_as_the_full_table(tmp_path):
    """``--budgets 8`` fine-tunes on the same 8 scenes as the full table's budget-8 records (the pool does not
    shrink to the largest budget asked for), so records of either call compare."""
    from icmlm_zoo.analysis.transfer import run_transfer

    kw = dict(quick=True, pretrainings=["random init"], train_missing=False)
    full = run_transfer(tmp_path / "full", **kw)
    part = run_transfer(tmp_path / "part", budgets=[8], **kw)
    assert {r["budget"] for r in part["records"]} == {8}
    by_key = {(r["task"], r["budget"]): r["metrics"] for r in full["records"]}
    for r in part["records"]:
        assert r["metrics"] == by_key[(r["task"], r["budget"])], r["task"]
