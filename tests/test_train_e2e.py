"""End-to-end training through ``icmlm_zoo.training.cli.main``: loss goes down, exact resume, export, inference."""
from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import read_metrics, tiny_args

from icmlm_zoo.training.cli import main


def _final_state(run):
    from icmlm_zoo.training.checkpoint import load_checkpoint, resolve_checkpoint
    return load_checkpoint(resolve_checkpoint(run))


def test_tiny_training_loss_goes_down(tmp_path, tag_file, text_side, capsys):
    run = tmp_path / "run"
    # tp.reduction=mean: the loss scale this 20-step threshold was set for (the default sums TP over the tags)
    rc = main(tiny_args(tag_file, "--out", str(run), "--set", "optim.lr=3e-3", "--set", "run.keep_last=2",
                        "--set", "model.tp.reduction=mean",
                        steps=20, size=32))
    assert rc == 0, capsys.readouterr().err
    rows = read_metrics(run)
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert (run / "config.yaml").is_file() and (run / "tags.txt").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_0000016.pt", "ckpt_0000020.pt"]
    ev = json.loads((run / "summary.json").read_text())["eval"]
    assert 0 <= ev["top1"] <= ev["top5"] <= 1
    assert "masked-word top-1" in capsys.readouterr().out


def test_killed_and_resumed_equals_uninterrupted(tmp_path, tag_file, text_side):
    a, b = tmp_path / "a", tmp_path / "b"
    # 24 images / batch 4 = 6 batches per epoch: 9 steps cross an epoch; stop mid-epoch at step 4
    assert main(tiny_args(tag_file, "--out", str(a), steps=9)) == 0
    assert main(tiny_args(tag_file, "--out", str(b), "--set", "run.stop_after=4", steps=9)) == 0
    assert _final_state(b)["step"] == 4
    assert main(["--out", str(b), "--resume"]) == 0
    sa, sb = _final_state(a), _final_state(b)
    assert sa["step"] == sb["step"] == 9
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for (ka, va), (kb, vb) in zip(sa["optimizer"]["state"].items(), sb["optimizer"]["state"].items()):
        for name in va:
            assert torch.equal(torch.as_tensor(va[name]), torch.as_tensor(vb[name])), (ka, name)
    assert sa["scheduler"] == sb["scheduler"]


def test_resume_runs_on_the_thread_count_the_run_started_with(tmp_path, tag_file, text_side, capsys):
    """A CPU run saves its intra-op thread count in config.yaml and a resume runs on it, even where the
    resuming process has another (the floating-point results depend on it: a run on two threads differs)."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(tiny_args(tag_file, "--out", str(a), steps=9)) == 0
        assert main(tiny_args(tag_file, "--out", str(b), "--set", "run.stop_after=4", steps=9)) == 0
        assert "threads: 1\n" in (b / "config.yaml").read_text()
        torch.set_num_threads(2)
        assert main(tiny_args(tag_file, "--out", str(c), steps=9)) == 0
        capsys.readouterr()
        assert main(["--out", str(b), "--resume"]) == 0
        assert "CPU threads: 1 (run.threads" in capsys.readouterr().out
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    sa, sb, sc = (_final_state(r)["model"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # two threads: other results


def test_existing_run_folder_is_refused(tmp_path, tag_file, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("user data")
    assert main(tiny_args(tag_file, "--out", str(run))) == 1
    assert "not empty" in capsys.readouterr().err
    assert (run / "mine.txt").read_text() == "user data"


def test_export_reloads_in_timm_and_inference_api(tmp_path, tag_file, text_side, capsys):
    import timm

    from icmlm_zoo.training.data.synthetic import SyntheticScenes
    from icmlm_zoo.training.inference import load_run, predict_masked
    run = tmp_path / "run"
    assert main(tiny_args(tag_file, "--out", str(run), steps=4)) == 0
    out = tmp_path / "weights"
    rc = main(["export", str(run), "--model", "icmlm_resnet_tiny", "--tag", "unit", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    # one preprocessing record: what the run wrote is what the weights carry and what inference uses
    recorded = json.loads((run / "preprocessing.json").read_text())
    assert recorded["input_size"] == [3, 64, 64] and recorded["crop_pct"] == 1.0
    assert {k: cfg["pretrained_cfg"][k] for k in recorded} == recorded
    m = timm.create_model("icmlm_resnet_tiny", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    loaded = load_run(run)
    assert loaded.backbone_name == "icmlm_resnet_tiny" and not loaded.model.training
    scenes = SyntheticScenes(2, 64, seed=10_000)
    x = torch.stack([loaded.transform(scenes.scene(i)["image"]) for i in range(2)])
    with torch.no_grad():
        assert torch.equal(m.forward_features(x), loaded.model.backbone.forward_features(x))
    captions = ["a [MASK] circle on the left.", "a small red [MASK] and a [MASK] square."]
    preds = predict_masked(loaded, x, captions, topk=3)
    assert [len(p["masks"]) for p in preds] == [1, 2]
    for p in preds:
        for mk in p["masks"]:
            assert len(mk["topk_tokens"]) == 3 and mk["topk_probs"] == sorted(mk["topk_probs"], reverse=True)
            assert mk["attention"].shape == (2, 2)
            assert torch.isclose(mk["attention"].sum(), torch.tensor(1.0), atol=1e-5)
    # export never overwrites, unless asked to: then it writes the same bytes again
    assert main(["export", str(run), "--tag", "unit", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    before = (out / "model.safetensors").read_bytes()
    assert main(["export", str(run), "--tag", "unit", "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() == before and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("heads", ["[tfm, tp]", "[tp]"])
def test_other_heads_train_and_predict(tmp_path, tag_file, text_side, heads):
    from icmlm_zoo.training.inference import load_run, predict_masked
    run = tmp_path / "run"
    extra = ["--set", f"model.heads={heads}", "--set", "model.tfm.ff=256", "--set", "model.tfm.layers=1"]
    assert main(tiny_args(tag_file, "--out", str(run), *extra, steps=3)) == 0
    loaded = load_run(run)
    x = torch.randn(1, 3, 64, 64)
    mk = predict_masked(loaded, x, ["a [MASK] circle."], topk=2)[0]["masks"][0]
    assert len(mk["topk_tokens"]) == 2
    if heads == "[tp]":
        assert mk["attention"] is None
    else:
        assert mk["attention"].shape == (2, 2) and abs(float(mk["attention"].sum()) - 1) < 1e-5


def test_demo_defaults_mine_tags_with_spacy(tmp_path, text_side):
    """The demo path without a tag file: tags are mined with spaCy from the training captions."""
    run = tmp_path / "run"
    args = ["--preset", "demo", "--out", str(run), "--set", "train.max_steps=2",
            "--set", "data.synthetic.num_images=300", "--set", "data.synthetic.val_images=4",
            "--set", "data.image_size=64", "--set", "data.synthetic.image_size=64",
            "--set", "train.batch_size=4", "--set", "data.num_workers=0", "--set", "run.export.tag=unit_demo",
            "--set", "run.progress=false", "--set", "tags.max_captions=300"]
    assert main(args) == 0
    words = (run / "tags.txt").read_text()
    for w in ("red", "circle", "small"):
        assert f"\n{w}\t" in words
    assert (run / "export" / "icmlm_resnet_tiny.unit_demo" / "model.safetensors").is_file()
    assert list((run / "tb").iterdir())
