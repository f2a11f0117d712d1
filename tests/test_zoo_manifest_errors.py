"""A broken manifest ($ICMLM_ZOO_MANIFEST: bad JSON, a missing field, an unknown model, a missing file) gives one
line naming the file in every CLI, and `import icmlm_zoo` raises one clean ManifestError (issue 20, item 5)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from icmlm_zoo.manifest import SHIPPED_MANIFEST

BIN = Path(sys.executable).parent


def _missing_field(data: dict) -> None:
    del data["weights"][0]["preprocessing"]


def _unknown_model(data: dict) -> None:
    data["weights"][0]["model"] = "icmlm_resnet101"


FAULTS = {
    "bad-json": lambda path: path.write_text("{garbage"),
    "missing-field": _missing_field,
    "unknown-model": _unknown_model,
    "missing-file": None,
}


@pytest.fixture(params=list(FAULTS))
def broken_manifest(request, tmp_path) -> Path:
    path = tmp_path / f"{request.param}.json"
    fault = FAULTS[request.param]
    if request.param == "bad-json":
        fault(path)
    elif fault is not None:
        data = json.loads(SHIPPED_MANIFEST.read_text())
        fault(data)
        path.write_text(json.dumps(data))
    return path


def _run(argv: list[str], manifest: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "ICMLM_ZOO_MANIFEST": str(manifest)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def _assert_one_line(res: subprocess.CompletedProcess, command: str, manifest: Path) -> None:
    err = res.stderr.strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"icmlm-zoo {command}: error: Weights manifest {manifest}"), err


@pytest.mark.parametrize("command", [["list"], ["info", "icmlm_resnet50"]])
def test_icmlm_zoo_prints_one_line_naming_the_file(broken_manifest, command, tmp_path):
    _assert_one_line(_run([str(BIN / "icmlm-zoo"), *command], broken_manifest, tmp_path), command[0],
                     broken_manifest)


def test_icmlm_zoo_download_prints_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{garbage")
    _assert_one_line(_run([str(BIN / "icmlm-zoo"), "download", "icmlm_resnet50"], bad, tmp_path), "download", bad)


def test_import_raises_one_clean_manifest_error(broken_manifest, tmp_path):
    res = _run([sys.executable, "-c", "import icmlm_zoo"], broken_manifest, tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"icmlm_zoo.errors.ManifestError: Weights manifest {broken_manifest}"), res.stderr
    assert "During handling" not in res.stderr and "direct cause" not in res.stderr, res.stderr


@pytest.mark.slow
def test_icmlm_eval_prints_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{garbage")
    res = _run([str(BIN / "icmlm-eval"), "voc07", "--model", "icmlm_resnet_tiny", "--data", str(tmp_path)], bad,
               tmp_path)
    err = res.stderr.strip()
    assert res.returncode != 0 and len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err, err


def test_manifest_error_is_a_zoo_error_and_a_value_error():
    from icmlm_zoo import IcmlmZooError, ManifestError

    assert issubclass(ManifestError, IcmlmZooError) and issubclass(ManifestError, ValueError)
