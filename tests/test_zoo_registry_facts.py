"""Registry facts written once (issue 18, item 6) and the small faults of issue 20, item 7: the README's weights
table is the manifest's, statuses/preprocessing keys/architecture arguments have one definition, `list` marks and
measures only weights that exist, a converted config counts parameters only, the namespace holds no stray names."""
import json
import re
from pathlib import Path

import pytest
import timm
from zoo_helpers import tiny_state_dict

import icmlm_zoo
from icmlm_zoo import cache
from icmlm_zoo.cli import build_parser
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.describe import TABLE_END, TABLE_START, weights_table_markdown
from icmlm_zoo.manifest import SHIPPED_MANIFEST, STATUSES, load_manifest, validate_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_weights_table_is_generated_from_the_manifest():
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    assert readme[start:end] == weights_table_markdown(load_manifest(SHIPPED_MANIFEST)), \
        "README.md's weights table is stale: paste the output of `icmlm-zoo list --markdown`"


def test_list_marks_and_measures_only_weights_that_exist(capsys):
    assert zoo_main(["list"]) == 0
    rows = {r.split()[0]: r for r in capsys.readouterr().out.splitlines()[1:]}
    manifest = load_manifest()
    for e in manifest.entries():
        row = rows[e.name]
        assert ("(default)" in row) == (e.has_weights and e.tag == manifest.default_tag(e.model)), row
        if not e.has_weights:
            assert row.rstrip().endswith(" -") and "=" not in row, row
    assert "0.749" not in " ".join(rows.values())  # the demo run's numbers belong to a recipe: no weights


def test_list_markdown_is_the_table(capsys):
    assert zoo_main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == weights_table_markdown(load_manifest())


def test_resnet18_default_is_an_imagenet_style_config_not_the_synthetic_one():
    cfg = timm.create_model("icmlm_resnet18").pretrained_cfg
    assert cfg["tag"] == "attfc_coco" and cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    assert timm.create_model("icmlm_resnet18.attfc_synthetic").pretrained_cfg["input_size"] == (3, 96, 96)
    assert "--set model.backbone=icmlm_resnet18" in load_manifest().entry("icmlm_resnet18").train_command


def test_converted_config_counts_parameters_not_batchnorm_statistics(tmp_path):
    from icmlm_zoo.convert import save_weight_folder

    sd = tiny_state_dict(seed=51)
    folder = save_weight_folder(sd, "icmlm_resnet_tiny", tmp_path / "w")
    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model("icmlm_resnet_tiny")
    assert config["icmlm"]["num_params"] == sum(p.numel() for p in model.parameters())
    assert config["icmlm"]["num_params"] == load_manifest().models["icmlm_resnet_tiny"]["num_params"]


def test_namespace_has_no_stray_names():
    assert not hasattr(icmlm_zoo, "version") and not hasattr(icmlm_zoo, "PackageNotFoundError")
    assert set(icmlm_zoo.__all__) <= set(dir(icmlm_zoo))


def test_statuses_have_one_definition():
    (status,) = [a for a in build_parser()._subparsers._group_actions[0].choices["list"]._actions
                 if a.dest == "status"]
    assert tuple(status.choices) == STATUSES
    sources = {p.name: p.read_text() for p in (ROOT / "icmlm_zoo").glob("*.py")}
    for name, text in sources.items():
        if name != "manifest_schema.py":
            assert not re.search(r'\("published", "convertible"', text), f"{name} spells the statuses again"
            assert '"input_size", "mean", "std"' not in text, f"{name} spells the preprocessing keys again"
            assert 'os.environ.get("HF_HUB_OFFLINE"' not in text or name == "cache.py", name


@pytest.mark.parametrize("name", ["icmlm_resnet_tiny", "icmlm_resnet18"])
def test_architecture_comes_from_the_manifest_pair_plain_timm_builds(name):
    info = load_manifest().models[name]
    ours = timm.create_model(name).state_dict()
    plain = timm.create_model(info["timm_architecture"], num_classes=0, **info["timm_model_args"]).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in plain.items()}


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_is_offline_reads_the_environment_now(monkeypatch, var):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not cache.is_offline()
    monkeypatch.setenv(var, "1")
    assert cache.is_offline()
    monkeypatch.setenv(var, "0")
    assert not cache.is_offline()


def test_preset_overrides_are_checked_by_the_schema():
    data = json.loads(SHIPPED_MANIFEST.read_text())
    data["weights"][0]["pretraining"]["set"] = ["no-equals-sign"]
    assert any("pretraining.set" in e for e in validate_manifest(data))


def test_vgg_cfg_follows_the_family_not_the_name():
    manifest = load_manifest()
    entry = manifest.entry("icmlm_vgg16")
    manifest.models["icmlm_vgg16"]["family"] = "resnet"
    assert manifest.timm_cfg(entry)["classifier"] == "fc"
    manifest.models["icmlm_vgg16"]["family"] = "vgg"
    assert manifest.timm_cfg(entry)["classifier"] == "head.fc"
