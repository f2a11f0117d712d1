"""``icmlm-eval``: VOC07 SVMs, linear probe, held-out probes, checkpoint comparison, attention maps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _stage(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="timm name (icmlm_resnet50.attfc_coco), random:NAME, weight file/folder, or training run")
    p.add_argument("--arch", default=None, help="architecture of a bare weight file (e.g. icmlm_resnet50)")
    p.add_argument("--stage", type=_stage, default=-1,
                   help="feature stage: index into the backbone's stages (-1 = last) or a module name (layer3)")
    p.add_argument("--image-size", type=int, default=None, help="override the backbone's input size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per evaluation)."""
    parser = argparse.ArgumentParser(prog="icmlm-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("voc07", help="VOC07 linear SVMs on frozen pooled features (mAP)")
    _model_args(p)
    p.add_argument("--data", required=True, help="VOC2007 folder (JPEGImages, ImageSets/Main, Annotations)")
    p.add_argument("--costs", type=float, nargs="+", default=None, help="SVM costs swept per class by 3-fold CV")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: OUT/cache)")
    p.add_argument("--out", default="eval_results/voc07")

    p = sub.add_parser("linear", help="linear probe on an ImageFolder (top-1/top-5), resumable")
    _model_args(p)
    p.add_argument("--data", required=True, help="ImageFolder root with train/ and val/ (or use --val-data)")
    p.add_argument("--val-data", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/linear_probe.pt")
    p.add_argument("--out", default="eval_results/linear")

    p = sub.add_parser("compare", aliases=["probes"],
                       help="held-out probes (+ pointing game for runs) for several checkpoints in one table")
    p.add_argument("models", nargs="+", help="LABEL=SPEC or SPEC (timm name, random:NAME, weight file/folder, run)")
    p.add_argument("--arch", default=None, help="architecture of bare weight files")
    p.add_argument("--stage", type=_stage, default=-1)
    p.add_argument("--num-train", type=int, default=300)
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--image-size", type=int, default=96, help="scene size for the probes (pointing: the run's)")
    p.add_argument("--pointing-scenes", type=int, default=200)
    p.add_argument("--no-pointing", action="store_true", help="skip the pointing game for training runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval_results/compare")

    p = sub.add_parser("pointing", help="pointing game for one training run on held-out scenes")
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--num-scenes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=None, help="scene size (default: the run's input size)")
    p.add_argument("--tolerance", type=float, default=0.0, help="grow boxes by this many pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval_results/pointing")

    p = sub.add_parser("attention", help="PNG attention heatmaps + top-5 words for each [MASK] in a caption")
    p.add_argument("--run", required=True, help="icmlm-train run folder")
    p.add_argument("--image", required=True)
    p.add_argument("--caption", required=True, help='e.g. "a man rides a [MASK]"')
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--out", default="eval_results/attention")

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``icmlm-eval``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"icmlm-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from .reporting import write_results

    if args.command == "voc07":
        from . import voc07

        cache = args.cache_dir or str(Path(args.out) / "cache")
        result = voc07.run_voc07(args.model, args.data, arch=args.arch, stage=args.stage, image_size=args.image_size,
                                 batch_size=args.batch_size, costs=tuple(args.costs or voc07.DEFAULT_COSTS),
                                 cache_dir=cache, device=args.device, seed=args.seed, num_workers=args.workers)
        table = voc07.markdown(result)
        js, md = write_results(args.out, "voc07", result, table)
    elif args.command == "linear":
        from . import linear_probe as lp

        cfg = lp.ProbeConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, stage=args.stage, image_size=args.image_size,
                             seed=args.seed, num_workers=args.workers)
        result = lp.run_linear_probe(args.model, args.data, args.out, val_data=args.val_data, arch=args.arch,
                                     config=cfg, resume=args.resume, device=args.device)
        table = lp.markdown(result)
        js, md = write_results(args.out, "linear_probe", result, table)
    elif args.command in ("compare", "probes"):
        from . import compare as cmp

        result = cmp.compare(args.models, num_train=args.num_train, num_test=args.num_test,
                             image_size=args.image_size, stage=args.stage, seed=args.seed,
                             pointing=not args.no_pointing, pointing_scenes=args.pointing_scenes,
                             batch_size=args.batch_size, device=args.device, arch=args.arch)
        table = cmp.markdown(result)
        js, md = write_results(args.out, "compare", result, table)
    elif args.command == "pointing":
        from .pointing_game import run_pointing_game

        result = run_pointing_game(args.run, num_scenes=args.num_scenes, image_size=args.image_size,
                                   seed=args.seed, checkpoint=args.checkpoint, tolerance=args.tolerance)
        result["run"] = args.run
        table = (f"# Pointing game — `{args.run}`\n\n| pointing acc (%) | chance (%) | masked shape top-1 (%) | "
                 f"scenes |\n|---:|---:|---:|---:|\n| {100 * result['pointing_acc']:.1f} | "
                 f"{100 * result['pointing_chance']:.1f} | {100 * result['masked_shape_top1']:.1f} | "
                 f"{result['n_masked']} |\n")
        js, md = write_results(args.out, "pointing", result, table)
    elif args.command == "attention":
        from .attention_maps import attention_maps

        result = attention_maps(args.run, args.image, args.caption, args.out, checkpoint=args.checkpoint,
                                topk=args.topk)
        for m, fig in zip(result["masks"], result["figures"]):
            words = ", ".join(f"{t} {p:.2f}" for t, p in zip(m["topk_tokens"], m["topk_probs"]))
            print(f"{fig}: {words}")
        return 0
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown command {args.command}")
    print(table)
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
