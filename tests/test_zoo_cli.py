"""icmlm-zoo explains itself: every subcommand's -h (help on every argument, defaults shown), --version from
the installed package metadata, and one line (no traceback) for user mistakes."""
from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from icmlm_zoo import cli as zoo_cli


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = zoo_cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **sub.choices}


def test_subcommands_are_the_documented_ones():
    assert set(_subcommands()) == {"", "list", "info", "download", "convert", "publish", "export-detectron2"}


@pytest.mark.parametrize("command", list(_subcommands()))
def test_every_command_has_complete_help(command, capsys):
    parser = _subcommands()[command]
    with pytest.raises(SystemExit) as e:
        zoo_cli.main([command, "-h"] if command else ["-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert out.startswith(f"usage: icmlm-zoo {command}".rstrip()), out[:200]
    assert "`" not in out, f"markup in the help of icmlm-zoo {command}"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"icmlm-zoo {command}: {name} has no help text"
        if action.option_strings and action.default not in (None, False, []):
            assert f"(default: {action.default})" in flat, f"icmlm-zoo {command}: {name}'s default not shown"
    if command == "publish":
        assert "(default: Add ICMLM weights)" in flat and "--public" in flat and "private" in flat
    if command in ("convert", "export-detectron2"):
        assert "--overwrite" in flat


def test_version_is_the_installed_package_metadata(capsys):
    with pytest.raises(SystemExit) as e:
        zoo_cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"icmlm-zoo {version('icmlm-zoo')}"


@pytest.mark.parametrize("argv,needle", [
    (["publish", "{tmp}/nowhere", "--repo", "org/name"], "is not a folder"),
    (["convert", "{tmp}/missing.pth", "--model", "icmlm_resnet_tiny", "--out", "{tmp}/o"], "does not exist"),
    (["export-detectron2", "random:icmlm_resnet_tiny", "{tmp}/out.pth"], ".pkl"),
    (["export-detectron2", "{tmp}/missing.safetensors", "{tmp}/out.pkl"], "does not exist"),
    (["info", "icmlm_nosuchnet"], "icmlm_nosuchnet"),
])
def test_user_mistakes_give_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert zoo_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"icmlm-zoo {argv[0]}: error:") and needle in err, err
