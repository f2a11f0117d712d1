"""icmlm-train and icmlm-eval explain themselves: every command's -h, defaults, --version, one-line user errors,
the training-curve PNG (end of a run and `icmlm-train plot RUN`)."""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys

import pytest
import torch
from PIL import Image
from train_fixtures import tiny_args

import icmlm_zoo
from icmlm_zoo.analysis import cli as eval_cli
from icmlm_zoo.training import cli as train_cli

TOOLS = {"icmlm-train": train_cli, "icmlm-eval": eval_cli}


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv prefix, parser) for the top-level parser and every subcommand (aliases once)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from _parsers(sub, path + (name,))


def _all_commands():
    for tool, mod in TOOLS.items():
        for path, parser in _parsers(mod.build_parser()):
            yield pytest.param(tool, path, parser, id=" ".join((tool,) + path))


@pytest.mark.parametrize("tool,path,parser", list(_all_commands()))
def test_every_command_has_complete_help(tool, path, parser, capsys):
    with pytest.raises(SystemExit) as e:
        TOOLS[tool].main([*path, "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {tool}"), out[:200]
    assert "`" not in out, f"markup in the help of {tool} {' '.join(path)}"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{tool} {' '.join(path)}: {name} has no help text"
        shown = action.default not in (None, False, []) and action.default is not argparse.SUPPRESS
        if action.option_strings and shown:
            assert f"(default: {action.default}" in " ".join(out.split()), \
                f"{tool} {' '.join(path)}: {name} default not shown"


@pytest.mark.parametrize("tool", list(TOOLS))
def test_version(tool, capsys):
    with pytest.raises(SystemExit) as e:
        TOOLS[tool].main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"{tool} {icmlm_zoo.__version__}"


def test_train_is_the_default_subcommand(capsys):
    assert train_cli.main(["--preset", "demo", "--set", "optim.lr=0.5", "--print-config"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert train_cli.main(["train", "--list-presets"]) == 0
    assert "demo" in capsys.readouterr().out.split()


def test_eval_device_auto_is_cuda_when_present():
    args = eval_cli.build_parser().parse_args(["voc07", "--model", "m", "--data", "d"])
    assert args.device == "auto"
    assert eval_cli.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("argv,needle", [
    (["plot", "no/such/run"], "run folder no/such/run not found"),
    (["export", "no/such/run", "--tag", "x"], "not an icmlm-train run folder"),
    (["--preset", "no_such_preset", "--print-config"], "no_such_preset"),
])
def test_train_user_mistakes_are_one_line(argv, needle, capsys):
    assert train_cli.main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_eval_user_mistake_is_one_line(tmp_path, capsys):
    rc = eval_cli.main(["attention", "--run", str(tmp_path), "--image", str(tmp_path / "none.png"),
                        "--caption", "a [MASK]", "--out", str(tmp_path / "o")])
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert "none.png does not exist" in err and len(err.splitlines()) == 1, err


def _metrics(path, gap: bool) -> None:
    cols = ["step", "epoch", "split", "loss", "top1", "visual_top1", "visual_top1_shuffled", "image_use_gap"]
    rows = [[s, 0, "train", 5.0 - 0.3 * s, 0.05 * s, "", "", ""] for s in range(1, 9)]
    rows += [[4, 0, "val", 4.2, 0.2, 0.5, 0.3, 0.2 if gap else ""],
             [8, 0, "val", 3.9, 0.3, 0.6, 0.3, 0.3 if gap else ""]]
    rows += [[8, 0, "train", 2.5, 0.4, "", "", ""]]  # a step logged twice (resumed run): the last row counts
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([cols] + rows)


def test_plot_draws_the_logged_columns(tmp_path, capsys):
    from icmlm_zoo.training.curves import read_metrics
    run = tmp_path / "run"
    run.mkdir()
    _metrics(run / "metrics.csv", gap=True)
    m = read_metrics(run / "metrics.csv")
    assert m["train"]["loss"][-1] == (8, 2.5) and len(m["train"]["loss"]) == 8
    assert m["val"]["visual_top1_shuffled"] == [(4, 0.3), (8, 0.3)] and "image_use_gap" not in m["train"]
    assert train_cli.main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "curves.png")
    with Image.open(run / "curves.png") as im:
        wide = im.size[0]
    _metrics(run / "metrics.csv", gap=False)  # no image-use gap logged: no third panel
    assert train_cli.main(["plot", str(run), "--out", str(tmp_path / "two.png")]) == 0
    with Image.open(tmp_path / "two.png") as im:
        assert im.size[0] < wide


def test_a_run_ends_with_its_curve_png(tmp_path, tag_file, text_side, capsys):
    run = tmp_path / "run"
    assert train_cli.main(tiny_args(tag_file, "--out", str(run), steps=4, size=32)) == 0
    assert f"training curves: {run / 'curves.png'}" in capsys.readouterr().out
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_one_epoch_curves_show_the_chance_line_and_the_whole_run(tmp_path):
    """A run evaluated once (at its end, step 20): every panel spans steps 0-20, a constant chance level is a
    visible dashed line across its panel, and a one-point series has a marker."""
    from icmlm_zoo.training.curves import build_figure, read_metrics
    cols = ["step", "split", "loss", "top1", "visual_top1", "visual_top1_shuffled", "visual_chance", "image_use_gap"]
    rows = [[s, "train", 5.0 - 0.1 * s, 0.02 * s, "", "", "", ""] for s in range(1, 21)]
    rows += [[20, "val", 3.1, 0.4, 0.55, 0.3, 0.125, 0.25]]
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([cols] + rows)
    fig = build_figure(read_metrics(tmp_path / "metrics.csv"))
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 3  # loss, accuracy, image-use gap
    for ax in axes:
        lo, hi = ax.get_xlim()
        assert lo <= 0 and 20 <= hi < 25, (ax.get_ylabel(), lo, hi)
    lines = {ln.get_label(): ln for ax in axes for ln in ax.get_lines()}
    chance = lines["val visual-word chance"]
    assert list(chance.get_xdata()) == [0, 1]  # in axes fractions: across the whole panel
    assert chance.get_linestyle() == "--" and list(chance.get_ydata()) == [0.125, 0.125]
    for name in ("val visual-word top-1", "val image-use gap", "val masked-word top-1"):
        assert lines[name].get_marker() == "o" and len(lines[name].get_xdata()) == 1


def test_train_help_shows_the_train_options_in_its_first_lines(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["-h"])
    head = "\n".join(capsys.readouterr().out.splitlines()[:8])
    for option in ("--preset", "--config", "--set", "--out", "--resume", "--list-presets", "icmlm-train train -h"):
        assert option in head, option


# as the console script runs: argv[0] names the tool; reports whether torch was imported by the package itself
# (import icmlm_zoo) and after -h / --version
_PROBE = """
import json, sys, time
tool, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [tool] + argv
t0 = time.perf_counter()
import icmlm_zoo
package = "torch" in sys.modules
code = None
try:
    __import__(module, fromlist=["main"]).main(argv)
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "package": package, "torch": "torch" in sys.modules,
                  "seconds": time.perf_counter() - t0}), file=sys.stderr)
"""


@pytest.mark.parametrize("tool,module", [("icmlm-train", "icmlm_zoo.training.cli"),
                                         ("icmlm-eval", "icmlm_zoo.analysis.cli")])
@pytest.mark.parametrize("flag", ["--version", "-h"])
def test_version_and_help_answer_without_importing_torch(tool, module, flag, tmp_path):
    import json
    import subprocess
    import sys
    script = tmp_path / tool
    script.write_text(_PROBE)
    res = subprocess.run([sys.executable, str(script), tool, module, flag], capture_output=True, text=True,
                         timeout=300)
    report = json.loads(res.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and res.stdout.startswith(f"{tool} " if flag == "--version" else f"usage: {tool}")
    if report["package"]:
        pytest.skip("import icmlm_zoo itself imports torch on this branch (the core's part of issue 20 item 6)")
    assert not report["torch"], report


def test_eval_parser_mask_sets_are_the_diagnosis_ones():
    from icmlm_zoo.analysis.binding_diagnosis import MASK_SETS
    assert eval_cli.MASK_SETS == MASK_SETS


def test_commands_end_without_the_interpreters_teardown_but_lose_nothing(tmp_path):
    """exit_without_teardown: the status, buffered output and exit handlers (logging, multiprocessing's clean-up)
    all survive; only the teardown (module freeing, C++ static destructors) is skipped."""
    code = (f"import atexit, pathlib, sys\n"
            f"from icmlm_zoo.cli_support import exit_without_teardown\n"
            f"atexit.register(lambda: pathlib.Path({str(tmp_path / 'handler-ran')!r}).write_text('yes'))\n"
            f"sys.stdout.write('buffered, not flushed')\n"
            f"exit_without_teardown(3)\n"
            f"print('never reached')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and res.stdout == "buffered, not flushed", res
    assert (tmp_path / "handler-ran").read_text() == "yes"
