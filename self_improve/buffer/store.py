"""The contract between the ExIt loop and a buffer store.

Modelled on prime-rl main's curriculum ``TaskSampler`` (``__next__``,
``observe(group)``, ``state_dict``, ``load_state_dict``, ``metrics``): the loop
draws an instance, later shows the store the finished group, and the host
checkpoints the store through its state dict. Two stores implement it:
``exit_buffer.ExitBuffer`` (in process, the default) and
``redis_buffer.RedisBuffer`` (one curriculum shared by many workers).

Every store keeps the same semantics (Algorithm 1, lines 9-13): the top N
instances by score; a full store admits an instance only if its score is >=
the lowest held, which it replaces (the oldest among ties); de-duplication by
(task, normalised response); sampling with probability exp(kappa S_i) /
sum_j exp(kappa S_j); a group's parent takes its learnability S and its
children inherit S, or 0 when solved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from self_improve.exit_config import check_field
from self_improve.grouping import Group, Instance


def check_sizes(capacity: Any, kappa: Any) -> None:
    """A store's ``capacity`` and ``kappa`` by the rules of the ``buffer_size`` and ``kappa`` arguments
    (``exit_config.ExitConfig``); ``ValueError`` naming the store's argument."""
    check_field("buffer_size", capacity, label="capacity")
    check_field("kappa", kappa)


def buffer_metrics(size: int, score_sum: float, score_max: float, depth_sum: int,
                   distinct_tasks: int, step: int) -> dict[str, float]:
    """``BufferStore.metrics`` from a store's running counters: every value 0 for an empty store, and
    ``buffer_step``, the groups observed so far (a group's place in the buffer's history)."""
    if not size:
        return {**dict.fromkeys(("buffer_size", "buffer_score_mean", "buffer_score_max", "buffer_depth_mean",
                                 "buffer_distinct_tasks"), 0.0), "buffer_step": float(step)}
    return {"buffer_step": float(step), "buffer_size": float(size), "buffer_score_mean": float(score_sum) / size,
            "buffer_score_max": float(score_max), "buffer_depth_mean": int(depth_sum) / size,
            "buffer_distinct_tasks": float(distinct_tasks)}


class StoreUnavailable(ConnectionError):
    """A remote store could not be reached (after its own retries).

    The loop catches it: the group's rollouts and rewards are kept, its buffer
    update is skipped, and one warning is logged per outage.
    """


class StoreOutOfMemory(StoreUnavailable):
    """A remote store that answers but refuses writes: its memory is full.

    The loop treats it as an outage (one warning; groups go on without buffer
    updates); reads still answer, and writes work again once memory is freed.
    """


@runtime_checkable
class BufferStore(Protocol):
    """What the ExIt loop needs of a buffer."""

    remote: bool
    """True when calls do network I/O (the loop then runs them off the event loop)."""

    stream: int
    """Which of the store's clients this one is: 0 for the first (and for an in-process store).
    The loop draws its select/diverge coins and request seeds from a stream of its own, so
    workers sharing one store do not decide in lockstep."""

    @property
    def step(self) -> int:
        """Groups observed so far."""
        ...

    def __len__(self) -> int:
        """Instances held."""
        ...

    def sample(self) -> Instance:
        """One instance drawn with probability exp(kappa S_i) / sum_j exp(kappa S_j);
        ``ValueError`` when empty."""
        ...

    def observe(self, group: Group) -> None:
        """Score the group's parent and insert its children, atomically."""
        ...

    def instances(self) -> Iterator[Instance]:
        """The held instances."""
        ...

    def metrics(self) -> dict[str, float]:
        """``buffer_size``, ``buffer_score_mean``, ``buffer_score_max``,
        ``buffer_depth_mean``, ``buffer_distinct_tasks``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot in the one layout every store shares."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with a snapshot; ``ValueError`` naming what does not fit."""
        ...
