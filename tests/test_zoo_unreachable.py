"""Weights neither cached nor reachable (issue 20, item 1): one exception within seconds, naming every way out with
real paths, and each way out works: prefetch elsewhere + copy the cache + HF_HUB_OFFLINE=1, a hand-downloaded
original at the named path, `icmlm-zoo convert` + local-dir:, and an original given as a file overlay."""
import logging
import os
import shutil
import socket
import threading
import time

import pytest
import timm
from zoo_helpers import (
    assert_one_exception,
    assert_same_weights,
    checkpoint_bytes,
    convertible_entry,
    publish_tiny,
    refused_port,
    tiny_state_dict,
    write_manifest,
)

import icmlm_zoo  # noqa: F401
from icmlm_zoo import download
from icmlm_zoo.cache import download_path
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.errors import ConversionError, WeightsUnreachableError

NAME = "icmlm_resnet_tiny.orig"
WAYS_OUT = ("HF_HUB_OFFLINE=1", f"icmlm-zoo download {NAME}", "ICMLM_ZOO_CACHE", "icmlm-zoo convert", "local-dir:")


@pytest.fixture
def use_manifest(isolated_caches, monkeypatch):
    def use(*entries):
        monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(write_manifest(isolated_caches / "m.json", list(entries))))
    return use


@pytest.fixture
def refused(use_manifest):
    """A convertible entry whose URL is a loopback port that refuses connections."""
    url = f"http://127.0.0.1:{refused_port()}/ICMLM/orig-{os.urandom(3).hex()}.pth"
    use_manifest(convertible_entry("icmlm_resnet_tiny", "orig", url, None))
    return url


def _unreachable(name: str = NAME) -> tuple[WeightsUnreachableError, float]:
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError) as err:
        timm.create_model(name, pretrained=True)
    return err.value, time.monotonic() - start


def test_refused_port_fails_at_once_with_one_exception_naming_every_way_out(refused):
    err, seconds = _unreachable()
    assert seconds < 5, seconds
    assert_one_exception(err)
    msg = str(err)
    assert "refused" in msg and all(way in msg for way in WAYS_OUT), msg
    assert str(download_path(refused)) in msg  # the exact place a hand-downloaded original is picked up
    assert "\n" not in msg and msg.endswith("pretrained=True).")  # whole, not cut


def test_unresolvable_host_is_not_retried(refused, monkeypatch):
    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    err, seconds = _unreachable()
    assert seconds < 5 and len(calls) == 1, (seconds, calls)
    assert "cannot be resolved" in str(err) and all(way in str(err) for way in WAYS_OUT)
    assert_one_exception(err)


def test_a_name_server_that_never_answers_is_given_up_on(refused, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(60) and [])
    monkeypatch.setattr(download, "CONNECT_TIMEOUT", 0.5)
    try:
        err, seconds = _unreachable()
    finally:
        release.set()
    assert seconds < 3 and "within 0.5 s" in str(err), (seconds, str(err))


def test_the_default_weight_without_dns_names_its_real_paths(isolated_caches, monkeypatch):
    """The README's first line, with no name resolution: the shipped default entry, not a test entry."""
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.monotonic()
    with pytest.raises(WeightsUnreachableError) as err:
        timm.create_model("icmlm_resnet50", pretrained=True)
    assert time.monotonic() - start < 5
    assert_one_exception(err.value)
    msg = str(err.value)
    target = isolated_caches / "icmlm-cache" / "downloads" / "icmlm-attfc_r50_coco_5K.pth"
    assert str(target) in msg and "download.europe.naverlabs.com" in msg
    assert "icmlm-zoo download icmlm_resnet50.attfc_coco" in msg and "NAME" not in msg


def test_way_out_prefetch_elsewhere_copy_the_cache_then_offline(fake_hub, use_manifest, isolated_caches,
                                                                monkeypatch, capsys):
    sd = tiny_state_dict(seed=31)
    name = f"orig-{os.urandom(3).hex()}.pth"
    fake_hub.static[name] = checkpoint_bytes(sd)
    use_manifest(convertible_entry("icmlm_resnet_tiny", "orig", f"{fake_hub.url}/static/{name}", None))
    elsewhere = isolated_caches / "elsewhere"
    monkeypatch.setenv("ICMLM_ZOO_CACHE", str(elsewhere))  # the machine with network
    assert zoo_main(["download", NAME]) == 0
    here = isolated_caches / "here"
    shutil.copytree(elsewhere, here)  # copied to the machine without
    monkeypatch.setenv("ICMLM_ZOO_CACHE", str(here))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(fake_hub.requests)
    assert_same_weights(timm.create_model(NAME, pretrained=True), sd)
    assert len(fake_hub.requests) == n
    assert zoo_main(["download", NAME]) == 0 and "pinned on first use" in capsys.readouterr().out


