"""A buffer checkpoint and a results.jsonl from the simulated learner (``self_improve.simulation``), so the
viewer draws the same pictures for the model of a learner as for a real run.

It runs one strategy the way ``simulation.simulate`` does (its configuration, task pool, learner and
batches of groups planned before any is observed) through the real ``ExitLoop``, and saves what a
real run leaves behind: the buffer's ``state_dict`` (``buffer.json``, the ``buffer_path`` layout) and one
row per rollout in vf-eval's classic layout (``example_id``, ``info``, ``metrics``), in the order the
groups were observed. Responses are stand-ins (``train-12#345``): the learner has correctness, not text.

    python -m self_improve.viewer.simulated OUT [--strategy diverge] [--rollouts 16000] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from self_improve.atomic_io import write_text_atomic
from self_improve.buffer.checkpoint import write_state
from self_improve.exit_loop import ExitLoop, Rollout
from self_improve.simulation import STRATEGIES, Learner, LearnerModel, SimulationSettings, make_tasks, simulation_config

BUFFER_FILE = "buffer.json"
RESULTS_FILE = "results.jsonl"


def run(out: Path, strategy: str = "diverge", rollouts: int = 16_000, seed: int = 0) -> tuple[Path, Path]:
    """Simulate ``rollouts`` rollouts of ``strategy`` and write ``out/buffer.json`` and ``out/results.jsonl``."""
    settings = SimulationSettings(rollouts=rollouts)
    settings.validate()
    model = LearnerModel()
    # every metric on the rows, so the viewer draws the buffer's curves too
    loop = ExitLoop.from_config(dataclasses.replace(simulation_config(strategy, seed, settings), row_metrics="all"))
    task_rng = np.random.default_rng([seed, 100])
    tasks, difficulties = make_tasks("train", settings.train_tasks, model, task_rng)
    learner = Learner(model, {task.task_id: float(d) for task, d in zip(tasks, difficulties, strict=True)})
    outcome_rng, fresh_rng = np.random.default_rng([seed, 200]), np.random.default_rng([seed, 300])
    rows: list[str] = []
    serial, group_id = 0, 0
    batch_rollouts = settings.group_size * settings.groups_per_batch
    for _ in range(settings.rollouts // batch_rollouts):
        plans = [loop.plan(tasks[int(fresh_rng.integers(len(tasks)))]) for _ in range(settings.groups_per_batch)]
        outcomes = [learner.attempt(plan, settings.group_size, outcome_rng) for plan in plans]
        for plan, correct in zip(plans, outcomes, strict=True):
            report = loop.finish(plan, [Rollout(f"{plan.task.task_id}#{serial + i}", float(flag), flag)
                                        for i, flag in enumerate(correct)])
            serial += settings.group_size
            learner.train(report.group)
            rows += [json.dumps({"example_id": group_id, "info": plan.info(), "reward": reward, "metrics": metrics})
                     for reward, metrics in zip(report.rewards, report.metrics, strict=True)]
            group_id += 1
    out.mkdir(parents=True, exist_ok=True)
    write_state(loop.store.state_dict(), out / BUFFER_FILE)
    write_text_atomic(out / RESULTS_FILE, "".join(row + "\n" for row in rows))
    return out / BUFFER_FILE, out / RESULTS_FILE


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for buffer.json and results.jsonl")
    parser.add_argument("--strategy", default="diverge", choices=list(STRATEGIES), help="simulated strategy")
    parser.add_argument("--rollouts", type=int, default=16_000, help="rollout budget (default 16000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of tasks, learner and loop (default 0)")
    args = parser.parse_args(argv)
    for path in run(args.out, args.strategy, args.rollouts, args.seed):
        print(path)


if __name__ == "__main__":
    main()
