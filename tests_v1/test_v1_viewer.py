"""``self-improve-buffer`` on the ``traces.jsonl`` of a real v1 ``vf-eval self-improve`` run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import run_vf_eval
from scripted_server import ScriptedServer
from self_improve.viewer import cli


def test_a_v1_run_is_read_one_group_per_episode_in_saved_order(scripted_server: ScriptedServer, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    episodes = run_vf_eval(scripted_server.url, tmp_path, "-n", "6", "-c", "1", "--env.rollouts-per-group", "4",
                           "--env.min-buffer-size", "4", "--env.select-prob", "1.0", "--env.row-metrics", "all",
                           "--env.taskset.num-train-examples", "10")
    assert cli.main([str(tmp_path / "run" / "traces.jsonl"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    first = [episode["traces"][0] for episode in episodes]
    assert (len(shown["groups"]), shown["rollouts"]) == (6, 24)
    assert [g["task_id"] for g in shown["groups"]] == [t["task"]["data"]["task_id"] for t in first]
    assert shown["steps"] == dict(sorted(Counter(t["task"]["data"]["step"] for t in first).items()))
    assert [g["buffer_size"] for g in shown["groups"]] == [t["metrics"]["buffer_size"] for t in first]
    assert shown["learnability_mean"] == pytest.approx(np.mean([t["metrics"]["learnability"] for t in first]))
