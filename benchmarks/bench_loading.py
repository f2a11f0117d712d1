"""P3: `timm.create_model("icmlm_resnet50", pretrained=True)` from a warm cache vs plain timm + safetensors.

A ResNet-50 weight (random values; only the size matters) is published on the loopback Hub stand-in from
tests/fakehub.py and listed in a temporary manifest, so the real download + sha256 path runs. After one warm-up
load, both ways are timed (median of repeats).

    .venv/bin/python benchmarks/bench_loading.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import _env  # noqa: F401, I001  (first: sys.path and the environment, before torch)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakehub import FakeHub  # noqa: E402

HUB = FakeHub()
TMP = Path(tempfile.mkdtemp(prefix="icmlm-bench-"))
os.environ.update(HF_ENDPOINT=HUB.url, HF_HUB_CACHE=str(TMP / "hf"), ICMLM_ZOO_CACHE=str(TMP / "zoo"),
                  HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    # imported here, after the environment above points the Hub client at the stand-in (read when imported)
    import timm
    import torch
    from common import report, time_it
    from safetensors.torch import load_file, save

    import icmlm_zoo  # noqa: F401
    from icmlm_zoo.manifest import SHIPPED_MANIFEST

    torch.manual_seed(0)
    data = save({k: v.contiguous() for k, v in timm.create_model("icmlm_resnet50").state_dict().items()})
    sha = HUB.commit("icmlm-bench/r50", {"model.safetensors": data})
    manifest = json.loads(SHIPPED_MANIFEST.read_text())
    entry = dict(manifest["weights"][0], tag="bench", status="published", default=False, hub={
        "repo": "icmlm-bench/r50", "revision": sha, "filename": "model.safetensors",
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    manifest["weights"].append(entry)
    (TMP / "manifest.json").write_text(json.dumps(manifest))
    os.environ["ICMLM_ZOO_MANIFEST"] = str(TMP / "manifest.json")

    timm.create_model("icmlm_resnet50.bench", pretrained=True)  # cold: download + hash, not timed
    cached = next((TMP / "hf").rglob("model.safetensors"))
    n_requests = len(HUB.requests)

    def ours():
        timm.create_model("icmlm_resnet50.bench", pretrained=True)

    def plain():
        m = timm.create_model("resnet50", num_classes=0)
        m.load_state_dict(load_file(str(cached)))

    t_plain = time_it(plain, repeats=args.repeats)
    t_ours = time_it(ours, repeats=args.repeats)
    t_plain2 = time_it(plain, repeats=args.repeats)  # bracket ours to cancel drift on a shared machine
    base = min(t_plain["median_s"], t_plain2["median_s"])
    ratio = t_ours["median_s"] / base
    rows = [["plain timm resnet50 + safetensors load_state_dict", f"{base:.3f}", "1.00"],
            ["icmlm_zoo create_model(pretrained=True), warm cache", f"{t_ours['median_s']:.3f}", f"{ratio:.2f}"]]
    goals = [{"goal": "P3 warm pretrained load / plain load", "measured": ratio, "target": "<= 1.1",
              "met": ratio <= 1.1}]
    report("loading", "P3: loading ResNet-50 weights (warm cache)", ["path", "median s", "ratio"], rows, goals,
           extra={"network_requests_during_timed_loads": len(HUB.requests) - n_requests})
    HUB.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
