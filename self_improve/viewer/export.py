"""The viewer's numbers for notebooks: JSON on stdout, or a CSV file with one row per instance or group.

Both read back with pandas (``pd.read_csv(path)``, ``pd.json_normalize(json.load(f)["instances"])``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from self_improve.viewer.config import ViewerError
from self_improve.viewer.runlog import GroupRecord
from self_improve.viewer.snapshot import BufferSnapshot
from self_improve.viewer.summary import correctness, outcome, probabilities


def instance_rows(snapshot: BufferSnapshot, kappa: float) -> list[dict[str, Any]]:
    """One flat row per held instance, in slot order, with its sampling probability under ``kappa``."""
    chance = probabilities(snapshot, kappa)
    return [{"instance_id": i.instance_id, "task_id": i.task.task_id, "score": i.score,
             "probability": float(p), "depth": i.depth, "times_sampled": i.times_sampled, "parent_id": i.parent_id,
             "created_step": i.created_step, "scored_step": i.scored_step, "correctness": correctness(i),
             "outcome": outcome(i) or "", "question": i.task.question, "latest": i.latest}
            for i, p in zip(snapshot.instances, chance, strict=True)]


def buffer_json(summary: dict[str, Any], snapshot: BufferSnapshot) -> str:
    """The summary with every instance in full (iterates included)."""
    instances = [{**asdict(i), "depth": i.depth} for i in snapshot.instances]
    return json.dumps({**summary, "instances": instances}, indent=2, ensure_ascii=False)


def run_json(summary: dict[str, Any], groups: Sequence[GroupRecord]) -> str:
    """The run summary with one entry per group (NaN written as null)."""
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in g.row().items()} for g in groups]
    return json.dumps({**summary, "groups": rows}, indent=2, ensure_ascii=False)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``rows`` (flat dicts with the same keys) as a CSV file with a header; ``ViewerError`` if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["instance_id"])
            writer.writeheader()
            writer.writerows(rows)
    except OSError as error:
        raise ViewerError(f"csv: cannot write {path} ({error.strerror})") from None
