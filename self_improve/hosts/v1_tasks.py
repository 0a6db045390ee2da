"""The rules for running ExIt steps over any verifiers 0.4 taskset, written once.

Both ``vf-eval TASKSET --env.id self-improve`` (``v1_env.ExitEnv`` through ``v1_foreign``)
and ``self-improve-kstep --taskset ID`` (``kstep.taskset_runner``) use them:

* :func:`load_taskset` loads a taskset by id, its config validated from plain arguments;
* :func:`seat_harness` is the default harness choice: none when the taskset's package brings
  one (verifiers then picks it), else this package's in-process chat harness (verifiers'
  default would be ``bash``); :func:`chat_agent` is kstep's seat built on it;
* :func:`taskset_problems` / :func:`prompt_problem` / :func:`refuse` say why a taskset cannot be
  iterated one reply at a time (tools, a container, stop conditions, a harness that runs a
  program, no rewards, a prompt that is missing or already a conversation), before any
  model request; :func:`reply_problem` is the same rule on a finished trace;
* :func:`reward_weights` and :func:`max_return` read r_max from the reward weights (each
  reward hook and judge scores in [0, 1]) -- GSM8K's r_max too; :func:`solved_threshold`
  and :func:`reaches` are the one "solved" rule.

Imports ``verifiers.v1`` at module level: import this module only on a v1 path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import verifiers.v1 as vf
from verifiers.v1.configs.judge import judge_key
from verifiers.v1.utils.loaders import default_harness_id, harness_class, taskset_config_type
from verifiers.v1.utils.loaders import load_taskset as _load_taskset

from self_improve.hosts.v1_taskset import ChatHarness, ChatHarnessConfig

PACKAGE_ID: str = "self-improve"
"""This package's plugin id: its taskset, its env (``--env.id self-improve``) and its chat harness."""

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


def seat_harness(taskset_id: str, request_timeout: float | None = None) -> vf.HarnessConfig | None:
    """The default harness of a seat over ``taskset_id``: None when the taskset's package brings
    a harness (verifiers picks it), else the package's in-process chat harness."""
    if default_harness_id(taskset_id) != "bash":
        return None
    return ChatHarnessConfig(id=PACKAGE_ID, **({} if request_timeout is None else {"request_timeout": request_timeout}))


def chat_agent(taskset_id: str, request_timeout: float = 600.0) -> vf.AgentConfig:
    """The seat for single-turn steps: :func:`seat_harness` on the local subprocess runtime (no sandbox)."""
    return vf.AgentConfig(harness=seat_harness(taskset_id, request_timeout), runtime=vf.SubprocessConfig())


def seat_harness_class(taskset_id: str) -> tuple[str, type[vf.Harness]]:
    """(id, class) of the harness :func:`chat_agent` seats over ``taskset_id``."""
    if seat_harness(taskset_id) is not None:
        return PACKAGE_ID, ChatHarness
    return taskset_id, harness_class(taskset_id)


def _probe(task_type: type[vf.Task], config: vf.TaskConfig) -> vf.Task:
    """A data-less instance of ``task_type``: enough to list its hooks (``Task.hooks``)."""
    probe = task_type.__new__(task_type)
    probe.config = config
    probe.data = None  # type: ignore[assignment]
    return probe


def reward_weights(task_type: type[vf.Task], config: vf.TaskConfig) -> dict[str, float]:
    """Every reward a trace of ``task_type`` under ``config`` gets, by name, with its weight: the
    task's ``@vf.reward`` methods and plugged rewards, then its judges (as ``Task.score`` weighs them)."""
    weights = {fn.__name__: float(getattr(fn, "_vf_weight", 1.0)) for fn in _probe(task_type, config).hooks("reward")}
    weights.update({judge_key(judge) or "judge": float(judge.weight) for judge in config.judges})
    return weights


