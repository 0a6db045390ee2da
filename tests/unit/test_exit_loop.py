"""The host-free ExIt loop on its own: plans, finished groups, failures, outages."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest

from self_improve.buffer.exit_buffer import ExitBuffer
from self_improve.buffer.store import BufferStore, StoreOutOfMemory, StoreUnavailable
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop, GroupPlan, Rollout, plan_group
from self_improve.grouping import Group, Instance, Task

TASK = Task("train-0", "What is 2+3?", "5")


def loop_with(**arguments) -> ExitLoop:
    return ExitLoop.from_config(ExitConfig(**arguments).resolved())


def rollouts(*correct: bool, failure: str | None = None) -> list[Rollout]:
    return [Rollout(f"answer {i} {flag}", float(flag), flag, failure if i == 0 else None)
            for i, flag in enumerate(correct)]


def test_a_fresh_buffer_plans_the_hosts_own_question() -> None:
    loop = loop_with()
    plan = loop.plan(TASK)
    assert plan == GroupPlan("base", TASK) and not plan.from_buffer and plan.previous == ""


def test_finish_scores_the_group_and_fills_the_buffer() -> None:
    loop = loop_with(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0)
    report = loop.finish(loop.plan(TASK), rollouts(True, False, False, True))
    assert report.observed and report.group.learnability == pytest.approx(0.25)
    assert len(loop.store) == 4 and report.rewards == (1.0, 0.0, 0.0, 1.0)
    assert [row["solved"] for row in report.metrics] == [1.0, 0.0, 0.0, 1.0]
    follow_up = loop.plan(TASK)
    assert follow_up.kind == "improve" and follow_up.depth == 1 and follow_up.from_buffer


class CountingBuffer(ExitBuffer):
    """The real buffer, counting the calls for its metrics."""

    metric_calls = 0

    def metrics(self) -> dict[str, float]:
        self.metric_calls += 1
        return super().metrics()


@pytest.mark.parametrize("row_metrics", ["core", "all"])
def test_each_row_carries_the_core_metrics_and_with_all_the_step_group_and_buffer_ones(row_metrics: str) -> None:
    config = ExitConfig(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0, row_metrics=row_metrics).resolved()
    buffer = CountingBuffer(config.buffer_size, config.kappa, config.seed)
    loop = ExitLoop(config, buffer)
    loop.finish(loop.plan(TASK), rollouts(True, False))
    plan = loop.plan(TASK)
    report = loop.finish(plan, rollouts(True, False, False, False))
    core = [{"from_buffer": 1.0, "learnability": pytest.approx(0.1875), "solved": flag}
            for flag in (1.0, 0.0, 0.0, 0.0)]
    if row_metrics == "core":
        assert list(report.metrics) == core and buffer.metric_calls == 0  # the store is not asked per group
        return
    step = {"improve_step": 1.0, "diverge_step": 0.0, "depth": 1.0, "prev_correct": float(plan.prev_correct),
            "group_accuracy": 0.25, **buffer.metrics()}  # the buffer's metrics after the group
    assert list(report.metrics) == [{**row, **step} for row in core] and buffer.metric_calls == 3
    assert step["buffer_step"] == 2.0


def test_the_plan_built_from_an_instance_carries_its_lineage_into_the_group() -> None:
    loop = loop_with(min_buffer_size=1, select_prob=1.0, divergence_prob=0.0)
    loop.finish(loop.plan(TASK), rollouts(False, True))
    plan = loop.plan(Task("train-9", "another question", "1"))
    group = loop.finish(plan, rollouts(True, True)).group
    assert group.task == TASK and group.parent_id == plan.instance.instance_id
    assert group.history == plan.instance.iterates and group.kind == "improve"
    assert "Improve your current response" in plan.messages()[1]["content"]


@pytest.mark.parametrize("bad", [
    rollouts(True, False, failure="error: server said 500"),
    rollouts(True, False, failure="timed out"),
    [Rollout("   \n", 0.0, False), Rollout("answer", 1.0, True)],
])
def test_a_group_with_any_failed_or_empty_rollout_leaves_the_buffer_untouched(bad, caplog) -> None:
    loop = loop_with()
    with caplog.at_level(logging.WARNING, logger="self_improve"):
        report = loop.finish(loop.plan(TASK), bad)
    assert not report.observed and len(loop.store) == 0 and loop.store.step == 0
    assert report.failures[0] is not None and report.failures[1] is None
    assert "left out of the buffer" in caplog.text


def test_answer_checks_that_ran_out_of_time_are_logged_once_per_group(caplog) -> None:
    loop = loop_with()
    group = [Rollout(f"answer {i}", 0.0, False, check_timed_out=i < 3) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="self_improve"):
        report = loop.finish(loop.plan(TASK), group)
    assert report.observed
    assert [r.getMessage() for r in caplog.records].count(
        "group of train-0: 3 answer check(s) ran out of time and count as wrong") == 1


class Unreachable:
    """A remote store whose server is down: every call raises ``StoreUnavailable``."""

    remote = True
    stream = 0
    step = 0

    def __len__(self) -> int:
        raise StoreUnavailable("connection refused")

    def sample(self) -> Instance:
        raise StoreUnavailable("connection refused")

    def observe(self, group: Group) -> None:
        raise StoreUnavailable("connection refused")

    def instances(self) -> Iterator[Instance]:
        raise StoreUnavailable("connection refused")

    def metrics(self) -> dict[str, float]:
        raise StoreUnavailable("connection refused")

    def state_dict(self) -> dict:
        raise StoreUnavailable("connection refused")

    def load_state_dict(self, state: dict) -> None:
        raise StoreUnavailable("connection refused")


def test_an_unreachable_store_plans_fresh_questions_keeps_rewards_and_warns_once(caplog) -> None:
    assert isinstance(Unreachable(), BufferStore) and isinstance(ExitBuffer(), BufferStore)
    loop = ExitLoop(ExitConfig().resolved(), Unreachable())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="self_improve"):
        reports = [loop.finish(loop.plan(TASK), rollouts(True, False)) for _ in range(3)]
    assert all(not r.observed and r.rewards == (1.0, 0.0) for r in reports)
    assert caplog.text.count("buffer store unavailable") == 1


def test_a_full_store_that_still_takes_draws_warns_once_until_it_takes_a_group_again(caplog, monkeypatch) -> None:
    loop = loop_with(min_buffer_size=1, select_prob=1.0)
    loop.finish(loop.plan(TASK), rollouts(True, False))
    accept = loop.store.observe

    def refuse(group: Group) -> None:
        raise StoreOutOfMemory("out of memory")

    def groups() -> list[bool]:
        observed = []
        for _ in range(3):
            plan = loop.plan(TASK)
            assert plan.from_buffer, "the store still takes draws"
            observed.append(loop.finish(plan, rollouts(True, False)).observed)
        return observed

    with caplog.at_level(logging.WARNING, logger="self_improve"):
        monkeypatch.setattr(loop.store, "observe", refuse)
        assert groups() == [False] * 3 and caplog.text.count("out of memory") == 1
        monkeypatch.setattr(loop.store, "observe", accept)
        assert groups() == [True] * 3 and caplog.text.count("out of memory") == 1
        monkeypatch.setattr(loop.store, "observe", refuse)
        assert groups() == [False] * 3 and caplog.text.count("out of memory") == 2


def test_plan_group_draws_the_selection_coin_only_once_the_buffer_is_warm() -> None:
    config = ExitConfig(min_buffer_size=2, select_prob=1.0).resolved()
    buffer, rng = ExitBuffer(capacity=8), np.random.default_rng(0)
    state = rng.bit_generator.state
    assert plan_group(buffer, rng, config, TASK).kind == "base"
    assert rng.bit_generator.state == state, "a cold buffer must not consume the selection stream"
