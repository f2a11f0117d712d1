"""`icmlm-zoo publish`: upload to the (loopback) Hub, manifest entry, then loading by name and in plain timm;
what publish may upload and write (an allow-list, private repos, never the installed manifest); model cards."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import timm
from huggingface_hub import ModelCard
from zoo_helpers import assert_same_weights, tiny_state_dict, write_manifest

import icmlm_zoo  # noqa: F401
from icmlm_zoo.cache import sha256_file
from icmlm_zoo.cli import main as zoo_main
from icmlm_zoo.convert import save_weight_folder
from icmlm_zoo.manifest import load_manifest


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
    card = ModelCard.load(folder / "README.md")
    assert '"preset": "demo"' in card.text and "Sariyildiz" in card.text


def test_weight_folder_card_is_hub_metadata(tmp_path):
    metric = {"name": "masked top-1", "value": 0.5, "protocol": "demo eval", "dataset": "synthetic",
              "provenance": "test"}
    folder = save_weight_folder(tiny_state_dict(), "icmlm_resnet_tiny", tmp_path / "w", tag="attfc_synthetic",
                                extra_meta={"metrics": [metric]})
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm" and card.data.license == "bsd-3-clause"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert {"timm", "icmlm", "arxiv:2008.01392"} <= set(card.data.tags)
    assert "embedded synthetic captioned scenes" in card.data.datasets
    assert card.data.metrics == ["masked top-1"]
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("masked top-1", 0.5, "synthetic")
    assert "verified" not in card.content.lower()  # nothing is checked by a card on disk


def test_same_tensors_give_the_same_bytes_and_umask_permissions(tmp_path):
    sd = tiny_state_dict(seed=3)
    old_umask = os.umask(0o022)
    try:
        digests = set()
        for i in range(6):  # safetensors writes a metadata map in a random order per call
            folder = save_weight_folder(sd, "icmlm_resnet_tiny", tmp_path / f"w{i}", tag="attfc_synthetic",
                                        extra_meta={"description": "d", "recipe": {"preset": "demo"}})
            digests.add(tuple(hashlib.sha256((folder / n).read_bytes()).hexdigest()
                              for n in ("model.safetensors", "config.json", "README.md")))
    finally:
        os.umask(old_umask)
    assert len(digests) == 1
    assert {oct((folder / n).stat().st_mode & 0o777) for n in ("model.safetensors", "config.json")} == {"0o644"}
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temporary file left"


def _folder_state(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _private(create_body):
    """Whether a repo-creation request asks for a private repo (huggingface_hub >= 1 sends "visibility")."""
    return create_body.get("visibility", "private" if create_body.get("private") else "public") == "private"


@pytest.fixture
def create_requests(fake_hub, monkeypatch):
    """Bodies of the POST /api/repos/create requests the loopback Hub receives during the test."""
    handler = fake_hub.server.RequestHandlerClass
    seen, read_body = [], handler._body

    def recording_body(self):
        body = read_body(self)
        if self.path.startswith("/api/repos/create"):
            seen.append(json.loads(body))
        return body

    monkeypatch.setattr(handler, "_body", recording_body)
    return seen


def test_publish_uploads_the_allow_list_privately_and_leaves_the_folder(fake_hub, isolated_caches, monkeypatch,
                                                                      capsys, create_requests):
    folder = save_weight_folder(tiny_state_dict(seed=13), "icmlm_resnet_tiny", isolated_caches / "w", tag="allow")
    (folder / "notes.txt").write_text("my private notes")
    before = _folder_state(folder)
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(write_manifest(isolated_caches / "m.json", [])))
    repo = f"icmlm-test/allow-{os.urandom(3).hex()}"
    assert zoo_main(["publish", str(folder), "--repo", repo]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "not uploaded" in out and "notes.txt" in out and "private" in out
    assert _private(create_requests[-1])
    uploaded = fake_hub.repos[repo].commits[-1][1]
    assert set(uploaded) - {".gitattributes"} == {"model.safetensors", "config.json", "README.md"}
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "timm" and f"hf-hub:{repo}" in card.text
    assert _folder_state(folder) == before, "publish must not modify the user's folder"

    public = f"icmlm-test/public-{os.urandom(3).hex()}"
    assert zoo_main(["publish", str(folder), "--repo", public, "--public"]) == 0
    assert not _private(create_requests[-1])


@pytest.mark.parametrize("planted", [".env", "link"])
def test_publish_refuses_dotfiles_and_symlinks(fake_hub, isolated_caches, monkeypatch, capsys, planted):
    folder = save_weight_folder(tiny_state_dict(seed=14), "icmlm_resnet_tiny", isolated_caches / "w", tag="refuse")
    if planted == ".env":
        (folder / ".env").write_text("HF_TOKEN=hf_secret_do_not_upload\n")
    else:
        secret = isolated_caches / "outside.txt"
        secret.write_text("outside the folder")
        (folder / "link").symlink_to(secret)
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(write_manifest(isolated_caches / "m.json", [])))
    repo = f"icmlm-test/refuse-{os.urandom(3).hex()}"
    n = len(fake_hub.requests)
    assert zoo_main(["publish", str(folder), "--repo", repo]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and planted in err and "Refusing" in err
    assert repo not in fake_hub.repos and not [r for r in fake_hub.requests[n:] if r[0] == "POST"]


def test_unreachable_hub_gives_one_line(isolated_caches, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = save_weight_folder(tiny_state_dict(seed=16), "icmlm_resnet_tiny", isolated_caches / "w", tag="down")
    manifest = write_manifest(isolated_caches / "m.json", [])
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", str(manifest))
    before = manifest.read_bytes()
    assert zoo_main(["publish", str(folder), "--repo", "org/down", "--endpoint", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "org/down" in err and "no manifest entry" in err
    assert manifest.read_bytes() == before


def test_publish_never_writes_into_an_installed_package(fake_hub, isolated_caches, monkeypatch, capsys):
    import icmlm_zoo.manifest as manifest_module
    from icmlm_zoo.manifest import SHIPPED_MANIFEST

    installed = isolated_caches / "venv" / "lib" / "site-packages" / "icmlm_zoo" / "weights_manifest.json"
    installed.parent.mkdir(parents=True)
    shutil.copy(SHIPPED_MANIFEST, installed)
    shipped_bytes = installed.read_bytes()
    monkeypatch.setattr(manifest_module, "SHIPPED_MANIFEST", installed)
    monkeypatch.delenv("ICMLM_ZOO_MANIFEST", raising=False)
    folder = save_weight_folder(tiny_state_dict(seed=15), "icmlm_resnet_tiny", isolated_caches / "w", tag="inst")

    repo = f"icmlm-test/inst-{os.urandom(3).hex()}"
    assert zoo_main(["publish", str(folder), "--repo", repo]) == 0
    assert installed.read_bytes() == shipped_bytes
    out = capsys.readouterr().out
    assert '"tag": "inst"' in out and "--manifest" in out and "not written" in out

    target = isolated_caches / "my-manifest.json"
    repo = f"icmlm-test/inst-{os.urandom(3).hex()}"
    assert zoo_main(["publish", str(folder), "--repo", repo, "--manifest", str(target)]) == 0
    assert installed.read_bytes() == shipped_bytes
    entry = load_manifest(target).entry("icmlm_resnet_tiny", "inst")
    assert entry.hub["revision"] == fake_hub.repos[repo].commits[-1][0]
    assert str(target) in capsys.readouterr().out


def test_publish_default_manifest_is_the_checkouts(monkeypatch):
    from icmlm_zoo.manifest import SHIPPED_MANIFEST
    from icmlm_zoo.publish import default_manifest_target

    monkeypatch.delenv("ICMLM_ZOO_MANIFEST", raising=False)
    assert default_manifest_target() == SHIPPED_MANIFEST  # the tests run from the checkout
    monkeypatch.setenv("ICMLM_ZOO_MANIFEST", "/somewhere/m.json")
    assert str(default_manifest_target()) == "/somewhere/m.json"
