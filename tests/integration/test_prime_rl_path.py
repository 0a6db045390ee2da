"""The environment driven the way prime-rl drives it, end to end against the scripted server.

prime-rl v0.7.0/v0.8.0 serve a classic environment through verifiers' v1 legacy
bridge: a ``LegacyEnvServer`` calls ``verifiers.load_environment(id, **args)``,
answers ``info`` with ``requires_group_scoring = env.requires_group_rollouts``
and, when that is true, runs ``env.run_group`` with the G copies of one dataset
row for each ``run_group(task_idx, n=G)`` request. Here the real server runs on
a local ZMQ port and the real ``EnvClient`` talks to it, as the orchestrator does.

prime-rl v0.6.0 calls ``vf.load_environment(id, **args)`` in the orchestrator
and ``env.run_group(inputs, client_config, model, sampling_args)``, handing the
group to a spawned ``ZMQEnvServer`` (its ``env_client``); both forms are here.

The scripted policy answers a base question with one correct response out of
four and a self-improve prompt with two out of four, so the two kinds of group
have different learnability and every buffer score can be traced to one group.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import verifiers as vf
from verifiers.serve import ZMQEnvClient, ZMQEnvServer
from verifiers.utils.serve_utils import get_free_port
from verifiers.v1.configs.client import EvalClientConfig
from verifiers.v1.legacy import LegacyEnvServer
from verifiers.v1.serve.client import EnvClient
from verifiers.v1.types import SamplingConfig

from scripted_server import ChatRequest, ScriptedServer

G = 4
ENV_ID = "self-improve"
API_KEY_VAR = "SCRIPTED_KEY"
BASE_PATTERN = ("correct", "wrong", "wrong", "wrong")
IMPROVE_PATTERN = ("correct", "correct", "wrong", "wrong")


def base_then_improve_policy(request: ChatRequest) -> str:
    pattern = BASE_PATTERN if request.kind == "base" else IMPROVE_PATTERN
    return pattern[request.index_for_question % G]


def exit_args(buffer_path: Path) -> dict[str, Any]:
    """Always select once the buffer holds one group's children: the 2nd group self-improves."""
    return {
        "strategy": "improve",
        "select_prob": 1.0,
        "min_buffer_size": G,
        "num_train_examples": 8,
        "num_eval_examples": 1,
        "buffer_path": str(buffer_path),
        "row_metrics": "all",  # the buffer's metrics on each trace
    }


def prime_rl_sampling() -> SamplingConfig:
    """What prime-rl v0.8.0's orchestrator sends for a chat-completions client."""
    return SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=256, extra_body={"cache_salt": "0"})


