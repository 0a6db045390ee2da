"""The sum tree behind buffer draws: prefix sums that match numpy's cumulative rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from self_improve.buffer.sum_tree import SumTree

weights = st.lists(st.one_of(st.just(0.0), st.floats(1e-300, 1e3)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(weights, st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=10))
def test_find_lands_where_the_cumulative_weight_first_passes_the_target(values, uniforms) -> None:
    tree = SumTree(len(values))
    for slot, weight in enumerate(values):
        tree.set(slot, weight)
    if tree.total == 0:
        return
    cumulative = np.cumsum(values)
    for u in uniforms:
        slot = tree.find(u * tree.total)
        assert values[slot] > 0
        before = cumulative[slot] - values[slot]
        # The first slot whose cumulative weight exceeds the target, up to rounding of the partial sums.
        assert before <= u * tree.total * (1 + 1e-9) + 1e-300
        assert u * tree.total < cumulative[slot] * (1 + 1e-9) or slot == max(np.flatnonzero(values))


@settings(max_examples=100, deadline=None)
@given(weights, st.lists(st.tuples(st.integers(0, 39), st.floats(0, 1e3)), max_size=60))
def test_the_root_is_the_sum_of_the_leaves_after_any_updates(values, updates) -> None:
    tree = SumTree(len(values))
    current = list(values)
    for slot, weight in enumerate(values):
        tree.set(slot, weight)
    for slot, weight in updates:
        slot %= len(values)
        tree.set(slot, weight)
        current[slot] = weight
    assert [tree[slot] for slot in range(len(values))] == current
    assert tree.total == pytest.approx(sum(current), rel=1e-12, abs=0)


def test_a_target_rounded_up_to_the_total_lands_on_the_last_weighted_slot() -> None:
    tree = SumTree(6)
    for slot, weight in enumerate([1.0, 2.0, 0.0, 3.0]):
        tree.set(slot, weight)
    assert tree.find(tree.total) == 3
    assert tree.find(0.0) == 0
    assert tree.find(1.0) == 1


@pytest.mark.parametrize("capacity", [0, -3, 2.5])
def test_a_bad_capacity_is_refused_by_name(capacity) -> None:
    with pytest.raises(ValueError, match="^capacity: must be an integer >= 1, got"):
        SumTree(capacity)
