"""Export an ICMLM ResNet trunk to detectron2's checkpoint format (the MoCo/detectron2 key mapping).

timm/torchvision names -> detectron2 names::

    conv1 / bn1                 -> stem.conv1 / stem.conv1.norm
    layer{1..4}                 -> res{2..5}
    bn{1,2,3} (inside blocks)   -> conv{1,2,3}.norm
    downsample.0 / downsample.1 -> shortcut / shortcut.norm

The pickle is ``{"model": {name: numpy array}, "__author__": "icmlm_zoo", "matching_heuristics": True}``;
detectron2's ``DetectionCheckpointer`` reads it as-is.  The network expects **RGB** input normalised with the
backbone's mean/std multiplied by 255 (written next to the pickle as a config snippet).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import timm
import torch

from icmlm_zoo.backbone_factory import load_backbone, read_timm_config
from icmlm_zoo.constants import HEAD_PREFIXES
from icmlm_zoo.convert import extract_trunk, match_to_model, read_checkpoint_file

AUTHOR = "icmlm_zoo"
_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _to_d2_key(key: str) -> str:
    parts = key.split(".")
    if not parts[0].startswith("layer"):
        # stem: conv1.weight -> stem.conv1.weight ; bn1.x -> stem.conv1.norm.x
        if parts[0] == "bn1":
            return "stem.conv1.norm." + ".".join(parts[1:])
        return "stem." + key
    m = re.fullmatch(r"layer(\d+)", parts[0])
    if m is None:
        raise KeyError(f"unexpected key {key!r}")
    out = [f"res{int(m.group(1)) + 1}", parts[1]]
    rest = parts[2:]
    if rest[0] == "downsample":
        out += ["shortcut"] if rest[1] == "0" else ["shortcut", "norm"]
        rest = rest[2:]
    elif re.fullmatch(r"bn\d", rest[0]):
        out += [f"conv{rest[0][2:]}", "norm"]
        rest = rest[1:]
    return ".".join(out + rest)


def _from_d2_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "stem":
        if parts[1:3] == ["conv1", "norm"]:
            return "bn1." + ".".join(parts[3:])
        return ".".join(parts[1:])
    m = re.fullmatch(r"res(\d+)", parts[0])
    if m is None:
        raise KeyError(f"{key!r} is not a detectron2 ResNet key (expected stem.* or res2..res5.*)")
    out = [f"layer{int(m.group(1)) - 1}", parts[1]]
    rest = parts[2:]
    if rest[0] == "shortcut":
        if len(rest) > 1 and rest[1] == "norm":
            out += ["downsample", "1"]
            rest = rest[2:]
        else:
            out += ["downsample", "0"]
            rest = rest[1:]
    elif re.fullmatch(r"conv\d", rest[0]) and len(rest) > 1 and rest[1] == "norm":
        out += [f"bn{rest[0][4:]}"]
        rest = rest[2:]
    return ".".join(out + rest)


def timm_to_detectron2(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Map a timm/torchvision ResNet state dict to detectron2 names (classifier keys dropped)."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key.startswith(HEAD_PREFIXES):
            continue
        if key.startswith(("features.", "pre_logits.")):
            raise ValueError("detectron2 has no VGG backbone; export works for ResNet trunks only. "
                             "Use the torchvision recipe (docs/detection.md) for VGG.")
        out[_to_d2_key(key)] = value.detach().cpu().numpy()
    return out


def detectron2_to_timm(d2_state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`timm_to_detectron2`; accepts the pickle's ``model`` dict or the whole pickle."""
    if "model" in d2_state and isinstance(d2_state["model"], Mapping):
        d2_state = d2_state["model"]
    return {_from_d2_key(k): torch.as_tensor(np.asarray(v)) for k, v in d2_state.items()}


def resnet_depth(state: Mapping[str, Any]) -> int:
    """ResNet depth (18/34/50/101/152) from a timm state dict, 0 when it matches no standard depth."""
    blocks = []
    for i in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")}
        blocks.append(max(idx) + 1 if idx else 0)
    bottleneck = any(k.endswith("conv3.weight") for k in state)
    if tuple(blocks) == (3, 4, 6, 3):
        return 50 if bottleneck else 34
    return _DEPTHS.get(tuple(blocks), 0)


def config_snippet(mean: tuple[float, ...], std: tuple[float, ...], depth: int, weights: str) -> str:
    """The detectron2 config lines that must accompany the exported weights."""
    fmt = lambda xs: "[" + ", ".join(f"{255.0 * x:.3f}" for x in xs) + "]"  # noqa: E731
    lines = [
        "# detectron2 settings for these weights (merge into your config)",
        "MODEL:",
        f"  WEIGHTS: \"{weights}\"",
        f"  PIXEL_MEAN: {fmt(mean)}",
        f"  PIXEL_STD: {fmt(std)}",
        "  RESNETS:",
        f"    DEPTH: {depth}" if depth else
        "    DEPTH: FILL_ME  # not a standard ResNet depth: detectron2 builds only 18/34/50/101/152",
        "    STRIDE_IN_1X1: False  # torchvision-style bottleneck (stride in the 3x3 conv)",
    ]
    if depth in (18, 34):
        lines.append("    RES2_OUT_CHANNELS: 64")
    lines += ["INPUT:", "  FORMAT: \"RGB\""]
    return "\n".join(lines) + "\n"


