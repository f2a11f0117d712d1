"""icmlm-eval outputs (issue 20): the default folder depends on what was scored, an existing result is never
replaced without --overwrite, and a silent command still says it is working."""
from __future__ import annotations

import argparse
import json
import sys
import time

import pytest
from train_fixtures import tiny_args

from icmlm_zoo.analysis import cli as eval_cli
from icmlm_zoo.evaluation.heartbeat import Heartbeat
from icmlm_zoo.evaluation.outputs import RESULTS_ROOT, default_folder, prepare_output
from icmlm_zoo.training.cli import main as train_main


def _args(argv):
    return eval_cli.build_parser().parse_args(argv)


def test_default_folder_is_named_after_what_was_scored(tmp_path):
    run = tmp_path / "runA"
    (run / "checkpoints").mkdir(parents=True)
    assert default_folder("pointing", _args(["pointing", "--run", str(run)])) == run / "eval" / "pointing"
    assert default_folder("grounding", _args(["grounding", "--run", str(run), "--checkpoint", "400"])) == \
        run / "eval" / "grounding-400"
    assert default_folder("voc07", _args(["voc07", "--model", str(run), "--data", "d"])) == run / "eval" / "voc07"
    named = default_folder("voc07", _args(["voc07", "--model", "icmlm_resnet50.attfc_coco", "--data", "d"]))
    assert named == RESULTS_ROOT / "icmlm_resnet50.attfc_coco" / "voc07"
    assert default_folder("linear", _args(["linear", "--model", "random:icmlm_resnet_tiny", "--data", "d"])) == \
        RESULTS_ROOT / "random-icmlm_resnet_tiny" / "linear"
    files = []
    for sub in ("a", "b"):  # two weight files of the same name never share a folder
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "model.safetensors").write_bytes(b"")
        files.append(default_folder("voc07", _args(["voc07", "--model", str(tmp_path / sub / "model.safetensors"),
                                                    "--data", "d"])))
    assert files[0] != files[1] and files[0].name == "voc07" and files[0].parent.name.startswith("model-")
    one = default_folder("compare", _args(["compare", "r=random:icmlm_resnet_tiny", f"t={run}"]))
    two = default_folder("compare", _args(["compare", "r=random:icmlm_resnet_tiny", f"t={tmp_path / 'runB'}"]))
    assert one != two and one.parent.name.startswith("r+t-") and one.name == "compare"


def test_an_existing_result_is_refused_before_any_work_unless_overwrite(tmp_path):
    args = _args(["grounding", "--run", str(tmp_path)])
    out = prepare_output("grounding", args)
    assert args.out == str(out) == str(tmp_path / "eval" / "grounding")
    out.mkdir(parents=True)
    (out / "grounding.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"grounding.json exists .* pass --overwrite to replace it, or --out"):
        prepare_output("grounding", _args(["grounding", "--run", str(tmp_path)]))
    assert prepare_output("grounding", _args(["grounding", "--run", str(tmp_path), "--overwrite"])) == out
    (out / "grounding.json").unlink()
    att = ["attention", "--run", str(tmp_path), "--image", "cat.png", "--caption", "a [MASK]"]
    (tmp_path / "eval" / "attention").mkdir(parents=True)
    (tmp_path / "eval" / "attention" / "cat_attention.json").write_text("{}")
    with pytest.raises(FileExistsError, match="cat_attention.json exists"):
        prepare_output("attention", _args(att))
    prepare_output("attention", _args(att[:4] + ["dog.png"] + att[5:]))  # another image: another result


@pytest.mark.timeout(600)
def test_scoring_two_runs_with_one_command_keeps_both_results(tmp_path, tag_file, capsys):
    runs = [tmp_path / "runA", tmp_path / "runB"]
    for seed, run in enumerate(runs):
        assert train_main(tiny_args(tag_file, "--out", str(run), "--set", f"run.seed={seed}", "eval.at_end=false",
                                    steps=2, size=32, images=8)) == 0
    capsys.readouterr()
    pointing = ["pointing", "--num-scenes", "4"]
    for run in runs:
        assert eval_cli.main([*pointing, "--run", str(run)]) == 0
    results = [json.loads((run / "eval" / "pointing" / "pointing.json").read_text()) for run in runs]
    assert [r["run"] for r in results] == [str(run) for run in runs]
    capsys.readouterr()
    assert eval_cli.main([*pointing, "--run", str(runs[0])]) == 2  # refused at once, the result kept
    err = capsys.readouterr().err
    assert "pointing.json exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert json.loads((runs[0] / "eval" / "pointing" / "pointing.json").read_text()) == results[0]
    assert eval_cli.main([*pointing, "--run", str(runs[0]), "--overwrite"]) == 0


def test_a_silent_command_prints_a_line_every_few_seconds(capsys):
    with Heartbeat("icmlm-eval test", every=0.5):
        time.sleep(1.8)
    beats = [line for line in capsys.readouterr().err.splitlines() if "icmlm-eval test: working" in line]
    assert len(beats) >= 2 and beats[-1].endswith("s so far")
    with Heartbeat("icmlm-eval chatty", every=0.5):
        for _ in range(9):  # a command that shows its own progress gets no extra line
            print("step", file=sys.stderr)
            time.sleep(0.2)
    assert "chatty: working" not in capsys.readouterr().err


def test_every_output_command_has_out_and_overwrite():
    parser = eval_cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in subs.items():
        opts = {o for a in sub._actions for o in a.option_strings}
        assert "--out" in opts, name
        # fidelity and transfer keep one record per run in their --out and resume there: nothing is replaced
        assert name in ("fidelity", "transfer") or "--overwrite" in opts, name
