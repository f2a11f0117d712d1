"""Faults on the way to the weights, against the loopback server: interrupted, truncated and changed downloads,
damaged cache entries, pin-on-first-use for sources without a published hash, offline mode, honest CLI output."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import timm
from zoo_helpers import (
    assert_same_weights,
    checkpoint_bytes,
    publish_tiny,
    serve_original,
    tiny_state_dict,
    write_manifest,
)

import icmlm_zoo
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.errors import IcmlmZooError, WeightsIntegrityError
from icmlm_zoo.manifest import validate_manifest

HUB_NAME = "icmlm_resnet_tiny.hubtest"
ORIG_NAME = "icmlm_resnet_tiny.orig"


@pytest.fixture
def add_entry(isolated_caches, monkeypatch):
    """Adds a weight entry to this test's manifest (the shipped one plus every entry added so far)."""
    entries = []

    def add(entry: dict) -> None:
        entries.append(entry)
        manifest = write_manifest(isolated_caches / "manifest.json", entries)
        monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    return add


@pytest.fixture
def published(fake_hub, add_entry):
    w = publish_tiny(fake_hub, 11, "faults")
    add_entry(w.entry)
    return {"sd": w.sd, "data": w.data, "repo": w.repo}


@pytest.fixture
def original(fake_hub, isolated_caches, add_entry):
    """A NAVER-format checkpoint served at a plain URL, listed with no published hash (pin-on-first-use)."""
    w = serve_original(fake_hub, 12, "faults")
    add_entry(w.entry)
    cache = isolated_caches / "icmlm-cache"
    return {"sd": w.sd, "data": w.data, "name": w.name, "url": w.url, "sha": hashlib.sha256(w.data).hexdigest(),
            "download": cache / "downloads" / w.name, "converted": cache / "converted" / ORIG_NAME}


def _gets(fake_hub, fragment: str) -> int:
    return sum(1 for method, path in fake_hub.requests if method == "GET" and fragment in path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# -- Hub downloads ----------------------------------------------------------------------------------------------
def test_hub_download_closed_mid_body_is_a_clear_error_then_retry_works(published, fake_hub, isolated_caches,
                                                                        capsys):
    with fake_hub.fault("close", at=len(published["data"]) // 2, match=published["repo"]) as fault:
        assert zoo_main(["download", HUB_NAME]) == 1
    assert fault.hits >= 2  # huggingface_hub tried to resume; the server never got further
    err = _one_line_error(capsys)
    assert HUB_NAME in err and "run the same command again" in err
    assert not list((isolated_caches / "hf-cache").rglob("model.safetensors"))
    assert_same_weights(timm.create_model(HUB_NAME, pretrained=True), published["sd"])


def test_hub_body_shorter_than_announced_is_a_clear_error(published, fake_hub, isolated_caches):
    with fake_hub.fault("truncate", at=1000, match=published["repo"]):
        with pytest.raises(IcmlmZooError, match="failed") as err:
            timm.create_model(HUB_NAME, pretrained=True)
    assert HUB_NAME in str(err.value)
    assert not list((isolated_caches / "hf-cache").rglob("model.safetensors"))
    assert_same_weights(timm.create_model(HUB_NAME, pretrained=True), published["sd"])


# -- plain-URL originals without a published hash ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncate", "no_length", "close"])
def test_partial_original_download_is_never_reused(original, fake_hub, kind):
    with fake_hub.fault(kind, at=len(original["data"]) // 2, match=original["name"]):
        with pytest.raises(IcmlmZooError, match="run again"):
            timm.create_model(ORIG_NAME, pretrained=True)
    download_dir = original["download"].parent
    assert not original["download"].exists() and not list(download_dir.glob("*.part"))
    assert not list(download_dir.glob("*.pin.json")), "a file that never converted must not be pinned"
    n = _gets(fake_hub, original["name"])
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])
    assert _gets(fake_hub, original["name"]) == n + 1, "the retry must download again"


def test_part_files_of_killed_downloads_are_removed(original):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a finished process: its .part file can only be a leftover
    download_dir = original["download"].parent
    download_dir.mkdir(parents=True)
    stale = download_dir / f"{original['name']}.{dead.pid}.0000.part"
    stale.write_bytes(b"half a checkpoint")
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])
    assert not stale.exists() and not list(download_dir.glob("*.part"))