_ORIGINAL_SUFFIXES = (".pth", ".pt", ".bin", ".tar")


def _convert_original(path: Path, arch: str | None) -> tuple[dict[str, torch.Tensor], Any]:
    """A plain or original (NAVER) torch checkpoint -> (timm state dict, data config), via icmlm_zoo.convert."""
    cfg_arch, model_args = read_timm_config(path.parent)
    if not (arch or cfg_arch):
        raise ValueError(f"cannot tell the architecture of {path}: pass --arch NAME (e.g. icmlm_resnet50)")
    model = timm.create_model(arch or cfg_arch, pretrained=False, num_classes=0, **({} if arch else model_args))
    state, _ = match_to_model(extract_trunk(read_checkpoint_file(path)), model)
    return state, timm.data.resolve_model_data_config(model)


def check_outputs(out_pkl: str | Path, *, overwrite: bool = False) -> Path:
    """``out_pkl`` as a Path after checking it is a ``.pkl`` and that neither it nor its ``.yaml`` exists
    (unless ``overwrite``)."""
    out = Path(out_pkl)
    if out.suffix != ".pkl":
        raise ValueError(f"{out}: detectron2 reads its own format from a .pkl file; name the output *.pkl")
    existing = [str(p) for p in (out, out.with_suffix(".yaml")) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s); nothing was written. Choose another "
                              f"output name, or pass --overwrite to replace them.")
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_detectron2(model_or_path: str, out_pkl: str | Path, *, arch: str | None = None,
                      overwrite: bool = False) -> Path:
    """Write ``out_pkl`` (detectron2 format) for a ResNet backbone, plus ``<out>.yaml`` with the settings.

    ``model_or_path`` is anything :func:`icmlm_zoo.backbone_factory.load_backbone` accepts: a timm
    name (``icmlm_resnet50.attfc_coco``), a weight file/folder (``arch`` names the architecture when there is
    no ``config.json``), or a training run folder; a ``.pth``/``.pt`` file may also be an original NAVER
    checkpoint (converted on the way, as ``icmlm-zoo convert`` does). Existing outputs are replaced only with
    ``overwrite``.
    """
    out = check_outputs(out_pkl, overwrite=overwrite)
    path = Path(model_or_path).expanduser()
    if path.is_file() and path.suffix in _ORIGINAL_SUFFIXES:
        state, data_config = _convert_original(path, arch)
        mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    else:
        try:
            loaded = load_backbone(model_or_path, arch=arch)
        except RuntimeError as e:  # torch's strict-load error: keys of another layout
            raise ValueError(f"{model_or_path} does not load into {arch or 'its architecture'} "
                             f"({str(e).splitlines()[0]}). If it is an original NAVER checkpoint, convert it "
                             f"first: icmlm-zoo convert FILE --model ARCH --out DIR, then export DIR.") from None
        state, mean, std = loaded.model.state_dict(), loaded.mean, loaded.std
    model = timm_to_detectron2(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, pickle.dumps({"model": model, "__author__": AUTHOR, "matching_heuristics": True}))
    _write_atomic(out.with_suffix(".yaml"),
                  config_snippet(mean, std, resnet_depth(state), str(out.resolve())).encode())
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``icmlm-zoo export-detectron2``; call :func:`run_from_args` with the parsed result."""
    parser.add_argument("model", help="timm name (icmlm_resnet50.attfc_coco), weight file/folder, run folder or an "
                                      "original NAVER .pth checkpoint (converted on the way; needs --arch)")
    parser.add_argument("out", help="output .pkl (a .yaml with PIXEL_MEAN/STD, INPUT.FORMAT is written beside it)")
    parser.add_argument("--arch", default=None,
                        help="architecture of a bare weight file or an original checkpoint, e.g. icmlm_resnet50 "
                             "(default: from the config.json beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing .pkl/.yaml (default: refuse)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the export for parsed :func:`add_arguments` arguments; prints where the files went."""
    out = export_detectron2(args.model, args.out, arch=args.arch, overwrite=args.overwrite)
    print(f"wrote {out} ({AUTHOR}, matching_heuristics=True) and {out.with_suffix('.yaml')}")
    print("detectron2 expects RGB input here: INPUT.FORMAT 'RGB', PIXEL_MEAN/STD from the .yaml (x255)")
    return 0
