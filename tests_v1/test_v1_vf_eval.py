"""The real v1 ``vf-eval self-improve`` against the scripted OpenAI server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import verifiers.v1 as vf

from conftest import VF_EVAL, VfEvalFailed, run_vf_eval
from scripted_server import ScriptedServer
from self_improve import prompts
from self_improve.exit_config import field_docs
from self_improve.hosts import v1_env


def test_vf_eval_saves_exit_groups_scored_by_the_scripted_correctness(scripted_server: ScriptedServer,
                                                                       tmp_path: Path) -> None:
    rows = run_vf_eval(scripted_server.url, tmp_path, "-n", "3", "-c", "1", "--env.rollouts-per-group", "4",
                       "--env.min-buffer-size", "4", "--env.select-prob", "1.0",
                       "--env.taskset.num-train-examples", "10")
    episodes = [vf.WireEpisode.model_validate(row) for row in rows]
    assert len(episodes) == 3 and all(episode.ok and len(episode.traces) == 4 for episode in episodes)
    steps = []
    for episode in episodes:
        seed = episode.task.data.model_extra
        assert episode.task.key == seed["task_id"] and seed["step"] == "base"  # the dispatched task
        data = episode.traces[0].task.data.model_extra
        steps.append(data["step"])
        plan = v1_env.plan_of(v1_env.SelfImproveData.model_validate(episode.traces[0].task.data.model_dump()))
        rewards = []
        for trace in episode.traces:
            behaviour = scripted_server.behaviour_of(trace.last_reply)
            assert trace.reward == float(behaviour == "correct")
            assert trace.rewards["correct"].score == trace.metrics["solved"] == float(behaviour == "correct")
            assert trace.rewards["format"].score == float(behaviour in ("correct", "wrong"))
            assert [m.model_dump(exclude_none=True) for m in trace.branches[-1].messages[:-1]] == plan.messages()
            rewards.append(trace.reward)
        assert all(t.metrics["learnability"] == pytest.approx(float(np.var(rewards))) for t in episode.traces)
        # the default row_metrics="core": the loop's metrics are these three (beside the task's own)
        assert {"from_buffer", "learnability", "solved"} <= set(episode.traces[0].metrics)
        assert not {"depth", "group_accuracy", "buffer_size"} & set(episode.traces[0].metrics)
    # Group 1 fills the buffer with its 4 responses; from then on every group starts from one.
    assert steps[0] == "base" and set(steps[1:]) <= {"improve", "diverge"}
    opening = {"improve": prompts.SELF_IMPROVE_TEMPLATE[:30], "diverge": prompts.SELF_DIVERGE_TEMPLATE[:30]}
    for episode, step in zip(episodes[1:], steps[1:], strict=True):
        assert episode.traces[0].task.data.prompt[1].content.startswith(opening[step])


def test_vf_eval_names_a_bad_argument(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    with pytest.raises(VfEvalFailed) as failure:
        run_vf_eval(scripted_server.url, tmp_path, "-n", "1", "--env.kappa", "-1")
    assert "kappa: must be a number in [0.0, inf)" in failure.value.output
    assert not scripted_server.requests


def test_vf_eval_help_shows_each_exit_argument_with_its_exit_config_doc(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                             os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([str(VF_EVAL), "self-improve", "--help"], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = " ".join(completed.stdout.replace("│", " ").split())  # the help box, unwrapped
    docs = field_docs()
    for flag, name in (("--env.kappa", "kappa"), ("--env.seed", "seed"),
                       ("--env.taskset.num-train-examples", "num_train_examples"),
                       ("--env.taskset.seed", "seed"), ("--env.taskset.task.use-think", "use_think"),
                       ("--env.taskset.task.iteration-reward", "iteration_reward")):
        row = re.search(re.escape(flag) + r" [A-Z{]", text)  # the flag's row: the flag, then its metavar
        assert row, flag
        assert " ".join(docs[name].split()) in text[row.start():row.start() + 800], (flag, name)


def test_vf_eval_refuses_a_second_seed(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    with pytest.raises(VfEvalFailed) as failure:
        run_vf_eval(scripted_server.url, tmp_path, "-n", "1", "--env.taskset.seed", "3")
    assert "taskset.seed: must equal seed" in failure.value.output
    assert not scripted_server.requests


def test_request_slots_cap_model_requests_across_episodes(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    scripted_server.delay_s = 0.2  # long enough for every admitted request to overlap
    rows = run_vf_eval(scripted_server.url, tmp_path, "-n", "3", "-c", "3", "--env.rollouts-per-group", "3",
                       "--env.request-slots", "2", "--env.taskset.num-train-examples", "10")
    assert len(rows) == 3 and len(scripted_server.requests) == 9
    assert scripted_server.most_in_flight == 2  # 9 requests of 3 episodes admitted at once, 2 slots