def max_return(task_type: type[vf.Task], config: vf.TaskConfig, declared: float | None = None) -> float:
    """r_max: ``declared`` when given, else the sum of the positive reward weights (each reward
    in [0, 1], as verifiers weights them); ``ValueError`` when no reward can score above 0."""
    if declared is not None:
        if not (isinstance(declared, (int, float)) and math.isfinite(declared) and declared > 0):
            raise ValueError(f"max_return: must be a number > 0, got {declared!r}")
        return float(declared)
    weights = reward_weights(task_type, config)
    total = math.fsum(weight for weight in weights.values() if weight > 0)
    if not total > 0:
        raise ValueError(f"max_return: the rewards {weights} have no positive weight, so no r_max; declare the "
                         "largest return (max_return)")
    return total


def solved_threshold(name: str, threshold: float | None, r_max: float) -> float:
    """The return a solved step reaches: ``threshold`` in (0, r_max], default r_max."""
    if threshold is None:
        return r_max
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 < threshold <= r_max):
        raise ValueError(f"{name}: must be in (0, max_return={r_max}], got {threshold!r}")
    return float(threshold)


def reaches(value: float, threshold: float) -> bool:
    """Whether a return reaches ``threshold`` (up to float rounding of a weighted sum)."""
    return value >= threshold or math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def taskset_problems(taskset: vf.Taskset, task_type: type[vf.Task], harness_id: str,
                     harness_type: type[vf.Harness]) -> list[str]:
    """Why one reply of a seat with ``harness_type`` cannot be "the previous response" of
    ``taskset``'s tasks: tools, a container, stop conditions, a harness that runs a program,
    no rewards. [] when none; checked on the types, before any task or model request."""
    config = taskset.config.task
    problems = []
    if task_type.NEEDS_CONTAINER:
        problems.append(f"its task type {task_type.__name__} needs a container (an agent in a sandbox, not one reply)")
    if task_type.toolsets(config) or type(taskset).toolsets(taskset.config):
        problems.append("it gives the model tools (a multi-turn, tool-using loop)")
    if _probe(task_type, config).hooks("stop"):
        problems.append("it declares stop conditions (@vf.stop: a multi-turn loop)")
    if harness_type.EXECUTES_CODE:
        problems.append(f"its harness {harness_id!r} runs a program (an agent, not one reply); use a chat harness "
                        f"such as the package's (harness id {PACKAGE_ID!r})")
    if not reward_weights(task_type, config):
        problems.append("it has no rewards (@vf.reward hooks, plugged rewards or judges) to score a response with")
    return problems


def prompt_problem(prompt: Any) -> str | None:
    """Why a task's own ``prompt`` cannot be wrapped as an ExIt request, or None: missing, or
    already holding messages other than system and user (a conversation under way)."""
    if prompt is None or (not isinstance(prompt, str) and not prompt):
        return "its tasks have no prompt (the user opens the conversation)"
    if not isinstance(prompt, str):
        roles = sorted({str(getattr(m, "role", None) if not isinstance(m, Mapping) else m.get("role"))
                        for m in prompt} - PROMPT_ROLES)
        if roles:
            return f"its prompts already hold {roles} messages (a conversation under way)"
    return None


def refuse(taskset_id: str, problems: Sequence[str]) -> None:
    """``ValueError`` naming the taskset and every reason when there is one."""
    if problems:
        raise ValueError(f"taskset: {taskset_id!r} cannot be iterated one reply at a time: " + "; ".join(problems))


def reply_problem(trace: vf.Trace) -> str | None:
    """Why a finished trace is not one reply (several replies or tool results), or None."""
    replies, tools = len(trace.assistant_messages), len(trace.tool_messages)
    if replies != 1 or tools:
        return (f"the step took {replies} replies and {tools} tool results; ExIt needs exactly one reply to quote "
                "as the previous response (a multi-turn task)")
    return None


def with_prompt(task: vf.Task, prompt: Any) -> vf.Task:
    """A copy of ``task`` whose data holds ``prompt`` (a string or chat-message dicts), validated
    by the task's own data type (so messages become verifiers' message models); all else kept."""
    data = type(task.data).model_validate({**task.data.model_dump(), "prompt": prompt})
    clone = copy.copy(task)
    clone.data = data
    return clone
