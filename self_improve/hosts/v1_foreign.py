"""ExIt over any single-turn verifiers v1 taskset: ``vf-eval TASKSET --env.id self-improve``.

``v1_env.ExitEnv`` runs the package's own GSM8K task type natively; every other
taskset's task goes through this module (docs/any-taskset.md):

* :func:`check_taskset` refuses, before any model request, what cannot work (the rules of
  ``v1_tasks``, shared with the K-step evaluation: a container, tools, stop conditions, a
  harness that runs a program, no reward, no r_max), plus task data that already uses a
  field ExIt adds. It returns :class:`ForeignTaskset`, r_max and the solved threshold.
* :meth:`ForeignTaskset.task_of` keeps a dispatched task as a ``grouping.Task``: its key,
  its request text (what the viewer shows), its answer, and its data as JSON, so an
  instance drawn later in any process can be minted again against its own task.
* :meth:`ForeignTaskset.mint` builds the step every rollout of a group answers: the
  task's own data (so its own rewards and judges score the reply against its own
  answer) with the prompt wrapped by ``prompts.wrap_step`` and the plan on an extra
  ``exit_step`` field of a subclass of the task's data type.
* :meth:`ForeignTaskset.rollout` reads a finished trace: return = the trace's reward
  (the weighted sum of the task's rewards and judges), solved = return >= threshold.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, replace
from typing import Any

import verifiers.v1 as vf
from pydantic import create_model

from self_improve import prompts
from self_improve.exit_loop import GroupPlan, Rollout
from self_improve.grouping import Instance, Task
from self_improve.hosts import v1_tasks

STEP_FIELD = "exit_step"
"""The field of a minted task's data that carries the plan (see :func:`step_data_type`)."""
SEED_FIELD = "request_seed"
"""The field the package's chat harness reads a per-request ``seed`` from (``request_seeds``)."""


@functools.cache
def step_data_type(data_type: type[vf.TaskData]) -> type[vf.TaskData]:
    """``data_type`` with two extra fields: ``exit_step`` (the plan: step kind, depth, parent,
    the buffer instance and the original task) and ``request_seed``. A subclass, so the task's
    rewards read its own fields as ever."""
    return create_model(f"ExitStep{data_type.__name__}", __base__=data_type, __module__=__name__,
                        **{STEP_FIELD: (dict[str, Any] | None, None), SEED_FIELD: (int | None, None)})


@dataclass(frozen=True)
class ForeignTaskset:
    """How ExIt runs one foreign taskset: its name, r_max, and the return a solved child reaches."""

    taskset_id: str
    max_return: float
    threshold: float

    def task_of(self, task: vf.Task) -> Task:
        """The ``grouping.Task`` the buffer keeps for a dispatched task (its data as JSON)."""
        v1_tasks.refuse(self.taskset_id, [p for p in [v1_tasks.prompt_problem(task.data.prompt)] if p])
        data = task.data.model_dump(mode="json", exclude={STEP_FIELD, SEED_FIELD})
        answer = getattr(task.data, "answer", "")
        return Task(task.key, prompts.request_text(task.data.prompt), "" if answer is None else str(answer),
                    type(task.data).model_validate(data).model_dump_json())

    def mint(self, seed: vf.Task, plan: GroupPlan, request_seed: int | None = None) -> vf.Task:
        """The task every rollout of the group answers: the plan's task's own data with its prompt
        wrapped for the plan's step, and the plan on ``exit_step``; the task type and config of
        the dispatched ``seed`` task (a taskset yields one task type)."""
        own_type = type(seed).data_type()
        if plan.task.data is None:
            raise ValueError(f"taskset {self.taskset_id!r}: instance of task {plan.task.task_id!r} holds no task "
                             "data (a GSM8K buffer?); point the run at a fresh buffer for this taskset")
        original = own_type.model_validate_json(plan.task.data)
        parent = plan.instance.instance_id if plan.instance else None
        step = {"kind": plan.kind, "depth": plan.depth, "parent_id": parent,
                "prev_correct": plan.prev_correct, "task": asdict(plan.task),
                "instance": plan.instance.to_dict() if plan.instance else None}
        wrapped = original.prompt if plan.kind == "base" else prompts.wrap_step(plan.kind, original.prompt,
                                                                                  plan.previous)
        data = step_data_type(own_type).model_validate({**original.model_dump(), "prompt": wrapped,
                                                        STEP_FIELD: step, SEED_FIELD: request_seed})
        minted = copy.copy(seed)
        minted.data = data
        return minted

    def plan_of(self, data: vf.TaskData) -> GroupPlan:
        """The plan a minted task carries (``mint``'s inverse)."""
        step = getattr(data, STEP_FIELD, None) or (data.model_extra or {}).get(STEP_FIELD)
        if step is None:
            raise ValueError(f"taskset {self.taskset_id!r}: trace task carries no {STEP_FIELD} (not minted by ExIt)")
        instance = None if step["instance"] is None else Instance.from_dict(step["instance"])
        return GroupPlan(step["kind"], Task(**step["task"]), instance)

    def rollout(self, trace: vf.Trace, base: Rollout) -> Rollout:
        """``base`` (the host's reading of the trace) with the taskset's own verdict: solved when the
        return reaches the threshold. A return outside [0, r_max] or a reply of several turns is refused."""
        problem = v1_tasks.reply_problem(trace) if trace.ok else None
        if problem is not None:
            raise ValueError(f"taskset {self.taskset_id!r}: {problem}")
        if trace.ok and not -1e-9 <= base.reward <= self.max_return + 1e-9:
            raise ValueError(f"taskset {self.taskset_id!r}: a return of {base.reward} lies outside [0, r_max="
                             f"{self.max_return}]; declare the largest return with --env.max-return")
        return replace(base, correct=v1_tasks.reaches(base.reward, self.threshold))


def check_taskset(taskset: vf.Taskset, task_type: type[vf.Task], harness: vf.Harness,
                  max_return: float | None, threshold: float | None) -> ForeignTaskset:
    """Refuse a taskset ExIt cannot run (``v1_tasks.refuse``: the shared reasons, and task data that
    already uses a field a minted step adds), else how to run it (r_max and the solved threshold)."""
    taskset_id = taskset.config.id
    problems = v1_tasks.taskset_problems(taskset, task_type, harness.config.id, type(harness))
    taken = sorted({STEP_FIELD, SEED_FIELD} & set(task_type.data_type().model_fields))
    if taken:
        problems.append(f"its task data already has the field(s) {taken} that ExIt adds to a minted step")
    v1_tasks.refuse(taskset_id, problems)
    r_max = v1_tasks.max_return(task_type, taskset.config.task, max_return)
    return ForeignTaskset(taskset_id, r_max, v1_tasks.solved_threshold("solved_threshold", threshold, r_max))
