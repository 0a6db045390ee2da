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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal

StepKind = Literal["base", "improve", "diverge"]
STEP_KINDS: tuple[StepKind, ...] = ("base", "improve", "diverge")


@dataclass(frozen=True)
class Task:
    """The request every iterate of an instance answers: a GSM8K problem, or any taskset's task.

    ``task_id`` is the task's durable key, ``question`` its request text (what the viewer
    shows) and ``answer`` its answer as text ("" when it has none). ``data`` is None for
    GSM8K; for another taskset's task it is the task's own data as JSON (its taskset's
    ``TaskData``), so an instance drawn in any process, from Redis or a checkpoint, can be
    minted again against its own task and scored by that taskset's rewards
    (``hosts.v1_foreign``). Old checkpoints have no ``data`` and read back as None.
    """

    task_id: str
    question: str
    answer: str
    data: str | None = None


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
        """S = population variance of the returns rescaled into [0, 1] (0 for G=1); computed once, in
        plain Python (a group is a handful of numbers: numpy costs more to call than the sums do)."""
        scaled = [value / self.max_return for value in self.returns]
        mean = math.fsum(scaled) / len(scaled)
        return math.fsum((value - mean) ** 2 for value in scaled) / len(scaled)

    @cached_property
    def advantages(self) -> tuple[float, ...]:
        """Mean-centred GRPO advantages A_i = r_i - mean(r), with verifiers' own sum; computed once."""
        mean = sum(self.returns) / len(self.returns)
        return tuple(value - mean for value in self.returns)

    @property
    def previous(self) -> str:
        """y^k, the iterate the group improved or diverged from ("" for a base step)."""
        return self.history[-1] if self.history else ""

    def children(self, store_responses: bool = True) -> tuple[Child, ...]:
        """The instances the group proposes to the buffer (Algorithm 1, lines 11-13).

        Each response extends the parent's history by one iterate and inherits S, or 0
        when it is correct (a solved answer needs no further improvement). The plain
        learnability curriculum (``store_responses`` False) keeps only the question of a
        base group, with score S, and nothing of a replayed one. Every store inserts
        exactly these, with ``parent_id`` as their parent.
        """
        if not store_responses:
            return (Child((), (), self.learnability),) if self.parent_id is None else ()
        return tuple(Child(self.history + (response,), self.history_correct + (correct,),
                           0.0 if correct else self.learnability)
                     for response, correct in zip(self.responses, self.correct, strict=True))


@dataclass(frozen=True)
class Child:
    """An instance a group proposes, before a store gives it an id: its iterates and score."""

    iterates: tuple[str, ...]
    iterate_correct: tuple[bool, ...]
    score: float

    @property
    def latest(self) -> str:
        """y^k, the iterate the child's key is made of ("" for a question-only child)."""
        return self.iterates[-1] if self.iterates else ""

    @property
    def depth(self) -> int:
        """k for iterates y^0..y^k."""
        return max(len(self.iterates) - 1, 0)


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

    def to_dict(self) -> dict[str, Any]:
        """The JSON object a buffer state (and a v1 task) stores; :meth:`from_dict` reads it back.
        A GSM8K task (``data`` None) is written without ``data``, as before the field existed."""
        raw = asdict(self)
        if self.task.data is None:
            del raw["task"]["data"]
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Instance:
        """The instance :meth:`to_dict` wrote (lists for tuples, as JSON gives them back).

        Raises ``ValueError`` saying what is malformed: a missing key, a task field or
        iterate that is not a string, a flag that is not true/false, an id or step that
        is not an integer, a score that is not a number.
        """
        try:
            task = Task(**raw["task"])
            iterates, iterate_correct = tuple(raw["iterates"]), tuple(raw["iterate_correct"])
            numbers = {name: raw[name] for name in ("instance_id", "created_step", "scored_step", "times_sampled")}
            parent, score = raw["parent_id"], raw["score"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"missing or malformed key {error}") from None
        if not all(isinstance(text, str) for text in (task.task_id, task.question, task.answer, *iterates)):
            raise ValueError("task fields and iterates must be strings")
        if task.data is not None and not isinstance(task.data, str):
            raise ValueError(f"task data must be a JSON string or null, got {type(task.data).__name__}")
        if len(iterate_correct) != len(iterates) or not all(isinstance(flag, bool) for flag in iterate_correct):
            raise ValueError("iterate_correct must hold one true/false per iterate")
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers.values()):
            raise ValueError(f"ids and steps must be integers, got {numbers}")
        if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
            raise ValueError(f"parent_id must be an integer or null, got {parent!r}")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"score must be a number, got {score!r}")
        return cls(task=task, iterates=iterates, iterate_correct=iterate_correct, score=float(score),
                   parent_id=parent, **numbers)
