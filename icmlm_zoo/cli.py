"""The ``icmlm-zoo`` command: list, info, download, convert, publish, export-detectron2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from .manifest import load_manifest

    manifest = load_manifest()
    rows = [("name", "status", "pretraining", "metrics")]
    for e in manifest.entries():
        if args.status and e.status != args.status:
            continue
        metrics = ", ".join(f"{m['name']}={m['value']}" for m in e.raw.get("metrics") or []) or "-"
        default = " (default)" if e.tag == manifest.default_tag(e.model) else ""
        rows.append((e.name + default, e.status, e.raw["pretraining"].get("method", "-"), metrics))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _split(name: str) -> tuple[str, str | None]:
    model, _, tag = name.partition(".")
    return model, tag or None


def _cmd_info(args: argparse.Namespace) -> int:
    from .manifest import load_manifest

    manifest = load_manifest()
    model, tag = _split(args.name)
    entry = manifest.entry(model, tag)
    out = dict(entry.raw, model_info=manifest.models[model], timm_data_config={
        "input_size": entry.preprocessing["input_size"], "mean": entry.preprocessing["mean"],
        "std": entry.preprocessing["std"], "crop_pct": entry.preprocessing["crop_pct"],
        "interpolation": entry.preprocessing["interpolation"]})
    print(json.dumps(out, indent=2))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .manifest import load_manifest
    from .pretrained import fetch_weights

    manifest = load_manifest()
    model, tag = _split(args.name)
    entry = manifest.entry(model, tag)
    path = fetch_weights(entry, manifest)
    print(f"{entry.name}: verified weights at {path}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    folder, notes = convert_checkpoint(args.checkpoint, args.model, args.out, tag=args.tag, trunk_key=args.trunk_key)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {folder}/model.safetensors, config.json, README.md")
    print(f"load it: timm.create_model('{args.model}', pretrained=True, "
          f"pretrained_cfg_overlay=dict(file='{folder}/model.safetensors'))")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publish import publish_folder

    entry = publish_folder(args.dir, args.repo, model=args.model, tag=args.tag, manifest_path=args.manifest,
                           endpoint=args.endpoint, private=args.private)
    hub = entry["hub"]
    print(f"published {entry['model']}.{entry['tag']} to {hub['repo']}@{hub['revision']} "
          f"(sha256 {hub['sha256']}, {hub['bytes']} bytes); manifest updated")
    return 0


def _cmd_export_detectron2(args: argparse.Namespace) -> int:
    from .detection.detectron2 import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icmlm-zoo", description="ICMLM backbones: list, fetch, convert, publish.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="models, tags, status and metrics")
    p.add_argument("--status", choices=("published", "convertible", "recipe"))
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="one weight's manifest entry and preprocessing")
    p.add_argument("name", help="MODEL or MODEL.TAG, e.g. icmlm_resnet50.attfc_coco")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("download", help="prefetch and verify a weight")
    p.add_argument("name")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("convert", help="original checkpoint -> model.safetensors + config.json + model card")
    p.add_argument("checkpoint")
    p.add_argument("--model", required=True, help="target architecture, e.g. icmlm_resnet50")
    p.add_argument("--out", required=True, help="output folder (must not hold a model.safetensors)")
    p.add_argument("--tag", default=None, help="tag to record, e.g. attfc_coco")
    p.add_argument("--trunk-key", default=None, help="checkpoint key holding the visual trunk (default: auto, 'cnn')")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("publish", help="upload a weight folder to the Hub and write its manifest entry")
    p.add_argument("dir")
    p.add_argument("--repo", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--model", default=None)
    p.add_argument("--tag", default=None)
    p.add_argument("--manifest", default=None, help="manifest to update (default: the one in use)")
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT / huggingface.co)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_publish)

    from .detection.detectron2 import add_arguments as add_detectron2_arguments

    p = sub.add_parser("export-detectron2", help="backbone -> detectron2 .pkl (MoCo/d2 key names)")
    add_detectron2_arguments(p)
    p.set_defaults(func=_cmd_export_detectron2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``icmlm-zoo``; errors are printed as one readable line and exit with status 1."""
    args = build_parser().parse_args(argv)
    from .errors import IcmlmZooError
    from .manifest import ManifestError

    try:
        return args.func(args)
    except (IcmlmZooError, ManifestError, KeyError, ValueError, FileNotFoundError, FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"icmlm-zoo {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
