"""The ``icmlm-zoo`` command: list, info, download, convert, publish, export-detectron2.

Imports that need torch (weights, conversion, publishing, detection) happen inside the commands, so that
``icmlm-zoo -h`` and ``--version`` answer without importing torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .cli_support import HelpFormatter, add_version
from .describe import entry_text, weights_table_markdown
from .errors import IcmlmZooError
from .manifest import STATUSES, load_manifest

DETECTRON2_COMMAND = "export-detectron2"


def _cmd_list(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    if args.markdown:
        print(weights_table_markdown(manifest))
        return 0
    rows = [("name", "status", "integrity", "pretraining", "metrics")]
    for e in manifest.entries():
        if args.status and e.status != args.status:
            continue
        metrics = ", ".join(f"{m['name']}={m['value']}" for m in e.raw.get("metrics") or []) if e.has_weights else ""
        default = " (default)" if e.has_weights and e.tag == manifest.default_tag(e.model) else ""
        rows.append((e.name + default, e.status, e.integrity, e.raw["pretraining"].get("method", "-"), metrics or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _split(name: str) -> tuple[str, str | None]:
    model, _, tag = name.partition(".")
    return model, tag or None


def _cmd_info(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    model, tag = _split(args.name)
    entry = manifest.entry(model, tag)
    if not args.json:
        print(entry_text(manifest, entry))
        return 0
    out = dict(entry.raw, integrity=entry.integrity, model_info=manifest.models[model],
               timm_data_config=entry.data_config)
    print(json.dumps(out, indent=2))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    model, tag = _split(args.name)
    entry = manifest.entry(model, tag)
    from .pretrained import fetch_weights, integrity_report  # imports torch and timm

    path = fetch_weights(entry, manifest)
    print(f"{entry.name}: {integrity_report(entry)}")
    print(f"{entry.name}: weights at {path}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint  # imports torch and timm

    folder, notes = convert_checkpoint(args.checkpoint, args.model, args.out, tag=args.tag, trunk_key=args.trunk_key,
                                       overwrite=args.overwrite)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {folder}/model.safetensors, config.json, README.md")
    print(f"load it: timm.create_model('local-dir:{folder}', pretrained=True), or "
          f"timm.create_model('{args.model}', pretrained=True, "
          f"pretrained_cfg_overlay=dict(file='{folder}/model.safetensors'))")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publish import publish_folder  # imports torch and timm

    entry, written = publish_folder(args.dir, args.repo, model=args.model, tag=args.tag,
                                    manifest_path=args.manifest, endpoint=args.endpoint, private=not args.public,
                                    commit_message=args.message)
    hub = entry["hub"]
    where = f"; manifest entry written to {written}" if written else ""
    print(f"published {entry['model']}.{entry['tag']} to {hub['repo']}@{hub['revision']} "
          f"(sha256 {hub['sha256']}, {hub['bytes']} bytes){where}")
    return 0


def _cmd_export_detectron2(args: argparse.Namespace) -> int:
    from .detection.detectron2 import run_from_args  # imports torch

    return run_from_args(args)


def _add_publish(command) -> None:
    """The ``publish`` sub-command and its options."""
    p = command("publish", "upload a weight folder to the Hub and make its manifest entry",
                "Upload model.safetensors, config.json and README.md of DIR (nothing else; a folder holding\n"
                "symlinks or dotfiles is refused) to a Hub repo, private unless --public. The manifest entry\n"
                "(revision, sha256, bytes) is printed and written to --manifest; the folder is not modified.")
    p.add_argument("dir", help="weight folder written by icmlm-zoo convert or icmlm-train export")
    p.add_argument("--repo", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--model", default=None, help="model name to record (default: from the folder's config.json)")
    p.add_argument("--tag", default=None, help="tag to record (default: from the folder's config.json)")
    p.add_argument("--manifest", default=None,
                   help="manifest file to write the entry to; a new file starts from the manifest in use "
                        "(default: $ICMLM_ZOO_MANIFEST, else the checkout's weights_manifest.json when run from a "
                        "checkout, else only print the entry)")
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    visibility = p.add_mutually_exclusive_group()
    visibility.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    visibility.add_argument("--private", action="store_true", help="create the repo private (the default)")
    p.add_argument("--message", default="Add ICMLM weights", help="commit message")
    p.set_defaults(func=_cmd_publish)


def build_parser(detectron2_arguments: bool = True) -> argparse.ArgumentParser:
    """The ``icmlm-zoo`` parser. ``detectron2_arguments=False`` leaves out the arguments of export-detectron2
    (defining them imports torch): for a command line that does not run it."""
    parser = argparse.ArgumentParser(
        prog="icmlm-zoo", formatter_class=HelpFormatter,
        description="ICMLM backbones: list, fetch, convert, publish and export them.\n"
                    "Each command has its own help: icmlm-zoo COMMAND -h")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)

    p = command("list", "models, tags, status and metrics")
    p.add_argument("--status", choices=STATUSES,
                   help="show only the weights with this status (default: all)")
    p.add_argument("--markdown", action="store_true", help="print every weight as the README's markdown table")
    p.set_defaults(func=_cmd_list)

    p = command("info", "one weight: what it is, its status, integrity, preprocessing, metrics and how to load it")
    p.add_argument("name", help="MODEL or MODEL.TAG, e.g. icmlm_resnet50.attfc_coco")
    p.add_argument("--json", action="store_true", help="print the manifest entry as JSON, for scripts")
    p.set_defaults(func=_cmd_info)

    p = command("download", "prefetch a weight into the cache and check it")
    p.add_argument("name", help="MODEL or MODEL.TAG to fetch, e.g. icmlm_resnet50.attfc_coco")
    p.set_defaults(func=_cmd_download)

    p = command("convert", "original checkpoint -> model.safetensors + config.json + model card",
                "Convert an original (NAVER) ICMLM checkpoint into a weight folder: model.safetensors, a timm\n"
                "config.json and a model card README.md. The checkpoint is read with torch.load(weights_only=True).")
    p.add_argument("checkpoint", help="the original .pth/.pt (or .safetensors) checkpoint")
    p.add_argument("--model", required=True, help="target architecture, e.g. icmlm_resnet50")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--tag", default=None, help="tag to record, e.g. attfc_coco (default: none)")
    p.add_argument("--trunk-key", default=None,
                   help="checkpoint key holding the visual trunk (default: auto, 'cnn' for the NAVER release)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace model.safetensors/config.json/README.md already in --out (default: refuse)")
    p.set_defaults(func=_cmd_convert)

    _add_publish(command)

    p = command(DETECTRON2_COMMAND, "backbone -> detectron2 .pkl (MoCo/d2 key names)",
                "Write a ResNet backbone in detectron2's checkpoint format (.pkl) and a .yaml with the settings\n"
                "it needs (PIXEL_MEAN/STD, INPUT.FORMAT RGB, RESNETS.DEPTH).")
    if detectron2_arguments:
        from .detection.detectron2 import add_arguments as add_detectron2_arguments  # imports torch

        add_detectron2_arguments(p)
    p.set_defaults(func=_cmd_export_detectron2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``icmlm-zoo``; errors are printed as one readable line and exit with status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(detectron2_arguments=DETECTRON2_COMMAND in argv).parse_args(argv)
    try:
        return args.func(args)
    except (IcmlmZooError, KeyError, ValueError, OSError) as e:  # OSError: files, Hub, network
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"icmlm-zoo {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
