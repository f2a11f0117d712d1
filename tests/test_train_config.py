"""Config: presets parse and build their model; unknown keys and bad values are errors naming the key."""
from __future__ import annotations

import pytest

from icmlm_zoo.training.config import ConfigError, list_presets, load_config, load_preset

PRESETS = ["demo", "coco_r50_tfm", "coco_r50_attfc", "coco_r50_tp_postag", "coco_r50_tp_label", "vg_r50_tfm",
           "coco_vgg16_tfm"]


def test_all_presets_are_shipped():
    assert set(PRESETS) <= set(list_presets())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_and_builds_its_model(name, text_side):
    import torch

    from icmlm_zoo.training.model import build_model
    cfg = load_config(name)
    assert cfg.run.export.model == cfg.model.backbone
    heads = cfg.model.heads
    # the real presets use bert-base-uncased (not shipped offline): build the same heads on the embedded MiniLM
    cfg = load_config(name, overrides=["text.model=minilm"])
    fusion = any(h in heads for h in ("attfc", "tfm"))
    model = build_model(cfg, text_side if fusion else None, num_tags=50)
    assert model.backbone.num_features in (256, 512, 2048)
    assert (model.tp is not None) == ("tp" in heads)
    assert model.fusion_kind == ("attfc" if "attfc" in heads else "tfm" if "tfm" in heads else None)
    if name == "coco_r50_tp_label":
        assert cfg.tags.source == "labels" and cfg.model.tp.targets == "labels"
    size = 64 if "resnet" in cfg.model.backbone else 64
    with torch.no_grad():
        x = torch.randn(1, 3, size, size)
        if fusion:
            out = model(x, torch.tensor([[101, 103, 102]]), torch.ones(1, 3, dtype=torch.long),
                        torch.tensor([[-100, 2417, -100]]), torch.zeros(1, 50))
        else:
            out = model(x, tp=torch.zeros(1, 50))
    assert torch.isfinite(out["loss"])


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*valid keys under optim: .*lr"):
        load_config("demo", overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*demo"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("demo", overrides=["train.amp=fp8"])


def test_overrides_and_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-4\nmodel:\n  heads: [tfm, tp]\n")
    cfg = load_config("demo", f, ["train.batch_size=8", "model.tfm.layers=3", "run.stop_after=null"])
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.train.batch_size == 8
    assert cfg.model.heads == ["tfm", "tp"] and cfg.model.tfm.layers == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  sythetic: {}\n")
    with pytest.raises(ConfigError, match="data.sythetic"):
        load_config(config_file=bad)


def test_cli_reports_config_errors(capsys):
    from icmlm_zoo.training.cli import main
    assert main(["--preset", "demo", "--set", "nosuch.key=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["--preset", "demo", "--print-config", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def _shape(d: dict) -> dict:
    return {k: _shape(v) if isinstance(v, dict) else None for k, v in d.items()}


def test_every_key_has_a_declared_type_and_its_default_passes():
    from icmlm_zoo.training.config import DEFAULTS, SCHEMA, validate
    assert _shape(SCHEMA) == _shape(DEFAULTS)
    import copy
    assert validate(copy.deepcopy(DEFAULTS)) == DEFAULTS


def test_load_config_returns_the_typed_view_of_the_validated_config():
    """Each module receives its typed section; every key is a typed dataclass field with a spec, and the typed
    config holds exactly the validated values (overrides included)."""
    import copy
    import dataclasses
    import typing

    from icmlm_zoo.training import config_sections as cs
    from icmlm_zoo.training.config import apply_overrides, load_preset, validate
    overrides = ["optim.lr=0.01", "data.webdataset.shard_shuffle=4"]
    typed = load_config("demo", None, overrides)
    assert isinstance(typed, cs.Config) and isinstance(typed.optim, cs.OptimSection) and typed.optim.lr == 0.01
    assert typed.data.webdataset.shard_shuffle == 4 and typed.model.fusion == "attfc"
    assert dataclasses.asdict(typed) == validate(apply_overrides(load_preset("demo"), overrides))
    assert cs.sections(copy.deepcopy(cs.DEFAULTS)) == cs.Config()
    with pytest.raises(TypeError, match="load_config already returns the typed Config"):
        cs.sections(typed)

    def leaves(cls, path=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "spec" in f.metadata:
                yield path + f.name, hints[f.name], f.metadata["spec"]
            else:
                yield from leaves(type(f.default_factory()), path + f.name + ".")
    found = list(leaves(cs.Config))
    assert len(found) == sum(1 for _ in _walk(cs.DEFAULTS)) > 80
    for where, hint, spec in found:
        assert hint is not typing.Any and spec.describe(), where


def _walk(d: dict):
    for v in d.values():
        yield from (_walk(v) if isinstance(v, dict) else [v])


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=abc", r"train.batch_size='abc' is not valid: expected an integer >= 1"),
    ("train.batch_size=0", r"train.batch_size=0 is not valid: expected an integer >= 1"),
    ("optim.betas=abc", r"optim.betas='abc' is not valid: expected a list of 2 values, each a number in \[0, 1\)"),
    ("optim.betas=[0.9, 1.5]", r"optim.betas=\[0.9, 1.5\] is not valid"),
    ("optim.lr=-1", r"optim.lr=-1 is not valid: expected a number > 0"),
    ("optim.lr=.nan", r"optim.lr=nan is not valid: expected a number > 0"),
    ("run.progress=maybe", r"run.progress='maybe' is not valid: expected true or false"),
    ("data.pairs.file=3", r"data.pairs.file=3 is not valid: expected a non-empty text or null"),
    ("train.max_nonfinite_steps=0", r"train.max_nonfinite_steps=0 is not valid: expected an integer >= 1"),
    ("model.heads=[]", r"model.heads=\[\] is not valid: expected a list of 1 to 3 values"),
])
def test_bad_values_name_the_key_and_the_expected_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides=[override])


def test_bad_value_in_a_config_file_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batch_size: 8.5\n")
    with pytest.raises(ConfigError, match=r"train.batch_size=8.5 is not valid: expected an integer >= 1"):
        load_config(config_file=f)
    f.write_text("train:\n  max_steps: 1e4\n")  # YAML reads 1e4 as a number: an integral value is accepted
    assert load_config(config_file=f).train.max_steps == 10000


def test_rules_across_keys_are_checked_when_the_config_is_read():
    """The rules the modules once re-checked at run time are refused by load_config, naming the keys."""
    with pytest.raises(ConfigError, match=r"tags.source=file needs tags.file: set tags.file=PATH"):
        load_config("demo", None, ["tags.source=file"])
    # without TP and with random masking no tag vocabulary is read: tags.source=file without a file is fine
    cfg = load_config("demo", None, ["tags.source=file", "model.heads=[attfc]", "masking.strategy=random"])
    assert cfg.tags.source == "file" and not cfg.needs_tags
    with pytest.raises(ConfigError, match="choose one MLM head"):
        load_config("demo", None, ["model.heads=[attfc,tfm]"])
    for bad, key in [("model.tp.reduction=max", "model.tp.reduction"), ("text.max_length=3", "text.max_length"),
                     ("model.logits=some", "model.logits"), ("data.kind=laion", "data.kind")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
            load_config("demo", None, [bad])


def test_every_data_kind_has_a_row_in_the_data_table():
    from icmlm_zoo.training.choices import DATA_KINDS
    from icmlm_zoo.training.data import SOURCES, STREAMS
    assert not set(SOURCES) & set(STREAMS) and set(SOURCES) | set(STREAMS) == set(DATA_KINDS)


def test_refused_run_leaves_nothing_and_a_rerun_works(tmp_path, capsys, tag_file, text_side):
    from train_fixtures import tiny_args

    from icmlm_zoo.training.cli import main
    run = tmp_path / "run"
    assert main(tiny_args(tag_file, "--out", str(run), "--set", "train.batch_size=abc")) == 2
    assert "train.batch_size" in capsys.readouterr().err and not run.exists()
    # a failure while starting (after tags.txt was copied): the folder is left as it was found
    assert main(tiny_args(tag_file, "--out", str(run), "--set", "model.backbone=no_such_net")) == 1
    assert "Traceback" not in capsys.readouterr().err and not run.exists()
    run.mkdir()
    assert main(tiny_args(tag_file, "--out", str(run), "--set", "model.backbone=no_such_net")) == 1
    assert run.is_dir() and list(run.iterdir()) == []
    assert main(tiny_args(tag_file, "--out", str(run), steps=2)) == 0
