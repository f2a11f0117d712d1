"""pretrained=True from a published Hub entry: sha256 check, corrupted/truncated files, offline, mirrors."""
from pathlib import Path

import pytest
import timm
import torch
from zoo_helpers import assert_same_weights, publish_tiny, tiny_state_dict, write_manifest

import icmlm_zoo  # noqa: F401
from icmlm_zoo.errors import WeightsIntegrityError, WeightsNotAvailableError


@pytest.fixture
def published(fake_hub, isolated_caches, monkeypatch):
    """A tiny weight published on the loopback Hub and listed in a manifest as icmlm_resnet_tiny.hubtest."""
    w = publish_tiny(fake_hub, 1, "tiny")
    manifest = write_manifest(isolated_caches / "manifest.json", [w.entry])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    return {"sd": w.sd, "data": w.data, "repo": w.repo, "sha": w.revision, "entry": w.entry}


def _cached_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("model.safetensors")]


def test_hub_load_verifies_and_loads_exact_weights(published, fake_hub):
    model = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert_same_weights(model, published["sd"])
    # the pinned revision was asked for, not main
    assert any(published["sha"] in p for _, p in fake_hub.requests if "/resolve/" in p)
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 64, 64)


def test_hub_file_with_wrong_hash_is_refused_and_cache_cleaned(published, fake_hub, isolated_caches):
    bad = bytearray(published["data"])
    bad[-10] ^= 0xFF
    fake_hub.tamper(published["repo"], "model.safetensors", bytes(bad))
    with pytest.raises(WeightsIntegrityError, match="sha256") as err:
        timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert published["entry"]["hub"]["sha256"] in str(err.value)
    assert _cached_files(isolated_caches / "hf-cache") == []
    fake_hub.tamper(published["repo"], "model.safetensors", published["data"])
    assert_same_weights(timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True), published["sd"])


def test_truncated_cached_file_is_detected_then_redownloaded(published, isolated_caches):
    timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    (cached,) = _cached_files(isolated_caches / "hf-cache")
    blob = cached.resolve()
    blob.write_bytes(blob.read_bytes()[:1000])
    with pytest.raises(WeightsIntegrityError):
        timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert not blob.exists()
    assert_same_weights(timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True), published["sd"])


def test_offline_load_from_cache(published, fake_hub, monkeypatch):
    import huggingface_hub.constants as hfc

    timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    n = len(fake_hub.requests)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert_same_weights(model, published["sd"])
    assert len(fake_hub.requests) == n, "offline load must not touch the network"


def test_features_only_with_pretrained_weights(published):
    model = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True, features_only=True,
                              out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [32, 64, 128, 256]
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    ref = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert torch.equal(model.layer4[0].conv1.weight, ref.layer4[0].conv1.weight)


def test_num_classes_adds_fresh_head_on_pretrained_trunk(published):
    model = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True, num_classes=7)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert torch.equal(model.conv1.weight, published["sd"]["conv1.weight"])


def test_mirror_org_setting(published, fake_hub, monkeypatch):
    mirror_repo = "mirror-org/" + published["repo"].split("/")[1]
    fake_hub.commit(mirror_repo, {"model.safetensors": published["data"]})
    monkeypatch.setenv("ICMLM_ZOO_HUB_ORG", "mirror-org")
    model = timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    assert_same_weights(model, published["sd"])
    assert any(p.startswith(f"/{mirror_repo}/resolve/") for _, p in fake_hub.requests)


def test_mirror_endpoint_setting(published, fake_hub, monkeypatch):
    from fakehub import FakeHub

    other = FakeHub()
    try:
        other.repos[published["repo"]] = fake_hub.repos[published["repo"]]
        monkeypatch.setenv("ICMLM_ZOO_HUB_ENDPOINT", other.url)
        assert_same_weights(timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True), published["sd"])
        assert any("/resolve/" in p for _, p in other.requests)
    finally:
        other.close()


def test_recipe_only_tag_never_returns_random_weights():
    with pytest.raises(WeightsNotAvailableError, match="icmlm-train --preset coco_r50_tfm"):
        timm.create_model("icmlm_resnet50.tfm_coco", pretrained=True)


def test_unknown_tag_and_model_list_valid_names():
    with pytest.raises(ValueError, match="icmlm_resnet50.attfc_coco") as err:
        timm.create_model("icmlm_resnet50.nope", pretrained=True)
    assert "icmlm_resnet50.tfm_coco" in str(err.value)
    from icmlm_zoo.manifest import load_manifest

    with pytest.raises(KeyError, match="icmlm_vgg16"):
        load_manifest().entry("icmlm_resnet99")


def test_local_file_and_local_dir(tmp_path):
    from icmlm_zoo.convert import save_weight_folder

    sd = tiny_state_dict(seed=3)
    folder = save_weight_folder(sd, "icmlm_resnet_tiny", tmp_path / "w", tag="local")
    m1 = timm.create_model("icmlm_resnet_tiny", pretrained=True,
                           pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert_same_weights(m1, sd)
    m2 = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert_same_weights(m2, sd)
    m3 = timm.create_model("icmlm_resnet_tiny", pretrained=True, features_only=True,
                           pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert torch.equal(m3.conv1.weight, sd["conv1.weight"])


def test_offline_without_cache_says_how_to_prefetch(published, monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    with pytest.raises(icmlm_zoo.IcmlmZooError, match="icmlm-zoo download icmlm_resnet_tiny.hubtest"):
        timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)


def test_missing_repo_on_mirror_is_named(published, monkeypatch):
    monkeypatch.setenv("ICMLM_ZOO_HUB_ORG", "nobody-mirrors-this")
    with pytest.raises(icmlm_zoo.IcmlmZooError, match="nobody-mirrors-this/"):
        timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