def test_way_out_prefetched_cache_loads_while_the_server_refuses(fake_hub, isolated_caches, use_manifest):
    from fakehub import FakeHub

    sd = tiny_state_dict(seed=32)
    server = FakeHub()
    server.static["orig.pth"] = checkpoint_bytes(sd)
    use_manifest(convertible_entry("icmlm_resnet_tiny", "orig", f"{server.url}/static/orig.pth", None))
    timm.create_model(NAME, pretrained=True)
    server.close()  # now the port refuses
    assert_same_weights(timm.create_model(NAME, pretrained=True), sd)


def test_way_out_hand_downloaded_original_at_the_named_path(refused):
    sd = tiny_state_dict(seed=33)
    err, _ = _unreachable()
    target = download_path(refused)
    assert str(target) in str(err)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(checkpoint_bytes(sd))
    assert_same_weights(timm.create_model(NAME, pretrained=True), sd)


def test_way_out_convert_then_local_dir(refused, tmp_path, capsys):
    sd = tiny_state_dict(seed=34)
    _unreachable()
    ckpt = tmp_path / "hand.pth"
    ckpt.write_bytes(checkpoint_bytes(sd))
    out = tmp_path / "weights"
    assert zoo_main(["convert", str(ckpt), "--model", "icmlm_resnet_tiny", "--tag", "orig", "--out", str(out)]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    assert_same_weights(timm.create_model(f"local-dir:{out}", pretrained=True), sd)


def test_original_as_a_file_overlay_is_converted_with_the_same_checks(refused, tmp_path):
    sd = tiny_state_dict(seed=35)
    ckpt = tmp_path / "hand.pth"
    ckpt.write_bytes(checkpoint_bytes(sd))
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt)))
    assert_same_weights(model, sd)
    assert "state_dict" not in model.pretrained_cfg  # no second copy of the weights kept
    feats = timm.create_model(NAME, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(ckpt)))
    assert (feats.conv1.weight == sd["conv1.weight"]).all()
    wrong = tmp_path / "r18.pth"
    wrong.write_bytes(checkpoint_bytes(tiny_state_dict(seed=0, model="icmlm_resnet18")))
    with pytest.raises(ConversionError, match="does not fit the architecture"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(wrong)))


def test_timm_logs_no_nameless_checkpoint(tmp_path, caplog):
    from icmlm_zoo.convert import save_weight_folder

    folder = save_weight_folder(tiny_state_dict(seed=36), "icmlm_resnet_tiny", tmp_path / "w")
    with caplog.at_level(logging.INFO, logger="timm"):
        timm.create_model("icmlm_resnet_tiny", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert caplog.records and not any("Loaded  from" in r.getMessage() for r in caplog.records), caplog.text


# -- published (Hub) weights --------------------------------------------------------------------------------------
@pytest.fixture
def published(fake_hub, use_manifest):
    w = publish_tiny(fake_hub, 37, "unreachable")
    use_manifest(w.entry)
    return w.sd


def test_unreachable_hub_fails_at_once_naming_the_hub_cache(published, monkeypatch):
    monkeypatch.setenv("ICMLM_ZOO_HUB_ENDPOINT", f"http://127.0.0.1:{refused_port()}")
    err, seconds = _unreachable("icmlm_resnet_tiny.hubtest")
    assert seconds < 5
    assert_one_exception(err)
    msg = str(err)
    assert all(w in msg for w in ("HF_HUB_OFFLINE=1", "HF_HUB_CACHE", "icmlm-zoo download icmlm_resnet_tiny.hubtest",
                                  "pretrained_cfg_overlay=dict(file=")), msg


def test_unreachable_hub_still_loads_a_cached_weight(published, fake_hub, monkeypatch):
    timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True)
    monkeypatch.setenv("ICMLM_ZOO_HUB_ENDPOINT", f"http://127.0.0.1:{refused_port()}")
    start = time.monotonic()
    assert_same_weights(timm.create_model("icmlm_resnet_tiny.hubtest", pretrained=True), published)
    assert time.monotonic() - start < 5
