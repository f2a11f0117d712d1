"""`icmlm-zoo publish`: upload to the (loopback) Hub, manifest entry, then loading by name and in plain timm."""
import json
import os
import subprocess
import sys

import timm

import icmlm_zoo  # noqa: F401
from icmlm_zoo.cache import sha256_file
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.convert import save_weight_folder
from icmlm_zoo.manifest import load_manifest
from zoo_helpers import assert_same_weights, tiny_state_dict, write_manifest


def test_publish_writes_manifest_entry_and_weights_load(fake_hub, isolated_caches, monkeypatch):
    sd = tiny_state_dict(seed=11)
    folder = save_weight_folder(sd, "icmlm_resnet_tiny", isolated_caches / "w", tag="pubtest",
                                extra_meta={"description": "published in a test",
                                            "metrics": [{"name": "masked top-1", "value": 0.5, "protocol": "demo",
                                                         "dataset": "synthetic", "provenance": "test"}]})
    manifest = write_manifest(isolated_caches / "m.json", [])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    repo = f"icmlm-test/pub-{os.urandom(3).hex()}"
    assert zoo_main(["publish", str(folder), "--repo", repo]) == 0

    entry = load_manifest().entry("icmlm_resnet_tiny", "pubtest")
    hub = entry.hub
    assert entry.status == "published"
    assert hub["repo"] == repo
    assert hub["revision"] == fake_hub.repos[repo].commits[-1][0]
    assert hub["sha256"] == sha256_file(folder / "model.safetensors")
    assert hub["bytes"] == (folder / "model.safetensors").stat().st_size
    assert entry.raw["metrics"][0]["value"] == 0.5
    assert set(fake_hub.repos[repo].commits[-1][1]) >= {"model.safetensors", "config.json", "README.md"}

    assert_same_weights(timm.create_model("icmlm_resnet_tiny.pubtest", pretrained=True), sd)


def test_published_resnet_loads_in_plain_timm_without_our_package(fake_hub, isolated_caches):
    sd = tiny_state_dict(seed=12)
    folder = save_weight_folder(sd, "icmlm_resnet_tiny", isolated_caches / "w", tag="plain")
    repo = f"icmlm-test/plain-{os.urandom(3).hex()}"
    fake_hub.commit(repo, {p.name: p.read_bytes() for p in folder.iterdir()})
    expected_size = tuple(json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"])
    ref = isolated_caches / "ref.safetensors"
    ref.write_bytes((folder / "model.safetensors").read_bytes())
    code = f"""
import sys, timm, torch
from safetensors.torch import load_file
m = timm.create_model("hf-hub:{repo}", pretrained=True)
assert "icmlm_zoo" not in sys.modules
ref = load_file({str(ref)!r})
got = m.state_dict()
assert set(got) == set(ref), set(got) ^ set(ref)
assert all(torch.equal(got[k], ref[k]) for k in ref)
cfg = timm.data.resolve_model_data_config(m)
assert tuple(cfg["input_size"]) == {expected_size!r}, cfg
print("PLAIN_TIMM_OK", type(m).__name__, m.num_classes)
"""
    env = dict(os.environ, HF_HUB_CACHE=str(isolated_caches / "plain-cache"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PLAIN_TIMM_OK ResNet 0" in out.stdout


def test_weight_folder_config_and_card(tmp_path):
    folder = save_weight_folder(tiny_state_dict(), "icmlm_resnet_tiny", tmp_path / "w", tag="attfc_synthetic",
                                extra_meta={"recipe": {"preset": "demo", "steps": 10}})
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"]["layers"] == [1, 1, 1, 1]
    assert config["num_classes"] == 0 and config["num_features"] == 256
    assert config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    assert config["pretrained_cfg"]["paper_ids"] == "arxiv:2008.01392"
    assert config["icmlm"]["sha256"] == sha256_file(folder / "model.safetensors")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm") and '"preset": "demo"' in card and "Sariyildiz" in card
