"""The task-sampler contract of prime-rl main's curriculum, as a typed ``Protocol``.

Written from the documented signatures of ``TaskSampler`` in prime-rl
``src/prime_rl/orchestrator/curriculum/samplers/base.py`` at commit
559b44772e471d1538537b8805cc77f3824a5e64 (2026-08-21); no prime-rl code is
copied or imported. prime-rl's ``TaskSampler`` is an ``Iterator[vf.Task]`` ABC
whose only abstract method is ``__next__``; the other four have no-op
defaults there. With the patch in this folder
(``0001-curriculum-sampler-by-import-path.patch``) the orchestrator accepts
any object that provides all five methods, so an ExIt sampler can satisfy this
``Protocol`` without depending on prime-rl.

How prime-rl main drives a sampler (``orchestrator/train_source.py``,
``orchestrator/curriculum/base.py`` at that commit):

* built once per train source as ``factory(tasks, **kwargs)``; ``tasks`` is a
  list for a finite taskset, an iterator for an infinite one;
* ``next(sampler)`` for every group it dispatches; the group's ``group_size``
  episodes all run the returned task, whose data travels to the env server;
* ``observe(group)`` once per finalized group (all its episodes share one
  ``Task.key``), after the algorithm has scored it and before the admission
  gates decide whether it trains; rejected groups are observed too;
* ``state_dict()`` / ``load_state_dict()`` go into and come out of the
  orchestrator checkpoint; ``metrics()`` is logged under
  ``curriculum/<env>/sampler/<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import verifiers.v1 as vf

PRIME_RL_COMMIT = "559b44772e471d1538537b8805cc77f3824a5e64"
"""The prime-rl main commit whose ``TaskSampler`` signatures this follows."""

TASK_SAMPLER_METHODS: tuple[str, ...] = ("__next__", "observe", "state_dict", "load_state_dict", "metrics")


@runtime_checkable
class TaskSampler(Protocol):
    """What prime-rl main's curriculum calls on a task sampler."""

    def __next__(self) -> vf.Task:
        """Choose the next task to dispatch as one group."""
        ...

    def observe(self, group: list[vf.Episode]) -> None:
        """Update sampling state from a finalized group (its episodes share one ``Task.key``)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Return checkpoint state owned by this sampler."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore checkpoint state before sampling resumes."""
        ...

    def metrics(self) -> dict[str, float]:
        """Return metrics relative to this sampler's namespace."""
        ...
