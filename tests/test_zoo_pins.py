"""Pins of sources with no published hash (issue 20, item 5): a pin that cannot be read is an error, never "not
pinned"; a missing or damaged pin is restored from the source digest the converted weights recorded; the messages
say what is true."""
import hashlib
import json
import os
import shutil

import pytest
import timm
from zoo_helpers import checkpoint_bytes, convertible_entry, serve_original, tiny_state_dict, write_manifest

import icmlm_zoo  # noqa: F401
from icmlm_zoo.cache import pin_path
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.errors import PinError, WeightsIntegrityError

NAME = "icmlm_resnet_tiny.orig"


@pytest.fixture
def original(fake_hub, isolated_caches, monkeypatch):
    """A NAVER-format checkpoint at a plain URL with no published hash, converted once (so pinned)."""
    w = serve_original(fake_hub, 41, "pins")
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(write_manifest(isolated_caches / "m.json", [w.entry])))
    timm.create_model(NAME, pretrained=True)
    cache = isolated_caches / "icmlm-cache"
    return {"sd": w.sd, "name": w.name, "url": w.url, "sha": hashlib.sha256(w.data).hexdigest(), "pin": pin_path(w.url),
            "download": cache / "downloads" / w.name, "converted": cache / "converted" / NAME}


def _serve_another_checkpoint(original, fake_hub) -> str:
    """The server now holds a different (valid) checkpoint; the cached original and converted weights are gone."""
    other = checkpoint_bytes(tiny_state_dict(seed=42))
    fake_hub.static[original["name"]] = other
    original["download"].unlink()
    shutil.rmtree(original["converted"])
    return hashlib.sha256(other).hexdigest()


def test_corrupted_pin_is_restored_from_integrity_json_and_still_protects(original, fake_hub, capsys):
    original["pin"].write_text("{garbage")
    capsys.readouterr()
    assert zoo_main(["download", NAME]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "restored" in out and str(original["pin"]) in out, out
    assert f"pinned on first use to sha256 {original['sha']}" in out and "not writable" not in out
    assert json.loads(original["pin"].read_text())["sha256"] == original["sha"]
    other = _serve_another_checkpoint(original, fake_hub)
    try:
        with pytest.raises(WeightsIntegrityError) as err:
            timm.create_model(NAME, pretrained=True)
        assert original["sha"] in str(err.value) and other in str(err.value)
        assert not original["converted"].exists(), "a different checkpoint must not be converted"
    finally:
        fake_hub.static[original["name"]] = checkpoint_bytes(original["sd"])


def test_deleted_pin_is_restored_and_the_report_says_so(original, capsys):
    original["pin"].unlink()
    capsys.readouterr()
    assert zoo_main(["download", NAME]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "restored" in out and f"pinned on first use to sha256 {original['sha']}" in out
    assert "not writable" not in out and "NOT pinned" not in out, out
    assert original["pin"].is_file()


def test_corrupted_pin_with_nothing_to_restore_it_from_is_an_error(original, fake_hub, capsys):
    original["pin"].write_text("{garbage")
    _serve_another_checkpoint(original, fake_hub)
    n = len(fake_hub.requests)
    with pytest.raises(PinError) as err:
        timm.create_model(NAME, pretrained=True)
    assert str(original["pin"]) in str(err.value) and "delete" in str(err.value)
    assert len(fake_hub.requests) == n, "nothing may be downloaded while the pin cannot be read"
    capsys.readouterr()
    assert zoo_main(["download", NAME]) == 1
    err_line = capsys.readouterr().err.strip()
    assert err_line.count("\n") == 0 and str(original["pin"]) in err_line and "Traceback" not in err_line
    assert original["pin"].read_text() == "{garbage", "the user's file is kept as it was"


@pytest.mark.parametrize("content", ['{"url": "http://elsewhere/x.pth", "sha256": "' + "a" * 64 + '"}', "[]", ""])
def test_a_pin_of_something_else_is_not_taken_for_no_pin(original, fake_hub, content):
    original["pin"].write_text(content)
    _serve_another_checkpoint(original, fake_hub)
    with pytest.raises(PinError):
        timm.create_model(NAME, pretrained=True)


def test_pin_notice_is_printed_once_and_names_no_installed_file(fake_hub, isolated_caches, monkeypatch, capsys,
                                                                caplog):
    name = f"notice-{os.urandom(3).hex()}.pth"
    fake_hub.static[name] = checkpoint_bytes(tiny_state_dict(seed=43))
    manifest = write_manifest(isolated_caches / "m.json",
                              [convertible_entry("icmlm_resnet_tiny", "orig", f"{fake_hub.url}/static/{name}", None)])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    capsys.readouterr()
    timm.create_model(NAME, pretrained=True)
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert said.count("is now pinned on first use") == 1, said
    assert "weights_manifest.json" not in said
