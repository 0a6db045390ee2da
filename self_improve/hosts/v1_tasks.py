"""Any installed verifiers 0.4 taskset, as single-turn tasks this package can iterate on.

Shared v1 plumbing for running ExIt-style steps over a taskset this package has never
seen (``self-improve-kstep --taskset ID`` uses it):

* :func:`load_taskset` loads a taskset by id, its config validated from plain arguments;
* :func:`single_turn_problem` says why a taskset cannot be iterated on one reply at a
  time (tools, a container, stop conditions, no prompt, no rewards), before any model
  request; :func:`check_single_turn` raises it naming the taskset;
* :func:`reward_weights` and :func:`max_return` read r_max from the reward weights (each
  reward hook and judge scores in [0, 1]); :func:`reaches` is the one "solved" rule;
* :func:`chat_agent` is the seat every step runs in: the taskset's own harness when its
  package brings one, else this package's in-process chat harness, on the local
  subprocess runtime (no sandbox).

Imports ``verifiers.v1`` at module level: import this module only on a v1 path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import verifiers.v1 as vf
from verifiers.v1.utils.loaders import default_harness_id, harness_class, taskset_config_type
from verifiers.v1.utils.loaders import load_taskset as _load_taskset

CHAT_HARNESS_ID: str = "self-improve"
"""The harness id that resolves to this package's ``ChatHarness`` (the package exports exactly one)."""

PROMPT_ROLES: frozenset[str] = frozenset({"system", "user"})
"""Roles a task's own prompt may hold: anything else is a conversation already under way."""


def load_taskset(taskset_id: str, args: Mapping[str, Any] | None = None) -> vf.Taskset:
    """The taskset ``taskset_id`` (an installed package exporting one ``Taskset``), its config
    validated from ``args``; a missing package or a bad argument raises ``ValueError`` naming it."""
    if not isinstance(taskset_id, str) or not taskset_id:
        raise ValueError(f"taskset: must be an installed v1 taskset id, got {taskset_id!r}")
    try:
        config = taskset_config_type(taskset_id).model_validate({**(args or {}), "id": taskset_id})
    except (ModuleNotFoundError, TypeError, AttributeError) as error:
        raise ValueError(f"taskset: {taskset_id!r} is not an installed v1 taskset ({error})") from error
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"taskset_args: not valid for taskset {taskset_id!r}: {error}") from error
    return _load_taskset(config)


def reward_weights(task: vf.Task) -> dict[str, float]:
    """Each reward of ``task`` (its ``@vf.reward`` hooks, plugged rewards and judges) and its weight."""
    weights = {fn.__name__: float(getattr(fn, "_vf_weight", 1.0)) for fn in task.hooks("reward")}
    weights |= {judge.reward_name: float(judge.config.weight) for judge in task.plugged_judges()}
    return weights


def max_return(task: vf.Task, declared: float | None = None) -> float:
    """r_max: ``declared`` when given, else the sum of the positive reward weights (each reward
    in [0, 1], as verifiers weights them); ``ValueError`` when no reward can score above 0."""
    if declared is not None:
        if not (isinstance(declared, (int, float)) and math.isfinite(declared) and declared > 0):
            raise ValueError(f"max_return: must be a number > 0, got {declared!r}")
        return float(declared)
    weights = reward_weights(task)
    total = math.fsum(weight for weight in weights.values() if weight > 0)
    if not total > 0:
        raise ValueError(f"max_return: the task's rewards {weights} have no positive weight; declare a maximum")
    return total


def reaches(value: float, threshold: float) -> bool:
    """Whether a return reaches ``threshold`` (up to float rounding of a weighted sum)."""
    return value >= threshold or math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def single_turn_problem(taskset: vf.Taskset, task: vf.Task) -> str | None:
    """Why one reply cannot be "the previous response" of ``task`` (a task of ``taskset``), or
    None: tools, a container, stop conditions, a missing or multi-turn prompt, no rewards."""
    task_cls = type(task)
    if taskset.toolsets(taskset.config) or task_cls.toolsets(task.config):
        return "it gives the model tools (a multi-turn, tool-using loop)"
    if task_cls.NEEDS_CONTAINER:
        return "its tasks need a container (an agent working in a sandbox, not one reply)"
    if task.hooks("stop"):
        return "it declares stop conditions (@vf.stop: a multi-turn loop)"
    harness_id = default_harness_id(taskset.config.id)
    if harness_id != "bash" and harness_class(harness_id).EXECUTES_CODE:
        return f"its harness {harness_id!r} executes code (an agent, not one reply)"
    prompt = task.data.prompt
    if prompt is None or (not isinstance(prompt, str) and not prompt):
        return "its tasks have no prompt (the user opens the conversation)"
    if not isinstance(prompt, str):
        roles = sorted({str(getattr(m, "role", None)) for m in prompt} - PROMPT_ROLES)
        if roles:
            return f"its prompts already hold {roles} messages (a conversation under way)"
    if not reward_weights(task):
        return "it has no rewards (@vf.reward hooks or judges) to score a response with"
    return None


def check_single_turn(taskset: vf.Taskset, task: vf.Task) -> None:
    """``ValueError`` naming the taskset and the reason when ``single_turn_problem`` finds one."""
    problem = single_turn_problem(taskset, task)
    if problem is not None:
        raise ValueError(f"taskset: {taskset.config.id!r} cannot be iterated one reply at a time: {problem}")


def with_prompt(task: vf.Task, prompt: Any) -> vf.Task:
    """A copy of ``task`` whose data holds ``prompt`` (a string or chat-message dicts), validated
    by the task's own data type (so messages become verifiers' message models); all else kept."""
    data = type(task.data).model_validate({**task.data.model_dump(), "prompt": prompt})
    clone = copy.copy(task)
    clone.data = data
    return clone


def chat_agent(taskset_id: str, request_timeout: float = 600.0) -> vf.AgentConfig:
    """The seat for single-turn steps: the taskset's own harness if its package brings one,
    else the in-process chat harness; the local subprocess runtime either way."""
    from self_improve.hosts.v1_taskset import ChatHarnessConfig

    harness = None if default_harness_id(taskset_id) != "bash" else \
        ChatHarnessConfig(id=CHAT_HARNESS_ID, request_timeout=request_timeout)
    return vf.AgentConfig(harness=harness, runtime=vf.SubprocessConfig())
