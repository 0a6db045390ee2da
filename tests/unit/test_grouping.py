"""The group value: learnability is the population variance of one group's returns."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from self_improve.grouping import Group, Instance, Task

TASK = Task("train-0", "q", "1")


def group(returns: tuple[float, ...], correct: tuple[bool, ...] | None = None, max_return: float = 1.0) -> Group:
    return Group(task=TASK, parent_id=None, history=(), history_correct=(), kind="base",
                 responses=tuple(f"r{i}" for i in range(len(returns))), returns=returns,
                 correct=correct if correct is not None else tuple(r > 0.5 for r in returns),
                 max_return=max_return)


def test_learnability_is_the_population_variance_of_the_returns() -> None:
    assert group((1.0, 0.1, 0.0, 1.0)).learnability == pytest.approx(0.226875)


def test_learnability_rescales_returns_into_the_unit_interval() -> None:
    assert group((1.1, 0.1, 0.0, 1.1), max_return=1.1).learnability == pytest.approx(0.276875 / 1.21)


def test_return_above_the_maximum_raises_naming_returns() -> None:
    with pytest.raises(ValueError, match="returns: must lie in"):
        group((1.1, 0.0))


def test_learnability_of_a_half_solved_binary_group_is_a_quarter() -> None:
    assert group((1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0)).learnability == pytest.approx(0.25)


def test_uniform_returns_have_zero_learnability() -> None:
    assert group((1.0, 1.0, 1.0)).learnability == 0.0


def test_single_rollout_group_has_zero_learnability() -> None:
    assert group((1.0,)).learnability == 0.0


def test_learnability_uses_the_returns_not_the_correctness() -> None:
    """Failure 2 of the public attempt: variance of raw correctness instead of the training return."""
    returns_differ = group((0.0, 0.1, 0.0, 0.1), correct=(False, False, False, False))
    assert returns_differ.learnability == pytest.approx(0.0025)


def test_advantages_are_mean_centred_returns() -> None:
    assert group((1.0, 0.0, 0.0, 1.0)).advantages == (0.5, -0.5, -0.5, 0.5)


def test_mismatched_lengths_raise_naming_the_fields() -> None:
    with pytest.raises(ValueError, match="returns/correct"):
        Group(task=TASK, parent_id=None, history=(), history_correct=(), kind="base",
              responses=("a", "b"), returns=(1.0,), correct=(True, False))


def test_empty_group_raises() -> None:
    with pytest.raises(ValueError, match="responses"):
        group(())


def test_non_positive_max_return_raises() -> None:
    with pytest.raises(ValueError, match="max_return"):
        group((0.0,), max_return=0.0)


def test_non_finite_return_raises() -> None:
    with pytest.raises(ValueError, match="returns"):
        group((float("nan"), 1.0))


def test_unknown_kind_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'rewrite'"):
        Group(task=TASK, parent_id=None, history=(), history_correct=(), kind="rewrite",  # type: ignore[arg-type]
              responses=("a",), returns=(1.0,), correct=(True,))


binary_groups = st.lists(st.booleans(), min_size=1, max_size=8)


@given(binary_groups, st.lists(st.booleans(), max_size=3))
def test_each_child_extends_the_history_and_inherits_s_or_zero_when_solved(correct: list[bool],
                                                                         history_correct: list[bool]) -> None:
    history = tuple(f"y{k}" for k in range(len(history_correct)))
    parent = None if not history else 7
    solved = Group(task=TASK, parent_id=parent, history=history, history_correct=tuple(history_correct),
                   kind="improve" if history else "base", responses=tuple(f"r{i}" for i in range(len(correct))),
                   returns=tuple(float(c) for c in correct), correct=tuple(correct))
    children = solved.children()
    assert [child.iterates for child in children] == [history + (response,) for response in solved.responses]
    assert [child.iterate_correct[-1] for child in children] == correct
    assert [child.score for child in children] == [0.0 if c else solved.learnability for c in correct]
    assert all(child.depth == len(history) and child.latest == child.iterates[-1] for child in children)


def test_the_curriculum_keeps_only_the_question_of_a_base_group() -> None:
    base = group((1.0, 0.0))
    assert [(c.iterates, c.score, c.latest) for c in base.children(store_responses=False)] == [((), 0.25, "")]
    replayed = Group(task=TASK, parent_id=3, history=(), history_correct=(), kind="base", responses=("a", "b"),
                     returns=(1.0, 0.0), correct=(True, False))
    assert replayed.children(store_responses=False) == ()


instances = st.builds(
    lambda n, iterates, score, parent, steps: Instance(
        instance_id=n, task=Task(f"t{n}", "question ü", "1"), iterates=tuple(iterates),
        iterate_correct=tuple(len(text) % 2 == 0 for text in iterates), score=score, parent_id=parent,
        created_step=steps[0], scored_step=steps[1], times_sampled=steps[2]),
    st.integers(0, 10**6), st.lists(st.text(max_size=20), max_size=4), st.floats(0, 0.25),
    st.none() | st.integers(0, 10**6), st.tuples(*[st.integers(0, 10**6)] * 3))


@given(instances)
def test_an_instance_comes_back_from_its_json_form(instance: Instance) -> None:
    assert Instance.from_dict(json.loads(json.dumps(instance.to_dict()))) == instance


@pytest.mark.parametrize(("change", "message"), [
    ({"task": None}, "missing or malformed key"),
    ({"iterates": [1]}, "iterates must be strings"),
    ({"iterate_correct": [1]}, "one true/false per iterate"),
    ({"created_step": "0"}, "ids and steps must be integers"),
    ({"parent_id": True}, "parent_id must be an integer or null"),
    ({"score": "0.1"}, "score must be a number"),
])
def test_a_malformed_instance_dict_raises_saying_what(change: dict, message: str) -> None:
    raw = {**Instance(1, TASK, ("y",), (False,), 0.1, None, 0, 0).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        Instance.from_dict(raw)
