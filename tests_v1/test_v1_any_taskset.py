"""The real v1 ``vf-eval TASKSET --env.id self-improve`` over the test tasksets (tests_v1/tasksets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import verifiers.v1 as vf
from exit_letters import final_answer
from exit_partial import coverage_of, named_letters
from scripted import foreign_server

from conftest import VfEvalFailed, run_vf_eval
from self_improve import prompts

OWN_REWARD = {
    "exit-letters": lambda reply, answer: float(final_answer(reply) == answer),
    "exit-partial": lambda reply, answer: coverage_of(reply, answer) + 0.5 * float(named_letters(reply) is not None),
}
R_MAX = {"exit-letters": 1.0, "exit-partial": 1.5}


@pytest.mark.parametrize("taskset", ["exit-letters", "exit-partial"])
def test_exit_runs_any_taskset_scored_by_its_own_rewards(taskset: str, tmp_path: Path) -> None:
    server = foreign_server().start()
    try:
        rows = run_vf_eval(server.url, tmp_path, "--env.id", "self-improve", "-n", "6", "-r", "2", "-c", "1",
                           "--env.rollouts-per-group", "4", "--env.min-buffer-size", "4", "--env.select-prob", "1.0",
                           taskset=taskset)
    finally:
        server.stop()
    episodes = [vf.WireEpisode.model_validate(row) for row in rows]
    assert len(episodes) == 12 and all(episode.ok and len(episode.traces) == 4 for episode in episodes)
    replies_of: dict[str, set[str]] = {}
    kinds = []
    for episode in episodes:
        step = episode.traces[0].task.data.model_extra["exit_step"]
        kinds.append(step["kind"])
        task = step["task"]
        returns = []
        for trace in episode.traces:
            expected = OWN_REWARD[taskset](trace.last_reply, task["answer"])
            assert trace.reward == pytest.approx(expected)  # the taskset's own reward, recomputed
            returns.append(trace.reward)
        learnability = float(np.var(np.asarray(returns) / R_MAX[taskset]))
        assert all(t.metrics["learnability"] == pytest.approx(learnability) for t in episode.traces)
        if step["kind"] != "base":  # the prompt quotes an earlier response of the same task
            prompt = episode.traces[0].task.data.prompt
            text = prompt if isinstance(prompt, str) else prompt[-1].content
            assert text.startswith(prompts.SELF_IMPROVE_TEMPLATE[:30] if step["kind"] == "improve"
                                   else prompts.SELF_DIVERGE_TEMPLATE[:30])
            assert f"## Request:\n{task['question']}\n" in text
            assert step["instance"]["iterates"][-1] in replies_of[task["task_id"]]
            assert step["instance"]["iterates"][-1] in text
        replies_of.setdefault(task["task_id"], set()).update(t.last_reply for t in episode.traces)
    assert kinds[0] == "base" and {"improve", "diverge"} & set(kinds[1:])


def test_a_taskset_with_a_bash_harness_is_refused_before_any_request(tmp_path: Path) -> None:
    server = foreign_server().start()
    try:
        with pytest.raises(VfEvalFailed) as failure:
            run_vf_eval(server.url, tmp_path, "--env.id", "self-improve", "-n", "1",
                        "--env.agent.harness.id", "bash", taskset="exit-letters")
        output = failure.value.output
        assert "taskset: 'exit-letters' cannot be iterated one reply at a time" in output and "runs a program" in output
        assert not server.requests
    finally:
        server.stop()
