"""The per-group ExIt hook, driven in-process through the real ``run_group``
against the real scripted OpenAI server."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from openai import AsyncOpenAI
from verifiers.clients.openai_chat_completions_client import OpenAIChatCompletionsClient

from scripted_server import ChatRequest, ScriptedServer, cycle_policy
from self_improve import load_environment
from self_improve.buffer.checkpoint import read_state
from self_improve.grouping import Group
from self_improve.hosts.classic import ExitEnv
from self_improve.scoring.rewards import improvement_reward

G = 4


def client_for(server: ScriptedServer) -> OpenAIChatCompletionsClient:
    return OpenAIChatCompletionsClient(AsyncOpenAI(base_url=server.url, api_key="scripted", max_retries=0))


def group_inputs(env: ExitEnv, index: int, size: int = G) -> list[dict]:
    row = env.eval_dataset[index]
    return [dict(row) for _ in range(size)]


async def run_groups(env: ExitEnv, server: ScriptedServer, indices: list[int], concurrent: bool = False) -> list:
    client = client_for(server)
    calls = [env.run_group(group_inputs(env, i), client, "scripted", {"max_tokens": 64}) for i in indices]
    if concurrent:
        return list(await asyncio.gather(*calls))
    return [await call for call in calls]


def contents(messages: list) -> list[str]:
    """Message contents, whether messages are dicts or verifiers' message objects."""
    return [m["content"] if isinstance(m, dict) else m.content for m in messages]


def small_env(**kwargs) -> ExitEnv:
    return load_environment(num_eval_examples=40, num_train_examples=1, **kwargs)


def test_every_rollout_of_a_group_gets_the_same_prompt(scripted_server: ScriptedServer) -> None:
    """Failure 3 of the public attempt: the buffer item chosen per row or per rollout."""
    env = small_env(min_buffer_size=1, select_prob=1.0)
    groups = asyncio.run(run_groups(env, scripted_server, list(range(6))))
    for outputs in groups:
        assert len({json.dumps(contents(o["prompt"])) for o in outputs}) == 1
        assert len({o["info"]["parent_id"] for o in outputs}) == 1
    assert sum(outputs[0]["info"]["step"] != "base" for outputs in groups) == 5


def test_group_learnability_is_the_population_variance_of_its_rewards(scripted_server: ScriptedServer) -> None:
    env = small_env()
    for outputs in asyncio.run(run_groups(env, scripted_server, [0, 1, 2])):
        rewards = [o["reward"] for o in outputs]
        expected = float(np.var(np.array(rewards) / 1.1))
        assert [o["metrics"]["learnability"] for o in outputs] == pytest.approx([expected] * G)


def test_children_inherit_the_group_score_and_solved_children_get_zero(scripted_server: ScriptedServer) -> None:
    env = small_env()
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [0]))
    score = outputs[0]["metrics"]["learnability"]
    by_text = {instance.latest: instance.score for instance in env.buffer.instances()}
    for output in outputs:
        text = contents(output["completion"])[-1]
        assert by_text[text] == (0.0 if output["metrics"]["solved"] == 1.0 else pytest.approx(score))


def test_parent_takes_the_learnability_of_the_group_built_from_it(scripted_server: ScriptedServer) -> None:
    env = small_env(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0)
    asyncio.run(run_groups(env, scripted_server, [0]))
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [1]))
    parent_id = outputs[0]["info"]["parent_id"]
    assert outputs[0]["info"]["step"] == "improve"
    assert env.buffer.get(parent_id).score == pytest.approx(outputs[0]["metrics"]["learnability"])
    assert env.buffer.get(parent_id).scored_step == env.buffer.step


def test_improve_prompt_holds_the_parents_latest_response(scripted_server: ScriptedServer) -> None:
    env = small_env(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0)
    asyncio.run(run_groups(env, scripted_server, [0]))
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [5]))
    parent = env.buffer.get(outputs[0]["info"]["parent_id"])
    user = contents(outputs[0]["prompt"])[-1]
    assert user.startswith("Improve your current response to this request:")
    assert parent.iterates[-1] in user and parent.task.question in user
    assert outputs[0]["answer"] == parent.task.answer


def test_divergence_probability_one_sends_diverge_prompts(scripted_server: ScriptedServer) -> None:
    env = small_env(min_buffer_size=1, select_prob=1.0, divergence_prob=1.0, row_metrics="all")
    groups = asyncio.run(run_groups(env, scripted_server, [0, 1, 2]))
    assert [g[0]["info"]["step"] for g in groups] == ["base", "diverge", "diverge"]
    assert all(o["metrics"]["diverge_step"] == 1.0 for o in groups[1])


