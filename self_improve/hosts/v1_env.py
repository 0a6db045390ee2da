"""ExIt on verifiers 0.4 (``verifiers.v1``): one episode is one GRPO group.

``vf-eval self-improve`` and prime-rl main import ``self_improve``, which
re-exports this module's ``__all__``: the GSM8K taskset of ``v1_taskset``, its
in-process chat harness, and :class:`ExitEnv`, the env that verifiers picks for
the taskset (its package exports exactly one ``Env`` subclass). Like verifiers'
own ``best-of-n`` and ``proposer_solver`` envs, one episode fans one task out to
several agent runs and judges them together:

* ``run(task, agents)`` asks the host-free loop for the group's plan (Algorithm
  1, lines 3-7: the dispatched question, or a self-improve / self-diverge step
  minted from a buffered instance) and runs ``rollouts_per_group`` rollouts of
  that one prompt;
* ``finalize(task, episode)`` builds the ``Group`` from the G traces, updates
  the buffer (lines 9-13) and records the plan, learnability, depth and buffer
  metrics on every trace (``record_metric``), and the diversity shaping as a
  ``diversity`` reward (``record_reward``).

The episode keeps the dispatched seed task (prime-rl checks its key and hash);
the traces carry the minted task, whose data holds the plan, so ``finalize``
rebuilds it from the traces and nothing per episode lives on ``self``.

Traps (see docs/verifiers-v1.md): prime-rl main must train it with
``group_size = 1`` (one episode already is a group; with more, GRPO would
average traces of different prompts) and one static env-server worker
(``serve.pool = {type = "static", num_workers = 1}``) unless ``buffer_url``
points every worker at one Redis store.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import verifiers.v1 as vf
from pydantic import ConfigDict, Field, model_validator

from self_improve.exit_config import ExitConfig, resolve_config
from self_improve.exit_loop import ExitLoop, GroupPlan, Rollout, route_logs_to
from self_improve.grouping import Instance, Task
from self_improve.hosts import v1_tasks
from self_improve.hosts.v1_config import config_model, flags_table
from self_improve.hosts.v1_foreign import ForeignTaskset, check_taskset
from self_improve.hosts.v1_taskset import (
    DATA_FIELDS,
    TASK_FIELDS,
    ChatHarness,
    ChatHarnessConfig,
    SelfImproveData,
    SelfImproveTask,
    SelfImproveTaskConfig,
    SelfImproveTaskset,
    SelfImproveTasksetConfig,
    reply_text,
)
from self_improve.scoring.response import cached_check

logger = logging.getLogger(__name__)


NOT_LOOP_FIELDS: frozenset[str] = frozenset({
    *DATA_FIELDS, *TASK_FIELDS,  # the taskset's (--env.taskset.*) and the task's (--env.taskset.task.*)
    "format_weight",  # the format reward's plugged weight (--env.taskset.task.rewards.format.weight)
}) - {"seed"}  # the env's; the env gives it to the self-improve taskset too
LOOP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ExitConfig) if f.name not in NOT_LOOP_FIELDS)
"""The ``exit_config.ExitConfig`` arguments that configure the loop: fields of the env config."""


class _ExitEnvFields(vf.EnvConfig):
    """The fields of ``ExitEnvConfig`` that are not ``ExitConfig`` arguments."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the docs' table reads the descriptions

    agent: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())
    """The seat playing every rollout: the taskset's in-process chat harness (no uv, no index) on the
    local subprocess runtime (no sandbox) unless set."""
    rollouts_per_group: int = Field(8, ge=1)
    """G, rollouts of the group's one prompt per episode (Table 4: 8)."""
    max_concurrent_agents: int | None = Field(None, ge=1)
    """Rollouts of one episode in flight at once (None: all G together)."""
    max_return: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Another taskset's r_max, where its rewards are not bounded by their weights (None: the sum of the
    positive reward weights). The self-improve taskset's is its weights."""
    solved_threshold: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Another taskset's return at which a child counts as solved (None: r_max). The self-improve taskset
    decides by its answer check."""

    def exit_config(self) -> ExitConfig:
        """The loop's ``ExitConfig`` (presets applied), validated like the classic arguments."""
        return resolve_config({name: getattr(self, name) for name in LOOP_FIELDS})

    @model_validator(mode="after")
    def _check(self) -> _ExitEnvFields:
        config = self.exit_config()  # ValueError naming the argument
        if config.diversity_bonus and config.diversity_mode != "reward":
            raise ValueError("diversity_mode: must be 'reward' on verifiers v1 (an env cannot set advantages; "
                             f"the trainer centres rewards itself), got {config.diversity_mode!r}")
        if config.group_request:
            raise ValueError("group_request: must be false on verifiers v1 (each rollout of an episode is an "
                             "agent run of its own, with its own request), got True")
        harness = v1_tasks.seat_harness(self.taskset.id) if self.agent.harness is None and self.taskset.id else None
        if harness is not None:  # a taskset without a harness of its own: the package's chat harness, not bash
            self.agent = self.agent.model_copy(update={"harness": harness})
        self._share_seed()
        return self

    def _share_seed(self) -> None:
        """One seed: the env's ``seed`` (``--env.seed``) is also the self-improve taskset's, which
        chooses the subsets; a different explicit ``--env.taskset.seed`` is refused."""
        taskset, seed = self.taskset, self.seed
        if not isinstance(taskset, SelfImproveTasksetConfig) or taskset.seed == seed:
            return
        if "seed" in taskset.model_fields_set:
            raise ValueError(f"taskset.seed: must equal seed, which the ExIt env gives the taskset (set only "
                             f"--env.seed, env.seed in TOML), got {taskset.seed} with seed {seed}")
        self.taskset = taskset.model_copy(update={"seed": seed})


