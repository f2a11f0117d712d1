"""icmlm-eval: frozen-feature probes of ICMLM backbones and pictures of what a training run attends to.

Examples:
  icmlm-eval voc07 --model icmlm_resnet50.attfc_coco --data VOCdevkit/VOC2007
  icmlm-eval linear --model runs/r50 --data imagenet_subset --epochs 10
  icmlm-eval compare random=random:icmlm_resnet_tiny trained=runs/demo
  icmlm-eval pointing --run runs/demo
  icmlm-eval binding-diagnosis --run runs/demo
  icmlm-eval attention --run runs/demo --image scene.png --caption "a red [MASK] left of a blue square"
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from icmlm_zoo.cli_support import HelpFormatter, MissingExtraError, add_version, exit_without_teardown, require_extras
from icmlm_zoo.cpu_threads import configure_cpu_threads
from icmlm_zoo.errors import IcmlmZooError
from icmlm_zoo.evaluation.heartbeat import Heartbeat
from icmlm_zoo.evaluation.outputs import add_output_args, prepare_output

# The commands' modules (torch, numpy, the trainer, the [eval] extra's sklearn/matplotlib) are imported inside the
# command functions, not here: -h and --version answer without torch (laziness is the point of this module).

# optional modules each command needs, checked before any model is loaded: (extra, modules)
NEEDS = {"voc07": [("eval", ["sklearn"])], "linear": [], "compare": [("eval", ["sklearn", "matplotlib"])],
         "probes": [("eval", ["sklearn", "matplotlib"])], "pointing": [("train", ["transformers", "yaml"])],
         "attention": [("train", ["transformers", "yaml"]), ("eval", ["matplotlib"])],
         "grounding": [("train", ["transformers", "yaml"])],
         "binding-diagnosis": [("train", ["transformers", "yaml"]), ("eval", ["sklearn"])],
         "fidelity": [("train", ["transformers", "yaml", "spacy"]), ("eval", ["sklearn"])],
         "transfer": [("train", ["transformers", "yaml", "spacy"]), ("eval", ["pycocotools"])]}


# binding_diagnosis.MASK_SETS, written out: importing that module for the parser would import numpy, and -h and
# --version answer without it (tests/test_cli_help.py checks the two agree)
MASK_SETS = ("single", "binding", "mix")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through (checked by torch)."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible; use --device cpu or auto")
    return device


def _stage(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="timm name (icmlm_resnet50.attfc_coco), random:NAME, weight file/folder, or training run")
    p.add_argument("--arch", default=None, help="architecture of a bare weight file (e.g. icmlm_resnet50)")
    p.add_argument("--stage", type=_stage, default=-1,
                   help="feature stage: index into the backbone's stages (-1 = last) or a module name (layer3)")
    p.add_argument("--image-size", type=int, default=None, help="override the backbone's input size")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0, help="random seed (SVM cross-validation folds, probe init)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per evaluation)."""
    parser = argparse.ArgumentParser(prog="icmlm-eval", description=__doc__, formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, help="which evaluation to run")

    def add(name: str, help: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=textwrap.fill(help[0].upper() + help[1:] + ".", 100),
                              formatter_class=HelpFormatter, **kw)

    _add_backbone_commands(add)
    _add_run_commands(add)
    return parser


