"""Original NAVER-format checkpoints: conversion with strict key checks, URL download path, unsafe pickles."""
import hashlib
import io
import os
import pickle

import pytest
import timm
import torch
from zoo_helpers import assert_same_weights, convertible_entry, naver_checkpoint, tiny_state_dict, write_manifest

import icmlm_zoo  # noqa: F401
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.convert import convert_checkpoint, extract_trunk, read_checkpoint_file
from icmlm_zoo.errors import ConversionError, WeightsIntegrityError


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_convert_naver_checkpoint_strips_prefixes_and_drops_extras(tmp_path):
    sd = tiny_state_dict(seed=2)
    ckpt = _save(naver_checkpoint(sd), tmp_path / "icmlm.pth")
    folder, notes = convert_checkpoint(ckpt, "icmlm_resnet_tiny", tmp_path / "out", tag="attfc_coco")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model("icmlm_resnet_tiny", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert_same_weights(model, sd)


def test_convert_reports_classifier_keys_it_drops(tmp_path):
    sd = tiny_state_dict(seed=2)
    trunk = dict(sd, **{"fc.weight": torch.zeros(1000, 256), "fc.bias": torch.zeros(1000)})
    ckpt = _save({"cnn": trunk}, tmp_path / "c.pth")
    _, notes = convert_checkpoint(ckpt, "icmlm_resnet_tiny", tmp_path / "out")
    assert any("fc.bias" in n and "fc.weight" in n for n in notes)


def test_convert_names_missing_and_unexpected_keys(tmp_path):
    sd = tiny_state_dict(seed=2)
    sd.pop("layer2.0.conv1.weight")
    sd["layer9.extra.weight"] = torch.zeros(3)
    ckpt = _save({"cnn": sd}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(ckpt, "icmlm_resnet_tiny", tmp_path / "out")
    assert "layer2.0.conv1.weight" in str(err.value) and "layer9.extra.weight" in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_convert_wrong_architecture_reports_shapes(tmp_path):
    ckpt = _save({"cnn": tiny_state_dict(seed=0)}, tmp_path / "tiny.pth")
    with pytest.raises(ConversionError, match="icmlm_vgg16|--model"):
        convert_checkpoint(ckpt, "icmlm_resnet18", tmp_path / "out")


def test_vgg_conv_trunk_loads_strictly(tmp_path):
    sd = tiny_state_dict(seed=4, model="icmlm_vgg16")
    ckpt = _save({"cnn": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "vgg.pth")
    folder, _ = convert_checkpoint(ckpt, "icmlm_vgg16", tmp_path / "out")
    model = timm.create_model("icmlm_vgg16", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert_same_weights(model, sd)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"cnn": {"conv1.weight": torch.zeros(1)}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(ConversionError, match="Refusing to load"):
        read_checkpoint_file(path)
    assert not marker.exists()
    # a raw pickle file (not a torch zip) as well
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ConversionError):
        read_checkpoint_file(raw)
    assert not marker.exists()
    assert zoo_main(["convert", str(path), "--model", "icmlm_resnet_tiny", "--out", str(tmp_path / "o")]) == 1
    assert not marker.exists()


def test_trunk_key_error_lists_top_level_keys():
    with pytest.raises(ConversionError, match="text_encoder"):
        extract_trunk({"text_encoder": {"w": torch.zeros(1)}, "epoch": 1})


def _serve_original(fake_hub, sd, name):
    buf = io.BytesIO()
    torch.save(naver_checkpoint(sd), buf)
    data = buf.getvalue()
    fake_hub.static[name] = data
    return f"{fake_hub.url}/static/{name}", hashlib.sha256(data).hexdigest()


def test_pretrained_from_original_url_downloads_converts_and_caches(fake_hub, isolated_caches, monkeypatch, capsys):
    sd = tiny_state_dict(seed=5)
    name = f"icmlm-{os.urandom(3).hex()}.pth"
    url, digest = _serve_original(fake_hub, sd, name)
    manifest = write_manifest(isolated_caches / "m.json", [convertible_entry("icmlm_resnet_tiny", "orig", url, None)])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    model = timm.create_model("icmlm_resnet_tiny.orig", pretrained=True)
    assert_same_weights(model, sd)
    assert digest in capsys.readouterr().out  # unknown sha256: the computed one is printed
    n = len(fake_hub.requests)
    assert_same_weights(timm.create_model("icmlm_resnet_tiny.orig", pretrained=True), sd)
    assert len(fake_hub.requests) == n, "the converted weights must come from the cache"


def test_original_url_with_wrong_sha_is_refused(fake_hub, isolated_caches, monkeypatch):
    url, _ = _serve_original(fake_hub, tiny_state_dict(seed=6), f"o-{os.urandom(3).hex()}.pth")
    manifest = write_manifest(isolated_caches / "m.json",
                              [convertible_entry("icmlm_resnet_tiny", "orig", url, "0" * 64)])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    with pytest.raises(WeightsIntegrityError, match="0000"):
        timm.create_model("icmlm_resnet_tiny.orig", pretrained=True)
    assert not list((isolated_caches / "icmlm-cache").rglob("*.pth"))


def test_original_url_missing_gives_clear_error(fake_hub, isolated_caches, monkeypatch):
    url = f"{fake_hub.url}/static/does-not-exist.pth"
    manifest = write_manifest(isolated_caches / "m.json", [convertible_entry("icmlm_resnet_tiny", "orig", url, None)])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    with pytest.raises(icmlm_zoo.IcmlmZooError, match="HTTP 404"):
        timm.create_model("icmlm_resnet_tiny.orig", pretrained=True)
    assert not list((isolated_caches / "icmlm-cache").rglob("*.part"))


def test_cli_convert_writes_loadable_folder(tmp_path, capsys):
    sd = tiny_state_dict(seed=7)
    ckpt = _save(naver_checkpoint(sd), tmp_path / "c.pth")
    out = tmp_path / "w"
    assert zoo_main(["convert", str(ckpt), "--model", "icmlm_resnet_tiny", "--out", str(out), "--tag", "mine"]) == 0
    assert "pretrained_cfg_overlay" in capsys.readouterr().out
    assert_same_weights(timm.create_model(f"local-dir:{out}", pretrained=True), sd)
    # never clobbers an existing folder
    assert zoo_main(["convert", str(ckpt), "--model", "icmlm_resnet_tiny", "--out", str(out)]) == 1


def test_cli_convert_never_overwrites_user_files_without_overwrite(tmp_path, capsys):
    sd = tiny_state_dict(seed=8)
    ckpt = _save(naver_checkpoint(sd), tmp_path / "c.pth")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes about this folder\n")
    (out / "config.json").write_text('{"mine": true}\n')
    args = ["convert", str(ckpt), "--model", "icmlm_resnet_tiny", "--out", str(out)]
    assert zoo_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "README.md" in err and "config.json" in err and "--overwrite" in err
    assert (out / "README.md").read_text() == "my own notes about this folder\n"
    assert (out / "config.json").read_text() == '{"mine": true}\n'
    assert not (out / "model.safetensors").exists()

    assert zoo_main(args + ["--overwrite"]) == 0
    assert_same_weights(timm.create_model(f"local-dir:{out}", pretrained=True), sd)
