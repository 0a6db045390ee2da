"""Algorithm 1 of the paper with no host: plan a group, turn its rollouts into a ``Group``,
update the buffer.

Every host drives the same three calls: the classic verifiers environment
(``hosts.classic.ExitEnv``), the verifiers v1 environment
(``hosts.v1_env.ExitEnv``), the simulation and the benchmarks::

    loop = ExitLoop.from_config(config)
    plan = loop.plan(task)                  # lines 3-7: a fresh task, or a buffer instance
    ...generate G rollouts of plan.messages() and score them...   # line 8
    report = loop.finish(plan, rollouts, max_return)              # lines 9-13

``aplan``/``afinish`` are the same calls for an event loop: they run inline
when nothing blocks, and in a worker thread when the store does network I/O,
the diversity bonus embeds, or a checkpoint is written. A lock guards the
generators and the in-process store, so groups may finish in any order from
any thread. Nothing here imports verifiers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from self_improve import prompts
from self_improve.buffer.checkpoint import BufferFile
from self_improve.buffer.exit_buffer import ExitBuffer
from self_improve.buffer.store import BufferStore, StoreUnavailable
from self_improve.exit_config import ExitConfig
from self_improve.grouping import Group, Instance, StepKind, Task
from self_improve.request_slots import RequestSlots

logger = logging.getLogger(__name__)


def _no_slot() -> None:
    """``choice_ended`` of a loop without ``request_slots``: no slot to give back."""


def route_logs_to(host_logger: str) -> None:
    """Send this package's log lines (every module logs under ``self_improve``) wherever the host's
    logger writes, once: vf-eval and prime-rl set handlers on verifiers' logger only."""
    package, theirs = logging.getLogger(__name__.partition(".")[0]), logging.getLogger(host_logger)
    if not package.handlers and theirs.handlers:
        for handler in theirs.handlers:
            package.addHandler(handler)
        package.setLevel(theirs.getEffectiveLevel())
        package.propagate = False


@dataclass(frozen=True)
class GroupPlan:
    """What one whole group is asked: the step kind, its task, and the instance it starts from."""

    kind: StepKind
    task: Task
    instance: Instance | None = None

    @property
    def from_buffer(self) -> bool:
        return self.instance is not None

    @property
    def previous(self) -> str:
        """y^k, the response the group is asked to improve or diverge from ("" for a base step)."""
        return self.instance.latest if self.instance else ""

    @property
    def depth(self) -> int:
        """Depth of the responses this group produces."""
        if self.instance is None or not self.instance.iterates:
            return 0
        return self.instance.depth + 1

    @property
    def prev_correct(self) -> bool:
        return bool(self.instance and self.instance.iterate_correct and self.instance.iterate_correct[-1])

    def messages(self, system_prompt: str = prompts.SYSTEM_PROMPT) -> prompts.Messages:
        """The chat every rollout of the group receives."""
        return prompts.step_messages(self.kind, self.task.question, self.previous, system_prompt)

    def info(self) -> dict[str, Any]:
        """The step description a host stores with each rollout (and rewards may read)."""
        return {
            "task_id": self.task.task_id,
            "question": self.task.question,
            "step": self.kind,
            "depth": self.depth,
            "parent_id": self.instance.instance_id if self.instance else None,
            "prev_correct": self.prev_correct,
        }

    def metrics(self) -> dict[str, float]:
        """Per-rollout metrics that are constants of the plan."""
        return {
            "from_buffer": float(self.from_buffer),
            "improve_step": float(self.kind == "improve"),
            "diverge_step": float(self.kind == "diverge"),
            "depth": float(self.depth),
            "prev_correct": float(self.prev_correct),
        }

    def group(self, responses: Sequence[str], returns: Sequence[float], correct: Sequence[bool],
              max_return: float = 1.0) -> Group:
        """The finished group: the plan's lineage with the G responses and their returns."""
        instance = self.instance
        return Group(
            task=self.task,
            parent_id=instance.instance_id if instance else None,
            history=instance.iterates if instance else (),
            history_correct=instance.iterate_correct if instance else (),
            kind=self.kind,
            responses=tuple(responses),
            returns=tuple(float(value) for value in returns),
            correct=tuple(bool(flag) for flag in correct),
            max_return=max_return,
        )


