"""``ExitTaskSampler`` (integrations/prime-rl-main/exit_sampler.py) driven as
prime-rl's ``Curriculum`` drives a sampler, with fake episodes and no model:
``next`` tasks, ``observe`` finished groups, read ``metrics``, checkpoint with
``state_dict`` and resume with ``load_state_dict``. The sampler needs the v1
taskset's classes, so it runs here, with verifiers 0.4."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import verifiers.v1 as vf
from verifiers.v1.utils.loaders import resolve_env_config

from self_improve.hosts.v1_taskset import SelfImproveData

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations" / "prime-rl-main"))
from exit_sampler import ExitTaskSampler  # noqa: E402  (a draft module outside the package, by path)

G = 4
WARM = {"strategy": "diverge", "select_prob": 1.0, "buffer_size": 16, "min_buffer_size": 2, "seed": 0}
"""Select from the buffer as soon as it holds two instances."""


def tasks(count: int = 6) -> list[vf.Task]:
    # The sampler's integration pairs the taskset with verifiers' single-agent env, as gsm8k-exit-sampler.toml does.
    config = resolve_env_config({"id": "single-agent",
                                 "taskset": {"id": "self-improve", "num_train_examples": count, "seed": 1}})
    return list(vf.load_taskset(config.taskset))


def episode(task: vf.Task, correct: bool, ok: bool = True) -> vf.Episode:
    """One finished single-agent episode, as prime-rl's env server returns it: one trace of the
    dispatched task's data, scored (``exit_check``, the reward) and with a reply."""
    answer = f"\\boxed{{{task.data.answer}}}" if correct else "\\boxed{-1}"
    text = f"Step {task.data.step} at depth {task.data.depth}. {answer}"
    trace = vf.Trace(
        task=vf.TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
        agent=vf.AgentInfo(config=vf.AgentConfig()),
        nodes=[vf.MessageNode(message=vf.AssistantMessage(content=text), sampled=True)],
        rewards={"correct": vf.Reward(score=float(correct))},
        metrics={"solved": float(correct)},
        info={"exit_check": {"correct": correct, "timed_out": False}},
        ok=ok,
    )
    return vf.Episode(env=vf.EnvInfo(id="self-improve", name="gsm8k-exit"), task=trace.task,
                      group=vf.GroupInfo(id="g"), traces=[trace])


def play(sampler: ExitTaskSampler, groups: int, solved: int = 1) -> list[vf.Task]:
    """Draw ``groups`` tasks and observe each as a group of G episodes, ``solved`` of them correct."""
    drawn = []
    for _ in range(groups):
        task = next(sampler)
        drawn.append(task)
        sampler.observe([episode(task, index < solved) for index in range(G)])
    return drawn


def test_fresh_tasks_come_in_dataset_order_until_the_buffer_is_warm() -> None:
    pool = tasks()
    sampler = ExitTaskSampler(pool, **WARM)
    first = next(sampler)
    assert first is pool[0] and first.data.step == "base"
    assert sampler.metrics()["plans/fresh"] == 1.0


def test_observed_groups_fill_the_buffer_and_warm_it_into_self_iteration_steps() -> None:
    sampler = ExitTaskSampler(tasks(), **WARM)
    drawn = play(sampler, 8)
    steps = [task.data.step for task in drawn]
    assert steps[0] == "base"  # one group's two distinct responses warm the buffer (min_buffer_size 2)
    assert {"improve", "diverge"} & set(steps[1:]), steps
    minted = [task for task in drawn if task.data.step != "base"]
    for task in minted:  # as the env server validates the task data it receives
        SelfImproveData.model_validate(task.data.model_dump(mode="json"))
        assert task.data.instance is not None
    metrics = sampler.metrics()
    assert metrics["plans/observed"] == 8.0
    assert sum(metrics.get(f"plans/{kind}", 0.0) for kind in ("fresh", "improve", "diverge")) == 8.0
    assert metrics["buffer_size"] >= 2
    assert "plans/observed" not in sampler.metrics()  # counts are per reporting interval


def test_a_group_with_a_failed_episode_is_left_out_of_the_buffer() -> None:
    sampler = ExitTaskSampler(tasks(), **WARM)
    task = next(sampler)
    sampler.observe([episode(task, index < 1, ok=index != G - 1) for index in range(G)])
    metrics = sampler.metrics()
    assert metrics["plans/left_out"] == 1.0 and "plans/observed" not in metrics
    assert metrics["buffer_size"] == 0.0


def test_state_dict_round_trip_resumes_the_cursor_and_the_buffer() -> None:
    pool = tasks()
    sampler = ExitTaskSampler(pool, **WARM)
    play(sampler, 5)
    state = sampler.state_dict()
    restored = ExitTaskSampler(pool, **WARM)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    assert restored.cursor == 5
    assert restored.metrics()["buffer_size"] == sampler.metrics()["buffer_size"]
    assert restored._next_base() is pool[5 % len(pool)]  # the dataset resumes where it stopped


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="num_train_examples: not ExIt loop arguments"):
        ExitTaskSampler(tasks(), num_train_examples=3)
    with pytest.raises(ValueError, match="diversity_bonus: a curriculum sampler cannot apply it"):
        ExitTaskSampler(tasks(), strategy="exit")
    with pytest.raises(ValueError, match="at least one task"):
        ExitTaskSampler([])


def test_a_resumed_sampler_draws_the_tasks_the_uninterrupted_one_draws_next() -> None:
    """As prime-rl's test_curriculum checks its samplers: checkpoint, draw on, restore, draw the
    same keys. With ``strategy="grpo"`` every draw is the dataset's; which buffer instance a warm
    ExIt sampler picks also depends on the loop's random generators (issue 29, item 3)."""
    pool = tasks(4)
    sampler = ExitTaskSampler(pool, strategy="grpo")
    play(sampler, 6)  # wraps past the end of the four tasks
    state = sampler.state_dict()
    expected = [next(sampler).key for _ in range(5)]
    restored = ExitTaskSampler(pool, strategy="grpo")
    restored.load_state_dict(state)
    assert [next(restored).key for _ in range(5)] == expected == [pool[(6 + i) % 4].key for i in range(5)]
