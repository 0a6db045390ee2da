"""The groups of a run, read from the files vf-eval saves, in the order they finished.

Classic verifiers (``vf-eval ... -s``) writes ``results.jsonl``: one row per rollout, the G rollouts of
a group sharing an ``example_id``, each with the step's ``info`` (``task_id``, ``step``, ``depth``,
``parent_id``) and the loop's per-rollout ``metrics`` (``learnability``, ``from_buffer``, and the
buffer's ``buffer_size``, ``buffer_depth_mean``, ``buffer_distinct_tasks`` ... measured right after the
group was observed). A group's finishing time is the end of its scoring (``timing.scoring.end``).

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

BUFFER_METRICS: tuple[str, ...] = ("buffer_size", "buffer_score_mean", "buffer_score_max", "buffer_depth_mean",
                                   "buffer_distinct_tasks")
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
                "depth": self.depth, "parent_id": self.parent_id, "from_buffer": self.from_buffer,
                "learnability": self.learnability, "solved": self.solved, "rollouts": self.rollouts,
                **{name: self.buffer.get(name, math.nan) for name in BUFFER_METRICS}}


def read_runs(paths: list[str]) -> list[GroupRecord]:
    """Every group of every file, ordered by when it finished (file by file where no time is recorded).

    Raises ``ViewerError`` naming the file (and line) that is missing, not JSON, or holds no ExIt group.
    """
    found = [group for path in paths for group in _read_file(path)]  # file by file, in file order
    if not found:
        raise ViewerError(f"source: {', '.join(paths)} hold(s) no finished group")
    if all(finished is not None for finished, _ in found):
        found.sort(key=lambda group: group[0])  # stable: ties keep file order
    return [_renumbered(record, order) for order, (_, record) in enumerate(found)]


def _renumbered(record: GroupRecord, order: int) -> GroupRecord:
    return GroupRecord(**{**record.__dict__, "order": order})


def _read_file(path: str) -> list[tuple[float | None, GroupRecord]]:
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
        groups = _v1_groups(path, rows) if "traces" in rows[0][1] else _classic_groups(path, rows)
    except (KeyError, TypeError, ValueError) as error:
        raise ViewerError(f"source: {path} is not a self-improve vf-eval output: no ExIt step info or "
                          f"metrics ({error!r:.200})") from None
    return groups


def _record(source: str, info: dict[str, Any], metrics: list[dict[str, Any]]) -> GroupRecord:
    """A group from its step info and its rollouts' metrics (the loop's constants of the group are equal)."""
    first = metrics[0]
    return GroupRecord(order=0, source=source, task_id=str(info["task_id"]), step=str(info["step"]),
                       depth=int(info["depth"]), parent_id=info.get("parent_id"),
                       from_buffer=bool(first["from_buffer"]), learnability=float(first["learnability"]),
                       solved=sum(float(m.get("solved", 0.0)) for m in metrics) / len(metrics), rollouts=len(metrics),
                       buffer={name: float(first[name]) for name in BUFFER_METRICS if name in first})


def _classic_groups(source: str, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[float | None, GroupRecord]]:
    """Rows of one ``example_id`` form a group; it finished when its scoring ended."""
    by_example: dict[Any, list[dict[str, Any]]] = {}
    for _, row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    groups = []
    for members in by_example.values():
        info = members[0]["info"]
        info = json.loads(info) if isinstance(info, str) else info
        metrics = [row.get("metrics") or row for row in members]
        ends = [((row.get("timing") or {}).get("scoring") or {}).get("end") for row in members]
        finished = max((float(end) for end in ends if isinstance(end, (int, float))), default=None)
        groups.append((finished, _record(source, info, metrics)))
    return groups


def _v1_groups(source: str, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[float | None, GroupRecord]]:
    """One episode is one group, saved when it finished: file order is finishing order."""
    groups: list[tuple[float | None, GroupRecord]] = []
    for _, row in rows:
        traces = [trace for trace in row["traces"] if trace.get("metrics")]
        if not traces:
            continue  # an episode whose every rollout failed records no metrics
        groups.append((None, _record(source, traces[0]["task"]["data"], [t["metrics"] for t in traces])))
    return groups