@pytest.fixture
def policy_server(scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    scripted_server.policy = base_then_improve_policy
    monkeypatch.setenv(API_KEY_VAR, "not-a-secret")
    return scripted_server


@asynccontextmanager
async def legacy_bridge(env_args: dict[str, Any]) -> AsyncIterator[tuple[LegacyEnvServer, EnvClient]]:
    """The bridge server prime-rl v0.8.0 starts for ``legacy = { id, args }``, with the
    ``extra_env_kwargs`` its orchestrator adds, and a connected ``EnvClient``."""
    server = LegacyEnvServer(ENV_ID, env_args, address="tcp://127.0.0.1:0", extra_env_kwargs={"max_seq_len": 2048})
    serving = asyncio.create_task(server.run())
    client = EnvClient(server.address)
    try:
        await client.wait_for_server_startup(timeout=60, interval=0.05)
        yield server, client
    finally:
        await client.close()
        serving.cancel()
        with suppress(asyncio.CancelledError):
            await serving


async def bridge_groups(url: str, env_args: dict[str, Any], count: int) -> tuple[LegacyEnvServer, list[list[Any]]]:
    """Run ``count`` groups of task row 0 through the bridge; return the server and each group's traces."""
    client_config = EvalClientConfig(base_url=url, api_key_var=API_KEY_VAR)
    async with legacy_bridge(env_args) as (server, client):
        groups = [await client.run_group(task_idx=0, n=G, client=client_config, model="scripted",
                                         sampling=prime_rl_sampling()) for _ in range(count)]
    return server, groups


def rewards(traces: list[Any]) -> list[float]:
    return [trace.rewards["reward"].score for trace in traces]


def hook_learnability(traces: list[Any]) -> float:
    """The learnability S the ExIt hook measured for a group (it stamps it on every rollout)."""
    return float(traces[0].metrics["learnability"])


def test_bridge_reports_that_the_environment_requires_group_rollouts(tmp_path: Path) -> None:
    async def scenario() -> bool:
        async with legacy_bridge(exit_args(tmp_path / "buffer.json")) as (_, client):
            return (await client.info()).requires_group_scoring

    assert asyncio.run(scenario()) is True


def test_bridge_run_group_sends_one_prompt_to_all_rollouts_of_a_group(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    _, groups = asyncio.run(bridge_groups(policy_server.url, exit_args(tmp_path / "buffer.json"), count=2))

    for traces in groups:
        assert len(traces) == G
        assert len({trace.task.data.prompt for trace in traces}) == 1
        assert len({trace.info["parent_id"] for trace in traces}) == 1
    served_kinds = [served.kind for served in policy_server.served]
    assert served_kinds == ["base"] * G + ["improve"] * G


def test_bridge_group_reaches_the_exit_hook_whole(policy_server: ScriptedServer, tmp_path: Path) -> None:
    _, groups = asyncio.run(bridge_groups(policy_server.url, exit_args(tmp_path / "buffer.json"), count=1))

    (traces,) = groups
    assert len({hook_learnability(traces)} | {trace.metrics["learnability"] for trace in traces}) == 1
    assert hook_learnability(traces) > 0
    assert [trace.metrics["buffer_size"] for trace in traces] == [G] * G


def test_bridge_learnability_is_the_spread_of_the_whole_groups_rewards(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    """Up to the rubric's fixed rescaling, S is the variance of all G rewards of a group."""
    _, (base, improve) = asyncio.run(
        bridge_groups(policy_server.url, exit_args(tmp_path / "buffer.json"), count=2))

    assert hook_learnability(improve) / hook_learnability(base) == pytest.approx(
        np.var(rewards(improve)) / np.var(rewards(base)))


def test_bridge_base_group_adds_its_responses_scored_by_learnability_or_zero_when_solved(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    server, groups = asyncio.run(bridge_groups(policy_server.url, exit_args(tmp_path / "buffer.json"), count=1))

    (traces,) = groups
    instances = list(server.env.buffer.instances())
    assert len(instances) == G
    expected = [0.0 if trace.metrics["solved"] == 1.0 else hook_learnability(traces) for trace in traces]
    assert sorted(instance.score for instance in instances) == pytest.approx(sorted(expected))
    assert 0.0 < hook_learnability(traces) and 0.0 in expected
    assert all(instance.parent_id is None and instance.depth == 0 for instance in instances)


def test_bridge_selected_group_rescores_its_parent_with_the_new_learnability(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    server, (base, improve) = asyncio.run(
        bridge_groups(policy_server.url, exit_args(tmp_path / "buffer.json"), count=2))

    parent_id = improve[0].info["parent_id"]
    assert hook_learnability(improve) != pytest.approx(hook_learnability(base))
    parent = server.env.buffer.get(parent_id)
    assert parent is not None and parent.score == pytest.approx(hook_learnability(improve))
    children = [i for i in server.env.buffer.instances() if i.parent_id == parent_id]
    assert len(children) == G and all(child.depth == 1 for child in children)


def test_bridge_buffer_file_follows_every_group(policy_server: ScriptedServer, tmp_path: Path) -> None:
    buffer_path = tmp_path / "buffer.json"
    server, _ = asyncio.run(bridge_groups(policy_server.url, exit_args(buffer_path), count=2))

    saved = json.loads(buffer_path.read_text())
    assert saved["step"] == 2
    assert saved == json.loads(json.dumps(server.env.loop.state_dict()))


def test_v060_load_environment_then_run_group_updates_the_buffer(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    env = vf.load_environment(ENV_ID, **exit_args(tmp_path / "buffer.json"))
    row = env.get_dataset()[0]
    client = vf.ClientConfig(api_base_url=policy_server.url, api_key_var=API_KEY_VAR)

    outputs = asyncio.run(env.run_group([vf.RolloutInput(**row) for _ in range(G)], client, "scripted",
                                        {"temperature": 1.0, "max_completion_tokens": 256}))

    assert env.requires_group_rollouts is True
    assert len({str(output["prompt"]) for output in outputs}) == 1
    learnability = outputs[0]["metrics"]["learnability"]
    assert learnability > 0
    assert sorted(i.score for i in env.buffer.instances()) == pytest.approx(
        sorted(0.0 if output["metrics"]["solved"] == 1.0 else learnability for output in outputs))


def test_v060_env_server_worker_holds_the_buffer_not_the_orchestrator(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    """prime-rl v0.6.0 loads the env in the orchestrator and hands groups to a spawned
    ZMQEnvServer (one worker here); the group is run, scored and buffered in the worker."""
    buffer_path = tmp_path / "buffer.json"
    args = exit_args(buffer_path)
    env = vf.load_environment(ENV_ID, **args)
    address = f"tcp://127.0.0.1:{get_free_port()}"
    worker = multiprocessing.get_context("spawn").Process(
        target=ZMQEnvServer.run_server,
        args=(ENV_ID, args, {"max_total_completion_tokens": -1}, "WARNING", str(tmp_path / "logs")),
        kwargs={"address": address, "console_logging": False, "num_workers": 1},
    )
    worker.start()

    async def scenario() -> list[dict[str, Any]]:
        env_client = ZMQEnvClient(address=address, name="gsm8k-exit")
        try:
            await env_client.wait_for_server_startup()
            row = env.get_dataset()[0]
            return await env.run_group(
                [vf.RolloutInput(**row) for _ in range(G)],
                client=vf.ClientConfig(api_base_url=policy_server.url, api_key_var=API_KEY_VAR),
                model="scripted",
                sampling_args={"temperature": 1.0, "max_completion_tokens": 256},
                max_retries=3,
                state_columns=["trajectory"],
                env_client=env_client,
            )
        finally:
            await env_client.close()

    try:
        outputs = asyncio.run(scenario())
    finally:
        worker.terminate()
        worker.join(timeout=30)

    learnability = outputs[0]["metrics"]["learnability"]
    assert learnability > 0
    saved = json.loads(buffer_path.read_text())
    assert saved["step"] == 1
    assert sorted(instance["score"] for instance in saved["instances"]) == pytest.approx(
        sorted(0.0 if output["metrics"]["solved"] == 1.0 else learnability for output in outputs))
    assert len(env.buffer) == 0


def test_bridge_carries_each_rollouts_reward_but_not_the_advantage_the_environment_set(
    policy_server: ScriptedServer, tmp_path: Path
) -> None:
    """prime-rl computes GRPO advantages from these rewards itself, so anything the
    environment puts in ``state["advantage"]`` never reaches the trainer."""
    env = vf.load_environment(ENV_ID, **exit_args(tmp_path / "classic.json"))
    classic = asyncio.run(env.run_group(
        [vf.RolloutInput(**env.get_dataset()[0]) for _ in range(G)],
        vf.ClientConfig(api_base_url=policy_server.url, api_key_var=API_KEY_VAR), "scripted",
        {"max_completion_tokens": 256}, state_columns=["trajectory"]))
    _, (traces,) = asyncio.run(bridge_groups(policy_server.url, exit_args(tmp_path / "bridge.json"), count=1))

    def keys(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for item in value.values() for k in keys(item)}
        if isinstance(value, list):
            return {k for item in value for k in keys(item)}
        return set()

    assert all(output["trajectory"][-1]["advantage"] is not None for output in classic)
    dumped = [trace.model_dump() for trace in traces]
    assert [d["rewards"]["reward"]["score"] for d in dumped] == rewards(traces)
    assert not any("advantage" in keys(d) for d in dumped)
