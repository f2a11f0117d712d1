"""bench_step.py's verdicts: the table rows with each variant's ratio (vs the bare step; a straightforward
step vs its optimised one), and the P1 / P1c / P2 goals."""
from __future__ import annotations

import statistics

GOALS = {"P1 att-fc": 1.25, "P1 tfm": 1.5, "P1c att-fc warm cache": 1.05, "P2": 1.5}


def _ratio(a: str, b: str, t: dict) -> tuple[float, float]:
    per_round = [x / y for x, y in zip(t[a], t[b])]
    return statistics.median(per_round), statistics.median(t[a]) / statistics.median(t[b])


def step_table(args, variants, precisions, times, wall) -> tuple[list, dict]:
    """The table's rows and each variant's ratios (vs bare; a straightforward step vs its optimised one)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    rows, ratios = [], {}
    for prec in precisions:
        base = f"{prec}/bare"
        for p, lab, _ in variants:
            if p != prec:
                continue
            k = f"{prec}/{lab}"
            ref = base
            vs = "bare"
            if "straightforward" in lab and f"{prec}/{lab.split()[0]}" in times:
                ref, vs = f"{prec}/{lab.split()[0]}", lab.split()[0]
            r_round, r_med = _ratio(k, ref, times)
            w_round, _ = _ratio(k, ref, wall)
            ratios[k] = {"vs": f"{prec}/{vs}", "median_of_round_ratios": r_round, "ratio_of_medians": r_med,
                         "wall_median_of_round_ratios": w_round}
            ips = args.batch / med[k] if lab != "text encoder alone" else None
            rows.append([prec, lab, f"{med[k]:.3f}", f"{min(times[k]):.3f}", f"{ips:.2f}" if ips else "-",
                         f"{r_round:.3f} vs {vs}" if k != base else "1.000",
                         f"{w_round:.3f}" if k != base else "1.000"])
    return rows, ratios


def step_goals(precisions: list[str], heads: list[str], ratios: dict) -> list[dict]:
    """The P1 / P1c / P2 verdicts from the ratios."""
    goals = []
    for prec in precisions:
        for kind, goal in (("attfc", "P1 att-fc"), ("tfm", "P1 tfm")):
            if f"{prec}/{kind}" in ratios:
                r = ratios[f"{prec}/{kind}"]["median_of_round_ratios"]
                goals.append({"goal": f"{goal} step / bare step ({prec})", "measured": r,
                              "target": f"<= {GOALS[goal]}", "met": r <= GOALS[goal]})
        if f"{prec}/attfc+cache" in ratios:
            r = ratios[f"{prec}/attfc+cache"]["median_of_round_ratios"]
            goals.append({"goal": f"P1c att-fc warm text cache / bare ({prec})", "measured": r, "target": "<= 1.05",
                          "met": r <= 1.05})
        for kind in heads:
            if f"{prec}/{kind} straightforward" in ratios:
                r = ratios[f"{prec}/{kind} straightforward"]["median_of_round_ratios"]
                goals.append({"goal": f"P2 {kind} straightforward / optimized ({prec})", "measured": r,
                              "target": ">= 1.5", "met": r >= 1.5})
    return goals
