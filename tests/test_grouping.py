"""The group value: learnability is the population variance of one group's returns."""

from __future__ import annotations

import pytest

from self_improve.grouping import Group, Task

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
