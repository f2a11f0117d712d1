"""Write a result as JSON next to its markdown table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


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
