"""Side-by-side comparison of checkpoints on the held-out probes and the pointing game (one table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from icmlm_zoo.backbone_factory import describe, source_of
from icmlm_zoo.cli_support import require_extras
from icmlm_zoo.evaluation.reporting import markdown_table

from .pointing_game import run_pointing_game
from .scene_probes import COMPARE_TASKS, run_probes

# matplotlib (the [eval] extra) is imported inside plot(): the table needs only the probes

COMPARE_COLUMNS = [(t.key, t.label) for t in COMPARE_TASKS]  # the probe columns of the table and the figure
POINTING_COLUMNS = [("pointing_acc", "pointing acc"), ("masked_shape_top1", "masked shape top-1")]


def parse_models(items: Sequence[str]) -> list[tuple[str, str]]:
    """``LABEL=SPEC`` or ``SPEC`` items -> ``[(label, spec)]`` (labels must be unique)."""
    out = []
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep or not label or Path(item).exists():
            label, spec = describe(item), item
        out.append((label, spec))
    labels = [lab for lab, _ in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"duplicate model labels {dup}: name them with LABEL=SPEC")
    if len(out) < 1:
        raise ValueError("give at least one model")
    return out


def _is_run(spec: str) -> bool:
    """A folder a backbone source reads (an icmlm-train run), not a weight folder."""
    return source_of(spec) is not None


def compare(models: Sequence[str], *, num_train: int = 300, num_test: int = 200, image_size: int = 96,
            stage: int | str = -1, seed: int = 0, pointing: bool = True, pointing_scenes: int = 200,
            batch_size: int = 32, device: str = "cpu", arch: str | None = None) -> dict[str, Any]:
    """Run the held-out probes (every model) and the pointing game (training runs) with the same fixed seeds."""
    parsed = parse_models(models)
    require_extras("the held-out probes", ["eval"], ["sklearn"])  # before any feature extraction
    if pointing and any(_is_run(spec) for _, spec in parsed):
        require_extras("the pointing game on training runs", ["train"], ["transformers"])
    rows, chance = [], None
    for label, spec in parsed:
        res = run_probes(spec, arch=arch, num_train=num_train, num_test=num_test, image_size=image_size,
                         stage=stage, batch_size=batch_size, seed=seed, device=device)
        chance = res["chance"]
        row = {"label": label, "model": spec, "arch": res["arch"], "stage": res["stage"], **res["metrics"]}
        if pointing and _is_run(spec):
            pg = run_pointing_game(spec, num_scenes=pointing_scenes, seed=seed)
            row.update({k: pg[k] for k in ("pointing_acc", "pointing_chance", "masked_shape_top1", "n_masked")})
        rows.append(row)
    return {"task": "heldout_probes", "rows": rows, "chance": chance, "seed": seed, "num_train": num_train,
            "num_test": num_test, "image_size": image_size, "stage": str(stage), "pointing_scenes": pointing_scenes}


def _columns_and_chance(result: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The columns (pointing ones only when some row has them) and the chance levels (pointing: the rows' mean)."""
    cols = list(COMPARE_COLUMNS)
    if any("pointing_acc" in r for r in result["rows"]):
        cols += POINTING_COLUMNS
    chance = dict(result.get("chance") or {})
    pcs = [r["pointing_chance"] for r in result["rows"] if r.get("pointing_chance") is not None]
    if pcs:
        chance["pointing_acc"] = sum(pcs) / len(pcs)
    return cols, chance


def _fmt(v: Any) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The comparison table (percentages), with a chance row; pointing columns only when some row has them."""
    cols, chance = _columns_and_chance(result)
    rows = [(r["label"], r["arch"], *(_fmt(r.get(k)) for k, _ in cols)) for r in result["rows"]]
    rows.append(("*chance*", "", *(_fmt(chance.get(k)) for k, _ in cols)))
    lines = [f"# Held-out probes on generated scenes (seed {result['seed']}, {result['num_train']} train / "
             f"{result['num_test']} test scenes, {result['image_size']} px)", "",
             *markdown_table(("model", "arch", *(name for _, name in cols)), rows, "ll" + "r" * len(cols))]
    lines += ["", "Presence: mean AP over labels (logistic regression per label); attributes and count: accuracy "
              "(multinomial logistic regression); pointing: attention peak inside the masked object's box. "
              "Scenes are generated with held-out seeds never used for training."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """The table as grouped bars (one group per metric, one bar per model, chance as a black tick), written to
    the PNG ``path`` with matplotlib's object API (the global backend is left as it is)."""
    require_extras("the comparison figure", ["eval"], ["matplotlib"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols, chance = _columns_and_chance(result)
    rows = result["rows"]
    fig = Figure(figsize=(max(6.0, 1.3 * len(cols) * max(1, len(rows)) ** 0.5 + 2), 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        vals = [100 * v if isinstance(v, (int, float)) and v == v else 0.0 for v in (r.get(k) for k, _ in cols)]
        ax.bar([j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))], vals, width, label=r["label"])
    marked = [(j, chance[k]) for j, (k, _) in enumerate(cols) if chance.get(k) is not None]
    for n, (j, c) in enumerate(marked):
        ax.hlines(100 * c, j - 0.4, j + 0.4, colors="black", linestyles="--", label=None if n else "chance")
    ax.set_xticks(range(len(cols)), [name for _, name in cols], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(f"held-out probes (seed {result['seed']}, {result['num_test']} test scenes)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
