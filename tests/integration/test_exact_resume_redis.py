"""Exact resume of the host-free loop with a one-worker Redis store (real ``redis-server``): the
worker's ``ExitLoop.state_dict`` after group k, loaded by a new process, draws what an
uninterrupted run draws."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redis_fixture import fresh_prefix, redis_server  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys
from pathlib import Path
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop, Rollout
from self_improve.grouping import Task
url, prefix, saved, first, last = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
loop = ExitLoop.from_config(ExitConfig(buffer_url=url, buffer_prefix=prefix, buffer_size=16, min_buffer_size=4,
                                       select_prob=0.7, divergence_prob=0.4, request_seeds=True, seed=3).resolved())
if first:
    loop.load_state_dict(json.loads(saved.read_text()))
for n in range(first, last):
    plan = loop.plan(Task(f"t{n}", f"question {n}", "1"))
    seeds = [loop.request_seed() for _ in range(4)]
    print(json.dumps([plan.kind, plan.task.task_id, plan.instance.instance_id if plan.instance else None, seeds]))
    loop.finish(plan, [Rollout(f"answer {n} {plan.depth} {i}", float(i % 2 == n % 2), i % 2 == n % 2)
                       for i in range(4)])
saved.write_text(json.dumps(loop.state_dict()))
"""


def drive(url: str, prefix: str, saved: Path, first: int, last: int) -> list[list]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    completed = subprocess.run([sys.executable, "-c", DRIVER, url, prefix, str(saved), str(first), str(last)],
                               env=environment, capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.mark.redis
def test_a_one_worker_redis_run_resumed_in_a_new_process_draws_what_an_uninterrupted_run_draws(
        redis_server, tmp_path: Path) -> None:
    whole = drive(redis_server.url, fresh_prefix(), tmp_path / "whole.json", 0, 30)
    prefix = fresh_prefix()
    resumed = (drive(redis_server.url, prefix, tmp_path / "split.json", 0, 12)
               + drive(redis_server.url, prefix, tmp_path / "split.json", 12, 30))
    assert {kind for kind, *_ in whole} == {"base", "improve", "diverge"}
    assert resumed == whole
