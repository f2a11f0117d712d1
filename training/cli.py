"""``icmlm-train``: train (default), ``build-tags`` and ``export``.

Examples::

    icmlm-train --preset demo
    icmlm-train --preset coco_r50_attfc --set data.coco.captions=... --set data.coco.images=... --out runs/r50
    icmlm-train --out runs/r50 --resume
    icmlm-train build-tags --captions captions_train2017.json --out tags.txt --top-k 1000
    icmlm-train export runs/r50 --model icmlm_resnet50 --tag attfc_coco --out weights/attfc_coco
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]

COMMANDS = ("train", "build-tags", "export")


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="icmlm-train", description="ICMLM pretraining (TP, tfm, att-fc). Subcommands: "
                                "train (default), build-tags, export; see `icmlm-train build-tags -h`.")
    p.add_argument("--preset", help="a shipped preset (see --list-presets)")
    p.add_argument("--config", help="a YAML config file (applied over the preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable; values parsed as YAML)")
    p.add_argument("kv", nargs="*", metavar="KEY=VALUE", help="more overrides, same as --set")
    p.add_argument("--out", help="run folder (default runs/<run.name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(uses its saved config.yaml plus any overrides)")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _tags_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="icmlm-train build-tags",
                                description="Mine the tag vocabulary (frequent nouns/adjectives/verbs) with spaCy.")
    p.add_argument("--captions", action="append", default=[], metavar="FILE",
                   help="COCO captions JSON, VG region descriptions JSON, JSONL/CSV pairs or a text file "
                        "(repeatable); without it the captions of the configured training data are used")
    p.add_argument("--preset")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="tag file to write (never overwritten)")
    p.add_argument("--pos", nargs="+", default=None, help="universal POS classes (default NOUN ADJ VERB)")
    p.add_argument("--min-count", type=int, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--max-captions", type=int, default=None, help="read at most this many captions")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="icmlm-train export",
                                description="Write a run's backbone as a zoo weight folder (safetensors + timm "
                                            "config.json + model card), then reload it through timm.")
    p.add_argument("run", help="the run folder")
    p.add_argument("--model", help="timm model name (default: the run's backbone)")
    p.add_argument("--tag", required=True, help="pretrained tag, e.g. attfc_coco")
    p.add_argument("--out", help="output folder (default RUN/export/<model>.<tag>)")
    p.add_argument("--checkpoint", default="last", help="'last', a step number or a checkpoint file")
    return p


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _train(argv: list[str]) -> int:
    from .config import dump, list_presets, load_config
    args = _train_parser().parse_args(argv)
    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    overrides = list(args.overrides) + list(args.kv)
    saved = Path(args.out) / "config.yaml" if args.out else None
    if args.resume and saved is not None and saved.is_file():
        if args.preset or args.config:
            print(f"note: resuming {args.out} with its saved config.yaml; --preset/--config are ignored", file=sys.stderr)
        cfg = load_config(config_file=saved, overrides=overrides)
    else:
        if not (args.preset or args.config):
            args.preset = "demo"
            print("note: no --preset/--config given: using the demo preset", file=sys.stderr)
        cfg = load_config(args.preset, args.config, overrides)
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    from .distributed import cleanup, init_distributed, is_main
    from .trainer import prepare_run_dir, train
    t0 = time.perf_counter()
    info = init_distributed(cfg["run"]["device"])
    try:
        run_dir, resuming = prepare_run_dir(args.out, cfg["run"]["name"], args.resume, info)
        summary = train(cfg, run_dir, info, resume=resuming)
        exp = cfg["run"]["export"]
        if is_main(info) and not summary["stopped"] and exp.get("model"):
            _export_and_verify(run_dir, exp["model"], exp.get("tag") or "trained", None, "last")
        if is_main(info):
            fl, ll = summary["first_loss"], summary["last_loss"]
            loss_txt = f", loss {fl:.3f} -> {ll:.3f}" if fl is not None and ll is not None else ""
            print(f"done: {summary['step']}/{summary['total_steps']} steps in {time.perf_counter() - t0:.0f} s"
                  f"{loss_txt}; run folder {run_dir}", flush=True)
    finally:
        cleanup(info)
    return 0


def _export_and_verify(run: Path, model: str | None, tag: str, out: str | None, checkpoint: str) -> Path:
    import yaml

    from . import checkpoint as ckpt
    from .export import backbone_state_dict, export_run, verify_export
    cfg = yaml.safe_load((Path(run) / "config.yaml").read_text())
    model = model or cfg["model"]["backbone"]
    out_dir = Path(out) if out else Path(run) / "export" / f"{model}.{tag}"
    folder = export_run(run, model, tag, out_dir, checkpoint=checkpoint)
    ref = backbone_state_dict(ckpt.load_checkpoint(ckpt.resolve_checkpoint(run, checkpoint))["model"])
    verify_export(folder, model, ref)
    print(f"exported {model}.{tag} to {folder}; reloaded with timm.create_model({model!r}, pretrained=True, "
          f"pretrained_cfg_overlay=dict(file=...)): all {len(ref)} tensors equal the trained backbone", flush=True)
    return folder


def _export(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    _export_and_verify(Path(args.run), args.model, args.tag, args.out, args.checkpoint)
    return 0


def _build_tags(argv: list[str]) -> int:
    from .config import load_config
    from .tags import mine_tags, read_captions, write_tags
    args = _tags_parser().parse_args(argv)
    cfg = load_config(args.preset or ("demo" if not args.config else None), args.config, args.overrides)
    t = cfg["tags"]
    pos = args.pos or t["pos"]
    min_count = args.min_count if args.min_count is not None else t["min_count"]
    top_k = args.top_k if args.top_k is not None else t["top_k"]
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
        src = build_source(cfg, "train")
        if src is None:
            raise ValueError("this data kind has no caption index to read; pass --captions FILE")
        n = len(src) if limit is None else min(limit, len(src))
        caps = [src.caption(i) for i in range(n)]
        origin = f"{cfg['data']['kind']} training data"
    if limit is not None:
        caps = caps[:limit]
    t0 = time.perf_counter()
    tags = mine_tags(caps, pos=pos, min_count=min_count, top_k=top_k)
    if not tags:
        raise ValueError(f"no word of classes {pos} occurs {min_count} times in {len(caps)} captions; lower --min-count")
    write_tags(tags, out, source=f"{len(caps)} captions from {origin}; pos={','.join(pos)}, min_count={min_count}, top_k={top_k}")
    print(f"wrote {len(tags)} tags from {len(caps)} captions to {out} in {time.perf_counter() - t0:.1f} s; "
          f"most frequent: {', '.join(w for w, _, _ in tags[:10])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``icmlm-train``; returns the exit status (errors are printed, not raised)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    from .config import ConfigError
    from .trainer import DataFailureError, RunFolderError
    cmd = argv[0] if argv and argv[0] in COMMANDS else "train"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        if cmd == "build-tags":
            return _build_tags(rest)
        if cmd == "export":
            return _export(rest)
        return _train(rest)
    except ConfigError as e:
        print(f"icmlm-train: config error: {e}", file=sys.stderr)
        return 2
    except (RunFolderError, DataFailureError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"icmlm-train: error: {e}", file=sys.stderr)
        return 1