def test_changed_source_after_first_use_is_refused_naming_both_digests(original, fake_hub):
    timm.create_model(ORIG_NAME, pretrained=True)  # first use: pins the digest
    pin = json.loads(Path(str(original["download"]) + ".pin.json").read_text())
    assert pin["sha256"] == original["sha"]
    other = checkpoint_bytes(tiny_state_dict(seed=13))  # a valid checkpoint, but not the pinned one
    original["download"].unlink()
    shutil.rmtree(original["converted"])
    with fake_hub.fault("change", data=other, match=original["name"]):
        with pytest.raises(WeightsIntegrityError) as err:
            timm.create_model(ORIG_NAME, pretrained=True)
    assert original["sha"] in str(err.value) and hashlib.sha256(other).hexdigest() in str(err.value)
    assert not original["download"].exists() and not original["converted"].exists()
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])


def test_substituted_cached_original_is_checked_against_the_pin(original, fake_hub):
    timm.create_model(ORIG_NAME, pretrained=True)
    original["download"].write_bytes(checkpoint_bytes(tiny_state_dict(seed=14)))
    shutil.rmtree(original["converted"])
    n = _gets(fake_hub, original["name"])
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])
    assert _gets(fake_hub, original["name"]) == n + 1, "the substituted file was deleted and downloaded again"


# -- converted weights in the cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["zero", "truncate"])
def test_damaged_converted_weights_are_rebuilt(original, damage, capsys):
    timm.create_model(ORIG_NAME, pretrained=True)
    weights = original["converted"] / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        if damage == "zero":
            f.seek(size // 2)
            f.write(bytes(size - size // 2))
        else:
            f.truncate(size - 100)
    capsys.readouterr()
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])
    assert "not usable" in capsys.readouterr().out


def test_cli_download_exits_nonzero_on_damage_it_cannot_rebuild(original, monkeypatch, capsys):
    assert zoo_main(["download", ORIG_NAME]) == 0
    weights = original["converted"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    original["download"].unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert zoo_main(["download", ORIG_NAME]) == 1
    captured = capsys.readouterr()
    assert not re.search(r"\bverified\b", captured.out), captured.out
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and f"icmlm-zoo download {ORIG_NAME}" in err
    assert not weights.exists(), "the damaged file must not stay in the cache"


def test_cli_download_says_verified_only_for_a_published_hash(original, published, capsys):
    assert zoo_main(["download", ORIG_NAME]) == 0
    out = capsys.readouterr().out
    assert "unverified (no published hash)" in out and "pinned on first use" in out
    assert not re.search(r"\bverified\b", out), out
    assert zoo_main(["download", HUB_NAME]) == 0
    assert "verified: sha256" in capsys.readouterr().out


# -- the manifest marker -----------------------------------------------------------------------------------------
def test_manifest_requires_an_explicit_marker_for_a_missing_hash():
    from icmlm_zoo.manifest import SHIPPED_MANIFEST

    data = json.loads(SHIPPED_MANIFEST.read_text())
    source = data["weights"][0]["source"]
    assert source["sha256"] is None and source["integrity"] == "pin-on-first-use"
    assert validate_manifest(data) == []
    del source["integrity"]
    assert any("pin-on-first-use" in e for e in validate_manifest(data))
    source.update(sha256="a" * 64, integrity="pin-on-first-use")
    assert any("contradicts" in e for e in validate_manifest(data))


def test_list_and_info_label_unverified_weights(capsys):
    assert zoo_main(["list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("icmlm_resnet50.attfc_coco"))
    assert "unverified (no published hash)" in line
    assert zoo_main(["info", "icmlm_resnet50.attfc_coco", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"] == "unverified (no published hash)"


# -- offline -----------------------------------------------------------------------------------------------------
def test_offline_stops_plain_url_downloads_with_the_hub_error(original, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported: still honoured
    n = len(fake_hub.requests)
    with pytest.raises(icmlm_zoo.IcmlmZooError, match=f"neither in the cache.*icmlm-zoo download {ORIG_NAME}"):
        timm.create_model(ORIG_NAME, pretrained=True)
    assert len(fake_hub.requests) == n
    monkeypatch.delenv("HF_HUB_OFFLINE")
    timm.create_model(ORIG_NAME, pretrained=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(fake_hub.requests)
    assert_same_weights(timm.create_model(ORIG_NAME, pretrained=True), original["sd"])
    assert len(fake_hub.requests) == n
