"""Exact resume of the host-free loop with the file store: a run checkpointed after group k and
resumed in a new process draws the same plans and request seeds as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from self_improve.buffer.checkpoint import read_state

REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop, Rollout
from self_improve.grouping import Task
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loop = ExitLoop.from_config(ExitConfig(buffer_path=path, buffer_size=16, min_buffer_size=4, select_prob=0.7,
                                       divergence_prob=0.4, request_seeds=True, seed=3).resolved())
for n in range(first, last):
    plan = loop.plan(Task(f"t{n}", f"question {n}", "1"))
    seeds = [loop.request_seed() for _ in range(4)]
    print(json.dumps([plan.kind, plan.task.task_id, plan.instance.instance_id if plan.instance else None, seeds]))
    loop.finish(plan, [Rollout(f"answer {n} {plan.depth} {i}", float(i % 2 == n % 2), i % 2 == n % 2)
                       for i in range(4)])
"""


def drive(path: Path, first: int, last: int) -> list[list]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    completed = subprocess.run([sys.executable, "-c", DRIVER, str(path), str(first), str(last)], env=environment,
                               capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in completed.stdout.splitlines()]


def test_a_run_resumed_in_a_new_process_draws_what_an_uninterrupted_run_draws(tmp_path: Path) -> None:
    whole = drive(tmp_path / "whole.json", 0, 30)
    resumed = drive(tmp_path / "split.json", 0, 12) + drive(tmp_path / "split.json", 12, 30)
    assert {kind for kind, *_ in whole} == {"base", "improve", "diverge"}, "the run must draw every step kind"
    assert resumed == whole
    assert read_state(tmp_path / "split.json") == read_state(tmp_path / "whole.json")


def test_a_buffer_file_without_the_loops_generators_still_resumes(tmp_path: Path) -> None:
    drive(tmp_path / "old.json", 0, 12)
    state = read_state(tmp_path / "old.json")
    del state["loop"]  # a file written before the loop saved its generators
    (tmp_path / "old.json").write_text(json.dumps(state))
    assert len(drive(tmp_path / "old.json", 12, 14)) == 2
    assert read_state(tmp_path / "old.json")["step"] == state["step"] + 2
