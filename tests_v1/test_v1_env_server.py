"""ExitEnv driven the way prime-rl main drives a v1 env: verifiers' own env server and
client, one episode per ExIt group, many steps in a row, against the scripted server."""

from __future__ import annotations

import json
import re
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from verifiers.v1.utils.loaders import resolve_env_config

from conftest import REPO, EnvServerThread
from scripted_server import ChatRequest, ScriptedServer
from self_improve import prompts
from self_improve.buffer.exit_buffer import ExitBuffer
from self_improve.hosts import v1_env
from self_improve.scoring import diversity

G = 4
MIN_BUFFER = 6


def mixed_policy(request: ChatRequest) -> str:
    """Varied groups (S anywhere in [0, 0.25]), fixed by the question and the request's index."""
    return ("correct", "wrong", "unboxed", "correct", "wrong")[zlib.crc32(
        f"{request.question}|{request.index_for_question}".encode()) % 5]


def exit_env(**overrides: object) -> dict:
    return {"taskset": {"id": "self-improve", "num_train_examples": 5}, "rollouts_per_group": G,
            "min_buffer_size": MIN_BUFFER, "select_prob": 1.0, "divergence_prob": 0.5, "buffer_size": 64,
            "row_metrics": "all", **overrides}


@pytest.fixture
def mixed_server() -> ScriptedServer:
    server = ScriptedServer(policy=mixed_policy).start()
    yield server
    server.stop()


def request_messages(trace) -> list[dict]:
    """The messages the model was sent (the trace's branch without the reply)."""
    return [m.model_dump(exclude_none=True) for m in trace.branches[-1].messages if m.role != "assistant"]


def test_one_episode_is_one_exit_group(mixed_server: ScriptedServer) -> None:
    states: list[dict] = []
    with EnvServerThread(exit_env()) as served:
        before = [json.loads(json.dumps(served.env.loop.store.state_dict()))]

        def after_each(episode: object) -> None:
            states.append(json.loads(json.dumps(served.env.loop.store.state_dict())))

        episodes = served.run_episodes(mixed_server.url, 14, after_each)
        live = served.env.loop.store
    kinds = set()
    for episode, old, new in zip(episodes, before + states[:-1], states, strict=True):
        assert episode.ok and len(episode.traces) == G
        seed = episode.task.data.model_extra
        assert episode.task.key == seed["task_id"] and seed.get("instance") is None  # the dispatched seed task
        data = episode.traces[0].task.data.model_extra
        plan = v1_env.plan_of(v1_env.SelfImproveData.model_validate(episode.traces[0].task.data.model_dump()))
        kinds.add(plan.kind)
        # One prompt per group: every rollout was sent the plan's messages.
        assert all(request_messages(trace) == plan.messages() for trace in episode.traces)
        assert all(trace.task.data.model_dump() == episode.traces[0].task.data.model_dump()
                   for trace in episode.traces)
        # Rewards are the scripted correctness; S is the population variance of the rescaled returns.
        rewards = [trace.reward for trace in episode.traces]
        assert rewards == [float(mixed_server.behaviour_of(t.last_reply) == "correct") for t in episode.traces]
        learnability = float(np.var(np.asarray(rewards) / 1.0))
        for trace in episode.traces:
            assert trace.metrics["learnability"] == pytest.approx(learnability)
            assert trace.metrics["depth"] == plan.depth == data["depth"]
            assert trace.metrics["from_buffer"] == float(plan.instance is not None)
            assert trace.metrics["buffer_size"] == len(new["instances"])
        # Selection starts exactly when the buffer holds min_buffer_size (select_prob = 1).
        assert (plan.instance is not None) == (len(old["instances"]) >= MIN_BUFFER)
        # The parent takes S; the children extend its history and inherit S (0 when solved).
        held = {instance["instance_id"]: instance for instance in new["instances"]}
        if plan.instance is not None and plan.instance.instance_id in held:
            parent = held[plan.instance.instance_id]
            assert parent["score"] == pytest.approx(learnability) and parent["scored_step"] == new["step"]
        children = [i for i in new["instances"] if i["created_step"] == new["step"]]
        assert children and new["step"] == old["step"] + 1
        history = list(plan.instance.iterates) if plan.instance else []
        responses = {trace.last_reply: trace for trace in episode.traces}
        for child in children:
            trace = responses[child["iterates"][-1]]
            solved = trace.metrics["solved"] == 1.0
            assert child["iterates"][:-1] == history and child["iterate_correct"][-1] == solved
            assert child["parent_id"] == (plan.instance.instance_id if plan.instance else None)
            assert child["score"] == (0.0 if solved else pytest.approx(learnability))
    assert kinds == {"base", "improve", "diverge"}
    # A state_dict round trip resumes the same draws.
    clone = ExitBuffer(64, 10.0, 0, True)
    clone.load_state_dict(json.loads(json.dumps(live.state_dict())))
    assert [clone.sample().instance_id for _ in range(20)] == [live.sample().instance_id for _ in range(20)]


def test_buffer_path_resumes_the_buffer_and_its_draws(mixed_server: ScriptedServer, tmp_path: Path) -> None:
    env = exit_env(buffer_path=str(tmp_path / "buffer.json"))
    with EnvServerThread(env) as first:
        first.run_episodes(mixed_server.url, 4)
        saved = json.loads(json.dumps(first.env.loop.state_dict()))  # the store and the loop's generators
    assert json.loads((tmp_path / "buffer.json").read_text()) == saved
    clone = ExitBuffer(64, 10.0, 0, True)
    clone.load_state_dict({key: value for key, value in saved.items() if key != "loop"})
    with EnvServerThread(env) as second:
        assert json.loads(json.dumps(second.env.loop.state_dict())) == saved
        (episode,) = second.run_episodes(mixed_server.url, 1)
    assert episode.traces[0].task.data.model_extra["parent_id"] == clone.sample().instance_id


