"""DRAFT: ExIt as a prime-rl main curriculum sampler (the orchestrator route).

With ``0001-curriculum-sampler-by-import-path.patch`` applied to prime-rl main,
a train source can name this class::

    [orchestrator.train.source.curriculum.sampler]
    type = "custom"
    import_path = "exit_sampler.ExitTaskSampler"
    kwargs = { strategy = "diverge", buffer_size = 512, min_buffer_size = 128 }

Here the ExIt loop lives in the orchestrator, not in the env server: prime-rl
dispatches each task as ``group_size`` separate single-agent episodes (the
plain ``self-improve`` taskset, ``env.id = "single-agent"``), scores them with
its own GRPO, and shows the finished group to ``observe``. So:

* ``__next__`` asks ``exit_loop.ExitLoop.plan`` for the next group (Algorithm 1,
  lines 3-7) and returns the dispatched question, or a task minted from a
  buffer instance (the same ``SelfImproveData`` the v1 env mints, carrying the
  plan), whose data travels to the env server with every episode;
* ``observe`` rebuilds the plan from the traces' task data, turns the G traces
  into rollouts as the v1 env does (``self_improve.hosts.v1_env.rollout_of``) and calls
  ``ExitLoop.finish`` (lines 9-13);
* the buffer is part of prime-rl's orchestrator checkpoint (``state_dict``), so
  it resumes at exactly the checkpointed step, and the env servers hold no
  state: any pool size works without Redis.

Limits of this route: the diversity bonus cannot be applied (prime-rl scores
the group before ``observe`` sees it), so ``strategy = "exit"`` is refused;
``__next__``/``observe`` run on the orchestrator's event loop, so a Redis store
(``buffer_url``) blocks it for one round trip per call.

The kwargs are the ExIt loop's arguments (``v1_env.LOOP_FIELDS``, i.e.
``exit_config.ExitConfig`` without the taskset's and task's own fields).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from self_improve.exit_config import resolve_config
from self_improve.exit_loop import ExitLoop
from self_improve.grouping import Task
from self_improve.hosts.v1_env import LOOP_FIELDS, max_return, mint_step, plan_of, rollout_of
from self_improve.hosts.v1_taskset import SelfImproveData, SelfImproveTask

if TYPE_CHECKING:
    import verifiers.v1 as vf

logger = logging.getLogger("self_improve")


class ExitTaskSampler:
    """The ExIt autocurriculum behind prime-rl main's ``TaskSampler`` interface.

    Satisfies ``task_sampler_protocol.TaskSampler`` structurally; it does not
    import prime-rl.
    """

    def __init__(self, tasks: Sequence[vf.Task] | Iterator[vf.Task], **exit_args: Any) -> None:
        unknown = sorted(set(exit_args) - set(LOOP_FIELDS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not ExIt loop arguments; accepted: {', '.join(LOOP_FIELDS)} "
                             "(the taskset's and task's own fields go on [...env.taskset] / [...env.taskset.task])")
        self.config = resolve_config(exit_args)
        if self.config.diversity_bonus:
            raise ValueError("diversity_bonus: a curriculum sampler cannot apply it (prime-rl scores a group "
                             "before the sampler observes it); use strategy 'diverge', or the v1 env route")
        self.tasks = tuple(tasks) if isinstance(tasks, Sequence) else None
        if self.tasks is not None and not self.tasks:
            raise ValueError("ExitTaskSampler needs at least one task")
        self._iterator = itertools.cycle(self.tasks) if self.tasks is not None else tasks
        self.cursor = 0
        self.loop = ExitLoop.from_config(self.config)
        self._template: SelfImproveTask | None = None
        self._counts: Counter[str] = Counter()

    def _next_base(self) -> SelfImproveTask:
        task = next(self._iterator)  # type: ignore[arg-type]
        self.cursor += 1
        if not isinstance(task, SelfImproveTask):
            raise TypeError(f"ExitTaskSampler runs the self-improve taskset, got {type(task).__name__}")
        self._template = self._template or task
        return task

    def __next__(self) -> vf.Task:
        base = self._next_base()
        data = base.data
        plan = self.loop.plan(Task(data.task_id, data.question, data.answer))
        self._counts[plan.kind if plan.instance is not None else "fresh"] += 1
        if plan.instance is None:
            return base
        return mint_step(base, plan)  # the step's prompt, with the plan on its data

    def __iter__(self) -> ExitTaskSampler:
        return self

    def observe(self, group: list[vf.Episode]) -> None:
        traces = [trace for episode in group for trace in episode.traces]
        if not traces or self._template is None:
            return
        task_config = self._template.config
        data = SelfImproveData.model_validate(traces[0].task.data.model_dump())
        plan = plan_of(data)
        rollouts = [rollout_of(trace, task_config.use_think) for trace in traces]
        report = self.loop.finish(plan, rollouts, max_return(task_config))
        self._counts["observed" if report.observed else "left_out"] += 1

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cursor": self.cursor}
        if not self.loop.store.remote:  # a Redis store is its own checkpoint
            state["buffer"] = self.loop.store.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        cursor = int(state_dict["cursor"])
        if self.tasks is not None:
            self._iterator = itertools.cycle(self.tasks)
            skip = cursor % len(self.tasks)
        else:
            skip = cursor  # an infinite taskset replays its stream from the start
        for _ in range(skip):
            next(self._iterator)  # type: ignore[arg-type]
        self.cursor = cursor
        if "buffer" in state_dict:
            self.loop.store.load_state_dict(state_dict["buffer"])

    def metrics(self) -> dict[str, float]:
        metrics = {f"plans/{kind}": float(count) for kind, count in self._counts.items()}
        self._counts.clear()
        try:
            metrics |= {name: float(value) for name, value in self.loop.store.metrics().items()}
        except ConnectionError as error:  # self_improve.buffer.store.StoreUnavailable
            logger.warning("buffer metrics unavailable: %s", error)
        return metrics
