"""Caption masking: whole tag words (all their wordpieces), or BERT-style random masking (ablation)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tags import split_words

__all__ = ["Masked", "SampleSkipped", "CaptionMasker", "tokenize_words"]

IGNORE = -100


def tokenize_words(tokenizer, words: list[str],
                   max_length: int | None = None) -> tuple[list[int], list[int | None], bool]:
    """The one caption tokeniser: ``[CLS]``, every word's wordpieces, ``[SEP]``; returns the token ids, each
    token's word index (None for the specials) and whether the caption was cut to ``max_length`` tokens (the
    final ``[SEP]`` is kept). A word equal to ``tokenizer.mask_token`` is one ``[MASK]`` token."""
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=True)
    ids, wids = list(enc["input_ids"]), list(enc.word_ids())
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids = ids[: max_length - 1] + [ids[-1]]
        wids = wids[: max_length - 1] + [None]
    return ids, wids, truncated


class SampleSkipped(Exception):
    """A caption that is valid but unusable under the configured policy (e.g. it has no tag word)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Masked:
    """One tokenised, masked caption. ``labels`` holds the original id at masked positions, -100 elsewhere."""
    input_ids: list[int]
    labels: list[int]
    masked_words: list[str] = field(default_factory=list)
    truncated: bool = False


class CaptionMasker:
    """Tokenise a caption and mask it.

    ``strategy="tags"``: ``k`` distinct tag words present in the caption (and not cut by truncation) are
    chosen with ``rng`` and all their wordpieces, at every occurrence, replaced by ``[MASK]``; with ``groups``
    (word -> part of speech or word class) every other tag word of a chosen word's group in the caption is
    masked too, in a share ``together_prob`` of the captions. A caption without a tag word raises
    :class:`SampleSkipped` (``no_tag="skip"``) or gets a random alphabetic word masked (``"random_word"``).
    ``strategy="random"``: each non-special token is picked with ``random_prob`` (at least one), then
    80 % [MASK] / 10 % random token / 10 % kept. Captions longer than ``max_length`` tokens are truncated.
    """

    def __init__(self, tokenizer, tags: list[str] | None, *, max_length: int = 40, strategy: str = "tags",
                 k: int = 1, no_tag: str = "skip", random_prob: float = 0.15,
                 groups: dict[str, str] | None = None, together_prob: float = 1.0) -> None:
        if strategy == "tags" and not tags:
            raise ValueError("masking.strategy=tags needs a non-empty tag vocabulary")
        self.tok = tokenizer
        self.tags = set(tags or [])
        self.max_length, self.strategy, self.k = max_length, strategy, k
        self.no_tag, self.random_prob = no_tag, random_prob
        # masking.together: word -> part of speech or word class; a chosen word's group is masked too, in a
        # share together_prob of the captions
        self.groups, self.together_prob = groups, together_prob
        self.mask_id = tokenizer.mask_token_id
        self.special = set(tokenizer.all_special_ids)

    def encode(self, words: list[str]) -> tuple[list[int], list[int | None], bool]:
        """Token ids and word ids (None for specials), truncated to ``max_length`` (:func:`tokenize_words`)."""
        return tokenize_words(self.tok, words, self.max_length)

    def __call__(self, caption: str, rng: np.random.Generator) -> Masked:
        if not isinstance(caption, str):
            raise ValueError(f"caption is not text: {type(caption).__name__}")
        words = split_words(caption.lower())
        if not words:
            raise ValueError("empty caption")
        ids, wids, truncated = self.encode(words)
        labels = [IGNORE] * len(ids)
        if self.strategy == "random":
            return self._random(ids, labels, words, truncated, rng)
        # words whose wordpieces are all kept after truncation
        complete = set(w for w in wids if w is not None)
        if truncated:
            complete.discard(wids[-2])  # the last kept word may be cut
        # candidates are distinct words; a chosen word is masked at EVERY occurrence (else the encoder would
        # see the answer elsewhere in the caption), and only if every occurrence survived truncation
        cut = {words[i] for i in set(range(len(words))) - complete}
        cand = sorted({words[i] for i in complete if words[i] in self.tags} - cut)
        if not cand:
            if self.no_tag == "skip":
                raise SampleSkipped("no_tag")
            cand = sorted({words[i] for i in complete if words[i].isalpha()} - cut)
            if not cand:
                raise SampleSkipped("no_word")
        chosen = {str(c) for c in rng.choice(cand, size=min(self.k, len(cand)), replace=False)}
        if self.groups and (self.together_prob >= 1.0 or rng.random() < self.together_prob):
            together = {self.groups.get(c) for c in chosen} - {None, ""}
            chosen |= {c for c in cand if self.groups.get(c) in together}
        out = list(ids)
        for p, w in enumerate(wids):
            if w is not None and words[w] in chosen:
                labels[p] = ids[p]
                out[p] = self.mask_id
        return Masked(out, labels, sorted(chosen), truncated)

    def _random(self, ids, labels, words, truncated, rng) -> Masked:
        positions = [p for p, t in enumerate(ids) if t not in self.special]
        if not positions:
            raise ValueError("caption has no tokens")
        pick = [p for p in positions if rng.random() < self.random_prob] or [int(rng.choice(positions))]
        out = list(ids)
        vocab = len(self.tok)
        for p in pick:
            labels[p] = ids[p]
            r = rng.random()
            if r < 0.8:
                out[p] = self.mask_id
            elif r < 0.9:
                out[p] = int(rng.integers(0, vocab))
        return Masked(out, labels, [], truncated)