def test_rows_carry_the_core_metrics_by_default_and_the_step_group_and_buffer_ones_with_all(
        scripted_server: ScriptedServer) -> None:
    core = {"from_buffer", "learnability", "solved"}
    every = {"improve_step", "diverge_step", "depth", "prev_correct", "group_accuracy", "buffer_step", "buffer_size",
             "buffer_score_mean", "buffer_score_max", "buffer_depth_mean", "buffer_distinct_tasks"}
    rubric = {"correct_answer", "format_reward", "num_turns"}
    for row_metrics, keys in (("core", rubric | core), ("all", rubric | core | every)):
        env = small_env(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0, row_metrics=row_metrics)
        groups = asyncio.run(run_groups(env, scripted_server, [0, 1]))
        assert [set(o["metrics"]) for g in groups for o in g] == [keys] * 2 * G, row_metrics
        assert [g[0]["metrics"]["from_buffer"] for g in groups] == [0.0, 1.0]
        if row_metrics == "all":
            assert groups[1][0]["metrics"]["buffer_size"] == len(env.buffer)


def test_curriculum_replays_questions_without_self_iteration_prompts(scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="curriculum", min_buffer_size=1, select_prob=1.0)
    groups = asyncio.run(run_groups(env, scripted_server, [0, 1, 2]))
    assert [g[0]["info"]["step"] for g in groups] == ["base"] * 3
    assert groups[1][0]["info"]["parent_id"] is not None
    assert all(instance.iterates == () for instance in env.buffer.instances())


def test_grpo_strategy_never_selects_from_the_buffer(scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="grpo", min_buffer_size=1)
    groups = asyncio.run(run_groups(env, scripted_server, list(range(5))))
    assert all(o["info"]["parent_id"] is None for g in groups for o in g)


def test_selection_waits_for_min_buffer_size(scripted_server: ScriptedServer) -> None:
    env = small_env(min_buffer_size=8, select_prob=1.0)
    groups = asyncio.run(run_groups(env, scripted_server, [0, 1, 2]))
    assert [g[0]["info"]["step"] != "base" for g in groups] == [False, False, True]


def test_failed_rollout_leaves_the_buffer_untouched(scripted_server: ScriptedServer) -> None:
    env = small_env()
    asyncio.run(run_groups(env, scripted_server, [0]))
    before = json.dumps(env.buffer.state_dict())
    scripted_server.policy = lambda request: "error" if request.index_for_question == 1 else "correct"
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [1]))
    assert any(o["error"] for o in outputs)
    assert json.dumps(env.buffer.state_dict()) == before


def test_empty_response_is_recorded_as_an_error_and_leaves_the_buffer_untouched(
        scripted_server: ScriptedServer) -> None:
    env = small_env()
    asyncio.run(run_groups(env, scripted_server, [0]))
    before = json.dumps(env.buffer.state_dict())
    scripted_server.policy = lambda request: "empty" if request.index_for_question == 0 else "correct"
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [1]))
    # the first request to reach the server is empty; which rollout sent it depends on scheduling
    assert sorted(o["error"] is not None for o in outputs) == [False, False, False, True]
    assert json.dumps(env.buffer.state_dict()) == before


def test_concurrent_groups_do_not_share_per_group_state(scripted_server: ScriptedServer) -> None:
    """Failure 5 of the public attempt: per-episode state on the shared env object."""
    scripted_server.delay_s = 0.02
    env = small_env(min_buffer_size=4, select_prob=0.7)
    attributes = set(vars(env))
    asyncio.run(run_groups(env, scripted_server, list(range(4))))
    groups = asyncio.run(run_groups(env, scripted_server, list(range(4, 36)), concurrent=True))
    assert set(vars(env)) == attributes
    for outputs in groups:
        question = outputs[0]["info"]["question"]
        assert {o["info"]["question"] for o in outputs} == {question}
        assert all(question in contents(o["prompt"])[-1] for o in outputs)
        rewards = [o["reward"] for o in outputs]
        expected = float(np.var(np.array(rewards) / 1.1))
        assert [o["metrics"]["learnability"] for o in outputs] == pytest.approx([expected] * G)
    assert env.buffer.step == 36


def test_scoring_a_group_never_touches_the_buffer(scripted_server: ScriptedServer) -> None:
    """Failure 6 of the public attempt: the buffer mutated inside a reward function."""
    env = small_env()
    asyncio.run(run_groups(env, scripted_server, [0]))
    states = [{"prompt": row["prompt"], "completion": [{"role": "assistant", "content": "\\boxed{1}"}],
               "answer": row["answer"], "info": row["info"], "trajectory": [], "input": row}
              for row in group_inputs(env, 1)]
    before = json.dumps(env.buffer.state_dict())
    asyncio.run(env.rubric.score_group(states))
    assert json.dumps(env.buffer.state_dict()) == before
    assert all("reward" in state for state in states)


