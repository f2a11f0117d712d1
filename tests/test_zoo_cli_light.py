"""`icmlm-zoo --version` and `-h` answer without importing torch (issue 20, item 6); the console scripts still
register the backbones as soon as timm is imported, whichever module imports it first."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]  # as the console script runs: argv[0] names it
code = 0
try:
    from icmlm_zoo.cli import main
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "timm", "transformers") if m in sys.modules)}),
      file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--version"], ["-h"], ["list", "-h"], ["info", "icmlm_resnet50"], ["list"]])
def test_version_help_and_manifest_commands_do_not_import_torch(argv, tmp_path):
    script = tmp_path / "icmlm-zoo"
    script.write_text(PROBE)
    res = subprocess.run([sys.executable, str(script), str(script), *argv], capture_output=True, text=True,
                         timeout=120)
    report = json.loads(res.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, (report, res.stderr)
    assert res.stdout.strip()


def test_console_script_answers_version(tmp_path):
    exe = Path(sys.executable).with_name("icmlm-zoo")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("icmlm-zoo ")


def test_console_scripts_register_when_a_zoo_module_first_imports_timm(tmp_path):
    """In a console script, icmlm_zoo.constants (which imports timm) may be the first to import timm: the
    backbones are registered then, without re-entering the half-imported module."""
    script = tmp_path / "icmlm-eval"
    script.write_text(textwrap.dedent("""
        import sys
        import icmlm_zoo
        assert "torch" not in sys.modules, "import icmlm_zoo in a console script must not import torch"
        from icmlm_zoo.constants import HEAD_PREFIXES
        import timm
        print(timm.list_models("icmlm_*"))
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "icmlm_resnet50" in res.stdout and "icmlm_vgg16" in res.stdout


def test_library_import_registers_at_once():
    res = subprocess.run([sys.executable, "-c", "import sys, icmlm_zoo, timm; "
                          "print('timm' in sys.modules, timm.list_models('icmlm_resnet5*'))"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["True", "['icmlm_resnet50']"], res.stderr


def test_export_detectron2_help_still_lists_its_arguments(capsys):
    from icmlm_zoo.cli import main

    with pytest.raises(SystemExit):
        main(["export-detectron2", "-h"])
    assert "--arch" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["icmlm_zoo", "icmlm_zoo.training"])
def test_python_dash_m_is_as_light_as_the_console_script(module, tmp_path):
    """`python -m icmlm_zoo.training` is `icmlm-train`: it answers --version without torch, and so sets OpenMP's
    wait policy before torch loads it instead of restarting itself."""
    probe = tmp_path / "sitecustomize.py"  # runs at interpreter start: reports what the command imported
    probe.write_text("import atexit, sys\natexit.register(lambda: print('TORCH' if 'torch' in sys.modules "
                     "else 'NO TORCH', file=sys.stderr))\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    assert res.stderr.strip().splitlines()[-1] == "NO TORCH", res.stderr