def _add_backbone_commands(add) -> None:
    """Sub-commands that score frozen backbones (any model spec)."""
    p = add("voc07", "VOC07 linear SVMs on frozen pooled features (mAP); needs the [eval] extra")
    _model_args(p)
    p.add_argument("--data", required=True, help="VOC2007 folder (JPEGImages, ImageSets/Main, Annotations)")
    p.add_argument("--costs", type=float, nargs="+", default=None,
                   help="SVM costs swept per class by 3-fold CV (default: the paper's sweep)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: OUT/cache)")
    add_output_args(p, "voc07.json and voc07.md", "eval_results/MODEL/voc07, or RUN/eval/voc07")

    p = add("linear", "linear probe on an ImageFolder (top-1/top-5), resumable")
    _model_args(p)
    p.add_argument("--data", required=True, help="ImageFolder root with train/ and val/ (or use --val-data)")
    p.add_argument("--val-data", default=None, help="ImageFolder of the validation images (default: DATA/val)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training images")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate of the linear layer")
    p.add_argument("--weight-decay", type=float, default=0.0, help="SGD weight decay of the linear layer")
    p.add_argument("--resume", action="store_true", help="continue from OUT/linear_probe.pt")
    add_output_args(p, "the checkpoint and linear_probe.json/.md", "eval_results/MODEL/linear, or RUN/eval/linear")

    p = add("compare", "held-out probes (+ pointing game for runs) for several checkpoints in one table and "
            "one figure; needs the [eval] extra", aliases=["probes"])
    p.add_argument("models", nargs="+", help="LABEL=SPEC or SPEC (timm name, random:NAME, weight file/folder, run)")
    p.add_argument("--arch", default=None, help="architecture of bare weight files")
    p.add_argument("--stage", type=_stage, default=-1,
                   help="feature stage: index into the backbone's stages (-1 = last) or a module name (layer3)")
    p.add_argument("--num-train", type=int, default=300, help="generated scenes the probes are fitted on")
    p.add_argument("--num-test", type=int, default=200, help="held-out generated scenes the probes are scored on")
    p.add_argument("--image-size", type=int, default=96, help="scene size for the probes (pointing: the run's)")
    p.add_argument("--pointing-scenes", type=int, default=200, help="held-out scenes of the pointing game")
    p.add_argument("--no-pointing", action="store_true", help="skip the pointing game for training runs")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenes and the probes")
    add_output_args(p, "compare.json/.md and compare.png", "eval_results/LABEL+LABEL...-HASH/compare")