def plan_group(store: BufferStore, rng: np.random.Generator, config: ExitConfig, task: Task) -> GroupPlan:
    """Algorithm 1, lines 3-7: the fresh ``task``, or (with probability ``select_prob`` once the
    store holds ``min_buffer_size``) an instance drawn by exp(kappa S), to improve or diverge from."""
    if len(store) < config.min_buffer_size or rng.random() >= config.select_prob:
        return GroupPlan("base", task)
    instance = store.sample()
    if not instance.iterates:  # the learnability curriculum replays the question itself
        return GroupPlan("base", instance.task, instance)
    return GroupPlan("diverge" if rng.random() < config.divergence_prob else "improve", instance.task, instance)


@dataclass(frozen=True)
class Rollout:
    """One scored rollout as the host saw it; ``failure`` is the host's error or timeout, if any."""

    response: str
    reward: float
    correct: bool
    failure: str | None = None
    check_timed_out: bool = False
    """The answer check ran out of time: the response counts as wrong (it is still a valid rollout)."""

    @property
    def problem(self) -> str | None:
        """Why this rollout must not enter the buffer: the host's failure, or no answer text."""
        return self.failure or (None if self.response.strip() else "no answer text")


@dataclass(frozen=True)
class GroupReport:
    """What a host writes back: rewards and advantages per rollout, metrics, and what went wrong."""

    group: Group
    rewards: tuple[float, ...]
    advantages: tuple[float, ...]
    bonus: tuple[float, ...] | None
    observed: bool
    failures: tuple[str | None, ...]
    metrics: tuple[dict[str, float], ...]


