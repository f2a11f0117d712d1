"""The grounding probes (icmlm-eval grounding) scored on scripted heads whose answers are known: an oracle that
looks at the named object and reads its colour, a bag-of-colours head that looks anywhere, and a blind head."""
from __future__ import annotations

import numpy as np
import pytest

from icmlm_zoo.analysis.grounding import binding_attention, binding_items, grounding_scores
from icmlm_zoo.training.data.synthetic import SyntheticScenes

SCENES = SyntheticScenes(60, 96, seed=20_001)


def _attention_on(box, size=96, grid=3):
    """A (grid, grid) attention whose peak cell holds the centre of ``box``."""
    a = np.full((grid, grid), 0.01)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a[min(grid - 1, int(cy * grid / size)), min(grid - 1, int(cx * grid / size))] = 1.0
    return a


def test_binding_attention_tells_binding_from_a_bag_of_colours():
    items = binding_items(SCENES)
    assert len(items) > 10 and all(len(it["targets"]) == it["n_objects"] >= 2 for it in items)
    oracle = [{"masks": [{"topk_tokens": [t], "attention": _attention_on(it["boxes"][t])} for t in it["targets"]]}
              for it in items]
    res = binding_attention(items, oracle)
    assert res["binding_peak_on_named"] == 1.0 and res["binding_top1_peak_on_named"] == 1.0
    # a bag-of-colours head: looks at the first object the caption names, answers with the first colour
    bag = [{"masks": [{"topk_tokens": [it["targets"][0]], "attention": _attention_on(it["boxes"][it["targets"][0]])}
                      for _ in it["targets"]]} for it in items]
    res = binding_attention(items, bag)
    n = sum(len(it["targets"]) for it in items)
    assert res["binding_peak_on_named"] == pytest.approx(len(items) / n)
    assert res["binding_top1_peak_on_other"] == 0.0 and res["binding_follows_peak"] == 1.0


def test_grounding_scores_of_a_blind_head_sit_at_its_control():
    """A head that ignores the image (always 'red', flat attention) scores the same with shuffled images, has
    no image-use gap, and binds no better than a bag of colours."""
    def blind(images, captions):
        return [{"masks": [{"topk_tokens": ["red"], "attention": np.ones((3, 3)) / 9}
                           for _ in range(c.count("[MASK]"))]} for c in captions]
    res = grounding_scores(blind, SCENES, batch_size=16)
    assert res["visual_top1"] == res["visual_top1_shuffled"] and res["image_use_gap"] == 0.0
    assert res["binding_top1"] == res["binding_top1_shuffled"] < res["binding_bag_of_colors"]
    assert 0.2 < res["visual_chance"] < 0.5 and res["binding_chance"] == pytest.approx(1 / 6)
    assert res["n_visual"] == len(SCENES) and res["n_binding"] > 20


def test_binding_diagnosis_draws_mix_batches_at_the_asked_dose():
    """The dose check of docs/training.md rests on this: a 'mix' batch holds binding items at the given share."""
    import numpy as np

    from icmlm_zoo.analysis.fresh_heads import draw_batch
    single, binding = [{"kind": "single"}] * 50, [{"kind": "binding"}] * 7
    rng = np.random.default_rng(0)
    batches = [draw_batch((single, binding, 0.11), 32, rng) for _ in range(400)]
    assert all(len(b) == 32 for b in batches)
    share = np.mean([sum(d["kind"] == "binding" for d in b) / 32 for b in batches])
    assert abs(share - 0.11) < 0.01
    one_pool = draw_batch(single[:5], 32, rng)  # a pool smaller than the batch: each item once
    assert len(one_pool) == 5
