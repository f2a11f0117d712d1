"""Image/caption pairs listed in a JSONL or CSV/TSV file.

JSONL: one object per line with ``image`` (path, relative to ``image_root`` or to the file's folder) and
``caption``; optional ``labels`` (list of category names). CSV/TSV: a header with ``image`` and ``caption``
columns (optional ``labels`` separated by ``|``). Bad rows (not UTF-8, not JSON, ...) are skipped and counted
with their ``file:line``, never fatal.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from .records import Record, SampleError

log = logging.getLogger("icmlm-train")

__all__ = ["read_pairs", "read_pairs_checked", "PairsSource"]


Row = tuple[str, "str | None", "list[str] | None"]


def read_pairs(path: str | Path) -> list[Row]:
    """Parse a pairs file into ``(image, caption, labels)`` rows; bad rows keep a ``None`` caption."""
    return read_pairs_checked(path)[0]


def read_pairs_checked(path: str | Path) -> tuple[list[Row], dict[int, str]]:
    """Rows of a pairs file plus its bad rows: ``{row index: "file:line: what is wrong"}``.

    A bad row (not UTF-8, not a JSON object, no ``image``) stays in place with a ``None`` caption, so it is
    skipped and counted when loaded (``bad_row``) like any other bad sample instead of stopping the run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} not found")
    rows: list[Row] = []
    bad: dict[int, str] = {}

    def add_bad(line: int, what: str, image: str = "") -> None:
        bad[len(rows)] = f"{path}:{line}: {what}"
        rows.append((image, None, None))

    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                    image = str(obj["image"])
                except UnicodeDecodeError:
                    add_bad(n, "not UTF-8 text")
                    continue
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    add_bad(n, f"not a JSON object with an 'image' field ({type(e).__name__}: {e})")
                    continue
                cap = obj.get("caption")
                rows.append((image, cap if isinstance(cap, str) else None, obj.get("labels")))
        return rows, bad
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    # undecodable bytes become lone surrogates (surrogateescape), found per row below
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=delim)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the header must name 'image' and 'caption' columns, "
                             f"got {reader.fieldnames}")
        if any(_undecodable(h) for h in reader.fieldnames):
            raise ValueError(f"{path}:1: the header is not UTF-8 text")
        for row in reader:
            values = [v for v in row.values() if isinstance(v, str)]
            if any(_undecodable(v) for v in values):
                add_bad(reader.line_num, "not UTF-8 text")
            elif row.get("image") is None or row.get("caption") is None:
                add_bad(reader.line_num, "too few columns")
            else:
                labels = row.get("labels")
                rows.append((row["image"], row["caption"], labels.split("|") if labels else None))
    return rows, bad


def _undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


class PairsSource:
    """Record source over a pairs file."""

    def __init__(self, file: str | Path, image_root: str | Path | None = None) -> None:
        self.file = Path(file)
        self.rows, self.bad_rows = read_pairs_checked(self.file)
        if not self.rows:
            raise ValueError(f"pairs file {self.file} lists no samples")
        if self.bad_rows:
            shown = list(self.bad_rows.values())[:5]
            log.warning("%d bad row(s) in %s will be skipped and counted (bad_row): %s%s", len(self.bad_rows),
                        self.file, "; ".join(shown), "; ..." if len(self.bad_rows) > 5 else "")
        self.root = Path(image_root) if image_root else self.file.parent
        names = sorted({label for _, _, labels in self.rows if labels for label in labels})
        self._labels = names

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, i: int) -> str:
        return self.rows[i][1] or ""

    def record(self, i: int) -> Record:
        if i in self.bad_rows:
            raise SampleError("bad_row", self.bad_rows[i])
        image, caption, labels = self.rows[i]
        if caption is None:
            raise SampleError("bad_caption", f"row {i}: caption missing or not text")
        return Record(image_path=self.root / image, caption=caption, labels=labels)

    def label_names(self) -> list[str]:
        return self._labels
