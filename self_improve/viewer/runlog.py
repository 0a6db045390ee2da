"""The groups of a run, read from the files vf-eval saves, in the order they finished.

Classic verifiers (``vf-eval ... -s``) writes ``results.jsonl``: one row per rollout, the G rollouts of
a group sharing an ``example_id``, each with the step's ``info`` (``task_id``, ``step``, ``depth``,
``parent_id``) and the loop's per-rollout ``metrics`` (``learnability``, ``from_buffer``, and the
buffer's ``buffer_size``, ``buffer_depth_mean``, ``buffer_distinct_tasks`` ... measured right after the
group was observed). vf-eval saves each group when it is done, so rows are in finishing order.

verifiers 0.4 (v1) writes ``traces.jsonl``: one row per episode (= one group), its ``traces`` the G
rollouts, each with ``task.data`` (the step) and ``metrics``; episodes are saved as they finish.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from self_improve.viewer.config import ViewerError

BUFFER_METRICS: tuple[str, ...] = ("buffer_step", "buffer_size", "buffer_score_mean", "buffer_score_max",
                                   "buffer_depth_mean", "buffer_distinct_tasks")
"""The buffer's own numbers each rollout carries (``BufferStore.metrics``)."""


@dataclass(frozen=True)
class GroupRecord:
    """One finished group of a run, as its rollouts recorded it."""

    order: int
    """Position among the run's groups, in the order they finished (0 first)."""
    source: str
    task_id: str
    step: str
    """base, improve or diverge."""
    depth: int
    """Depth of the group's responses (0 for a base step)."""
    parent_id: int | None
    prev_correct: bool
    """Whether the iterate y^k the group was asked to improve or diverge from was right."""
    from_buffer: bool
    learnability: float
    solved: float
    """Share of the group's rollouts that were correct."""
    rollouts: int
    buffer: dict[str, float]
    """``BUFFER_METRICS`` right after this group (empty when the rows carry none)."""

    def row(self) -> dict[str, Any]:
        """A flat dict for JSON and CSV."""
        return {"order": self.order, "source": self.source, "task_id": self.task_id, "step": self.step,
                "depth": self.depth, "parent_id": self.parent_id,
                "prev_correct": self.prev_correct, "from_buffer": self.from_buffer,
                "learnability": self.learnability, "solved": self.solved, "rollouts": self.rollouts,
                **{name: self.buffer.get(name, math.nan) for name in BUFFER_METRICS}}


def read_runs(paths: list[str]) -> list[GroupRecord]:
    """Every group of every file in the order the buffer observed them (``buffer_step``, saved with
    each rollout). Rows without it (older runs) keep the order saved within a file, and files are
    ordered by when their first rollout started where every file records it (classic
    ``timing.start_time``), else as given.

    Raises ``ViewerError`` naming the file (and line) that is missing, not JSON, or holds no ExIt group.
    """
    files = [_read_file(path) for path in paths]
    if all(started is not None for started, _ in files):
        files.sort(key=lambda file: file[0])  # stable: ties keep the order given
    found = [group for _, groups in files for group in groups]
    if not found:
        raise ViewerError(f"source: {', '.join(paths)}: no finished group")
    if all("buffer_step" in group.buffer for group in found):  # the buffer's own count: the order it saw them
        found.sort(key=lambda group: group.buffer["buffer_step"])
    return [_renumbered(record, order) for order, record in enumerate(found)]


def _renumbered(record: GroupRecord, order: int) -> GroupRecord:
    return GroupRecord(**{**record.__dict__, "order": order})


def _read_file(path: str) -> tuple[float | None, list[GroupRecord]]:
    """(when the file's first rollout started, if recorded; its groups in saved order)."""
    file = Path(path)
    if not file.is_file():
        raise ViewerError(f"source: {path} does not exist" if not file.exists() else f"source: {path} is not a file")
    rows = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ViewerError(f"source: cannot read {path} ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ViewerError(f"source: {path} line {number} is not JSON ({error})") from None
        if not isinstance(row, dict):
            raise ViewerError(f"source: {path} line {number} is not a JSON object")
        rows.append((number, row))
    if not rows:
        raise ViewerError(f"source: {path} holds no rows")
    try:
        if "traces" in rows[0][1]:
            return None, _v1_groups(path, rows)
        starts = [((row.get("timing") or {}).get("start_time")) for _, row in rows]
        started = min((float(t) for t in starts if isinstance(t, (int, float))), default=None)
        return started, _classic_groups(path, rows)
    except (KeyError, TypeError, ValueError) as error:
        raise ViewerError(f"source: {path} is not a self-improve vf-eval output: no ExIt step info or "
                          f"metrics ({error!r:.200})") from None


def _record(source: str, info: dict[str, Any], metrics: list[dict[str, Any]]) -> GroupRecord:
    """A group from its step info and its rollouts' metrics (the loop's constants of the group are equal)."""
    first = metrics[0]
    return GroupRecord(order=0, source=source, task_id=str(info["task_id"]), step=str(info["step"]),
                       depth=int(info["depth"]), parent_id=info.get("parent_id"),
                       prev_correct=bool(info.get("prev_correct", first.get("prev_correct", 0.0))),
                       from_buffer=bool(first["from_buffer"]), learnability=float(first["learnability"]),
                       solved=sum(float(m.get("solved", 0.0)) for m in metrics) / len(metrics), rollouts=len(metrics),
                       buffer={name: float(first[name]) for name in BUFFER_METRICS if name in first})


def _classic_groups(source: str, rows: list[tuple[int, dict[str, Any]]]) -> list[GroupRecord]:
    """Rows of one ``example_id`` form a group, in the order the groups were saved."""
    by_example: dict[Any, list[dict[str, Any]]] = {}
    for _, row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    groups = []
    for members in by_example.values():
        info = members[0]["info"]
        info = json.loads(info) if isinstance(info, str) else info
        groups.append(_record(source, info, [row.get("metrics") or row for row in members]))
    return groups


def _step_info(data: dict[str, Any]) -> dict[str, Any]:
    """A v1 trace's step info: the GSM8K task's data itself, or the ``exit_step`` plan a step of
    another taskset carries (``hosts.v1_foreign``), in the same names."""
    step = data.get("exit_step")
    if step is None:
        return data
    return {"task_id": step["task"]["task_id"], "step": step["kind"], "depth": step["depth"],
            "parent_id": step["parent_id"], "prev_correct": step["prev_correct"]}


def _v1_groups(source: str, rows: list[tuple[int, dict[str, Any]]]) -> list[GroupRecord]:
    """One episode is one group, saved when it finished."""
    groups = []
    for _, row in rows:
        traces = [trace for trace in row["traces"] if trace.get("metrics")]
        if traces:  # an episode whose every rollout failed records no metrics
            groups.append(_record(source, _step_info(traces[0]["task"]["data"]), [t["metrics"] for t in traces]))
    return groups