ExitEnvConfig = config_model(
    "ExitEnvConfig", _ExitEnvFields, LOOP_FIELDS, module=__name__,
    doc="`--env.*`: the seat, G, and the ExIt loop arguments of exit_config.ExitConfig.",
    notes={"seed": "It is also the self-improve taskset's seed (`--env.taskset.seed` follows it).",
           "group_request": "Must be false here: each rollout of an episode is an agent run with its own request."})


def configuration_table() -> str:
    """The table of every package-declared flag (docs/verifiers-v1.md holds it; a test compares)."""
    return flags_table([("--env", ExitEnvConfig), ("--env.taskset", SelfImproveTasksetConfig),
                        ("--env.taskset.task", SelfImproveTaskConfig), ("--env.agent.harness", ChatHarnessConfig)])


def mint_step(task: SelfImproveTask, plan: GroupPlan, request_seed: int | None = None) -> SelfImproveTask:
    """The task every rollout of the group answers: the plan's prompt, with the plan on its data."""
    data = SelfImproveData.model_validate({
        **task.data.model_dump(), **plan.info(), "id": plan.task.task_id, "answer": plan.task.answer,
        "prompt": plan.messages(), "instance": plan.instance.to_dict() if plan.instance else None,
        "request_seed": request_seed,
    })
    return type(task)(data, task.config)


def plan_of(data: SelfImproveData) -> GroupPlan:
    """The plan a minted task carries (``mint_step``'s inverse)."""
    instance = None if data.instance is None else Instance.from_dict(data.instance)
    return GroupPlan(data.step, Task(data.task_id, data.question, data.answer), instance)


def rollout_of(trace: vf.Trace, use_think: bool = False) -> Rollout:
    """What the loop needs of a finished trace, and why it must stay out of the buffer if it must."""
    failure = None
    if not trace.ok:
        error = trace.last_error
        failure = f"error: {error.type}: {error.message}"[:300] if error else "error"
    elif getattr(trace, "is_timeout", False):  # absent from the v1 of verifiers' 0.3.1 dev builds
        failure = f"timed out ({trace.stop_condition})"
    check = cached_check(trace.info)
    correct = check.correct if check is not None else trace.metrics.get("solved")  # else the task's metric
    return Rollout(response=reply_text(trace, use_think), reward=float(trace.reward), correct=bool(correct),
                   failure=failure, check_timed_out=check is not None and check.timed_out)


def max_return(config: SelfImproveTaskConfig) -> float:
    """GSM8K's r_max: the rule of every taskset (``v1_tasks.max_return``: the positive reward weights)."""
    return v1_tasks.max_return(SelfImproveTask, config)


