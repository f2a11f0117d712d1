"""icmlm-train: ICMLM pretraining (train, the default subcommand), export, build-tags and plot.

The train options (--preset, --config, --set, --out, --resume, --list-presets, --print-config) are listed by
icmlm-train train -h.

Examples:
  icmlm-train --preset demo
  icmlm-train --preset coco_r50_attfc --set data.coco.captions=... data.coco.images=... --out runs/r50
  icmlm-train --out runs/r50 --resume
  icmlm-train export runs/r50 --model icmlm_resnet50 --tag attfc_coco --out weights/attfc_coco
  icmlm-train build-tags --captions captions_train2017.json --out tags.txt --top-k 1000
  icmlm-train plot runs/r50
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from icmlm_zoo.cli_support import HelpFormatter, MissingExtraError, add_version, exit_without_teardown, require_extras
from icmlm_zoo.cpu_threads import configure_cpu_threads

# The trainer's modules (torch, yaml, transformers) are imported inside the commands, not here: -h and --version
# answer without them, and a missing [train] extra is a one-line message instead of an ImportError.

__all__ = ["main", "build_parser"]

COMMANDS = ("train", "export", "build-tags", "plot")


class _Overrides(argparse.Action):
    """``--set K=V ...`` and bare ``K=V`` words, kept in command-line order in ``overrides`` (the later value
    of a key wins)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, "overrides", None) or [])
        items.extend(values if isinstance(values, list) else [values])
        namespace.overrides = items


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a shipped preset (icmlm-train --list-presets names them); "
                   "without --preset and --config: demo (its text encoder and spaCy pipeline come with the "
                   "[demo] extra)")
    p.add_argument("--config", metavar="FILE", help="a YAML config file (applied over the preset)")
    p.add_argument("--set", dest="overrides", action=_Overrides, nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set optim.lr=3e-4 train.epochs=2 (repeatable; values "
                        "parsed as YAML; applied in command-line order, so a later value of a key wins)")


def build_parser() -> argparse.ArgumentParser:
    """The ``icmlm-train`` parser: one subparser per job; ``train`` is used when no subcommand is given."""
    usage = ("%(prog)s [train] [--preset NAME | --config FILE] [--set KEY=VALUE ...] [--out RUN] [--resume]\n"
             "       %(prog)s {export,build-tags,plot} ...\n       %(prog)s -h | --version")
    parser = argparse.ArgumentParser(prog="icmlm-train", formatter_class=HelpFormatter, description=__doc__,
                                     usage=usage)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="{train,export,build-tags,plot}",
                                help="what to do (default: train)")

    p = sub.add_parser("train", formatter_class=HelpFormatter, help="ICMLM pretraining (default subcommand)",
                       description="ICMLM pretraining (TP, tfm, att-fc heads) with checkpoints, metrics.csv,\n"
                                   "a training-curve PNG (RUN/curves.png) and an optional export at the end.")
    _config_args(p)
    p.add_argument("kv", nargs="*", action=_Overrides, metavar="KEY=VALUE", help="more overrides, same as --set")
    p.add_argument("--out", metavar="RUN", help="run folder (default: runs/<run.name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(uses its saved config.yaml plus any overrides)")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser("export", formatter_class=HelpFormatter, help="a run's backbone -> zoo weight folder",
                       description="Write a run's backbone as a zoo weight folder (safetensors + timm config.json\n"
                                   "+ model card), then reload it through timm and compare every tensor.")
    p.add_argument("run", help="the run folder")
    p.add_argument("--model", help="timm model name (default: the run's backbone)")
    p.add_argument("--tag", required=True, help="pretrained tag, e.g. attfc_coco")
    p.add_argument("--out", help="output folder (default: RUN/export/<model>.<tag>)")
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the weight file, config.json and model card of an existing export in --out")

    p = sub.add_parser("build-tags", formatter_class=HelpFormatter, help="mine a tag vocabulary with spaCy",
                       description="Mine the tag vocabulary (frequent nouns/adjectives/verbs) with spaCy.\n"
                                   "Options left out come from the config (tags.pos, tags.min_count, tags.top_k).")
    p.add_argument("--captions", action="append", default=[], metavar="FILE",
                   help="COCO captions JSON, VG region descriptions JSON, JSONL/CSV pairs or a text file "
                        "(repeatable); without it the captions of the configured training data are used")
    _config_args(p)
    p.add_argument("--out", required=True, help="tag file to write (never overwritten)")
    p.add_argument("--pos", nargs="+", default=None, help="universal POS classes to keep (config: NOUN ADJ VERB)")
    p.add_argument("--min-count", type=int, default=None, help="keep words seen at least this often (config: 5)")
    p.add_argument("--top-k", type=int, default=None, help="keep at most this many words (config: 1000)")
    p.add_argument("--max-captions", type=int, default=None, help="read at most this many captions (default: all)")

    p = sub.add_parser("plot", formatter_class=HelpFormatter, help="draw a run's training curves as a PNG",
                       description="Draw RUN/metrics.csv (loss, masked-word top-1 and, when logged, visual-word top-1\n"
                                   "and the image-use gap) into a PNG.")
    p.add_argument("run", help="the run folder (holds metrics.csv)")
    p.add_argument("--out", help="PNG to write (default: RUN/curves.png, replaced if it exists)")
    return parser


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _train(args: argparse.Namespace) -> int:
    from .config import dump, list_presets, load_config
    from .run_checks import TrainingInterrupted, check_each_override, check_train_extras, tensorboard_missing
    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    overrides = list(args.overrides)
    check_each_override(overrides)
    saved = Path(args.out) / "config.yaml" if args.out else None
    if args.resume and saved is not None and saved.is_file():
        if args.preset or args.config:
            print(f"note: resuming {args.out} with its saved config.yaml; --preset/--config are ignored",
                  file=sys.stderr)
        cfg = load_config(config_file=saved, overrides=overrides)
    else:
        if not (args.preset or args.config):
            args.preset = "demo"
            print("note: no --preset/--config given: using the demo preset", file=sys.stderr)
        cfg = load_config(args.preset, args.config, overrides)
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    check_train_extras(cfg, args.out if args.resume else None)
    from .distributed import cleanup, init_distributed, is_main
    from .guards import check_failures_at_end
    from .trainer import prepare_run_dir, train
    t0 = time.perf_counter()
    info = init_distributed(cfg.run.device)
    try:
        if is_main(info) and tensorboard_missing(cfg):
            print("warning: TensorBoard logging is off: tensorboard is not installed (pip install "
                  "'icmlm-zoo[train]', or set run.tensorboard=false); metrics.csv is still written", file=sys.stderr)
        run_dir, resuming = prepare_run_dir(args.out, cfg.run.name, args.resume, info)
        try:
            summary = train(cfg, run_dir, info, resume=resuming)
        except KeyboardInterrupt:
            raise TrainingInterrupted(run_dir) from None
        check_failures_at_end(summary["counters"], cfg.run.max_failure_rate)
        exp = cfg.run.export
        if is_main(info) and not summary["stopped"] and exp.model:
            _export_and_verify(run_dir, exp.model, exp.tag or "trained", None, "last")
        if is_main(info):
            fl, ll = summary["first_loss"], summary["last_loss"]
            loss_txt = f", loss {fl:.3f} -> {ll:.3f}" if fl is not None and ll is not None else ""
            print(f"done: {summary['step']}/{summary['total_steps']} steps in {time.perf_counter() - t0:.0f} s"
                  f"{loss_txt}; run folder {run_dir}", flush=True)
    finally:
        cleanup(info)
    return 0


