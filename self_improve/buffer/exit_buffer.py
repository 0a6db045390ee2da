"""The ExIt task buffer: self-iteration instances prioritised by learnability.

An instance is a task plus the history of iterates y^0..y^k that a policy
produced for it; prompting the policy to improve (or diverge from) y^k is a
new single-step task. After a group is generated from an instance, the
instance's score becomes that group's learnability S; each new response
becomes a child instance at depth k+1 inheriting S (0 when it is correct, as
a solved answer needs no further improvement). The buffer keeps the top
``capacity`` instances by score and samples instance i with probability
exp(kappa * S_i) / sum_j exp(kappa * S_j) (Algorithm 1 of the paper).

It is the in-process ``buffer.store.BufferStore``; invariants raise
``ValueError`` naming the bad key.

Usage::

    >>> from self_improve.grouping import Group, Task
    >>> buffer = ExitBuffer(capacity=4, kappa=10.0, seed=0)
    >>> task = Task("train-0", "What is 2+3?", "5")
    >>> buffer.observe(Group(task=task, parent_id=None, history=(), history_correct=(),
    ...                      kind="base", responses=("5", "6"), returns=(1.0, 0.0),
    ...                      correct=(True, False)))
    >>> len(buffer), sorted(i.score for i in buffer.instances())
    (2, [0.0, 0.25])
    >>> buffer.sample().task.task_id
    'train-0'
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from self_improve.buffer.state import MAX_SCORE, STATE_VERSION, check_state, response_key
from self_improve.buffer.store import buffer_metrics, check_sizes
from self_improve.buffer.sum_tree import TINY_TOTAL, SumTree
from self_improve.exit_config import ExitConfig
from self_improve.grouping import Child, Group, Instance, Task


def sampling_weights(scores: Sequence[float], kappa: float) -> list[float]:
    """exp(kappa * (S_i - max S)): the draw's weights, relative to the top score so that none
    overflows or all underflow; their share of the sum is each instance's chance of being drawn."""
    top = max(scores, default=0.0)
    return [math.exp(kappa * (score - top)) for score in scores]