def test_a_failed_rollout_fails_the_episode_and_leaves_the_buffer(tmp_path: Path) -> None:
    server = ScriptedServer(policy=lambda request: "error" if request.index_for_question == 1 else "correct").start()
    try:
        with EnvServerThread(exit_env(request_seeds=True)) as served:
            (episode,) = served.run_episodes(server.url, 1)
            assert served.env.loop.store.step == 0 and len(served.env.loop.store) == 0
    finally:
        server.stop()
    assert not episode.ok and sum(not trace.ok for trace in episode.traces) == 1
    assert all(trace.metrics["buffer_size"] == 0.0 for trace in episode.traces)
    seeds = [body.get("seed") for body in server.requests]
    assert len(seeds) == G and None not in seeds and len(set(seeds)) == G  # request_seeds: one per request


def test_a_taskset_system_prompt_replaces_the_packages(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "system.txt").write_text("Answer in \\boxed{}.")
    env = exit_env(strategy="grpo")
    env["taskset"]["system_prompt"] = str(tmp_path / "system.txt")
    with EnvServerThread(env) as served:
        served.run_episodes(scripted_server.url, 1)
    for body in scripted_server.requests:
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == "Answer in \\boxed{}."


def fake_embed(model_name: str, texts: list[str]) -> np.ndarray:
    """Unit vectors fixed by each text (the real model needs the diversity extra)."""
    rows = [np.random.default_rng(zlib.crc32(text.encode())).normal(size=8) for text in texts]
    return np.asarray([row / np.linalg.norm(row) for row in rows])


def test_diversity_shaping_is_recorded_as_a_reward(mixed_server: ScriptedServer, monkeypatch) -> None:
    monkeypatch.setattr(diversity, "embed_texts", fake_embed)
    with EnvServerThread(exit_env(strategy="exit", min_buffer_size=4)) as served:
        episodes = served.run_episodes(mixed_server.url, 3)
    for episode in episodes:
        returns = [trace.rewards["correct"].score for trace in episode.traces]
        responses = [trace.last_reply for trace in episode.traces]
        bonus = diversity.diversity_bonus(fake_embed("", responses), 0.1, [bool(r) for r in responses])
        shaped = diversity.shaped_returns(returns, bonus)
        assert [trace.reward for trace in episode.traces] == pytest.approx(list(shaped))
        assert [trace.metrics["diversity"] for trace in episode.traces] == pytest.approx(list(bonus))
        assert [t.rewards["diversity"].score for t in episode.traces] == pytest.approx(
            [s - r for s, r in zip(shaped, returns, strict=True)])
        assert np.mean([t.reward for t in episode.traces]) == pytest.approx(np.mean(returns))
        assert "buffer_diversity" in episode.traces[0].metrics


def rl_config(group_size: int = 1, pool: dict | None = None, **env: object) -> dict:
    source = {"name": "exit", "env": {"taskset": {"id": "self-improve"}, **env},
              "serve": {"pool": pool or {"type": "static", "num_workers": 1}}}
    return {"orchestrator": {"group_size": group_size, "train": {"source": [source]}}}


def test_prime_rl_config_check() -> None:
    assert v1_env.prime_rl_problems(rl_config()) == []
    (problem,) = v1_env.prime_rl_problems(rl_config(group_size=16))  # inherited by the source
    assert problem.startswith("train source exit: group_size must be 1")
    config = rl_config(group_size=16)
    config["orchestrator"]["train"]["source"][0]["group_size"] = 1  # the source's own wins
    assert v1_env.prime_rl_problems(config) == []
    for pool in ({"type": "elastic"}, {"type": "static"}, {"type": "static", "num_workers": 2}):
        (problem,) = v1_env.prime_rl_problems(rl_config(pool=pool))
        assert "serve.pool must be" in problem
        assert v1_env.prime_rl_problems(rl_config(pool=pool, buffer_url="redis://127.0.0.1:6379/0")) == []
    config = rl_config()
    config["orchestrator"]["eval"] = {"source": [{**config["orchestrator"]["train"]["source"][0], "name": "e"}]}
    (problem,) = v1_env.prime_rl_problems(config)
    assert problem.startswith('eval source e: env.strategy must be "grpo"')
    config["orchestrator"]["eval"]["source"][0]["env"]["strategy"] = "grpo"
    assert v1_env.prime_rl_problems(config) == []
    other = rl_config(group_size=16)
    other["orchestrator"]["train"]["source"][0]["env"]["taskset"]["id"] = "gsm8k"
    assert v1_env.prime_rl_problems(other) == []


def test_prompts_are_the_packages() -> None:
    plan = v1_env.plan_of(v1_env.SelfImproveData(task_id="t", question="q?", answer="1"))
    assert plan.messages() == prompts.base_messages("q?")


def test_the_docs_prime_rl_config_passes_the_check() -> None:
    text = (REPO / "docs" / "verifiers-v1.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    config = tomllib.loads(block)
    assert v1_env.prime_rl_problems(config) == []
    (source,) = config["orchestrator"]["train"]["source"]
    env = resolve_env_config(source["env"])
    assert isinstance(env, v1_env.ExitEnvConfig) and env.exit_config().min_buffer_size == 128
