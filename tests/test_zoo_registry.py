"""Registration in timm, the manifest as single source of truth, head-less backbones, timm feature APIs."""
import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import timm
import torch

from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.manifest import SHIPPED_MANIFEST, load_manifest, validate_manifest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["icmlm_resnet18", "icmlm_resnet50", "icmlm_resnet_tiny", "icmlm_vgg16"]


def test_models_listed_and_tags_from_manifest():
    assert timm.list_models("icmlm_*") == NAMES
    manifest = load_manifest()
    listed = set(timm.list_models("icmlm_*", include_tags=True))
    assert listed == {e.name for e in manifest.entries()}
    assert timm.list_pretrained("icmlm_*") == ["icmlm_resnet50.attfc_coco"]
    cfg = timm.models.get_pretrained_cfg("icmlm_resnet50.attfc_coco")
    assert cfg.url == manifest.entry("icmlm_resnet50", "attfc_coco").source["url"]
    for e in manifest.entries():
        c = timm.models.get_pretrained_cfg(e.name)
        assert c.license and c.paper_ids == "arxiv:2008.01392"
        assert list(c.mean) == e.preprocessing["mean"] and c.crop_pct == e.preprocessing["crop_pct"]


def test_shipped_manifest_is_the_top_level_file_and_valid():
    assert SHIPPED_MANIFEST.resolve() == (ROOT / "weights_manifest.json").resolve()
    data = json.loads(SHIPPED_MANIFEST.read_text())
    assert validate_manifest(data) == []
    assert data["weights"][0]["source"]["url"] == "http://download.europe.naverlabs.com//ICMLM/icmlm-attfc_r50_coco_5K.pth"
    assert data["weights"][0]["source"]["sha256"] is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["weights"][0].update(status="shipped"), "status must be one of"),
    (lambda d: d["weights"][0]["preprocessing"].pop("mean"), "preprocessing lacks"),
    (lambda d: d["weights"][1].update(status="published", hub={"repo": "x/y", "revision": "main"}), "40-hex"),
    (lambda d: d["weights"].append(dict(d["weights"][0])), "duplicate entry"),
    (lambda d: d["weights"][0]["source"].update(sha256="abc"), "source.sha256"),
    (lambda d: d["weights"][0].update(model="icmlm_resnet101"), "not in 'models'"),
    (lambda d: d["weights"][0].update(metrics=[{"name": "voc07", "value": 1}]), "lacks 'protocol'"),
])
def test_manifest_schema_catches_errors(mutate, message):
    data = copy.deepcopy(json.loads(SHIPPED_MANIFEST.read_text()))
    mutate(data)
    errors = validate_manifest(data)
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize("name", NAMES)
def test_num_params_and_features_match_manifest(name):
    info = load_manifest().models[name]
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == info["num_params"]
    assert model.num_features == info["num_features"]
    assert model.num_classes == 0


def test_headless_then_fresh_head():
    m = timm.create_model("icmlm_resnet_tiny")
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 256)
    m = timm.create_model("icmlm_vgg16", num_classes=10)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert m.get_classifier().out_features == 10


def test_features_only_and_intermediates_resnet():
    m = timm.create_model("icmlm_resnet_tiny", features_only=True, out_indices=(1, 3))
    assert m.feature_info.reduction() == [4, 16]
    assert [f.shape[1] for f in m(torch.randn(1, 3, 64, 64))] == [32, 128]
    m = timm.create_model("icmlm_resnet_tiny")
    final, inter = m.forward_intermediates(torch.randn(1, 3, 64, 64), indices=2)
    assert [t.shape[1] for t in inter] == [128, 256] and final.shape[1] == 256


def test_features_only_and_intermediates_vgg():
    m = timm.create_model("icmlm_vgg16", features_only=True, out_indices=(2, 4, 5))
    feats = m(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 16, 16), (512, 4, 4), (512, 2, 2)]
    vgg = timm.create_model("icmlm_vgg16")
    x = torch.randn(1, 3, 64, 64)
    inter = vgg.forward_intermediates(x, indices=[-1], intermediates_only=True)
    assert torch.allclose(inter[0], vgg.forward_features(x))
    assert set(k.split(".")[0] for k in vgg.state_dict()) == {"features"}


def test_in_chans():
    m = timm.create_model("icmlm_resnet_tiny", in_chans=1)
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 256)
    m = timm.create_model("icmlm_vgg16", in_chans=4)
    assert m.features[0].in_channels == 4