class ExitLoop:
    """The ExIt autocurriculum around one buffer store.

    Args:
        config: the resolved environment arguments.
        store: the buffer (``ExitBuffer``, or a shared ``RedisBuffer``).
        diversity: the Section 4.2 bonus, or None when it is off.
        checkpoint: the JSON file an in-process buffer is saved to, or None.
    """

    def __init__(self, config: ExitConfig, store: BufferStore, diversity: Any = None,
                 checkpoint: BufferFile | None = None) -> None:
        self.config = config
        self.store = store
        self.diversity = diversity
        self.checkpoint = checkpoint
        self.blocking = store.remote or diversity is not None or checkpoint is not None
        worker = [store.stream] if store.stream else []  # the first client keeps the single-process streams
        self._select_rng = np.random.default_rng([config.seed, 1, *worker])
        self._request_seed_rng = np.random.default_rng([config.seed, 2, *worker])
        self._rng_lock = threading.Lock()
        self._store_lock: Any = nullcontext() if store.remote else threading.Lock()
        self._claimed = checkpoint is None
        self._outage = False
        self._last_metrics: dict[str, float] = {}
        self.slots = RequestSlots(config.request_slots) if config.request_slots is not None else None
        """The request slots every group of this loop shares (``request_slots``), or None."""

    @classmethod
    def from_config(cls, config: ExitConfig) -> ExitLoop:
        """The store, bonus and checkpoint the arguments ask for; a bad buffer file or an
        unreachable Redis raises ``ValueError`` naming it."""
        checkpoint = None
        if config.buffer_url is not None:
            from self_improve.buffer.redis_buffer import RedisBuffer  # only a Redis run needs the client

            store: BufferStore = RedisBuffer(config.buffer_url, capacity=config.buffer_size, kappa=config.kappa,
                                             seed=config.seed, store_responses=config.stores_responses,
                                             prefix=config.buffer_prefix, password_var=config.buffer_password_var)
        else:
            store = ExitBuffer(config.buffer_size, config.kappa, config.seed, config.stores_responses)
            if config.buffer_path is not None:
                checkpoint = BufferFile(config.buffer_path)
        diversity = None
        if config.diversity_bonus:
            from self_improve.scoring.diversity import DiversityBonus

            diversity = DiversityBonus(config.embedding_model, config.diversity_min_range, config.diversity_mode)
        loop = cls(config, store, diversity, checkpoint)
        if checkpoint is not None:
            checkpoint.resume(loop)
        return loop

    def state_dict(self) -> dict[str, Any]:
        """The store's ``state_dict`` with the loop's own generators under ``loop`` (selection and
        divergence coins, request seeds), taken in one consistent moment: restored by
        ``load_state_dict``, a run draws the same plans and seeds as one never interrupted."""
        with self._store_lock, self._rng_lock:
            return {**self.store.state_dict(), "loop": self._generators()}

    def _generators(self) -> dict[str, Any]:
        """The loop's generator states (call it holding ``_rng_lock``)."""
        return {"select_rng": self._select_rng.bit_generator.state,
                "request_seed_rng": self._request_seed_rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (or a bare store state saved before the loop's generators were
        checkpointed: they then start from ``seed``); ``ValueError`` naming what does not fit."""
        saved = state.get("loop") if isinstance(state, dict) else None
        generators = {}
        if saved is not None:
            if not isinstance(saved, dict):
                raise ValueError(f"loop: must be a JSON object, got {type(saved).__name__}")
            for name in ("select_rng", "request_seed_rng"):
                generator = np.random.default_rng()
                try:
                    generator.bit_generator.state = saved[name]
                except (TypeError, ValueError, KeyError) as error:
                    raise ValueError(f"loop.{name}: not a numpy PCG64 generator state ({error})") from None
                generators[name] = generator
        with self._store_lock, self._rng_lock:
            self.store.load_state_dict(state)
            if generators:
                self._select_rng, self._request_seed_rng = generators["select_rng"], generators["request_seed_rng"]

    def admit(self, requests: int, request_size: int = 1) -> AbstractAsyncContextManager[Any]:
        """Around planning a group of ``requests`` model requests (of ``request_size`` choices each) and
        sending them: with ``request_slots``, waits until slots are free for the group's first request
        (``request_slots.RequestSlots``)."""
        return self.slots.group(requests, request_size) if self.slots is not None else nullcontext()

    def request_slot(self, count: int = 1) -> AbstractAsyncContextManager[Callable[[], None]]:
        """Around one model request for ``count`` choices: with ``request_slots``, holds ``count`` slots;
        it yields ``choice_ended()``, which gives one back as a streamed choice ends (a no-op without)."""
        return self.slots.request(count) if self.slots is not None else nullcontext(_no_slot)

    def request_seed(self) -> int:
        """A fresh per-request seed (``request_seeds``)."""
        with self._rng_lock:
            return int(self._request_seed_rng.integers(2**31 - 1))

    def plan(self, task: Task) -> GroupPlan:
        """Lines 3-7 for one group; ``task`` is the host's next fresh question.

        The first plan claims the checkpoint file, so a second writer is
        refused before it generates anything. An unreachable store plans a
        base step.
        """
        if not self._claimed:
            self.checkpoint.claim()  # type: ignore[union-attr]
            self._claimed = True
        try:
            with self._store_lock, self._rng_lock:
                plan = plan_group(self.store, self._select_rng, self.config, task)
        except StoreUnavailable as error:
            self._warn_outage(error)
            return GroupPlan("base", task)
        return plan  # only an observed group ends an outage: a full store may still take a small draw

    def finish(self, plan: GroupPlan, rollouts: Sequence[Rollout], max_return: float = 1.0) -> GroupReport:
        """Lines 9-13 for one finished group: S scores the parent and the responses enter the buffer,
        unless a rollout failed, timed out or gave no answer text (then the buffer is left as it was)."""
        group = plan.group([r.response for r in rollouts], [r.reward for r in rollouts],
                           [r.correct for r in rollouts], max_return)
        failures = tuple(rollout.problem for rollout in rollouts)
        timeouts = sum(rollout.check_timed_out for rollout in rollouts)
        if timeouts:
            logger.warning("group of %s: %d answer check(s) ran out of time and count as wrong", group.task.task_id,
                           timeouts)
        if any(failures):
            logger.warning("group of %s left out of the buffer: %d of %d rollouts failed (%s)", group.task.task_id,
                           sum(map(bool, failures)), len(failures), next(f for f in failures if f))
        vectors, catch_up = None, []
        if self.diversity is not None:
            with self._store_lock:
                catch_up = self.diversity.claim(self._instances)
            vectors = self.diversity.embed(group.responses, catch_up)
        state, every_metric = None, self.config.row_metrics == "all"
        buffer_metrics: dict[str, float] = {}
        with self._store_lock:
            shaping = self.diversity.shape(group, vectors, catch_up) if self.diversity is not None else None
            observed = not any(failures) and self._observe(group)
            if every_metric or logger.isEnabledFor(logging.DEBUG):
                buffer_metrics = self._buffer_metrics()
                if self.diversity is not None:
                    buffer_metrics["buffer_diversity"] = self.diversity.buffer_diversity(self._instances())
            if observed and self.checkpoint is not None:
                with self._rng_lock:
                    state = {**self.store.state_dict(), "loop": self._generators()}
        if state is not None:
            self.checkpoint.save(state)  # type: ignore[union-attr]
        group_metrics = self._group_metrics(plan, group, buffer_metrics if every_metric else None)
        metrics = tuple({**group_metrics, "solved": float(flag)} for flag in group.correct)
        if shaping is not None:
            for row, d in zip(metrics, shaping.bonus, strict=True):
                row["diversity"] = d
        logger.debug("group %s step=%s depth=%d S=%.4f observed=%s buffer=%s", group.task.task_id, plan.kind,
                     plan.depth, group.learnability, observed, buffer_metrics)
        return GroupReport(
            group=group,
            rewards=shaping.rewards if shaping else group.returns,
            advantages=shaping.advantages if shaping else group.advantages,
            bonus=shaping.bonus if shaping else None,
            observed=observed,
            failures=failures,
            metrics=metrics,
        )

    async def aplan(self, task: Task) -> GroupPlan:
        """``plan`` for an event loop (off the loop when the store is remote)."""
        if self.store.remote or not self._claimed:
            return await asyncio.to_thread(self.plan, task)
        return self.plan(task)

    async def afinish(self, plan: GroupPlan, rollouts: Sequence[Rollout], max_return: float = 1.0) -> GroupReport:
        """``finish`` for an event loop (off the loop when anything in it blocks)."""
        if self.blocking:
            return await asyncio.to_thread(self.finish, plan, rollouts, max_return)
        return self.finish(plan, rollouts, max_return)

    def _observe(self, group: Group) -> bool:
        try:
            self.store.observe(group)
        except StoreUnavailable as error:
            self._warn_outage(error)
            return False
        self._outage = False
        return True

    @staticmethod
    def _group_metrics(plan: GroupPlan, group: Group, buffer_metrics: dict[str, float] | None) -> dict[str, float]:
        """What every rollout of the group carries beside its own ``solved`` (and ``diversity``):
        ``row_metrics="core"`` (``buffer_metrics`` None), ``from_buffer`` and ``learnability``; ``"all"``,
        also the plan's constants, the group's accuracy and the buffer's metrics. Each key costs every
        row its validation, transfer and printing in vf-eval (docs/benchmarks.md, section 2c)."""
        if buffer_metrics is None:
            return {"from_buffer": float(plan.from_buffer), "learnability": group.learnability}
        return {**plan.metrics(), "learnability": group.learnability,
                "group_accuracy": sum(group.correct) / len(group.correct), **buffer_metrics}

    def _buffer_metrics(self) -> dict[str, float]:
        """The store's metrics, or the last ones it gave while it cannot be reached."""
        try:
            self._last_metrics = self.store.metrics()
        except StoreUnavailable as error:
            self._warn_outage(error)
        return dict(self._last_metrics)

    def _instances(self) -> list[Instance]:
        try:
            return list(self.store.instances())
        except StoreUnavailable as error:
            self._warn_outage(error)
            return []

    def _warn_outage(self, error: StoreUnavailable) -> None:
        """One warning per outage (unreachable, or out of memory: ``StoreOutOfMemory``): groups go
        on without buffer updates until the store takes a group again."""
        if not self._outage:
            logger.warning("buffer store unavailable, going on without buffer updates until it takes them "
                           "again: %s", error)
        self._outage = True