def test_improvement_reward_gives_no_signal_from_a_correct_parent(scripted_server: ScriptedServer) -> None:
    def policy(request: ChatRequest) -> str:
        return "correct" if request.kind == "base" else cycle_policy()(request)

    scripted_server.policy = policy
    env = small_env(iteration_reward="improvement", format_weight=0.0, min_buffer_size=1, select_prob=1.0,
                    divergence_prob=0.0)
    groups = asyncio.run(run_groups(env, scripted_server, [0, 1]))
    assert groups[1][0]["info"]["prev_correct"] is True
    assert {o["metrics"]["solved"] for o in groups[1]} == {0.0, 1.0}
    assert {o["reward"] for o in groups[1]} == {0.0}
    assert groups[1][0]["metrics"]["learnability"] == 0.0


def test_correctness_iteration_reward_punishes_breaking_a_correct_answer(scripted_server: ScriptedServer) -> None:
    def policy(request: ChatRequest) -> str:
        return "correct" if request.kind == "base" else cycle_policy()(request)

    scripted_server.policy = policy
    env = small_env(format_weight=0.0, min_buffer_size=1, select_prob=1.0, divergence_prob=0.0)
    groups = asyncio.run(run_groups(env, scripted_server, [0, 1]))
    assert sorted(o["reward"] for o in groups[1]) == [0.0, 0.0, 1.0, 1.0]
    assert groups[1][0]["metrics"]["learnability"] == pytest.approx(0.25)


@pytest.mark.parametrize(("r_new", "r_prev", "expected"), [(1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 0.0),
                                                          (0.0, 1.0, 0.0), (0.75, 0.5, 0.5), (0.25, 0.5, 0.0)])
def test_improvement_reward_formula_with_the_explicit_r_prev_one_case(r_new: float, r_prev: float,
                                                                      expected: float) -> None:
    assert improvement_reward(r_new, r_prev) == pytest.approx(expected)


def test_request_seeds_give_every_request_its_own_seed(scripted_server: ScriptedServer) -> None:
    env = small_env(request_seeds=True)
    asyncio.run(run_groups(env, scripted_server, [0, 1]))
    seeds = [request["seed"] for request in scripted_server.requests]
    assert len(seeds) == 2 * G and len(set(seeds)) == 2 * G


def test_without_request_seeds_no_seed_is_sent(scripted_server: ScriptedServer) -> None:
    asyncio.run(run_groups(small_env(), scripted_server, [0]))
    assert all("seed" not in request for request in scripted_server.requests)


def test_buffer_file_follows_every_observed_group(scripted_server: ScriptedServer, tmp_path) -> None:
    path = tmp_path / "buffer.json"
    env = small_env(buffer_path=str(path))
    asyncio.run(run_groups(env, scripted_server, [0, 1, 2]))
    assert read_state(path) == json.loads(json.dumps(env.loop.state_dict()))
    assert read_state(path)["step"] == 3


def test_restart_with_the_same_buffer_path_resumes_the_buffer(scripted_server: ScriptedServer, tmp_path) -> None:
    path = tmp_path / "buffer.json"
    first = small_env(buffer_path=str(path))
    asyncio.run(run_groups(first, scripted_server, [0, 1]))
    second = small_env(buffer_path=str(path))
    assert json.dumps(second.buffer.state_dict()) == json.dumps(first.buffer.state_dict())


def test_corrupt_buffer_file_is_a_clear_error_not_an_empty_buffer(tmp_path) -> None:
    path = tmp_path / "buffer.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="buffer_path: .*buffer.json"):
        small_env(buffer_path=str(path))


def test_group_value_matches_what_the_buffer_saw(scripted_server: ScriptedServer) -> None:
    env = small_env()
    (outputs,) = asyncio.run(run_groups(env, scripted_server, [3]))
    group = Group(task=next(env.buffer.instances()).task, parent_id=None, history=(), history_correct=(),
                  kind="base", responses=tuple(contents(o["completion"])[-1] for o in outputs),
                  returns=tuple(o["reward"] for o in outputs),
                  correct=tuple(o["metrics"]["solved"] == 1.0 for o in outputs), max_return=1.1)
    assert group.learnability == pytest.approx(outputs[0]["metrics"]["learnability"])
