"""detectron2, executed: Faster R-CNN FPN fine-tuned on the embedded detection scenes from an ICMLM backbone's
``.pkl`` (``icmlm_zoo.detection.detectron2.export_detectron2``) and from random init, same iterations, scored with
detectron2's ``COCOEvaluator``.

Not part of the test run: it needs detectron2, which is not on PyPI (build steps in docs/detection.md)::

    python scripts/detectron2_finetune.py --backbone /work/runs/d2-demo --out /tmp/d2ft --iters 300 --seeds 0 1 2

Per seed it writes ``OUT/<init>-s<seed>/`` (detectron2's log, metrics.json, COCO results) and appends to
``OUT/results.json``; the summary table (mean ± std over seeds) is printed and written to ``OUT/results.md``.
The config is the documented one (``docs/configs/detectron2/icmlm_R50_FPN_coco_1x.yaml`` over ``icmlm_base.yaml``)
plus the exporter's ``.yaml``, with the overrides of :data:`CPU_OVERRIDES` (a CPU budget and small scenes).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import pickle
import resource
import statistics
import sys
from pathlib import Path

import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import BACKBONE_REGISTRY, build_model
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from icmlm_zoo.analysis.detection_scenes import category_names, write_coco
from icmlm_zoo.detection.detectron2 import export_detectron2

REPO = Path(__file__).resolve().parents[1]
DOC_CONFIG = REPO / "docs" / "configs" / "detectron2" / "icmlm_R50_FPN_coco_1x.yaml"
# What differs from the documented (COCO, 8-GPU) config, and why: one CPU process (BN, not SyncBN; no precise-BN
# pass), small scenes with 14-42 px objects (anchors; input size from --size), and a 2-core CPU budget (detectron2's
# faster_rcnn_R_50_FPN box head of two fc layers instead of 4conv1fc, narrow FPN and box head, fewer proposals and
# sampled RoIs, no mask head).
CPU_OVERRIDES = [
    "MODEL.DEVICE", "cpu", "MODEL.MASK_ON", False,
    "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", 64,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 300, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 150,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 300, "MODEL.RPN.POST_NMS_TOPK_TEST", 100, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_BOX_HEAD.NUM_CONV", 0, "MODEL.ROI_BOX_HEAD.NUM_FC", 2, "MODEL.ROI_BOX_HEAD.FC_DIM", 128,
    "MODEL.ROI_BOX_HEAD.NORM", "",
    "DATALOADER.NUM_WORKERS", 0, "TEST.PRECISE_BN.ENABLED", False, "TEST.EVAL_PERIOD", 0,
]


@BACKBONE_REGISTRY.register()
def build_icmlm_resnet_fpn_backbone(cfg: CfgNode, input_shape):
    """detectron2's own ResNet (BasicStem, BasicBlock stages of ``MODEL.ICMLM_BLOCKS`` blocks, widths doubling from
    ``RES2_OUT_CHANNELS``) + FPN: ``build_resnet_fpn_backbone`` for a depth its table lacks (icmlm_resnet_tiny)."""
    r = cfg.MODEL.RESNETS
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_ch, out_ch = [], r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, n in enumerate(cfg.MODEL.ICMLM_BLOCKS):
        stages.append(ResNet.make_stage(BasicBlock, n, stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1),
                                        in_channels=in_ch, out_channels=out_ch, norm=r.NORM))
        in_ch, out_ch = out_ch, out_ch * 2
    bottom_up = ResNet(stem, stages, out_features=r.OUT_FEATURES).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
    f = cfg.MODEL.FPN
    return FPN(bottom_up, f.IN_FEATURES, f.OUT_CHANNELS, f.NORM, LastLevelMaxPool(), f.FUSE_TYPE)


def trunk_shape(pkl: Path) -> tuple[list[int], int, int, bool]:
    """(blocks per stage, stem width, res2 width, bottleneck?) of an exported detectron2 ResNet."""
    model = pickle.loads(pkl.read_bytes())["model"]
    blocks = [1 + max(int(k.split(".")[1]) for k in model if k.startswith(f"res{s}.")) for s in range(2, 6)]
    bottleneck = any(".conv3." in k for k in model)
    res2_out = model[f"res2.0.conv{3 if bottleneck else 2}.weight"].shape[0]
    return blocks, model["stem.conv1.weight"].shape[0], res2_out, bottleneck


def base_config(pkl: Path) -> CfgNode:
    """The documented FPN config + the exporter's ``.yaml`` beside ``pkl`` + :data:`CPU_OVERRIDES`. A trunk of
    no standard depth (the exporter writes ``DEPTH: FILL_ME``) gets :func:`build_icmlm_resnet_fpn_backbone`."""
    cfg = get_cfg()
    cfg.MODEL.ICMLM_BLOCKS = [2, 2, 2, 2]
    cfg.merge_from_file(str(DOC_CONFIG))
    exported = yaml.safe_load(pkl.with_suffix(".yaml").read_text())
    blocks, stem_w, res2_w, bottleneck = trunk_shape(pkl)
    if isinstance(exported["MODEL"]["RESNETS"]["DEPTH"], int):
        cfg.merge_from_file(str(pkl.with_suffix(".yaml")))
    else:
        if bottleneck:
            raise SystemExit(f"{pkl}: a Bottleneck ResNet of blocks {blocks} has no detectron2 builder here")
        exported["MODEL"]["RESNETS"].pop("DEPTH")
        cfg.merge_from_other_cfg(CfgNode(exported))
        cfg.MODEL.BACKBONE.NAME = "build_icmlm_resnet_fpn_backbone"
        cfg.MODEL.ICMLM_BLOCKS = blocks
        cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = stem_w, res2_w
    cfg.merge_from_list(CPU_OVERRIDES)
    return cfg


def check_features(cfg: CfgNode, backbone: str, arch: str | None) -> float:
    """Max |detectron2 res5 - timm layer4| on one input, with the ``.pkl`` loaded by ``DetectionCheckpointer``:
    the exported weights are the trunk's weights, all of them, under the names detectron2's ResNet uses."""
    from icmlm_zoo.backbone_factory import load_backbone

    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    trunk = load_backbone(backbone, arch=arch).model.eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = trunk.forward_features(x), model.backbone.bottom_up.eval()(x)["res5"]
    return float((ours - theirs).abs().max())


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer scored with its COCOEvaluator (pycocotools)."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or str(Path(cfg.OUTPUT_DIR) / "eval"))


def register_scenes(root: Path, label_set: str, n_train: int, n_test: int, size: int) -> tuple[str, str]:
    """Write (once) and register train/test scenes of held-out detection streams through detectron2's COCO
    loader; returns their dataset names."""
    names = []
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        name, folder = f"icmlm_scenes_{label_set}_{split}_{n}", root / f"{label_set}-{split}-{n}-{size}px"
        if not (folder / "annotations.json").exists():
            write_coco(folder, n_scenes=n, seed=seed, size=size, label_set=label_set)
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(folder / "annotations.json"), str(folder / "images"))
        names.append(name)
    return names[0], names[1]


def run_one(cfg: CfgNode, out: Path, seed: int) -> dict:
    """Train and evaluate one detector; returns its loss (first/last 20 iterations) and COCO box AP."""
    cfg = cfg.clone()
    cfg.OUTPUT_DIR, cfg.SEED = str(out), seed
    out.mkdir(parents=True, exist_ok=True)
    seed_all_rng(seed)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    box = trainer._last_eval_results["bbox"]
    # COCOEvaluator gives NaN when the model outputs no box above TEST.SCORE_THRESH_TEST: COCO AP 0, flagged
    none = math.isnan(box["AP"])
    return {"loss_first20": statistics.mean(losses[:20]), "loss_last20": statistics.mean(losses[-20:]),
            **{k: 0.0 if none else box[k] for k in ("AP", "AP50", "AP75")}, "no_detections": none,
            "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)}


def summary(records: list[dict]) -> str:
    """Markdown table: mean ± std over seeds per init."""
    rows = ["| init | seeds | loss (first 20 it) | loss (last 20 it) | AP | AP50 |", "|---|---|---|---|---|---|"]

    def ms(xs):
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"

    for init in dict.fromkeys(r["init"] for r in records):
        rs = [r for r in records if r["init"] == init]
        rows.append(f"| {init} | {len(rs)} | " + " | ".join(
            ms([r[k] for r in rs]) for k in ("loss_first20", "loss_last20", "AP", "AP50")) + " |")
    return "\n".join(rows) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", required=True, help="what export-detectron2 takes: run folder, weights, timm name")
    p.add_argument("--arch", default=None, help="architecture of a bare weight file")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--inits", nargs="+", default=["pretrained", "random"], choices=["pretrained", "random"],
                   help="pretrained: MODEL.WEIGHTS = the exported .pkl; random: MODEL.WEIGHTS = '' (detectron2's init)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--batch", type=int, default=4, help="SOLVER.IMS_PER_BATCH")
    p.add_argument("--lr", type=float, default=0.01, help="SOLVER.BASE_LR (documented: 0.02 at batch 16)")
    p.add_argument("--label-set", default="shape", choices=["shape", "shape_colour"])
    p.add_argument("--train-scenes", type=int, default=200)
    p.add_argument("--test-scenes", type=int, default=100)
    p.add_argument("--size", type=int, default=96, help="scene size in px (the demo pretrains at 96)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logger(str(args.out / "detectron2.log"), name="detectron2")
    logging.getLogger("detectron2").setLevel(logging.INFO)
    pkl = export_detectron2(args.backbone, args.out / "backbone.pkl", arch=args.arch, overwrite=True)
    cfg = base_config(pkl)
    train, test = register_scenes(args.out / "data", args.label_set, args.train_scenes, args.test_scenes, args.size)
    cfg.merge_from_list(["DATASETS.TRAIN", (train,), "DATASETS.TEST", (test,), "INPUT.MIN_SIZE_TRAIN", (args.size,),
                         "INPUT.MAX_SIZE_TRAIN", args.size, "INPUT.MIN_SIZE_TEST", args.size,
                         "INPUT.MAX_SIZE_TEST", args.size,
                         "MODEL.ROI_HEADS.NUM_CLASSES", len(category_names(args.label_set)),
                         "SOLVER.IMS_PER_BATCH", args.batch, "SOLVER.BASE_LR", args.lr, "SOLVER.MAX_ITER", args.iters,
                         "SOLVER.STEPS", (int(args.iters * 0.75),), "SOLVER.WARMUP_ITERS", min(100, args.iters // 5),
                         "SOLVER.CHECKPOINT_PERIOD", 10 * args.iters])
    diff = check_features(cfg, args.backbone, args.arch)
    print(f"exported .pkl in detectron2 vs timm trunk: max |res5 - layer4| = {diff:.2e}", flush=True)
    if diff > 1e-4:
        raise SystemExit("the exported weights do not reproduce the trunk's features in detectron2")
    (args.out / "config.yaml").write_text(cfg.dump())
    results_path = args.out / "results.json"
    records = json.loads(results_path.read_text()) if results_path.exists() else []
    for seed in args.seeds:
        for init in args.inits:
            if any(r["init"] == init and r["seed"] == seed and r["iters"] == args.iters for r in records):
                continue  # resumable: a finished (init, seed) is kept
            run_cfg = cfg.clone()
            run_cfg.MODEL.WEIGHTS = str(pkl) if init == "pretrained" else ""
            rec = {"init": init, "seed": seed, "iters": args.iters, "label_set": args.label_set,
                   "train_scenes": args.train_scenes, "backbone": args.backbone,
                   **run_one(run_cfg, args.out / f"{init}-s{seed}", seed)}
            print(json.dumps(rec), flush=True)
            records.append(rec)
            results_path.write_text(json.dumps(records, indent=1))
    table = summary([r for r in records if r["iters"] == args.iters])
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
