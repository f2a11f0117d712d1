"""Where an ``icmlm-eval`` command writes its results, and the rule that an existing result is never replaced
without ``--overwrite``.

The default folder depends on what was scored:

* a training run (``--run RUN``, or ``--model RUN``): the run's own ``RUN/eval/<probe>/`` (``<probe>-<checkpoint>``
  for a checkpoint other than the last);
* a model (a timm name, ``random:NAME``, a weight file or folder): ``eval_results/<model>/<probe>/``, where a file
  or folder is named by its name plus a short hash of its full path (two ``model.safetensors`` never share one);
* several models (``compare``): ``eval_results/<label>+<label>...-<hash of the specs>/compare/``.
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

__all__ = ["RESULTS_ROOT", "add_output_args", "default_folder", "result_files", "prepare_output"]

RESULTS_ROOT = Path("eval_results")
_RUN_COMMANDS = {"pointing", "attention", "grounding", "binding-diagnosis"}
_PROBE = {"probes": "compare", "binding-diagnosis": "binding_diagnosis"}
_RESULTS = {"voc07": "voc07", "linear": "linear_probe", "compare": "compare", "probes": "compare",
            "pointing": "pointing", "grounding": "grounding", "binding-diagnosis": "binding_diagnosis"}


def add_output_args(p: argparse.ArgumentParser, what: str, default: str) -> None:
    """``--out`` (default: chosen from what is scored) and ``--overwrite`` for one command."""
    p.add_argument("--out", default=None, help=f"folder for {what} (default: {default}; an existing result is "
                   "never replaced without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in the output folder")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "model"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").is_file() or (path / "checkpoints").is_dir())


def _model_folder(spec: str) -> Path:
    """``eval_results/<model>``: a timm or ``random:`` name as it is; a file or folder by name + path hash."""
    path = Path(spec).expanduser()
    if path.exists():
        return RESULTS_ROOT / f"{_slug(path.stem if path.is_file() else path.name)}-{_short_hash(str(path.resolve()))}"
    return RESULTS_ROOT / _slug(spec)


def _probe_name(command: str, args: argparse.Namespace) -> str:
    name = _PROBE.get(command, command)
    checkpoint = str(getattr(args, "checkpoint", "last"))
    if checkpoint != "last":
        name += f"-{_slug(Path(checkpoint).stem)}"
    if getattr(args, "trunk", None):
        name += f"-trunk-{_slug(Path(args.trunk).name)}"
    if getattr(args, "quick", False):
        name += "-quick"
    return name


def default_folder(command: str, args: argparse.Namespace) -> Path:
    """The folder a command writes to when ``--out`` is not given (see the module docstring)."""
    probe = _probe_name(command, args)
    if command in _RUN_COMMANDS:
        return Path(args.run) / "eval" / probe
    if command in ("compare", "probes"):
        labels = [m.partition("=")[0] if "=" in m else Path(m).name or m for m in args.models]
        joined = "+".join(_slug(label) for label in labels)[:60]
        return RESULTS_ROOT / f"{joined}-{_short_hash(chr(0).join(args.models))}" / probe
    path = Path(args.model).expanduser()
    if _is_run(path):
        return path / "eval" / probe
    return _model_folder(args.model) / probe


def result_files(command: str, args: argparse.Namespace) -> list[str]:
    """The result files a command writes into its folder (what ``--overwrite`` protects)."""
    if command == "attention":
        return [f"{Path(args.image).stem}_attention.json"]
    name = _RESULTS[command]
    return [f"{name}.json", f"{name}.md"] + (["compare.png"] if name == "compare" else [])


def prepare_output(command: str, args: argparse.Namespace) -> Path:
    """Set ``args.out`` (the default folder when not given) and refuse, before any work, to replace a result that
    is there unless ``args.overwrite``. Raises :class:`FileExistsError` naming the file and the ways out."""
    out = Path(args.out) if args.out else default_folder(command, args)
    args.out = str(out)
    existing = [out / f for f in result_files(command, args) if (out / f).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists (a result of an earlier icmlm-eval {command}); pass "
                              "--overwrite to replace it, or --out DIR for another folder")
    return out
