"""The ExIt buffer: scoring, children, capacity, sampling law, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from self_improve.buffer.exit_buffer import ExitBuffer
from self_improve.grouping import Group, Task

TASK = Task("train-1", "What is 2+3?", "5")


def base_group(task: Task = TASK, responses: tuple[str, ...] = ("5", "6", "7", "5 again"),
               correct: tuple[bool, ...] = (True, False, False, True),
               returns: tuple[float, ...] | None = None) -> Group:
    return Group(task=task, parent_id=None, history=(), history_correct=(), kind="base",
                 responses=responses, correct=correct,
                 returns=returns if returns is not None else tuple(float(c) for c in correct))


def child_group(parent, responses: tuple[str, ...], correct: tuple[bool, ...], kind: str = "improve") -> Group:
    return Group(task=parent.task, parent_id=parent.instance_id, history=parent.iterates,
                 history_correct=parent.iterate_correct, kind=kind, responses=responses,
                 correct=correct, returns=tuple(float(c) for c in correct))


def test_base_group_inserts_one_child_per_response_at_depth_zero() -> None:
    buffer = ExitBuffer(capacity=8)
    buffer.observe(base_group())
    assert len(buffer) == 4
    assert {instance.depth for instance in buffer.instances()} == {0}
    assert all(instance.parent_id is None for instance in buffer.instances())


def test_unsolved_children_inherit_the_group_learnability_and_solved_ones_get_zero() -> None:
    buffer = ExitBuffer(capacity=8)
    buffer.observe(base_group())
    scores = {instance.latest: instance.score for instance in buffer.instances()}
    assert scores == {"5": 0.0, "6": 0.25, "7": 0.25, "5 again": 0.0}


def test_parent_score_becomes_the_new_group_learnability() -> None:
    buffer = ExitBuffer(capacity=16)
    buffer.observe(base_group())
    parent = next(i for i in buffer.instances() if i.latest == "6")
    buffer.observe(child_group(parent, ("a", "b", "c", "d"), (True, False, False, False)))
    assert buffer.get(parent.instance_id).score == pytest.approx(0.1875)


def test_parent_score_is_not_pooled_with_earlier_groups() -> None:
    """Failure 1 of the public attempt: learnability pooled over time."""
    buffer = ExitBuffer(capacity=32)
    buffer.observe(base_group())
    parent = next(i for i in buffer.instances() if i.latest == "6")
    buffer.observe(child_group(parent, ("a", "b", "c", "d"), (True, True, False, False)))
    buffer.observe(child_group(parent, ("e", "f", "g", "h"), (False, False, False, False)))
    assert buffer.get(parent.instance_id).score == 0.0


def test_children_extend_the_parent_history_one_level_deeper() -> None:
    buffer = ExitBuffer(capacity=16)
    buffer.observe(base_group())
    parent = next(i for i in buffer.instances() if i.latest == "6")
    buffer.observe(child_group(parent, ("a", "b", "c", "d"), (True, False, False, False)))
    child = next(i for i in buffer.instances() if i.latest == "b")
    assert child.iterates == ("6", "b")
    assert child.iterate_correct == (False, False)
    assert child.depth == 1
    assert child.parent_id == parent.instance_id
    assert child.score == pytest.approx(0.1875)


def test_evicted_parent_is_ignored_when_its_group_returns() -> None:
    buffer = ExitBuffer(capacity=4)
    buffer.observe(base_group())
    parent = next(i for i in buffer.instances() if i.latest == "6")
    other = Task("train-2", "q", "1")
    buffer.observe(base_group(other, ("w", "x", "y", "z"), (False,) * 4, returns=(0.0, 1.0, 0.0, 1.0)))
    assert buffer.get(parent.instance_id) is None
    buffer.observe(child_group(parent, ("a", "b", "c", "d"), (False,) * 4))
    assert len(buffer) == 4


def test_identical_task_and_normalised_response_is_stored_once() -> None:
    buffer = ExitBuffer(capacity=8)
    buffer.observe(base_group(responses=("same  answer", "same answer", " same answer\n", "other"),
                              correct=(False, False, False, True)))
    assert sorted(i.latest for i in buffer.instances()) == ["other", "same  answer"]


def test_same_response_to_different_tasks_is_kept_twice() -> None:
    buffer = ExitBuffer(capacity=8)
    buffer.observe(base_group(Task("a", "q", "1"), ("x",), (False,)))
    buffer.observe(base_group(Task("b", "q", "1"), ("x",), (False,)))
    assert len(buffer) == 2


def test_full_buffer_rejects_an_instance_scored_below_the_lowest() -> None:
    buffer = ExitBuffer(capacity=2)
    buffer.observe(base_group(responses=("a", "b"), correct=(True, False)))  # scores 0, 0.25
    buffer.observe(base_group(responses=("c", "d"), correct=(True, True)))  # scores 0, 0: tie with lowest
    latest = sorted(i.latest for i in buffer.instances())
    assert latest == ["b", "d"]  # "c" replaced the lowest "a"; "d" then replaced "c" (>= lowest, oldest tie)


def test_curriculum_buffer_stores_questions_and_rescores_them() -> None:
    buffer = ExitBuffer(capacity=8, store_responses=False)
    buffer.observe(base_group())
    (question,) = list(buffer.instances())
    assert question.iterates == () and question.score == 0.25
    buffer.observe(Group(task=TASK, parent_id=question.instance_id, history=(), history_correct=(),
                         kind="base", responses=("1", "2"), correct=(False, False), returns=(0.0, 0.0)))
    assert len(buffer) == 1 and buffer.get(question.instance_id).score == 0.0


def test_sampling_an_empty_buffer_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        ExitBuffer().sample()


@pytest.mark.parametrize(("name", "kwargs"), [("capacity", {"capacity": 0}), ("kappa", {"kappa": -1.0}),
                                              ("kappa", {"kappa": math.nan})])
def test_invalid_buffer_settings_raise_naming_the_setting(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        ExitBuffer(**kwargs)


def test_sampling_frequencies_follow_exp_kappa_score() -> None:
    buffer = ExitBuffer(capacity=8, kappa=10.0, seed=123)
    tasks = [Task(f"t{i}", "q", "1") for i in range(4)]
    for task, returns in zip(tasks, [(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.2, 0.6)], strict=True):
        buffer.observe(base_group(task, ("x", "y"), (False, False), returns))
    scores = np.array([i.score for i in buffer.instances()])
    expected = np.exp(10.0 * scores) / np.exp(10.0 * scores).sum()
    draws = 100_000
    counts = np.zeros(len(buffer))
    slot_of = {i.instance_id: slot for slot, i in enumerate(buffer.instances())}
    for _ in range(draws):
        counts[slot_of[buffer.sample().instance_id]] += 1
    chi_square = float((((counts - draws * expected) ** 2) / (draws * expected)).sum())
    assert chi_square < 24.3  # 99.9% quantile of chi-square with 7 degrees of freedom
    assert np.abs(counts / draws - expected).max() < 0.01


def probabilities(buffer: ExitBuffer) -> np.ndarray:
    """exp(kappa S_i) / sum_j exp(kappa S_j) over the held instances, in slot order."""
    scores = np.array([instance.score for instance in buffer.instances()])
    weights = np.exp(buffer.kappa * (scores - scores.max()))
    return weights / weights.sum()


def test_kappa_zero_samples_uniformly() -> None:
    buffer = ExitBuffer(capacity=4, kappa=0.0, seed=3)
    buffer.observe(base_group(responses=("a", "b", "c"), correct=(True, False, False)))
    assert sorted({i.score for i in buffer.instances()}) == [0.0, pytest.approx(2 / 9)]
    assert np.allclose(probabilities(buffer), 1 / 3)
    twin = np.random.default_rng()
    twin.bit_generator.state = buffer.state_dict()["rng"]
    held = [i.instance_id for i in buffer.instances()]
    for _ in range(30):
        assert buffer.sample().instance_id == held[int(twin.choice(3, p=np.full(3, 1 / 3)))]


def test_sampling_counts_times_sampled() -> None:
    buffer = ExitBuffer(capacity=4)
    buffer.observe(base_group(responses=("x",), correct=(False,)))
    buffer.sample()
    buffer.sample()
    assert next(buffer.instances()).times_sampled == 2


operations = st.lists(
    st.tuples(st.integers(0, 5), st.lists(st.booleans(), min_size=1, max_size=6),
              st.lists(st.floats(0, 1), min_size=6, max_size=6), st.booleans()),
    min_size=1, max_size=25)


def replay(buffer: ExitBuffer, ops) -> None:
    for number, (task_index, correct, raw_returns, select) in enumerate(ops):
        task = Task(f"t{task_index}", "q", "1")
        parent = buffer.sample() if select and len(buffer) else None
        group = Group(task=parent.task if parent else task, parent_id=parent.instance_id if parent else None,
                      history=parent.iterates if parent else (),
                      history_correct=parent.iterate_correct if parent else (),
                      kind="improve" if parent else "base",
                      responses=tuple(f"r{number}-{i}" for i in range(len(correct))),
                      correct=tuple(correct), returns=tuple(raw_returns[: len(correct)]))
        buffer.observe(group)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), operations)
def test_buffer_never_exceeds_capacity(capacity: int, ops) -> None:
    buffer = ExitBuffer(capacity=capacity, seed=1)
    replay(buffer, ops)
    assert len(buffer) <= capacity
    assert len({i.instance_id for i in buffer.instances()}) == len(buffer)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), operations, st.lists(st.floats(0, 0.25), min_size=1, max_size=5))
def test_full_buffer_admits_exactly_scores_at_or_above_the_lowest(capacity: int, ops, new_scores) -> None:
    buffer = ExitBuffer(capacity=capacity, seed=2)
    replay(buffer, ops)
    for n, score in enumerate(new_scores):
        lowest = min((i.score for i in buffer.instances()), default=math.inf)
        full = len(buffer) == capacity
        # Two identical wrong responses: one child with S = Var(0, x) = x^2 / 4 (the twin is a duplicate).
        group = Group(task=Task(f"new{n}", "q", "1"), parent_id=None, history=(), history_correct=(),
                      kind="base", responses=("a", "a"), correct=(False, False),
                      returns=(0.0, 2 * math.sqrt(score)))
        buffer.observe(group)
        admitted = any(i.task.task_id == f"new{n}" for i in buffer.instances())
        if full:
            assert len(buffer) == capacity
            assert admitted == (group.learnability >= lowest)
        else:
            assert admitted


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), operations)
def test_state_dict_round_trips_exactly_including_the_sampler(capacity: int, ops) -> None:
    buffer = ExitBuffer(capacity=capacity, seed=7)
    replay(buffer, ops)
    restored = ExitBuffer(capacity=capacity, seed=999)
    restored.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
    assert restored.state_dict() == buffer.state_dict()
    if len(buffer):
        assert [buffer.sample().instance_id for _ in range(5)] == [restored.sample().instance_id for _ in range(5)]


def test_loading_a_state_with_another_capacity_raises_naming_capacity() -> None:
    state = ExitBuffer(capacity=4).state_dict()
    with pytest.raises(ValueError, match="^capacity"):
        ExitBuffer(capacity=8).load_state_dict(state)


def test_loading_a_state_without_a_key_raises_naming_the_key() -> None:
    state = ExitBuffer(capacity=4).state_dict()
    del state["rng"]
    with pytest.raises(ValueError, match="^rng"):
        ExitBuffer(capacity=4).load_state_dict(state)


def test_metrics_report_size_scores_depth_and_distinct_tasks() -> None:
    buffer = ExitBuffer(capacity=8)
    buffer.observe(base_group())
    assert buffer.metrics() == {"buffer_step": 1.0, "buffer_size": 4.0, "buffer_score_mean": 0.125,
                                "buffer_score_max": 0.25, "buffer_depth_mean": 0.0, "buffer_distinct_tasks": 1.0}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), operations)
def test_running_metrics_agree_with_the_held_instances(capacity: int, ops) -> None:
    """The sums and the top-score heap kept through rescoring and eviction, and after a reload."""
    buffer = ExitBuffer(capacity=capacity, seed=3)
    replay(buffer, ops)
    reloaded = ExitBuffer(capacity=capacity)
    reloaded.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
    held = list(buffer.instances())
    for metrics in (buffer.metrics(), reloaded.metrics()):
        assert metrics["buffer_size"] == len(held)
        assert metrics["buffer_depth_mean"] == pytest.approx(np.mean([i.depth for i in held]))
        assert metrics["buffer_distinct_tasks"] == len({i.task.task_id for i in held})
        assert metrics["buffer_score_max"] == max(i.score for i in held)
        assert metrics["buffer_score_mean"] == pytest.approx(math.fsum(i.score for i in held) / len(held), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), operations, st.sampled_from([0.0, 1.0, 10.0, 50.0]))
def test_draws_are_numpy_choice_over_the_exp_kappa_score_distribution(capacity: int, ops, kappa: float) -> None:
    """Each draw takes one uniform number from the generator and lands where numpy's
    ``choice`` with ``probabilities(buffer)`` lands for the same generator state."""
    buffer = ExitBuffer(capacity=capacity, kappa=kappa, seed=11)
    replay(buffer, ops)
    twin = np.random.default_rng()
    twin.bit_generator.state = buffer.state_dict()["rng"]
    held = [i.instance_id for i in buffer.instances()]
    for _ in range(20):
        expected = held[int(twin.choice(len(held), p=probabilities(buffer)))]
        assert buffer.sample().instance_id == expected
    assert buffer.state_dict()["rng"] == twin.bit_generator.state


def test_draws_stay_exact_when_every_weight_underflows() -> None:
    """kappa (0.25 - S) above ~745 for every S: exp(kappa (S - 0.25)) is 0 for all, and the
    draw weighs the scores relative to the top one instead."""
    buffer = ExitBuffer(capacity=8, kappa=20_000.0, seed=5)
    tasks = [Task(f"t{i}", "q", "1") for i in range(3)]
    for task, returns in zip(tasks, [(0.0, 0.1), (0.0, 0.2), (0.0, 0.0)], strict=True):
        buffer.observe(base_group(task, ("x", "x"), (False, False), returns))  # one child per task
    top = max(buffer.instances(), key=lambda i: i.score)
    assert 0 < top.score < 0.25 - 745 / 20_000
    assert {buffer.sample().instance_id for _ in range(50)} == {top.instance_id}


WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(WHITESPACE + "ab\\{}5 é"), max_size=30))
def test_normalize_response_is_the_regex_whitespace_collapse(text: str) -> None:
    import re

    from self_improve.buffer.state import normalize_response

    assert normalize_response(text) == re.sub(r"\s+", " ", text).strip()