def test_import_is_light_and_names_are_ours():
    code = ("import warnings, sys; warnings.simplefilter('error');"
            "import timm; before = set(timm.list_models()); import icmlm_zoo;"
            "after = set(timm.list_models()); assert 'transformers' not in sys.modules, 'transformers imported';"
            "new = sorted(after - before); print(new)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(NAMES)


def test_cli_list_and_info(capsys):
    assert zoo_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "icmlm_resnet50.attfc_coco (default)" in out and "convertible" in out and "icmlm_vgg16.tfm_coco" in out
    assert zoo_main(["info", "icmlm_resnet50", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tag"] == "attfc_coco" and info["timm_data_config"]["crop_pct"] == 0.875
    assert zoo_main(["info", "icmlm_resnet50.bogus"]) == 1
    assert "icmlm_resnet50.tfm_coco" in capsys.readouterr().err


def test_console_script_installed():
    exe = Path(sys.executable).with_name("icmlm-zoo")
    out = subprocess.run([str(exe), "list", "--status", "convertible"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "icmlm_resnet50.attfc_coco" in out.stdout


@pytest.mark.slow
def test_built_wheel_ships_the_manifest_in_one_namespace(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("icmlm_zoo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = json.loads(z.read("icmlm_zoo/weights_manifest.json"))
        names = z.namelist()
    assert shipped == json.loads((ROOT / "weights_manifest.json").read_text())
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    for url in ("Homepage", "Source", "Documentation", "Issues", "Changelog"):
        assert f"Project-URL: {url}, https://" in metadata, url
    assert "Classifier: Topic :: Scientific/Engineering :: Image Recognition" in metadata
    assert any(n.startswith("icmlm_zoo/training/presets/") and n.endswith(".yaml") for n in names)
    # one import namespace: the trainer ships inside icmlm_zoo, nothing else lands at the top of site-packages
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"icmlm_zoo"}, top
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    probe = ("import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]); "
             "assert u.find_spec('training') is None, 'a top-level training package is importable'; "
             "print(u.find_spec('icmlm_zoo').submodule_search_locations[0])")
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(site)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (Path(out.stdout.strip()) / "training" / "__init__.py").is_file()


def test_cli_export_detectron2_from_weight_folder(tmp_path, capsys):
    import pickle

    from zoo_helpers import tiny_state_dict

    from icmlm_zoo.convert import save_weight_folder

    sd = tiny_state_dict(seed=9, model="icmlm_resnet18")
    folder = save_weight_folder(sd, "icmlm_resnet18", tmp_path / "w")
    out = tmp_path / "r18.pkl"
    assert zoo_main(["export-detectron2", str(folder), str(out)]) == 0
    with open(out, "rb") as f:
        d2 = pickle.load(f)
    assert d2["matching_heuristics"] is True
    assert "stem.conv1.weight" in d2["model"] and "res5.1.conv2.norm.running_var" in d2["model"]
    assert (d2["model"]["stem.conv1.weight"] == sd["conv1.weight"].numpy()).all()


def test_trainer_has_one_import_name():
    """From a checkout (repository root on sys.path) the trainer folder is refused as a top-level package."""
    probe = ("import icmlm_zoo.training.config as c; assert c.list_presets()\n"
             "try:\n    import training\nexcept ImportError as e:\n    print(e)\nelse:\n    raise SystemExit(1)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "icmlm_zoo.training" in out.stdout


# The pretrained cfgs (every tag's, like timm's own: pool_size, first_conv, classifier, ...) and the rest of timm's
# model API are checked in test_zoo_timm_conformance.py.


def test_manifest_is_parsed_once_per_process_and_again_when_it_changes(tmp_path, monkeypatch):
    import json

    from icmlm_zoo import manifest as mf
    path = tmp_path / "manifest.json"
    data = json.loads(mf.SHIPPED_MANIFEST.read_text())
    path.write_text(json.dumps(data))
    parsed = []
    real = mf.validate_manifest
    monkeypatch.setattr(mf, "validate_manifest", lambda d: parsed.append(1) or real(d))
    first = mf.load_manifest(path)
    first.data["models"].clear()  # a caller's copy: the next reader still gets the file's content
    second = mf.load_manifest(path)
    assert len(parsed) == 1 and second.data == data
    data["schema_note"] = "changed"
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert mf.load_manifest(path).data.get("schema_note") == "changed" and len(parsed) == 2
