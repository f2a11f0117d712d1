"""Masking invariants: only tag words are masked, all their wordpieces, labels aligned, fresh choices."""
from __future__ import annotations

import numpy as np
import pytest

from icmlm_zoo.training.masking import IGNORE, CaptionMasker, SampleSkipped

CAPTIONS = ["two giraffes grazing near a small red barn", "a skateboarder does a kickflip over the stairs",
            "a plate of broccoli and carrots", "the giraffes stand beside a red barn at sunset"]
TAGS = ["giraffes", "barn", "red", "skateboarder", "kickflip", "broccoli", "carrots", "sunset"]


@pytest.fixture
def masker(text_side):
    return CaptionMasker(text_side.tokenizer, TAGS, max_length=40, k=1)


def _words_of_masked(tok, m):
    pieces = [tok.convert_ids_to_tokens(lab) for lab in m.labels if lab != IGNORE]
    return "".join(p[2:] if p.startswith("##") else " " + p for p in pieces).split()


def test_only_tag_wordpieces_are_masked_and_labels_align(text_side, masker):
    tok = text_side.tokenizer
    rng = np.random.default_rng(0)
    for cap in CAPTIONS:
        original = tok(cap.split(), is_split_into_words=True)["input_ids"]
        for _ in range(20):
            m = masker(cap, rng)
            assert len(m.input_ids) == len(m.labels) == len(original)
            assert len(m.masked_words) == 1 and m.masked_words[0] in TAGS
            for i, (x, lab, o) in enumerate(zip(m.input_ids, m.labels, original)):
                if lab == IGNORE:
                    assert x == o  # unmasked positions untouched
                else:
                    assert x == tok.mask_token_id and lab == o  # label = the original token
            assert _words_of_masked(tok, m) == m.masked_words  # whole word, every wordpiece


def test_multi_piece_word_is_fully_masked(text_side, masker):
    tok = text_side.tokenizer
    assert len(tok.tokenize("kickflip")) > 1
    m = CaptionMasker(tok, ["kickflip"], max_length=40)(CAPTIONS[1], np.random.default_rng(1))
    assert sum(lab != IGNORE for lab in m.labels) == len(tok.tokenize("kickflip"))


def test_choice_is_fresh_each_time_and_k(text_side, masker):
    rng = np.random.default_rng(0)
    chosen = {masker(CAPTIONS[3], rng).masked_words[0] for _ in range(40)}
    assert chosen == {"giraffes", "red", "barn", "sunset"}
    m2 = CaptionMasker(text_side.tokenizer, TAGS, k=2)(CAPTIONS[3], rng)
    assert len(set(m2.masked_words)) == 2
    # same rng seed -> same choice (what makes resume exact)
    a = masker(CAPTIONS[3], np.random.default_rng([0, 1, 2])).masked_words
    b = masker(CAPTIONS[3], np.random.default_rng([0, 1, 2])).masked_words
    assert a == b


def test_no_tag_policy_and_empty_caption(text_side):
    tok = text_side.tokenizer
    rng = np.random.default_rng(0)
    with pytest.raises(SampleSkipped):
        CaptionMasker(tok, TAGS, no_tag="skip")("a man riding a horse", rng)
    m = CaptionMasker(tok, TAGS, no_tag="random_word")("a man riding a horse", rng)
    assert len(m.masked_words) == 1 and m.masked_words[0] in {"a", "man", "riding", "horse"}
    with pytest.raises(ValueError):
        CaptionMasker(tok, TAGS)("   ", rng)


def test_truncation_never_masks_a_cut_word(text_side):
    tok = text_side.tokenizer
    cap = "giraffes " + "very " * 30 + "red barn"
    masker = CaptionMasker(tok, TAGS, max_length=10)
    for s in range(20):
        m = masker(cap, np.random.default_rng(s))
        assert m.truncated and len(m.input_ids) == 10 and m.input_ids[-1] == tok.sep_token_id
        assert m.masked_words == ["giraffes"]


def test_random_bert_style_masking(text_side):
    tok = text_side.tokenizer
    masker = CaptionMasker(tok, None, strategy="random", random_prob=0.15)
    rng = np.random.default_rng(0)
    n_sel = n_tok = n_mask = 0
    special = set(tok.all_special_ids)
    for _ in range(200):
        m = masker(CAPTIONS[0], rng)
        sel = [i for i, lab in enumerate(m.labels) if lab != IGNORE]
        assert sel and all(m.labels[i] not in special for i in sel)
        n_sel += len(sel)
        n_tok += len(m.labels) - 2
        n_mask += sum(m.input_ids[i] == tok.mask_token_id for i in sel)
    assert 0.1 < n_sel / n_tok < 0.3
    assert 0.65 < n_mask / n_sel < 0.95


