"""The task, the GRPO group and the buffer instance as values, and the numbers ExIt derives from a group.

A group is the G rollouts of *one* prompt, generated together. Its
learnability S = Var(r / r_max) (Section 4.1: the population variance of the
returns that train the policy, rescaled into [0, 1] by the largest possible
return r_max) and its GRPO advantages are functions of the group alone:
nothing is pooled across groups or across time.

Usage::

    >>> group = Group(task=Task("train-0", "1+1?", "2"), parent_id=None, history=(),
    ...               history_correct=(), kind="base", responses=("2", "3"),
    ...               returns=(1.0, 0.0), correct=(True, False))
    >>> group.learnability
    0.25
    >>> group.advantages
    (0.5, -0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

StepKind = Literal["base", "improve", "diverge"]
STEP_KINDS: tuple[StepKind, ...] = ("base", "improve", "diverge")


@dataclass(frozen=True)
class Task:
    """A GSM8K problem: the request every iterate of an instance answers."""

    task_id: str
    question: str
    answer: str


@dataclass(frozen=True)
class Group:
    """The G rollouts of one prompt and where that prompt came from.

    ``parent_id`` is the buffer instance the prompt was built from (None for a
    fresh dataset question); ``history`` holds that instance's iterates
    y^0..y^k (empty for a base step) and ``history_correct`` their correctness.
    ``returns`` are the rewards the trainer uses, each in [0, ``max_return``];
    ``correct`` is plain correctness of each response, which decides whether
    a child is solved. ``max_return`` is the largest return the rubric can
    give (1 + format weight for this environment), used to rescale returns
    into [0, 1] as the paper does, so S <= 0.25 whatever the rubric weights.
    """

    task: Task
    parent_id: int | None
    history: tuple[str, ...]
    history_correct: tuple[bool, ...]
    kind: StepKind
    responses: tuple[str, ...]
    returns: tuple[float, ...]
    correct: tuple[bool, ...]
    max_return: float = 1.0

    def __post_init__(self) -> None:
        size = len(self.responses)
        if size == 0:
            raise ValueError("responses: a group needs at least one rollout")
        if len(self.returns) != size or len(self.correct) != size:
            raise ValueError(
                f"returns/correct: expected {size} values (one per response), "
                f"got {len(self.returns)} returns and {len(self.correct)} correct flags"
            )
        if len(self.history) != len(self.history_correct):
            raise ValueError("history_correct: must have one flag per history iterate")
        if self.kind not in STEP_KINDS:
            raise ValueError(f"kind: must be one of {STEP_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.max_return) and self.max_return > 0):
            raise ValueError(f"max_return: must be a finite number > 0, got {self.max_return}")
        if not all(math.isfinite(value) and -1e-9 <= value <= self.max_return + 1e-9 for value in self.returns):
            raise ValueError(f"returns: must lie in [0, max_return={self.max_return}], got {self.returns}")

    @cached_property
    def learnability(self) -> float:
        """S = population variance of the returns rescaled into [0, 1] (0 for G=1); computed once."""
        return float(np.var(np.asarray(self.returns, dtype=np.float64) / self.max_return))

    @cached_property
    def advantages(self) -> tuple[float, ...]:
        """Mean-centred GRPO advantages A_i = r_i - mean(r), as verifiers computes them; computed once."""
        returns = np.asarray(self.returns, dtype=np.float64)
        return tuple(float(a) for a in returns - returns.mean())


@dataclass(frozen=True)
class Instance:
    """One self-iteration starting point.

    Attributes:
        instance_id: unique, increasing id assigned by the buffer.
        task: the GSM8K problem.
        iterates: y^0..y^k; empty for a question-only instance (the
            learnability curriculum stores tasks, not responses).
        iterate_correct: correctness of each iterate.
        score: learnability S last measured for (or inherited by) the instance.
        parent_id: the instance whose group produced y^k (None for y^0).
        created_step: the buffer step (groups observed) at insertion.
        scored_step: the step at which ``score`` was last set.
        times_sampled: how often the instance was sampled.
    """

    instance_id: int
    task: Task
    iterates: tuple[str, ...]
    iterate_correct: tuple[bool, ...]
    score: float
    parent_id: int | None
    created_step: int
    scored_step: int
    times_sampled: int = 0

    @property
    def depth(self) -> int:
        """k for iterates y^0..y^k: the self-iteration steps behind the latest iterate."""
        return max(len(self.iterates) - 1, 0)

    @property
    def latest(self) -> str:
        """y^k, the iterate a self-iteration prompt asks to improve ("" if none)."""
        return self.iterates[-1] if self.iterates else ""
