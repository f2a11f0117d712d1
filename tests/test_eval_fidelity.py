"""The fidelity experiment's --quick mode end to end, and the probes it relies on."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")


def test_scene_targets_bind_attributes_to_named_objects():
    from icmlm_zoo.analysis.scene_probes import scene_targets
    from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SyntheticScenes

    scenes = SyntheticScenes(200, 64, seed=123)
    t = scene_targets(scenes)
    checked = 0
    for i in range(len(scenes)):
        objs = scenes.objects(i)
        for s in SHAPES:
            owners = [o for o in objs if o["shape"] == s]
            if len(objs) >= 2 and len(owners) == 1:
                assert COLORS[t["binding"][s][i]] == owners[0]["color"]
                checked += 1
            else:
                assert t["binding"][s][i] == -1
        for (a, b, rel), y in t["relation"].items():
            if y[i] >= 0:
                oa = next(o for o in objs if o["shape"] == a)
                ob = next(o for o in objs if o["shape"] == b)
                axis = 1 if rel == "left" else 0
                assert y[i] == int(oa["cell"][axis] < ob["cell"][axis])
    assert checked > 100
    assert set(np.unique(t["count"])) == {1, 2, 3}


def test_fidelity_quick_writes_the_table(tmp_path, text_side, capsys):  # noqa: F811 (the fixture)
    from icmlm_zoo.analysis.fidelity import VARIANTS, main

    assert main(["--out", str(tmp_path), "--quick", "--seeds", "0", "1"]) == 0
    res = json.loads((tmp_path / "fidelity.json").read_text())
    assert set(res["rows"]) == {*VARIANTS, "random init"}
    for name, row in res["rows"].items():
        for key in ("presence_mAP", "count_acc", "binding_acc", "relation_acc"):
            mean, std = row[key]
            assert 0 <= mean <= 1 and std >= 0, (name, key)
        assert ("visual_top1" in row) == name.startswith("ICMLM"), name
    assert len(res["per_seed"]["TP_postag"]) == 2
    assert 0 < res["chance"]["binding_acc"] < 0.5 and res["chance"]["visual_chance"] > 0
    md = (tmp_path / "fidelity.md").read_text()
    assert "| random init |" in md and "| *chance* |" in md and "QUICK" in md
    # finished runs are reused: a second call trains nothing and gives the same table
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("*.pt")}
    assert main(["--out", str(tmp_path), "--quick", "--seeds", "0", "1"]) == 0
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("*.pt")} == before