def test_every_occurrence_of_the_chosen_word_is_masked(text_side):
    """The frozen encoder must never see the answer elsewhere in the caption ("a dog chases another dog")."""
    tok = text_side.tokenizer
    masker = CaptionMasker(tok, ["dog"], max_length=40)
    m = masker("a dog chases another dog", np.random.default_rng(0))
    assert m.masked_words == ["dog"]
    assert tok.convert_tokens_to_ids("dog") not in m.input_ids
    assert sum(lab != IGNORE for lab in m.labels) == 2 * len(tok.tokenize("dog"))
    # a word whose second occurrence is cut by truncation is not a candidate (its answer would be unmaskable)
    short = CaptionMasker(tok, ["dog", "cat"], max_length=8)
    for seed in range(10):
        got = short("a dog and a cat chase the dog", np.random.default_rng(seed))
        assert got.masked_words == ["cat"] and tok.convert_tokens_to_ids("cat") not in got.input_ids


def test_together_pos_masks_every_tag_word_of_the_chosen_part_of_speech(text_side):
    """masking.together=pos: "a [MASK] circle and a [MASK] square" — naming the other colour would let the
    model answer by elimination ("the colour present that the caption does not name") instead of binding."""
    tok = text_side.tokenizer
    groups = {"red": "ADJ", "blue": "ADJ", "small": "ADJ", "circle": "NOUN", "square": "NOUN"}
    masker = CaptionMasker(tok, list(groups), max_length=40, groups=groups)
    seen = set()
    for seed in range(20):
        m = masker("a small red circle and a blue square", np.random.default_rng(seed))
        assert set(m.masked_words) in ({"small", "red", "blue"}, {"circle", "square"})
        seen.add(tuple(m.masked_words))
        for w in m.masked_words:
            assert tok.convert_tokens_to_ids(w) not in m.input_ids
    assert len(seen) == 2
    plain = CaptionMasker(tok, list(groups), max_length=40)
    assert all(len(plain("a small red circle and a blue square", np.random.default_rng(s)).masked_words) == 1
               for s in range(5))


def test_together_class_masks_the_chosen_words_class_in_a_share_of_the_captions(text_side):
    """masking.together=class with the synthetic scenes' word classes: a chosen colour masks every colour the
    caption names, and nothing else ("a small [MASK] circle and a [MASK] square": the shape and size words
    that tell which object each mask belongs to stay visible); together_prob mixes such captions with plain
    single masks."""
    from icmlm_zoo.training.tags import masking_groups
    tok = text_side.tokenizer
    groups = masking_groups("class", tag_file="unused", groups_file=None, data_kind="synthetic")
    assert groups["red"] == groups["blue"] == "color" and groups["circle"] == "shape" and groups["small"] == "size"
    tags = ["small", "red", "blue", "circle", "square"]
    caption = "a small red circle and a blue square"
    always = CaptionMasker(tok, tags, max_length=40, groups=groups)
    classes = {tuple(always(caption, np.random.default_rng(s)).masked_words) for s in range(30)}
    assert classes == {("blue", "red"), ("circle", "square"), ("small",)}
    mixed = CaptionMasker(tok, tags, max_length=40, groups=groups, together_prob=0.5)
    sizes = [len(mixed(caption, np.random.default_rng(s)).masked_words) for s in range(200)]
    grouped = sum(n == 2 for n in sizes) / len(sizes)  # a colour or shape chosen, and its class masked too
    assert 0.2 < grouped < 0.5  # 4 of 5 words have a partner, masked with it in half of the captions: 0.4
    never = CaptionMasker(tok, tags, max_length=40, groups=groups, together_prob=0.0)
    assert all(len(never(caption, np.random.default_rng(s)).masked_words) == 1 for s in range(20))


def test_word_groups_file_and_the_errors_that_say_what_to_do(tmp_path):
    from icmlm_zoo.training.config import DEFAULTS, ConfigError, merge, validate
    from icmlm_zoo.training.tags import load_word_groups, masking_groups
    f = tmp_path / "groups.tsv"
    f.write_text("# word\tclass\nRed\tcolour\nblue\tcolour\ndog\tanimal\n", encoding="utf-8")
    assert load_word_groups(f) == {"red": "colour", "blue": "colour", "dog": "animal"}
    assert masking_groups("class", tag_file="unused", groups_file=str(f), data_kind="coco")["dog"] == "animal"
    assert masking_groups("none", tag_file="unused", groups_file=str(f), data_kind="coco") is None
    f.write_text("red colour\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"groups.tsv:1: expected 'word<TAB>group'"):
        load_word_groups(f)
    with pytest.raises(FileNotFoundError, match="masking.groups_file"):
        load_word_groups(tmp_path / "missing.tsv")
    cfg = merge(DEFAULTS, {"data": {"kind": "coco"}, "masking": {"together": "class"}})
    with pytest.raises(ConfigError, match="masking.groups_file"):
        validate(cfg)
    validate(merge(cfg, {"masking": {"groups_file": str(f)}}))


def test_a_groups_or_tag_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    from icmlm_zoo.training.tags import load_tag_pos, load_tags, load_word_groups
    f = tmp_path / "groups-latin1.tsv"
    f.write_bytes("rouge\tcouleur\nbleu\tcouleur\ncarré\tforme\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"masking.groups_file .*groups-latin1.tsv is not UTF-8 text") as e:
        load_word_groups(f)
    assert "\n" not in str(e.value)
    for read in (load_tags, load_tag_pos):
        with pytest.raises(ValueError, match=r"tag file .*groups-latin1.tsv is not UTF-8 text"):
            read(f)