class ExitEnv(vf.Env[ExitEnvConfig]):  # type: ignore[valid-type]
    """One episode = one ExIt group of ``rollouts_per_group`` rollouts of one prompt."""

    def __init__(self, config: ExitEnvConfig) -> None:  # type: ignore[valid-type]
        super().__init__(config)
        self.exit_config = config.exit_config()
        self.foreign: ForeignTaskset | None = None
        if issubclass(self._task_cls, SelfImproveTask):
            for name in ("max_return", "solved_threshold"):
                if getattr(config, name) is not None:
                    raise ValueError(f"{name}: applies to other tasksets (the self-improve taskset's r_max is its "
                                     f"reward weights, its answer check decides solved), got {getattr(config, name)}")
            self.use_think = config.taskset.task.use_think
            self.max_return = max_return(config.taskset.task)
        else:  # any other single-turn taskset, scored by its own rewards (hosts/v1_foreign.py)
            self.foreign = check_taskset(self.taskset, self._task_cls, self._harnesses["agent"],
                                         config.max_return, config.solved_threshold)
            self.use_think, self.max_return = False, self.foreign.max_return
        self.loop = ExitLoop.from_config(self.exit_config)

    async def start(self) -> None:
        route_logs_to("verifiers.v1")
        if multiprocessing.parent_process() is not None and not self.loop.store.remote:
            logger.warning("ExitEnv runs in a spawned worker process (an env-server pool?): every worker keeps "
                           "its own ExIt buffer. Serve it with one static worker "
                           "(serve.pool = {type = \"static\", num_workers = 1}) or share one store (buffer_url).")

    async def run(self, task: vf.Task, agents: vf.Agents) -> None:
        foreign, data = self.foreign, task.data
        fresh = foreign.task_of(task) if foreign else Task(data.task_id, data.question, data.answer)
        async with self.loop.admit(self.config.rollouts_per_group):  # request_slots: planned when a slot is free
            plan = await self.loop.aplan(fresh)  # Algorithm 1, lines 3-7
            mint = foreign.mint if foreign else mint_step
            seeds = self.exit_config.request_seeds
            steps = [mint(task, plan, self.loop.request_seed() if seeds else None)
                     for _ in range(self.config.rollouts_per_group)]
            async with asyncio.TaskGroup() as group:  # a raising run cancels its siblings
                for step in steps:  # line 8
                    group.create_task(self._rollout(agents, step))

    async def _rollout(self, agents: vf.Agents, step: vf.Task) -> None:
        """One single-turn rollout, holding one of the ``request_slots`` while it runs."""
        async with self.loop.request_slot():
            await agents.agent.run(step)

    async def finalize(self, task: vf.Task, episode: vf.Episode) -> None:
        traces = list(episode.traces)
        prompts = {trace.task.data.model_dump_json(exclude={"request_seed"}) for trace in traces}
        if len(prompts) != 1 or len(traces) != self.config.rollouts_per_group:
            raise ValueError(f"episode: expected {self.config.rollouts_per_group} traces of one minted task, got "
                             f"{len(traces)} traces of {len(prompts)}")
        foreign = self.foreign
        plan = foreign.plan_of(traces[0].task.data) if foreign else plan_of(traces[0].task.data)
        rollouts = [rollout_of(trace, self.use_think) for trace in traces]
        if foreign:
            rollouts = [foreign.rollout(trace, rollout) for trace, rollout in zip(traces, rollouts, strict=True)]
        report = await self.loop.afinish(plan, rollouts, self.max_return)  # lines 9-13
        for trace, reward, metrics in zip(traces, report.rewards, report.metrics, strict=True):
            trace.record_metrics(metrics)
            if report.bonus is not None:  # Section 4.2, delivered as rewards
                trace.record_reward("diversity", reward - trace.reward)


def _plugin_name(plugin_id: str) -> str:
    """A plugin id as a module name: ``owner/name@version`` -> ``name``, dashes as underscores."""
    return plugin_id.rsplit("/", 1)[-1].split("@", 1)[0].replace("-", "_")


def prime_rl_problems(config: Mapping[str, Any]) -> list[str]:
    """What in a prime-rl main config (the ``rl`` TOML as a dict, or its ``[orchestrator]`` table)
    would break ExIt on its self-improve sources; [] when nothing does.

    A train source must run ``group_size = 1`` (one episode already is a group; GRPO
    averages over the episodes of a group) and one static env-server worker unless
    ``env.buffer_url`` shares one Redis store; an eval source should ask fresh questions
    only (``env.strategy = "grpo"``).
    """
    orchestrator = config.get("orchestrator", config)
    problems = []
    for kind in ("train", "eval"):
        section = orchestrator.get(kind) or {}
        default_group_size = section.get("group_size", orchestrator.get("group_size", 1) if kind == "train" else 1)
        for index, source in enumerate(section.get("source") or []):
            env = source.get("env") or {}
            env_id = env.get("id") or (env.get("taskset") or {}).get("id", "")  # no env id: the taskset's env
            if _plugin_name(str(env_id)) != _plugin_name(v1_tasks.PACKAGE_ID):
                continue
            name = f"{kind} source {source.get('name') or index}"
            group_size = source.get("group_size", default_group_size)
            if kind == "train" and group_size != 1:
                problems.append(f"{name}: group_size must be 1 (an episode is already a group of "
                                f"env.rollouts_per_group rollouts of one prompt), got {group_size}")
            pool = (source.get("serve") or {}).get("pool") or {"type": "elastic"}
            single = pool.get("type") == "static" and pool.get("num_workers", 4) == 1
            if not single and not env.get("buffer_url"):
                problems.append(f"{name}: serve.pool must be {{type = \"static\", num_workers = 1}} (each worker "
                                f"keeps its own buffer) unless env.buffer_url shares one store, got {pool}")
            if kind == "eval" and env.get("strategy", "diverge") != "grpo" and env.get("select_prob") != 0:
                problems.append(f"{name}: env.strategy must be \"grpo\" to evaluate on fresh questions only, "
                                f"got {env.get('strategy', 'diverge')!r}")
    return problems



__all__ = [
    "ChatHarness",
    "ChatHarnessConfig",
    "ExitEnv",
    "ExitEnvConfig",
    "SelfImproveData",
    "SelfImproveTask",
    "SelfImproveTaskConfig",
    "SelfImproveTaskset",
    "SelfImproveTasksetConfig",
]