def _export_and_verify(run: Path, model: str | None, tag: str, out: str | None, checkpoint: str,
                       overwrite: bool = False) -> Path:
    from . import checkpoint as ckpt
    from .export import backbone_state_dict, export_run, verify_export
    from .run_folder import read_run_config
    model = model or read_run_config(run).model.backbone
    out_dir = Path(out) if out else Path(run) / "export" / f"{model}.{tag}"
    folder = export_run(run, model, tag, out_dir, checkpoint=checkpoint, overwrite=overwrite)
    ref = backbone_state_dict(ckpt.load_checkpoint(ckpt.resolve_checkpoint(run, checkpoint))["model"])
    verify_export(folder, model, ref)
    print(f"exported {model}.{tag} to {folder}; reloaded with timm.create_model({model!r}, pretrained=True, "
          f"pretrained_cfg_overlay=dict(file=...)): all {len(ref)} tensors equal the trained backbone", flush=True)
    return folder


def _export(args: argparse.Namespace) -> int:
    require_extras("icmlm-train export", ["train"], ["yaml"])
    _export_and_verify(Path(args.run), args.model, args.tag, args.out, args.checkpoint, args.overwrite)
    return 0


def _build_tags(args: argparse.Namespace) -> int:
    require_extras("icmlm-train build-tags", ["train"], ["yaml", "spacy"])
    from .config import load_config
    from .tags import mine_tags, read_captions, write_tags
    cfg = load_config(args.preset or ("demo" if not args.config else None), args.config, args.overrides)
    t = cfg.tags
    pos = args.pos or t.pos
    min_count = args.min_count if args.min_count is not None else t.min_count
    top_k = args.top_k if args.top_k is not None else t.top_k
    limit = args.max_captions
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out} exists; give another --out (existing files are never overwritten)")
    if args.captions:
        caps: list[str] = []
        for f in args.captions:
            caps.extend(read_captions(f))
        origin = ", ".join(args.captions)
    else:
        from .data import build_source
        src = build_source(cfg.data, "train")
        if src is None:
            raise ValueError("this data kind has no caption index to read; pass --captions FILE")
        n = len(src) if limit is None else min(limit, len(src))
        caps = [src.caption(i) for i in range(n)]
        origin = f"{cfg.data.kind} training data"
    if limit is not None:
        caps = caps[:limit]
    t0 = time.perf_counter()
    tags = mine_tags(caps, pos=pos, min_count=min_count, top_k=top_k, progress=True)
    if not tags:
        raise ValueError(f"no word of classes {pos} occurs {min_count} times in {len(caps)} captions; "
                         "lower --min-count")
    write_tags(tags, out, source=f"{len(caps)} captions from {origin}; pos={','.join(pos)}, "
                                 f"min_count={min_count}, top_k={top_k}")
    print(f"wrote {len(tags)} tags from {len(caps)} captions to {out} in {time.perf_counter() - t0:.1f} s; "
          f"most frequent: {', '.join(w for w, _, _ in tags[:10])}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .curves import plot_run
    print(plot_run(args.run, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``icmlm-train``; returns the exit status (errors are printed as one line, not raised;
    Ctrl-C is exit status 130 with the way to continue)."""
    configure_cpu_threads(restart=argv is None)  # first: OpenMP's wait policy must precede torch (busy CPUs)
    try:
        status = _main(argv)
    except KeyboardInterrupt:
        print("icmlm-train: stopped (Ctrl-C)", file=sys.stderr)
        status = 130
    if argv is None:  # the command line, not a call from Python
        exit_without_teardown(status)
    return status


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help", "--version"):
        argv = ["train", *argv]  # `icmlm-train --preset demo` = `icmlm-train train --preset demo`
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        from .config import ConfigError
        from .run_checks import TrainingInterrupted
        from .trainer import DataFailureError, RunFolderError
    except ImportError as e:  # a [train] module imported by the trainer itself
        print(f"icmlm-train: error: icmlm-train needs the [train] extra: pip install 'icmlm-zoo[train]' ({e})",
              file=sys.stderr)
        return 2
    run = {"train": _train, "export": _export, "build-tags": _build_tags, "plot": _plot}[args.command]
    try:
        return run(args)
    except TrainingInterrupted as e:
        print(f"icmlm-train: {e}", file=sys.stderr)
        return 130
    except (ConfigError, MissingExtraError) as e:
        kind = "config error" if isinstance(e, ConfigError) else "error"
        print(f"icmlm-train: {kind}: {e}", file=sys.stderr)
        return 2
    except (RunFolderError, DataFailureError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"icmlm-train: error: {e}", file=sys.stderr)
        return 1
