"""Image/caption pairs listed in a JSONL or CSV/TSV file.

JSONL: one object per line with ``image`` (path, relative to ``image_root`` or to the file's folder) and
``caption``; optional ``labels`` (list of category names). CSV/TSV: a header with ``image`` and ``caption``
columns (optional ``labels`` separated by ``|``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .records import Record, SampleError

__all__ = ["read_pairs", "PairsSource"]


def read_pairs(path: str | Path) -> list[tuple[str, str, list[str] | None]]:
    """Parse a pairs file into ``(image, caption, labels)`` rows; malformed rows keep an empty caption
    (so they are counted as failures at load time rather than silently dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} not found")
    rows: list[tuple[str, str, list[str] | None]] = []
    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                    image = str(obj["image"])
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: not a JSON object with an 'image' field ({e})") from e
                cap = obj.get("caption")
                rows.append((image, cap if isinstance(cap, str) else None, obj.get("labels")))
    else:
        delim = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="", encoding="utf-8", errors="strict") as f:
            reader = csv.DictReader(f, delimiter=delim)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: the header must name 'image' and 'caption' columns, "
                                 f"got {reader.fieldnames}")
            for row in reader:
                labels = row.get("labels")
                rows.append((row["image"], row["caption"], labels.split("|") if labels else None))
    return rows


class PairsSource:
    """Record source over a pairs file."""

    def __init__(self, file: str | Path, image_root: str | Path | None = None) -> None:
        self.file = Path(file)
        self.rows = read_pairs(self.file)
        if not self.rows:
            raise ValueError(f"pairs file {self.file} lists no samples")
        self.root = Path(image_root) if image_root else self.file.parent
        names = sorted({l for _, _, ls in self.rows if ls for l in ls})
        self._labels = names

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, i: int) -> str:
        return self.rows[i][1] or ""

    def record(self, i: int) -> Record:
        image, caption, labels = self.rows[i]
        if caption is None:
            raise SampleError("bad_caption", f"row {i}: caption missing or not text")
        return Record(image_path=self.root / image, caption=caption, labels=labels)

    def label_names(self) -> list[str]:
        return self._labels
