"""The numbers of a buffer snapshot or a run, and the terminal text that shows them.

Every number is computed from the instances (or groups) themselves, so a test can recompute it
from the saved state. Sampling probabilities are ``ExitBuffer``'s: exp(kappa S_i) / sum_j exp(kappa S_j).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from self_improve.buffer.exit_buffer import sampling_weights
from self_improve.grouping import Instance
from self_improve.viewer.runlog import GroupRecord
from self_improve.viewer.snapshot import BufferSnapshot

QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
"""Score quantiles shown besides min, mean and max (numpy's linear interpolation)."""


def correctness(instance: Instance) -> str:
    """The chain's correctness as letters, y^0 first: R right, W wrong ("" for a question-only instance)."""
    return "".join("R" if flag else "W" for flag in instance.iterate_correct)


def outcome(instance: Instance) -> str | None:
    """How a chain of depth >= 1 went from y^0 to y^k: ``wrong->right``, ``wrong->wrong``, ``right->right``
    or ``right->wrong``; None for a single iterate or none."""
    if len(instance.iterate_correct) < 2:
        return None
    first, last = instance.iterate_correct[0], instance.iterate_correct[-1]
    return f"{'right' if first else 'wrong'}->{'right' if last else 'wrong'}"


def probabilities(snapshot: BufferSnapshot, kappa: float) -> np.ndarray:
    """Each held instance's chance of being drawn next, in slot order."""
    weights = np.asarray(sampling_weights([instance.score for instance in snapshot.instances], kappa))
    return weights / weights.sum() if len(weights) else weights


def buffer_summary(snapshot: BufferSnapshot, kappa: float | None = None, top: int = 10) -> dict[str, Any]:
    """Size, step, score distribution, depths, distinct tasks, chain outcomes and the ``top`` instances
    by score (ties: older id first) with their sampling probability under ``kappa`` (default the buffer's)."""
    kappa = snapshot.kappa if kappa is None else kappa
    held = snapshot.instances
    scores = np.asarray([instance.score for instance in held], dtype=np.float64)
    depths = Counter(instance.depth for instance in held)
    outcomes = Counter(filter(None, (outcome(instance) for instance in held)))
    chains = sum(outcomes.values())
    chance = probabilities(snapshot, kappa)
    ranked = sorted(range(len(held)), key=lambda slot: (-held[slot].score, held[slot].instance_id))[:top]
    return {
        "source": snapshot.source, "size": len(held), "capacity": snapshot.capacity, "step": snapshot.step,
        "next_id": snapshot.next_id, "kappa": kappa, "saved_kappa": snapshot.kappa,
        "store_responses": snapshot.store_responses,
        "score": _distribution(scores),
        "depth": {"mean": float(np.mean([i.depth for i in held])) if held else 0.0,
                  "max": max(depths, default=0), "counts": {str(depth): depths[depth] for depth in sorted(depths)}},
        "distinct_tasks": len({instance.task.task_id for instance in held}),
        "times_sampled": sum(instance.times_sampled for instance in held),
        "chains": {"depth_at_least_1": chains, "outcomes": dict(sorted(outcomes.items())),
                   "wrong_to_right_share": outcomes["wrong->right"] / chains if chains else 0.0},
        "top": [{"instance_id": held[slot].instance_id, "score": held[slot].score, "probability": float(chance[slot]),
                 "task_id": held[slot].task.task_id, "depth": held[slot].depth,
                 "times_sampled": held[slot].times_sampled, "parent_id": held[slot].parent_id,
                 "correctness": correctness(held[slot])} for slot in ranked],
        "top_probability_mass": float(sum(chance[slot] for slot in ranked)),
    }


def _distribution(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    quantiles = np.quantile(values, QUANTILES)
    return {"min": float(values.min()), **{f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, quantiles,
                                                                                        strict=True)},
            "mean": float(values.mean()), "max": float(values.max())}


def run_summary(groups: Sequence[GroupRecord]) -> dict[str, Any]:
    """Groups, rollouts, step kinds, learnability and depth of buffer-drawn groups, and the buffer
    after the last group, for a run read by ``runlog.read_runs``."""
    drawn = [group for group in groups if group.from_buffer]
    iterations = {flag: [g for g in drawn if g.step != "base" and g.prev_correct == flag] for flag in (False, True)}
    last = groups[-1].buffer if groups else {}
    return {
        "sources": sorted({group.source for group in groups}), "groups": len(groups),
        "rollouts": sum(group.rollouts for group in groups),
        "steps": dict(sorted(Counter(group.step for group in groups).items())),
        "from_buffer_share": len(drawn) / len(groups) if groups else 0.0,
        "learnability_mean": float(np.mean([g.learnability for g in groups])) if groups else 0.0,
        "learnability_mean_from_buffer": float(np.mean([g.learnability for g in drawn])) if drawn else None,
        "depth_mean_from_buffer": float(np.mean([g.depth for g in drawn])) if drawn else None,
        "depth_max": max((group.depth for group in groups), default=0),
        "solved_share": float(np.mean([g.solved for g in groups])) if groups else 0.0,
        "from_wrong": {"groups": len(iterations[False]), "right_share": _solved(iterations[False])},
        "from_right": {"groups": len(iterations[True]), "right_share": _solved(iterations[True])},
        "buffer_after_last_group": last,
    }


def _solved(groups: Sequence[GroupRecord]) -> float | None:
    """Share of right responses over the groups' rollouts (None without groups)."""
    total = sum(group.rollouts for group in groups)
    return sum(group.solved * group.rollouts for group in groups) / total if total else None


def format_buffer(summary: dict[str, Any]) -> str:
    """The buffer summary as aligned plain text."""
    score, depth, chains = summary["score"], summary["depth"], summary["chains"]
    lines = [f"buffer {summary['source']}",
             f"  size {summary['size']} of {summary['capacity']}   step {summary['step']} (groups observed)   "
             f"next id {summary['next_id']}   {'partial histories' if summary['store_responses'] else 'questions'}"]
    if score:
        lines.append("  score S  " + "  ".join(f"{name} {value:.4f}" for name, value in score.items()))
    lines.append(f"  depth    mean {depth['mean']:.2f}  max {depth['max']}   instances by depth: "
                 + ", ".join(f"{k}: {v}" for k, v in depth["counts"].items()))
    lines.append(f"  distinct tasks {summary['distinct_tasks']}   draws of the held instances "
                 f"{summary['times_sampled']}")
    if chains["depth_at_least_1"]:
        lines.append(f"  chains of depth >= 1: {chains['depth_at_least_1']}  ("
                     + ", ".join(f"{k} {v}" for k, v in chains["outcomes"].items())
                     + f"; wrong->right share {chains['wrong_to_right_share']:.1%})")
    kappa_note = "" if summary["kappa"] == summary["saved_kappa"] else f" (the buffer's is {summary['saved_kappa']:g})"
    lines += ["", f"top {len(summary['top'])} by score; P = exp(kappa S) / sum over all held, kappa "
                  f"{summary['kappa']:g}{kappa_note}; together P {summary['top_probability_mass']:.1%}"]
    header = ("id", "score", "P", "task", "depth", "sampled", "parent", "y^0..y^k")
    cells = [[str(row["instance_id"]), f"{row['score']:.4f}", f"{row['probability']:.2%}", row["task_id"],
              str(row["depth"]), str(row["times_sampled"]), "-" if row["parent_id"] is None else str(row["parent_id"]),
              row["correctness"] or "-"] for row in summary["top"]]
    lines += table(header, cells)
    return "\n".join(lines)


def format_run(summary: dict[str, Any]) -> str:
    """The run summary as aligned plain text."""
    def number(value: float | None, form: str) -> str:
        return "n/a" if value is None else format(value, form)

    buffer = summary["buffer_after_last_group"]
    lines = [f"run {', '.join(summary['sources'])}",
             f"  groups {summary['groups']}   rollouts {summary['rollouts']}   steps "
             + ", ".join(f"{k} {v}" for k, v in summary["steps"].items())
             + f"   drawn from the buffer {summary['from_buffer_share']:.1%}",
             f"  learnability mean {summary['learnability_mean']:.4f} (groups drawn from the buffer "
             f"{number(summary['learnability_mean_from_buffer'], '.4f')})   depth of drawn groups mean "
             f"{number(summary['depth_mean_from_buffer'], '.2f')}, max {summary['depth_max']}",
             f"  solved {summary['solved_share']:.1%} of rollouts",
             f"  improve/diverge steps from a wrong y^k: {summary['from_wrong']['groups']} groups, "
             f"{number(summary['from_wrong']['right_share'], '.1%')} of responses right (wrong->right);"
             f" from a right y^k: {summary['from_right']['groups']} groups, "
             f"{number(summary['from_right']['right_share'], '.1%')} right"]
    if buffer:
        lines.append("  buffer after the last group: " + "  ".join(f"{k.removeprefix('buffer_')} {v:g}"
                                                                    for k, v in buffer.items()))
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells under a header, each column as wide as its widest cell; numeric columns right-aligned."""
    columns = list(zip(header, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [bool(rows) and all(_numeric(cell) for cell in column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) if right else cell.ljust(width)
                         for cell, width, right in zip(cells, widths, numeric, strict=True)).rstrip()
    return [line(header), *(line(row) for row in rows)]


def _numeric(cell: str) -> bool:
    return cell == "-" or cell.rstrip("%").replace(".", "", 1).lstrip("-").isdigit()
