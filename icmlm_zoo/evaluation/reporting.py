"""Results as files: JSON next to a markdown table, and the one markdown-table writer every report uses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["write_results", "markdown_table"]


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _clean(obj.item())
    return obj


def write_results(out_dir: str | Path, name: str, result: dict, table: str) -> tuple[Path, Path]:
    """``out_dir/name.json`` (NaN -> null) and ``out_dir/name.md``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(_clean(result), indent=2, sort_keys=False) + "\n")
    md.write_text(table)
    return js, md


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> list[str]:
    """The lines of a markdown table: ``header``, a rule aligning each column (``align``: one ``l`` or ``r`` per
    column) and one line per row (cells as ``str``; an empty cell stays empty)."""
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} must give one 'l' or 'r' per column of {list(header)}")

    def line(cells: Sequence[Any]) -> str:
        return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)

    return [line(header), "|" + "".join("---|" if a == "l" else "---:|" for a in align)] + [line(r) for r in rows]
