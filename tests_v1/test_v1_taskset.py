"""The v1 taskset, its task, the chat harness and how verifiers 0.4 discovers them."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import typing
from pathlib import Path

import pytest
import verifiers.v1 as vf
from pydantic import ValidationError
from verifiers.v1.utils.loaders import (
    default_harness_id,
    env_config_type,
    environment_class,
    harness_class,
    resolve_env_config,
    taskset_class,
)

import self_improve
from self_improve import gsm8k_data, prompts
from self_improve.exit_config import ExitConfig, field_docs
from self_improve.exit_loop import GroupPlan
from self_improve.grouping import Instance, Task
from self_improve.hosts import v1_config, v1_env, v1_taskset
from self_improve.hosts.v1_taskset import (
    SelfImproveData,
    SelfImproveTask,
    SelfImproveTaskConfig,
    SelfImproveTasksetConfig,
)


def test_self_improve_exports_exactly_one_taskset_env_and_harness() -> None:
    assert self_improve.__all__ == v1_env.__all__
    assert taskset_class("self-improve") is self_improve.SelfImproveTaskset
    assert environment_class("self-improve") is self_improve.ExitEnv
    assert default_harness_id("self-improve") == "self-improve"
    assert harness_class("self-improve") is self_improve.ChatHarness
    assert env_config_type("self-improve") is self_improve.ExitEnvConfig


def test_defaults_run_offline_in_process() -> None:
    config = resolve_env_config({"taskset": {"id": "self-improve"}})
    assert isinstance(config, v1_env.ExitEnvConfig)
    assert isinstance(config.agent.runtime, vf.SubprocessConfig)  # not a remote sandbox
    harness = config.agent_harnesses()["agent"]
    assert harness.id == "self-improve" and type(harness).__name__ == "ChatHarnessConfig"  # not `null` (uv)
    assert config.rollouts_per_group == 8 and config.max_concurrent_agents is None
    assert config.exit_config().strategy == "diverge"


def test_taskset_matches_the_classic_rows_and_prompt() -> None:
    config = resolve_env_config({"seed": 3, "taskset": {"id": "self-improve", "num_train_examples": 5}})
    assert config.taskset.seed == 3  # the env's seed chooses the subset
    tasks = list(vf.load_taskset(config.taskset))
    rows = gsm8k_data.build_split("train", 5, seed=3)
    assert [task.data.task_id for task in tasks] == [row["info"]["task_id"] for row in rows]
    for task, row in zip(tasks, rows, strict=True):
        assert task.key == task.data.task_id
        assert task.data.answer == row["answer"] and task.data.step == "base" and task.data.instance is None
        assert [m.model_dump() for m in task.data.prompt] == prompts.base_messages(task.data.question)
    test_config = resolve_env_config({"taskset": {"id": "self-improve", "split": "test", "num_eval_examples": 2}})
    assert [t.data.task_id[:5] for t in vf.load_taskset(test_config.taskset)] == ["test-", "test-"]


@pytest.mark.parametrize(("env", "message"), [
    ({"kappa": -1.0}, "kappa: must be"),
    ({"min_buffer_size": 9, "buffer_size": 4}, "min_buffer_size: must be <="),
    ({"strategy": "best"}, "strategy"),
    ({"diversity_bonus": True, "diversity_mode": "advantage"}, "diversity_mode: must be 'reward'"),
    ({"group_request": True}, "group_request: must be false on verifiers v1"),
    ({"taskset": {"id": "self-improve", "num_train_examples": 0}}, "num_train_examples: must be -1"),
    ({"rollouts_per_group": 0}, "rollouts_per_group"),
    ({"format_weight": 0.1}, "format_weight"),  # v1: a plugged weight of the format reward instead
    ({"taskset": {"id": "self-improve", "seed": 3}}, "taskset.seed: must equal seed"),  # one seed, --env.seed
    ({"seed": 1, "taskset": {"id": "self-improve", "seed": 2}}, "taskset.seed: must equal seed"),
    ({"taskset": {"id": "self-improve", "task": {"use_think": "maybe"}}}, "use_think"),
])
def test_bad_arguments_are_named(env: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        resolve_env_config({"taskset": {"id": "self-improve"}, **env})


def _trace(task: SelfImproveTask, reply: str) -> vf.Trace:
    trace = vf.Trace(task=vf.TraceTask(type="SelfImproveTask", data=task.data),
                     agent=vf.AgentInfo(config=vf.AgentConfig()))
    trace.root_reply = reply
    return trace


@pytest.mark.parametrize(("reply", "rewards", "solved"), [
    ("so \\boxed{1,000}.", {"correct": 1.0, "format": 1.0}, 1.0),
    ("so \\boxed{999}.", {"correct": 0.0, "format": 1.0}, 0.0),
    ("the answer is 1000", {"correct": 0.0, "format": 0.0}, 0.0),
    ("", {"correct": 0.0, "format": 0.0}, 0.0),
])
def test_task_scores_in_process(reply: str, rewards: dict, solved: float) -> None:
    task = SelfImproveTask(SelfImproveData(task_id="t", question="q", answer="1000"))
    trace = _trace(task, reply)
    asyncio.run(task.score(trace))
    assert {name: reward.score for name, reward in trace.rewards.items()} == rewards
    assert trace.rewards["format"].weight == 0.0 and trace.metrics["solved"] == solved
    assert trace.reward == rewards["correct"]  # correctness is the reward


def test_improvement_reward_and_think_parsing() -> None:
    config = SelfImproveTaskConfig(iteration_reward="improvement", use_think=True)
    for prev_correct, expected in ((False, 1.0), (True, 0.0)):
        task = SelfImproveTask(SelfImproveData(task_id="t", question="q", answer="4", step="improve",
                                               prev_correct=prev_correct), config)
        trace = _trace(task, "<think>\\boxed{5}</think> so \\boxed{4}")
        asyncio.run(task.score(trace))
        assert trace.rewards["correct"].score == expected and trace.metrics["solved"] == 1.0


def test_plugged_format_weight_enters_max_return() -> None:
    config = resolve_env_config({"taskset": {"id": "self-improve",
                                             "task": {"rewards": {"format": {"weight": 0.25}}}}})
    assert v1_env.max_return(config.taskset.task) == 1.25
    assert v1_env.max_return(SelfImproveTaskConfig()) == 1.0


def test_minted_step_carries_its_plan() -> None:
    seed = SelfImproveTask(SelfImproveData(idx=4, id="train-9", task_id="train-9", question="What is 2+2?",
                                           answer="4", prompt=prompts.base_messages("What is 2+2?")))
    instance = Instance(instance_id=7, task=Task("train-9", "What is 2+2?", "4"), iterates=("It is 5.", "It is 3."),
                        iterate_correct=(False, False), score=0.25, parent_id=3, created_step=2, scored_step=5)
    for plan in (GroupPlan("diverge", instance.task, instance), GroupPlan("base", instance.task)):
        minted = v1_env.mint_step(seed, plan, request_seed=11)
        assert v1_env.plan_of(minted.data) == plan
        assert [m.model_dump() for m in minted.data.prompt] == plan.messages()
        assert minted.data.idx == 4 and minted.data.request_seed == 11
        assert minted.data.model_dump(include=set(plan.info())) == plan.info()
    assert minted.key == seed.key == "train-9"  # a fresh question keeps its key
    assert v1_env.mint_step(seed, GroupPlan("improve", instance.task, instance)).key != seed.key
    assert "SIGNIFICANTLY DIFFERS" in v1_env.mint_step(seed, GroupPlan("diverge", instance.task, instance)) \
        .data.prompt[1].content


def test_the_env_seed_is_the_tasksets_seed_by_construction() -> None:
    config = resolve_env_config({"seed": 5, "taskset": {"id": "self-improve", "seed": 5}})  # equal: accepted
    assert config.seed == config.taskset.seed == 5
    wire = resolve_env_config(config.model_dump(mode="json"))  # what the env server receives
    assert wire.seed == wire.taskset.seed == 5
    single = resolve_env_config({"id": "single-agent", "taskset": {"id": "self-improve", "seed": 2}})
    assert single.taskset.seed == 2  # under another env the taskset's seed is its own


def test_exit_config_fields_carry_their_type_default_and_doc_from_exit_config() -> None:
    docs, hints = field_docs(), typing.get_type_hints(ExitConfig)
    blocks = [(v1_env.ExitEnvConfig, v1_env.LOOP_FIELDS), (SelfImproveTasksetConfig, v1_taskset.DATA_FIELDS),
              (SelfImproveTaskConfig, v1_taskset.TASK_FIELDS)]
    held = collections.Counter(name for _, names in blocks for name in names)
    expected = collections.Counter(f.name for f in dataclasses.fields(ExitConfig) if f.name != "format_weight")
    assert held == expected + collections.Counter(["seed"])  # every argument but format_weight; seed twice
    for config, names in blocks:
        for name in names:
            field, declared = config.model_fields[name], ExitConfig.__dataclass_fields__[name]
            assert field.description.startswith(docs[name]), (config.__name__, name)
            assert field.default == declared.default and field.annotation == hints[name], (config.__name__, name)


def test_the_docs_configuration_table_is_the_generated_one() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "verifiers-v1.md").read_text()
    assert v1_env.configuration_table() in page, (
        "docs/verifiers-v1.md's configuration table differs from the v1 configs: paste the output of python -c "
        "'from self_improve.hosts import v1_env; print(v1_env.configuration_table())'")
    rows = v1_env.configuration_table().splitlines()[2:]
    assert len(rows) == len(v1_env.LOOP_FIELDS) + 4 + 1 + len(v1_taskset.DATA_FIELDS) + 2 + 1


def test_config_fields_are_refused_by_name_unless_exit_config_arguments() -> None:
    with pytest.raises(ValueError, match="nope: not ExitConfig arguments"):
        v1_config.exit_fields(["seed", "nope"])
    with pytest.raises(ValueError, match="kappa: not ExitConfig arguments of this config"):
        v1_config.exit_fields(["seed"], notes={"kappa": "a note on a field the config does not hold"})
