"""The K-step report: every number from the chains (``summarize``), the Markdown table, the plot."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from self_improve.kstep.chains import Chain


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def summarize(chains: Sequence[Chain], steps: int) -> dict[str, Any]:
    """Every reported number, from the chains alone (definitions: docs/k-step-eval.md, "Numbers reported").
    ``accuracy`` is the solved share; when the iterates carry a taskset's ``return``, each step also
    reports ``mean_return`` (avg@r) and the summary ``delta_K_return``."""
    by_question: dict[str, list[Chain]] = defaultdict(list)
    for chain in chains:
        by_question[chain.question.question_id].append(chain)
    scored = any("return" in it for chain in chains for it in chain.iterates)  # a taskset run: returns too
    rates: list[dict[str, float]] = [{} for _ in range(steps + 1)]  # step -> question -> p_qk
    returns: list[dict[str, float]] = [{} for _ in range(steps + 1)]  # step -> question -> mean return
    per_step: list[dict[str, Any]] = []
    cumulative, cumulative_fraction = 0, 0.0
    for k in range(steps + 1):
        valid = [c for c in chains if len(c.iterates) > k]
        for question_id, group in by_question.items():
            flags = [c.iterates[k]["correct"] for c in group if len(c.iterates) > k]
            if flags:
                rates[k][question_id] = sum(flags) / len(flags)
            if scored and flags:
                returns[k][question_id] = statistics.fmean(c.iterates[k]["return"] for c in group
                                                           if len(c.iterates) > k)
        accuracy, stderr = _mean_se(list(rates[k].values()))
        row: dict[str, Any] = {"step": k, "kinds": dict(Counter(c.iterates[k]["kind"] for c in valid)),
                               "n_valid": len(valid), "n_questions": len(rates[k]),
                               "correct": sum(c.iterates[k]["correct"] for c in valid),
                               "accuracy": accuracy, "stderr": stderr}
        if scored:
            row["mean_return"], row["mean_return_stderr"] = _mean_se(list(returns[k].values()))
        if k >= 1:
            fixed = sum(not c.iterates[k - 1]["correct"] and c.iterates[k]["correct"] for c in valid)
            broken = sum(c.iterates[k - 1]["correct"] and not c.iterates[k]["correct"] for c in valid)
            fixed_fraction = fixed / len(valid) if valid else 0.0
            broken_fraction = broken / len(valid) if valid else 0.0
            cumulative += fixed - broken
            cumulative_fraction += fixed_fraction - broken_fraction
            row |= {"incorrect_to_correct": fixed, "correct_to_incorrect": broken, "net": fixed - broken,
                    "incorrect_to_correct_frac": fixed_fraction, "correct_to_incorrect_frac": broken_fraction,
                    "net_frac": fixed_fraction - broken_fraction,
                    "cumulative_net": cumulative, "cumulative_net_frac": cumulative_fraction}
        per_step.append(row)
    first, last = per_step[0]["accuracy"], per_step[-1]["accuracy"]
    paired = [rates[steps][q] - rates[0][q] for q in rates[steps] if q in rates[0]]
    statuses = Counter(chain.status(steps) for chain in chains)
    if scored:
        first_return, last_return = per_step[0]["mean_return"], per_step[-1]["mean_return"]
        extra = {"delta_K_return": None if first_return is None or last_return is None else last_return - first_return,
                 "delta_K_return_stderr": _mean_se([returns[steps][q] - returns[0][q] for q in returns[steps]
                                                    if q in returns[0]])[1]}
    else:
        extra = {}
    return {
        "num_questions": len(by_question), "samples": max((c.sample for c in chains), default=-1) + 1,
        "steps": steps, "chains": len(chains), "done": statuses["done"], "errors": statuses["error"],
        "unfinished": statuses["unfinished"],
        "delta_K": None if first is None or last is None else last - first,
        "delta_K_stderr": _mean_se(paired)[1],
        **extra,
        "per_step": per_step,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown_table(summary: dict[str, Any]) -> str:
    """The stdout report: one row per step, then Delta_K and chain counts."""
    scored = "delta_K_return" in summary
    label, extra_head = ("solved (avg@r)", " mean return |") if scored else ("accuracy (avg@r)", "")
    lines = [f"| step | prompt | valid | {label} | ± s.e. |{extra_head} i→c | c→i | net | cum. net | cum. net % |",
             "|---:|---|---:|---:|---:|" + ("---:|" if scored else "") + "---:|---:|---:|---:|---:|"]
    for row in summary["per_step"]:
        kinds = " + ".join(f"{kind} {count}" for kind, count in sorted(row["kinds"].items())) or "-"
        moves = ([str(row[key]) for key in ("incorrect_to_correct", "correct_to_incorrect", "net", "cumulative_net")]
                 + [_percent(row["cumulative_net_frac"])] if row["step"] else ["-"] * 5)
        mean = row.get("mean_return")
        extra = (" n/a |" if mean is None else f" {mean:.3f} |") if scored else ""
        lines.append(f"| {row['step']} | {kinds} | {row['n_valid']} | {_percent(row['accuracy'])} | "
                     f"{_percent(row['stderr'])} |{extra} " + " | ".join(moves) + " |")
    delta = summary["delta_K"]
    delta_text = "n/a" if delta is None else f"{100 * delta:+.1f} points (± {_percent(summary['delta_K_stderr'])})"
    if scored:
        moved = summary["delta_K_return"]
        delta_text += "; mean return " + ("n/a" if moved is None else f"{moved:+.3f}") + \
            f" (r_max {summary['max_return']:g}, solved at return >= {summary['threshold']:g})"
    lines += ["", f"Δ_K = acc_{summary['steps']} − acc_0 = {delta_text}; "
              f"{summary['num_questions']} questions × {summary['samples']} samples = {summary['chains']} chains: "
              f"{summary['done']} done, {summary['errors']} errors, {summary['unfinished']} unfinished"]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Two panels: accuracy per step with ± s.e., and cumulative net corrections (Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["per_step"]
    steps = [row["step"] for row in rows if row["accuracy"] is not None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(steps, [100 * rows[k]["accuracy"] for k in steps],
                  yerr=[100 * (rows[k]["stderr"] or 0.0) for k in steps], marker="o", capsize=3)
    left.set(xlabel="step k", ylabel="accuracy (%)", title="Accuracy after each step (avg@r ± s.e.)")
    moves = rows[1:]
    right.plot([0] + [row["step"] for row in moves], [0.0] + [100 * row["cumulative_net_frac"] for row in moves],
               marker="o", label="cumulative net")
    right.bar([row["step"] - 0.15 for row in moves], [100 * row["incorrect_to_correct_frac"] for row in moves],
              width=0.3, alpha=0.5, label="incorrect→correct")
    right.bar([row["step"] + 0.15 for row in moves], [-100 * row["correct_to_incorrect_frac"] for row in moves],
              width=0.3, alpha=0.5, label="correct→incorrect (negative)")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set(xlabel="step k", ylabel="% of chains", title="Net corrections")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.set_xticks(range(summary["steps"] + 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
