"""Training-run faults (issue 13): damaged checkpoints, a full disk, NaN/Inf steps, no progress, bad pairs rows and
repeated metrics rows, all through small real runs of ``icmlm_zoo.training.cli.main``."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil

import pytest
import torch
from train_fixtures import read_metrics, tiny_args

from icmlm_zoo.training import checkpoint as ckpt
from icmlm_zoo.training.cli import main


def _args(tag_file, run, *extra, steps=8):
    return tiny_args(tag_file, "--out", str(run), "--set", "run.keep_last=2", *extra, steps=steps, size=32, images=16)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tag_file, text_side):
    """A finished 8-step run with checkpoints at steps 4 and 8 (copied by each test)."""
    run = tmp_path_factory.mktemp("pristine") / "run"
    assert main(_args(tag_file, run)) == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["ckpt_0000004.pt", "ckpt_0000008.pt"]
    return run


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('ICMLM_PWNED', '/tmp/icmlm_pwned')}",))


def _damage(path, how, tmp_path):
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit_flipped":  # same size: one byte in the middle (tensor data) changed
        b = bytearray(data)
        b[len(b) // 2] ^= 0x7F
        path.write_bytes(bytes(b))
    elif how == "malicious_pickle":
        os.environ["ICMLM_PWNED"] = str(tmp_path / "pwned")
        torch.save({"model": _Payload()}, path)  # a torch zip whose pickle would run a command


@pytest.mark.parametrize("how", ["empty", "truncated", "bit_flipped", "malicious_pickle"])
def test_bad_latest_checkpoint_is_named_and_run_resumes_from_previous_good(finished_run, tmp_path, how, capsys,
                                                                             caplog):
    run = _copy(finished_run, tmp_path)
    good8 = ckpt.load_checkpoint(run / "checkpoints" / "ckpt_0000008.pt")
    _damage(run / "checkpoints" / "ckpt_0000008.pt", how, tmp_path)
    rc = main(["--out", str(run), "--resume"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    said = out.err + out.out + caplog.text
    assert "ckpt_0000008.pt" in said and "resumed" in said and "from ckpt_0000004.pt" in said
    assert not (tmp_path / "pwned").exists()
    if how == "malicious_pickle":
        assert "refused by the safe loader" in said
    # the damaged file is kept aside (never deleted) and keep_last=2 kept the good step-4 checkpoint
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["ckpt_0000004.pt", "ckpt_0000008.pt", "ckpt_0000008.pt.bad"]
    redone = ckpt.load_checkpoint(run / "checkpoints" / "ckpt_0000008.pt")
    for k, v in good8["model"].items():  # exact resume from step 4 re-creates the lost step-8 weights
        assert torch.equal(v, redone["model"][k]), k
    steps = [int(r["step"]) for r in read_metrics(run)]
    assert steps == list(range(1, 9))  # metrics rows are not repeated by the resume


def test_no_good_checkpoint_is_an_error_naming_each_file(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    for p in ckpt.list_checkpoints(run / "checkpoints"):
        p.write_bytes(b"")
    assert main(["--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "ckpt_0000004.pt" in err and "ckpt_0000008.pt" in err
    assert "Traceback" not in err


def test_metrics_rows_after_the_last_checkpoint_are_not_repeated(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)  # as if killed after logging step 8, before its checkpoint
    (run / "checkpoints" / "ckpt_0000008.pt").unlink()
    assert main(["--out", str(run), "--resume"]) == 0
    steps = [int(r["step"]) for r in read_metrics(run)]
    assert steps == list(range(1, 9))
    assert len(read_metrics(run, "val")) == 1


class _FullDisk(io.FileIO):
    """A checkpoint temp file on a disk that fills up after 1000 bytes."""

    def write(self, b):
        super().write(bytes(memoryview(b)[:1000]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)


def test_disk_full_says_so_with_the_path_and_leaves_no_temp_file(finished_run, tmp_path, monkeypatch, capsys):
    run = _copy(finished_run, tmp_path)
    (run / "checkpoints" / "ckpt_0000008.pt").unlink()
    stale = run / "checkpoints" / ".ckpt_0000008.pt.tmp99999"   # left by a write that was killed
    stale.write_bytes(b"x" * 1000)
    monkeypatch.setattr(ckpt, "_open_tmp", lambda p: _FullDisk(p, "w"))
    assert main(["--out", str(run), "--resume"]) == 1
    out = capsys.readouterr()
    assert "no space left" in out.err and str(run / "checkpoints" / "ckpt_0000008.pt") in out.err
    assert "removed 1 temporary file" in out.out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_0000004.pt"]


def test_checkpoint_with_nonfinite_weights_is_never_written(tmp_path):
    state = {"step": 1, "model": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(ckpt.CheckpointError, match="NaN/Inf"):
        ckpt.save_checkpoint(state, tmp_path, 1)
    assert list(tmp_path.iterdir()) == []


def test_huge_lr_stops_with_a_clear_error_and_no_nan_checkpoint(tmp_path, tag_file, text_side, capsys):
    run = tmp_path / "run"
    rc = main(_args(tag_file, run, "--set", "optim.lr=1e12", "--set", "run.ckpt_every=1",
                    "--set", "train.max_nonfinite_steps=3"))
    out = capsys.readouterr()
    assert rc == 1
    assert "non-finite" in out.err and "train.max_nonfinite_steps=3" in out.err and "done" not in out.out
    for p in ckpt.list_checkpoints(run / "checkpoints"):
        st = torch.load(p, weights_only=True)
        assert not ckpt.nonfinite_tensors(st["model"]), p
    assert all(r["loss"] not in ("nan", "inf") for r in read_metrics(run))


def test_export_refuses_nonfinite_weights(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    p = run / "checkpoints" / "ckpt_0000008.pt"
    st = torch.load(p, weights_only=True)
    st.pop("sha256", None)
    key = next(k for k in st["model"] if k.startswith("backbone.") and st["model"][k].is_floating_point())
    st["model"][key][...] = float("nan")
    torch.save(st, p)  # as a checkpoint written before this guard existed
    out = tmp_path / "weights"
    assert main(["export", str(run), "--tag", "unit", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "ckpt_0000008.pt" in err
    assert not (out / "model.safetensors").exists()


@pytest.mark.timeout(120)
def test_no_caption_with_a_tag_word_stops_with_the_reason(tmp_path, text_side, capsys):
    from icmlm_zoo.training.tags import write_tags
    tags = write_tags(["zebra", "giraffe"], tmp_path / "tags.txt")
    run = tmp_path / "run"
    rc = main(_args(tags, run, "--set", "train.max_idle_samples=40"))
    err = capsys.readouterr().err
    assert rc == 1
    assert "no optimizer step in the last" in err and "no_tag" in err and "tag vocabulary" in err


def _pairs(tmp_path, name, text_rows: list[bytes]):
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    f = tmp_path / name
    f.write_bytes(b"\n".join(text_rows) + b"\n")
    return f


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_non_utf8_rows_are_skipped_and_counted_with_file_and_line(tmp_path, kind, text_side, caplog):
    from test_train_data import _builder

    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.dataset import ICMLMDataset
    from icmlm_zoo.training.data.pairs import PairsSource
    if kind == "jsonl":
        rows = [json.dumps({"image": "red.png", "caption": "a red circle"}).encode(),
                b'{"image": "red.png", "caption": "a red \xff\xfe circle"}',
                b"not json at all",
                json.dumps({"image": "red.png", "caption": "a red square"}).encode()]
    else:
        rows = [b"image,caption", b"red.png,a red circle", b"red.png,a red \xff\xfe circle", b"red.png,a red square"]
    f = _pairs(tmp_path, f"pairs.{kind}", rows)
    src = PairsSource(f)
    assert len(src) == (4 if kind == "jsonl" else 3)
    bad_lines = sorted(src.bad_rows.values())
    assert bad_lines[0] == f"{f}:{2 if kind == 'jsonl' else 3}: not UTF-8 text"
    assert f"{f}:" in caplog.text
    batch = Collator(text_side.tokenizer.pad_token_id)([ICMLMDataset(src, _builder(text_side))[i]
                                                        for i in range(len(src))])
    assert batch["n"] == 2 and batch["errors"] == {"bad_row": len(src) - 2}
    assert any(f"{f}:" in d for d in batch["error_details"])


# --- issue 20: --set order, Ctrl-C, short runs of broken samples, missing shards ---------------------------------

def test_a_later_set_value_wins_and_every_value_is_validated(capsys):
    base = ["--preset", "demo", "--print-config"]
    assert main([*base, "--set", "optim.lr=0.1", "train.batch_size=2", "--set", "train.batch_size=3"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 3" in out and "lr: 0.1" in out
    assert main([*base, "train.batch_size=5", "--set", "train.batch_size=6"]) == 0  # bare KEY=VALUE words too
    assert "batch_size: 6" in capsys.readouterr().out
    assert main([*base, "--set", "train.epochs=1", "train.batch_size=2", "--set", "train.batch_size=-1"]) == 2
    assert "train.batch_size=-1 is not valid" in capsys.readouterr().err
    # a value that a later one replaces is still checked: nothing a user typed is silently dropped
    assert main([*base, "--set", "train.batch_size=abc", "--set", "train.batch_size=4"]) == 2
    assert "train.batch_size='abc' is not valid" in capsys.readouterr().err


def test_ctrl_c_says_where_it_stopped_and_how_to_continue(tmp_path, tag_file, monkeypatch, capsys):
    from icmlm_zoo.training import trainer
    run = tmp_path / "run"
    after_step = trainer._Loop._after_step

    def interrupted_at_step_6(self):
        if self.state.step == 6:  # checkpoints at 4 and 8: two steps after the last checkpoint
            raise KeyboardInterrupt
        return after_step(self)

    monkeypatch.setattr(trainer._Loop, "_after_step", interrupted_at_step_6)
    assert main(_args(tag_file, run)) == 130
    err = capsys.readouterr().err
    assert f"stopped at step 4; continue with `icmlm-train --resume --out {run}`" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    monkeypatch.setattr(trainer._Loop, "_after_step", after_step)
    assert main(["--out", str(run), "--resume"]) == 0
    assert ckpt.load_checkpoint(ckpt.resolve_checkpoint(run))["step"] == 8


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigint_mid_run_exits_130_without_a_traceback(tmp_path, tag_file):
    import signal
    import subprocess
    import sys
    import time
    run = tmp_path / "run"
    code = "import sys; from icmlm_zoo.training.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *_args(tag_file, run, steps=4000)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.list_checkpoints(run / "checkpoints") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert f"; continue with `icmlm-train --resume --out {run}`" in err and "stopped at step " in err


def _broken_pairs(tmp_path, good: int, bad: int):
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    rows = [{"image": "red.png", "caption": "a small red circle"}] * good
    rows += [{"image": f"missing-{i}.png", "caption": "a small red circle"} for i in range(bad)]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


@pytest.mark.timeout(300)
def test_a_short_run_of_mostly_broken_samples_is_judged_at_its_end(tmp_path, tag_file, capsys):
    pairs = _broken_pairs(tmp_path, good=2, bad=18)  # 90 % broken, far fewer than run.failure_min_samples
    run = tmp_path / "run"
    sets = ["--set", "data.kind=pairs", f"data.pairs.file={pairs}", "eval.at_end=false", "train.max_idle_samples=10000"]
    # 64 px: a batch holding a single usable sample still has 2x2 feature maps for BatchNorm
    rc = main(tiny_args(tag_file, "--out", str(run), *sets, steps=2, size=64, images=16))
    err = capsys.readouterr().err
    assert rc == 1, err[-2000:]
    assert "samples failed to load by the end of the run" in err and "run.max_failure_rate=0.05" in err


def _wds_args(urls):
    return ["--set", "data.kind=webdataset", f"data.webdataset.urls={urls}", "data.webdataset.epoch_samples=8",
            "data.num_workers=0", "eval.at_end=false"]


@pytest.mark.timeout(120)  # it used to hang forever
def test_webdataset_with_every_shard_missing_is_an_error_at_once(tmp_path, tag_file, capsys):
    run = tmp_path / "run"
    assert main(_args(tag_file, run, *_wds_args(str(tmp_path / "none-{0..3}.tar")), steps=2)) == 1
    err = capsys.readouterr().err
    assert "none of its 4 shard(s) exists" in err and "none-0.tar" in err
    assert not run.exists()  # a refused start leaves nothing behind


@pytest.mark.timeout(300)
def test_webdataset_with_some_shards_missing_counts_and_names_them(tmp_path, tag_file, caplog):
    from test_train_data import _shard
    for s in (0, 2):
        _shard(tmp_path / f"shard-{s}.tar", 4 * s, 4)
    run = tmp_path / "run"
    assert main(_args(tag_file, run, *_wds_args(str(tmp_path / "shard-{0..3}.tar")), steps=2)) == 0
    assert "2 of 4 shard(s) missing" in caplog.text and "shard-1.tar" in caplog.text