class ExitBuffer:
    """Fixed-capacity, learnability-prioritised buffer of ``Instance`` s.

    Args:
        capacity: N, the most instances held (default ``ExitConfig.buffer_size``).
            When full, a new instance enters only if its score is >= the lowest
            held, replacing that one (the oldest of several tied lowest).
        kappa: inverse temperature of exp(kappa * S) sampling (default ``ExitConfig.kappa``).
        seed: seed of the sampling generator; its state is checkpointed.
        store_responses: True for ExIt (instances are partial histories);
            False for the plain learnability curriculum, which stores the
            question of each base group and replays it.
    """

    remote: bool = False
    """In process: every call is a plain memory operation."""

    stream: int = 0
    """The only client of its own buffer."""

    def __init__(
        self,
        capacity: int = ExitConfig.buffer_size,
        kappa: float = ExitConfig.kappa,
        seed: int = ExitConfig.seed,
        store_responses: bool = True,
    ) -> None:
        check_sizes(capacity, kappa)
        self.capacity = capacity
        self.kappa = float(kappa)
        self.store_responses = store_responses
        self.step = 0
        self._next_id = 0
        self._rng = np.random.default_rng(seed)
        self._reset_index()

    def _reset_index(self) -> None:
        """Empty the slot columns and look-up tables (the instances themselves live in ``_slots``).

        Every per-group operation is O(log N) in plain Python (no numpy on the
        host's event loop: see ``sum_tree``): a draw walks a sum tree of
        exp(kappa (S - 0.25)); eviction pops a heap of (score, id, slot) and the
        top score a heap of (-score, id, slot), whose entries for a rescored or
        replaced slot go stale and are skipped (and dropped when a heap outgrows
        the buffer); the score and depth sums are kept as they change.
        """
        self._slots: list[Instance] = []
        self._keys: list[tuple[str, str]] = []  # each slot's de-duplication key, normalised once
        self._scores: list[float] = []
        self._tree = SumTree(self.capacity)
        self._score_sum = 0.0
        self._depth_sum = 0
        self._slot_of_id: dict[int, int] = {}
        self._slot_of_key: dict[tuple[str, str], int] = {}
        self._task_counts: Counter[str] = Counter()
        self._lowest: list[tuple[float, int, int]] = []
        self._highest: list[tuple[float, int, int]] = []

    def __len__(self) -> int:
        return len(self._slots)

    def instances(self) -> Iterator[Instance]:
        """The held instances, in slot order."""
        return iter(self._slots)

    def get(self, instance_id: int) -> Instance | None:
        """The instance with this id, or None if it was evicted (or never held)."""
        slot = self._slot_of_id.get(instance_id)
        return None if slot is None else self._slots[slot]

    def sample(self) -> Instance:
        """Draw one instance with probability proportional to exp(kappa * S).

        One uniform number u per draw, as numpy's ``choice`` takes: the slot where
        the cumulative weight passes u * total.
        """
        if not self._slots:
            raise ValueError("buffer: cannot sample from an empty buffer")
        uniform = float(self._rng.random())
        total = self._tree.total
        slot = self._tree.find(uniform * total) if total >= TINY_TOTAL else self._exact_slot(uniform)
        chosen = replace(self._slots[slot], times_sampled=self._slots[slot].times_sampled + 1)
        self._slots[slot] = chosen
        return chosen

    def _exact_slot(self, uniform: float) -> int:
        """The same draw with weights relative to the top score, for when every leaf has underflowed."""
        weights = sampling_weights(self._scores, self.kappa)
        target, slot = uniform * sum(weights), 0
        while slot < len(weights) - 1 and target >= weights[slot]:
            target, slot = target - weights[slot], slot + 1
        return slot

    def observe(self, group: Group) -> None:
        """Score the group's parent and insert its children (Algorithm 1, lines 9-13).

        The parent (if still held) takes the group's learnability S. Children
        are the group's responses appended to the parent's history, each with
        score S, or 0 when correct. A curriculum buffer (``store_responses``
        False) instead stores the task of a base group with score S.
        """
        self.step += 1
        if group.parent_id is not None:
            slot = self._slot_of_id.get(group.parent_id)
            if slot is not None:
                self._set_slot(slot, replace(self._slots[slot], score=group.learnability, scored_step=self.step))
        for child in group.children(self.store_responses):
            self._insert(group.task, child, group.parent_id)

    def _insert(self, task: Task, child: Child, parent_id: int | None) -> None:
        lowest = self._lowest_slot() if len(self) >= self.capacity else None
        if lowest is not None and child.score < self._scores[lowest]:
            return  # below every held score: out whether or not it repeats one (no key to normalise)
        key = response_key(task.task_id, child.latest)
        if key in self._slot_of_key:
            return
        if lowest is None:
            slot = self._open_slot()
        else:
            slot = lowest
            self._forget(slot)
        self._place(slot, key, Instance(
            instance_id=self._next_id,
            task=task,
            iterates=child.iterates,
            iterate_correct=child.iterate_correct,
            score=float(child.score),
            parent_id=parent_id,
            created_step=self.step,
            scored_step=self.step,
        ))
        self._next_id += 1

    def _lowest_slot(self) -> int:
        """The slot of the lowest score; among ties the oldest (ids only increase)."""
        while True:
            score, instance_id, slot = self._lowest[0]
            if self._current(slot, instance_id, score):
                return slot
            heapq.heappop(self._lowest)

    def _top_score(self) -> float:
        while True:
            negated, instance_id, slot = self._highest[0]
            if self._current(slot, instance_id, -negated):
                return -negated
            heapq.heappop(self._highest)

    def _current(self, slot: int, instance_id: int, score: float) -> bool:
        """Whether a heap entry still describes what ``slot`` holds."""
        return self._slots[slot].instance_id == instance_id and self._scores[slot] == score

    def _open_slot(self) -> int:
        """A new, empty slot at the end, for ``_place`` to fill."""
        self._slots.append(None)  # type: ignore[arg-type]
        self._keys.append(("", ""))
        self._scores.append(0.0)
        return len(self._slots) - 1

    def _set_slot(self, slot: int, instance: Instance) -> None:
        """Put ``instance`` into ``slot`` (over a version of itself, the instance ``_forget``
        dropped, or nothing) and update the weights, sums and heaps."""
        previous, score, instance_id = self._slots[slot], instance.score, instance.instance_id
        self._slots[slot] = instance
        self._score_sum += score - self._scores[slot]
        self._depth_sum += instance.depth - (previous.depth if previous is not None else 0)
        self._scores[slot] = score
        self._tree.set(slot, math.exp(self.kappa * (score - MAX_SCORE)))
        heapq.heappush(self._lowest, (score, instance_id, slot))
        heapq.heappush(self._highest, (-score, instance_id, slot))
        if len(self._lowest) > 4 * self.capacity:
            held = [(self._scores[i], self._slots[i].instance_id, i) for i in range(len(self))]
            self._lowest, self._highest = held, [(-held_score, held_id, i) for held_score, held_id, i in held]
            heapq.heapify(self._lowest)
            heapq.heapify(self._highest)
            self._score_sum = math.fsum(self._scores)  # rounding of the running sum stops here

    def _place(self, slot: int, key: tuple[str, str], instance: Instance) -> None:
        """Put a new instance, whose key is ``key``, into ``slot`` and index it by id, key and task."""
        self._set_slot(slot, instance)
        self._keys[slot] = key
        self._slot_of_id[instance.instance_id] = slot
        self._slot_of_key[key] = slot
        self._task_counts[instance.task.task_id] += 1

    def _forget(self, slot: int) -> None:
        """Drop the instance in ``slot`` from the indexes (the slot is about to be reused)."""
        instance = self._slots[slot]
        del self._slot_of_id[instance.instance_id]
        del self._slot_of_key[self._keys[slot]]
        self._task_counts[instance.task.task_id] -= 1
        if not self._task_counts[instance.task.task_id]:
            del self._task_counts[instance.task.task_id]

    def metrics(self) -> dict[str, float]:
        """Size, score mean/max, mean depth and distinct tasks, for logging."""
        return buffer_metrics(len(self), self._score_sum, self._top_score() if self._slots else 0.0,
                              self._depth_sum, len(self._task_counts), self.step)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot that ``load_state_dict`` restores exactly,
        including the sampling generator, so a resumed run draws the same items."""
        return {
            "version": STATE_VERSION,
            "capacity": self.capacity,
            "kappa": self.kappa,
            "store_responses": self.store_responses,
            "step": self.step,
            "next_id": self._next_id,
            "rng": self._rng.bit_generator.state,
            "instances": [instance.to_dict() for instance in self._slots],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; ``ValueError`` naming the key when it does not fit this buffer."""
        restored = check_state(state, self.capacity, self.kappa, self.store_responses)
        self.step, self._next_id, self._rng = restored.step, restored.next_id, restored.rng
        self._reset_index()
        for instance, key in zip(restored.instances, restored.keys, strict=True):
            self._place(self._open_slot(), key, instance)
