"""Training curves: ``RUN/metrics.csv`` drawn into a PNG (matplotlib's object API; no global backend switch)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from icmlm_zoo.cli_support import MissingExtraError, require_extras

__all__ = ["read_metrics", "build_figure", "plot_metrics", "plot_run", "plot_run_quietly"]
# matplotlib (the [train] extra) is imported where a figure is drawn: reading metrics and a run's end without it
# stay possible (a one-line note instead of the PNG).

# (column, label) per panel; a series is drawn when its column has a value in some row of that split.
LOSS = [("loss", "loss")]
ACCURACY = [("top1", "masked-word top-1"), ("visual_top1", "visual-word top-1"),
            ("visual_top1_shuffled", "visual-word top-1, shuffled images"),
            ("majority_baseline", "majority-word baseline"), ("visual_chance", "visual-word chance")]
BASELINES = {"majority_baseline", "visual_chance"}  # drawn dashed
GAP = [("image_use_gap", "image-use gap")]


def read_metrics(path: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{split: {column: [(step, value), ...]}}`` from a metrics.csv; blank cells are skipped and a step
    written twice (a resumed run) keeps its last row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; give a run folder written by icmlm-train (it holds metrics.csv)")
    rows: dict[str, dict[int, dict[str, str]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row.get("step") or "")
            except ValueError:
                continue
            rows.setdefault(row.get("split") or "train", {})[step] = row
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for split, by_step in rows.items():
        cols: dict[str, list[tuple[int, float]]] = {}
        for step in sorted(by_step):
            for k, v in by_step[step].items():
                if k in ("step", "split") or v in (None, ""):
                    continue
                try:
                    cols.setdefault(k, []).append((step, float(v)))
                except ValueError:
                    continue
        out[split] = cols
    if not any(out.values()):
        raise ValueError(f"{path} holds no metric rows yet; plot again once the run has logged a step")
    return out


def _step_range(metrics: dict) -> tuple[float, float]:
    """The x-axis every panel shares: from step 0 to the run's last logged step (one point is not a range)."""
    last = max((st for cols in metrics.values() for pts in cols.values() for st, _ in pts), default=1)
    return 0.0, float(max(last, 1)) * 1.02


def _draw(ax, metrics: dict, series: list[tuple[str, str]], ylabel: str) -> bool:
    drawn = False
    for split, style in (("train", "-"), ("val", "o-")):
        for col, label in series:
            pts = metrics.get(split, {}).get(col)
            if not pts:
                continue
            steps, vals = zip(*pts)
            name = f"{split} {label}"
            if col in BASELINES and len(set(vals)) == 1:  # a constant level: a dashed line across the panel
                ax.axhline(vals[0], linestyle="--", color="0.4", linewidth=1.2, label=name)
            else:
                one = len(pts) == 1  # a single point stays visible: a line needs two
                ax.plot(steps, vals, linestyle="--" if col in BASELINES else "-", label=name, markersize=4,
                        marker="o" if one or style == "o-" else None, alpha=0.8 if split == "train" else 1.0)
            drawn = True
    if drawn:
        ax.set_xlim(*_step_range(metrics))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return drawn


def build_figure(metrics: dict, *, title: str = ""):
    """The curves figure (a matplotlib ``Figure``, not drawn to any screen): loss, accuracies and, when logged,
    the image-use gap, side by side on one step axis."""
    require_extras("the training-curve plot", ["train"], ["matplotlib"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional ([train]): only the plot needs it
    from matplotlib.figure import Figure

    panels = [(LOSS, "loss"), (ACCURACY, "top-1 accuracy")]
    if any(metrics.get(s, {}).get(c) for s in metrics for c, _ in GAP):
        panels.append((GAP, "top-1 (images) - top-1 (shuffled images)"))
    fig = Figure(figsize=(5 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (series, ylabel) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        if not _draw(ax, metrics, series, ylabel):
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {ylabel} logged", ha="center", va="center")
    if title:
        fig.suptitle(title)
    return fig


def plot_metrics(metrics: dict, out: str | Path, *, title: str = "") -> Path:
    """Draw loss, accuracies and (when logged) the image-use gap side by side into the PNG ``out``."""
    fig = build_figure(metrics, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Write ``RUN/curves.png`` (or ``out``) from ``RUN/metrics.csv``; returns the PNG's path."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} not found")
    return plot_metrics(read_metrics(run / "metrics.csv"), out or run / "curves.png", title=run.name)


def plot_run_quietly(run: str | Path) -> Path | None:
    """The end-of-run curve: prints its path; a missing matplotlib or an empty log is a one-line note, never a
    failed run."""
    try:
        path = plot_run(run)
    except (MissingExtraError, ValueError, FileNotFoundError, OSError) as e:
        print(f"note: no training-curve PNG: {e}", file=sys.stderr)
        return None
    print(f"training curves: {path}", flush=True)
    return path