def _add_run_commands(add) -> None:
    """Sub-commands that need a training run (its heads) or train runs themselves."""
    p = add("pointing", "pointing game for one training run on held-out scenes; needs the [train] extra")
    p.add_argument("--run", required=True, help="icmlm-train run folder")
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    p.add_argument("--num-scenes", type=int, default=200, help="held-out generated scenes")
    p.add_argument("--image-size", type=int, default=None, help="scene size (default: the run's input size)")
    p.add_argument("--tolerance", type=float, default=0.0, help="grow boxes by this many pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    add_output_args(p, "pointing.json and pointing.md", "RUN/eval/pointing")

    p = add("attention", "PNG attention heatmaps + top-5 words for each [MASK] in a caption; needs the "
            "[train] and [eval] extras")
    p.add_argument("--run", required=True, help="icmlm-train run folder")
    p.add_argument("--image", required=True, help="an image file (any size; shown whole, resized to the run's input)")
    p.add_argument("--caption", required=True,
                   help='a caption with one or more [MASK] words, e.g. "a man rides a [MASK]"')
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    p.add_argument("--topk", type=int, default=5, help="predicted words listed per [MASK]")
    add_output_args(p, "the PNGs and the JSON", "RUN/eval/attention")

    p = add("grounding", "does a run's masked-word head read the image? visual-word top-1, binding and pointing on "
            "held-out scenes, each next to the same with shuffled images and to chance; needs the [train] extra")
    p.add_argument("--run", required=True, help="icmlm-train run folder (trained on the embedded scenes)")
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    p.add_argument("--num-scenes", type=int, default=400, help="held-out generated scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and of the masked words")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    add_output_args(p, "grounding.json and grounding.md", "RUN/eval/grounding")

    p = add("binding-diagnosis", "where binding is lost: what the frozen text state and the trunk's cells can tell, "
            "and what fresh fusion heads learn on the run's frozen features from single, every-colour and mixed "
            "masks; needs the [train] and [eval] extras")
    p.add_argument("--run", required=True, help="icmlm-train run folder (trained on the embedded scenes)")
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    p.add_argument("--train-scenes", type=int, default=9600, help="training scenes the fresh heads learn from")
    p.add_argument("--num-scenes", type=int, default=400, help="held-out scenes they are scored on")
    p.add_argument("--steps", type=int, default=2000, help="training steps of each fresh head")
    p.add_argument("--masks", nargs="+", default=list(MASK_SETS), choices=MASK_SETS,
                   help="mask sets to train fresh heads on")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out scenes, the masks and the heads")
    p.add_argument("--trunk", default=None, help="another run folder whose trunk to use instead (e.g. a TP-only "
                   "run), or 'random'; the head, text encoder and scenes stay --run's")
    p.add_argument("--batch-size", type=int, default=64, help="items per step of each head")
    p.add_argument("--binding-share", type=float, default=None,
                   help="share of binding items in each 'mix' batch (default: their share of the two pools)")
    p.add_argument("--start-from-run-head", action="store_true",
                   help="start the heads from the run's trained head instead of a random init")
    p.add_argument("--quick", action="store_true", help="a smoke run of about a minute (tiny sets, 10 steps)")
    p.add_argument("--device", default="auto", help="where the frozen features are computed (heads train on CPU)")
    add_output_args(p, "the JSON and markdown", "RUN/eval/binding_diagnosis")

    p = add("fidelity", "the fidelity experiment: trains TP, ICMLM att-fc/tfm (+TP) and att-fc without TP on the "
            "embedded scenes over several seeds and scores their frozen backbones and heads; needs [train,eval]")
    p.add_argument("--out", required=True, help="folder for the runs, fidelity.json and fidelity.md (resumable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every variant")
    p.add_argument("--quick", action="store_true", help="a smoke run with a tiny budget (not a result)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every variant")

    from .transfer_args import add_arguments as add_transfer_arguments  # light: argparse only
    add_transfer_arguments(add("transfer", "fine-tuning transfer of the fidelity pretrainings and random init: Faster "
                               "R-CNN (COCO AP) and a scene classification on held-out and shifted scenes"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``icmlm-eval``; returns the exit status (user mistakes are printed as one line)."""
    configure_cpu_threads(restart=argv is None)  # first: OpenMP's wait policy must precede torch (busy CPUs)
    status = _main(argv)
    if argv is None:  # the command line, not a call from Python
        exit_without_teardown(status)
    return status


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for extra, modules in NEEDS[args.command]:
            require_extras(f"icmlm-eval {args.command}", [extra], modules)
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        if args.command not in ("fidelity", "transfer"):  # their --out is their own resumable folder of records
            prepare_output(args.command, args)
        with Heartbeat(f"icmlm-eval {args.command}"):
            return _dispatch(args)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, IcmlmZooError, MissingExtraError) as exc:
        print(f"icmlm-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _voc07(args: argparse.Namespace) -> tuple[str, dict, str]:
    from icmlm_zoo.evaluation import voc07
    cache = args.cache_dir or str(Path(args.out) / "cache")
    result = voc07.run_voc07(args.model, args.data, arch=args.arch, stage=args.stage, image_size=args.image_size,
                             batch_size=args.batch_size, costs=tuple(args.costs or voc07.DEFAULT_COSTS),
                             cache_dir=cache, device=args.device, seed=args.seed, num_workers=args.workers)
    return "voc07", result, voc07.markdown(result)


def _linear(args: argparse.Namespace) -> tuple[str, dict, str]:
    from icmlm_zoo.evaluation import linear_probe as lp
    cfg = lp.ProbeConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         stage=args.stage, image_size=args.image_size, seed=args.seed, num_workers=args.workers)
    result = lp.run_linear_probe(args.model, args.data, args.out, val_data=args.val_data, arch=args.arch,
                                 config=cfg, resume=args.resume, device=args.device)
    return "linear_probe", result, lp.markdown(result)


def _compare(args: argparse.Namespace) -> tuple[str, dict, str]:
    from . import compare as cmp
    result = cmp.compare(args.models, num_train=args.num_train, num_test=args.num_test, image_size=args.image_size,
                         stage=args.stage, seed=args.seed, pointing=not args.no_pointing,
                         pointing_scenes=args.pointing_scenes, batch_size=args.batch_size, device=args.device,
                         arch=args.arch)
    print(f"figure: {cmp.plot(result, Path(args.out) / 'compare.png')}")
    return "compare", result, cmp.markdown(result)


def _pointing(args: argparse.Namespace) -> tuple[str, dict, str]:
    from icmlm_zoo.evaluation.reporting import markdown_table

    from .pointing_game import run_pointing_game
    result = run_pointing_game(args.run, num_scenes=args.num_scenes, image_size=args.image_size, seed=args.seed,
                               checkpoint=args.checkpoint, tolerance=args.tolerance)
    result["run"] = args.run
    row = (f"{100 * result['pointing_acc']:.1f}", f"{100 * result['pointing_chance']:.1f}",
           f"{100 * result['masked_shape_top1']:.1f}", result["n_masked"])
    table = markdown_table(("pointing acc (%)", "chance (%)", "masked shape top-1 (%)", "scenes"), [row], "rrrr")
    return "pointing", result, "\n".join([f"# Pointing game — `{args.run}`", "", *table]) + "\n"


def _attention(args: argparse.Namespace) -> None:
    from .attention_maps import attention_maps
    result = attention_maps(args.run, args.image, args.caption, args.out, checkpoint=args.checkpoint, topk=args.topk)
    for m, fig in zip(result["masks"], result["figures"]):
        words = ", ".join(f"{t} {p:.2f}" for t, p in zip(m["topk_tokens"], m["topk_probs"]))
        print(f"{fig}: {words}")


def _grounding(args: argparse.Namespace) -> tuple[str, dict, str]:
    from . import grounding
    result = {"run": args.run, **grounding.run_grounding(args.run, num_scenes=args.num_scenes, seed=args.seed,
                                               checkpoint=args.checkpoint, device=args.device)}
    return "grounding", result, grounding.markdown(result)


def _binding_diagnosis(args: argparse.Namespace) -> tuple[str, dict, str]:
    from . import binding_diagnosis
    result = {"run": args.run, **binding_diagnosis.run_binding_diagnosis(
        args.run, train_scenes=args.train_scenes, test_scenes=args.num_scenes, steps=args.steps,
        mask_sets=tuple(args.masks), seed=args.seed, checkpoint=args.checkpoint, trunk=args.trunk,
        from_run_head=args.start_from_run_head, batch_size=args.batch_size, binding_share=args.binding_share,
        device=args.device, quick=args.quick)}
    return "binding_diagnosis", result, binding_diagnosis.markdown(result)


def _fidelity(args: argparse.Namespace) -> None:
    from . import fidelity
    result = fidelity.run_fidelity(args.out, seeds=args.seeds, quick=args.quick, overrides=args.set)
    print(fidelity.markdown(result))
    print(f"wrote {Path(args.out) / 'fidelity.json'} and {Path(args.out) / 'fidelity.md'}")


def _transfer(args: argparse.Namespace) -> None:
    from .transfer import run_from_args

    run_from_args(args)


# each command: a function that prints what it made, or returns (results name, result, markdown table) to write
COMMANDS = {"voc07": _voc07, "linear": _linear, "compare": _compare, "probes": _compare, "pointing": _pointing,
            "attention": _attention, "grounding": _grounding,
            "binding-diagnosis": _binding_diagnosis, "fidelity": _fidelity, "transfer": _transfer}


def _dispatch(args: argparse.Namespace) -> int:
    from icmlm_zoo.evaluation.reporting import write_results
    made = COMMANDS[args.command](args)
    if made is not None:
        name, result, table = made
        js, md = write_results(args.out, name, result, table)
        print(table)
        print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
