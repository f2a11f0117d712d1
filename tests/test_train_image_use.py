"""The image-use controls of every evaluation: shuffled images, visual words, blind chance, the gap."""
from __future__ import annotations

import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from train_fixtures import tiny_args

from icmlm_zoo.training.distributed import DistInfo
from icmlm_zoo.training.validation import evaluate, visual_words_for


class _Oracle(nn.Module):
    """Predicts, for each masked token, the word id written into pixel (0, 0) of its image; ``blind`` ignores
    the image and always predicts the first caption's answer."""

    def __init__(self, vocab: int, blind: bool = False) -> None:
        super().__init__()
        self.vocab, self.blind = vocab, blind

    def forward(self, images, input_ids=None, attention_mask=None, labels=None, tp=None):
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        ids = images[:, 0, 0, 0].long()[rows]
        if self.blind:
            ids = torch.full_like(ids, int(labels[0][labels[0] != -100][0]))
        logits = F.one_hot(ids, self.vocab).float()
        targets = labels[rows, cols]
        loss = F.cross_entropy(logits, targets)
        return {"logits": logits, "targets": targets, "mlm_loss": loss, "loss": loss}


def _batches(tok, words: list[str]) -> list[dict]:
    ids = tok.convert_tokens_to_ids(words)
    images = torch.zeros(len(ids), 3, 4, 4)
    images[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
    input_ids = torch.tensor([[101, tok.mask_token_id, 102]] * len(ids))
    labels = torch.full_like(input_ids, -100)
    labels[:, 1] = torch.tensor(ids)
    return [{"n": len(ids), "images": images, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "labels": labels}]


def test_shuffled_images_expose_what_the_image_gave(text_side):
    tok = text_side.tokenizer
    words = ["red", "green", "blue", "circle", "square", "small", "red", "picture"]
    loader = _batches(tok, words)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    kw = dict(amp="none", max_batches=5, info=info, tokenizer=tok, visual=visual_words_for("synthetic"))
    seeing = evaluate(_Oracle(len(tok)), loader, **kw)
    assert seeing["top1"] == 1.0 and seeing["visual_top1"] == 1.0
    assert seeing["visual_n"] == 7  # "picture" is not a visual word
    # each caption met the previous image, whose word differs from its own
    assert seeing["visual_top1_shuffled"] == 0.0 and seeing["image_use_gap"] == 1.0
    chance = (3 / 6 + 2 / 4 + 1 / 2 + 1 / 6) / 7  # red, green, blue, red: 1/6; shapes 1/4; size 1/2
    assert abs(seeing["visual_chance"] - chance) < 1e-9
    blind = evaluate(_Oracle(len(tok), blind=True), loader, **kw)
    assert blind["image_use_gap"] == 0.0 and blind["top1"] == blind["top1_shuffled"] == 2 / 8


def test_training_run_reports_the_image_use_gap(tmp_path, tag_file, text_side, capsys):
    from icmlm_zoo.training.cli import main
    run = tmp_path / "run"
    assert main(tiny_args(tag_file, "--out", str(run), steps=4, size=32)) == 0
    ev = json.loads((run / "summary.json").read_text())["eval"]
    for key in ("top1_shuffled", "visual_top1", "visual_top1_shuffled", "visual_chance", "image_use_gap"):
        assert key in ev, key
    assert abs(ev["image_use_gap"] - (ev["visual_top1"] - ev["visual_top1_shuffled"])) < 1e-9
    assert "image-use gap" in capsys.readouterr().out
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"visual_top1_shuffled", "image_use_gap"} <= set(header)
