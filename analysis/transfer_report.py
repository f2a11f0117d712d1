"""The transfer table: records of ``DIR/records`` -> mean ± std over seeds, and the targets of issue 19."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["collect", "markdown", "targets"]

ORDER = ["TP_postag", "ICMLM att-fc + TP", "ICMLM tfm + TP", "ICMLM att-fc (no TP)", "random init"]
DETECTION = ["detection shape", "detection shape_colour"]
CLASSIFICATION = ["binding (fine-tuned)", "binding (frozen)"]


def collect(out: Path, *, quick: bool, config: dict[str, Any]) -> dict[str, Any]:
    """Every record in ``out/records`` and their summary ``rows[task][budget][pretraining][metric] = [mean,
    std, n seeds]``."""
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    grouped: dict[tuple, list[dict]] = {}
    for r in records:
        grouped.setdefault((r["task"], str(r["budget"]), r["pretraining"]), []).append(r["metrics"])
    rows: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    for (task, budget, name), ms in grouped.items():
        keys = sorted({k for m in ms for k in m})
        rows.setdefault(task, {}).setdefault(budget, {})[name] = {
            k: [float(np.mean([m[k] for m in ms])), float(np.std([m[k] for m in ms])), len(ms)] for k in keys}
    return {"quick": quick, "config": config, "rows": rows, "records": records,
            "cpu_seconds": round(sum(r["cpu_s"] for r in records), 1)}


def _cell(v: list[float] | None) -> str:
    return "–" if v is None else f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"


def _table(result: dict, task: str, metrics: list[tuple[str, str]]) -> list[str]:
    budgets = sorted(result["rows"].get(task, {}), key=int)
    if not budgets:
        return []
    head = [f"{label} @{b}" for b in budgets for _, label in metrics]
    lines = [f"### {task}", "", "| pretraining | seeds | " + " | ".join(head) + " |",
             "|---|---:|" + "---:|" * len(head)]
    for name in ORDER:
        cells, seeds = [], set()
        for b in budgets:
            row = result["rows"][task][b].get(name, {})
            cells += [_cell(row.get(k)) for k, _ in metrics]
            seeds |= {row[k][2] for k, _ in metrics if k in row}
        if seeds:
            lines.append(f"| {name} | {'/'.join(str(s) for s in sorted(seeds))} | " + " | ".join(cells) + " |")
    return lines + [""]


def targets(result: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) rows for the two AP targets of issue 19."""
    out = []
    rows = result["rows"]
    for task in DETECTION:
        if task not in rows:
            continue
        small = min(rows[task], key=int)
        base = rows[task][small].get("random init", {}).get("AP")
        if base is None:
            continue
        gaps = {n: 100 * (rows[task][small][n]["AP"][0] - base[0]) for n in ORDER
                if n != "random init" and n in rows[task][small]}
        if not gaps:
            continue
        measured = "; ".join(f"{n} {g:+.1f}" for n, g in gaps.items())
        missing = [n for n in ORDER[:-1] if n not in gaps]
        met = ("yes" if all(g >= 10 for g in gaps.values()) else "no") + (
            f" (not measured: {', '.join(missing)})" if missing else "")
        out.append((f"{task} @{small}: every pretraining ≥ random init + 10 AP", measured, met))
    task = "detection shape_colour"
    for budget, row in sorted(rows.get(task, {}).items(), key=lambda kv: int(kv[0])):
        tp = row.get("TP_postag", {}).get("AP")
        for name in ("ICMLM att-fc + TP", "ICMLM tfm + TP"):
            icmlm = row.get(name, {}).get("AP")
            if tp is None or icmlm is None:
                continue
            gap = 100 * (icmlm[0] - tp[0])
            out.append((f"{task} @{budget}: {name} ≥ TP + 2 AP",
                        f"{_cell(icmlm)} vs {_cell(tp)} ({gap:+.1f})", "yes" if gap >= 2 else "no"))
    return out


def markdown(result: dict[str, Any]) -> str:
    """Detection and classification tables (AP / accuracy in %, mean ± std over seeds) and the targets."""
    c = result["config"]
    quick = " (QUICK smoke run, not a result)" if result["quick"] else ""
    lines = [f"# Transfer: fine-tuning on held-out scenes{quick}",
             "", f"Budgets {list(c['budgets'])} labelled scenes; test {c['num_test']} scenes and the same scenes "
             f"through the shifted renderer; detection iterations {c['det_iters']} ({c.get('recipe', 'standard')} "
             f"recipe), classification steps {c['cls_iters']}; {c['image_size']} px. Runs: {c['runs']} "
             f"(pretrainings: {c.get('checkpoint', 'finished')} checkpoints).", ""]
    det = [("AP", "AP"), ("AP50", "AP50"), ("AP_shifted", "shifted AP")]
    lines += _table(result, DETECTION[0], det)
    merged = any("AP_merged" in r["metrics"] for r in result["records"])
    lines += _table(result, DETECTION[1], det + ([("AP_merged", "AP colours merged")] if merged else []))
    cls = [("acc", "acc"), ("acc_shifted", "shifted acc")]
    for task in CLASSIFICATION:
        lines += _table(result, task, cls)
    rows = targets(result)
    if rows:
        lines += ["### Targets (issue 19)", "", "| target | measured | met? |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {ok} |" for t, m, ok in rows]
    lines += ["", f"{len(result['records'])} records, {result['cpu_seconds']:.0f} CPU seconds in all."]
    return "\n".join(lines) + "\n"
