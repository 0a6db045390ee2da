"""A simulated learner that drives the real ExIt buffer, so the curriculum's
dynamics can be studied without a GPU.

Training a language model is out of reach on a CPU, but the autocurriculum
itself (which prompt each group gets, how the buffer scores and evicts
instances) does not need one. Here the policy is a stochastic model of a
learner, and everything else is the package's own code:
``exit_loop.ExitLoop`` plans each group and, once it is scored, updates the
real ``exit_buffer.ExitBuffer`` (the parent takes S, the children enter),
exactly as it does for the environments.

The learner (all quantities are logits; sigma is the logistic function):

* every task has a hidden difficulty d; the learner has a global skill b, a
  skill s_t per task and a global self-iteration skill c; its ability on task t
  is a = b + s_t - d;
* a base attempt is correct with probability sigma(a);
* an improve step fixes a wrong answer with probability
  sigma(a + c - fix_offset) and keeps a correct one with probability
  1 - sigma(-(a + c) - break_offset);
* a diverge step answers afresh with another approach: correct with
  probability sigma(a + c - diverge_offset), whatever the previous answer was;
* training on a group with learnability S > 0 (non-zero GRPO advantages)
  moves s_t by ``task_lr``, b by ``base_lr`` and, for improve/diverge steps
  only, c by ``iteration_lr``, each scaled by S / 0.25 (0.25 being the largest
  variance of a binary return).

c is the *assumption* that a self-iteration skill learned on training tasks
transfers to unseen tasks; held-out K-step accuracy (K improve steps on tasks
the learner never trained on) is computed exactly from b and c. It shows what
the model assumes, not anything about language models.

Usage::

    >>> result = simulate("improve", seed=0, settings=SimulationSettings(rollouts=4_096))
    >>> int(result.rollouts[-1])
    4096
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from self_improve import checks
from self_improve.exit_config import ExitConfig, Strategy
from self_improve.exit_loop import ExitLoop, GroupPlan, Rollout
from self_improve.grouping import Group, StepKind, Task

MAX_BINARY_VARIANCE: float = 0.25
"""Largest population variance of returns in {0, 1}; scales a group's training signal to [0, 1]."""

STRATEGIES: dict[str, tuple[Strategy, float | None]] = {
    "grpo": ("grpo", None),
    "uniform": ("curriculum", 0.0),
    "curriculum": ("curriculum", None),
    "improve": ("improve", None),
    "diverge": ("diverge", None),
}
"""Simulated strategy -> (environment preset, kappa override or None for the default).

"uniform" is uniform replay: the learnability curriculum's question buffer
sampled with kappa = 0, so it differs from "curriculum" in sampling only.
"grpo" never samples the buffer and is the base-only reference.
"""


@dataclass(frozen=True)
class LearnerModel:
    """Parameters of the simulated learner (logit units).

    Attributes:
        difficulty_mean: mean hidden task difficulty (1.0: about 30% of base
            attempts are right before training, a weak GSM8K model).
        difficulty_sd: spread of difficulties (1.5: some tasks always solved,
            some never, many in between, as on GSM8K).
        fix_offset: fixing a wrong answer is this much harder than solving
            afresh (1.0).
        break_offset: a correct answer is kept unless a rare slip, probability
            sigma(-(a + c) - break_offset) (2.5: about 8% at a = c = 0).
        diverge_offset: a different approach is this much harder than the
            usual one (0.5).
        task_lr: per-task skill gained from one fully informative group (0.4).
        base_lr: global skill gained from one fully informative group (0.0005).
        iteration_lr: self-iteration skill gained from one fully informative
            improve/diverge group (0.002).
    """

    difficulty_mean: float = 1.0
    difficulty_sd: float = 1.5
    fix_offset: float = 1.0
    break_offset: float = 2.5
    diverge_offset: float = 0.5
    task_lr: float = 0.4
    base_lr: float = 0.0005
    iteration_lr: float = 0.002

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first parameter that is not finite or is negative where it must not be."""
        for name, value in vars(self).items():
            checks.number(name, value, 0.0 if name in ("difficulty_sd", "task_lr", "base_lr", "iteration_lr")
                          else -math.inf)


@dataclass(frozen=True)
class SimulationSettings:
    """Budget and sizes of one simulated run.

    Attributes:
        rollouts: budget of rollouts, the same for every strategy (32,000).
        group_size: G, rollouts per group (8, the paper's Table 4).
        groups_per_batch: groups planned before any of them is observed and
            the learner is updated, like groups in flight in one training step (32).
        train_tasks: size of the training task pool (2,000).
        heldout_tasks: tasks the learner never trains on, for K-step accuracy (500).
        k_steps: improve steps of the held-out evaluation (5).
        eval_every: batches between held-out evaluations (5).
        buffer_size: buffer capacity (512, the paper's Table 4).
        min_buffer_size: instances needed before the buffer is sampled (128, Table 4).
    """

    rollouts: int = 32_000
    group_size: int = 8
    groups_per_batch: int = 32
    train_tasks: int = 2_000
    heldout_tasks: int = 500
    k_steps: int = 5
    eval_every: int = 5
    buffer_size: int = 512
    min_buffer_size: int = 128

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        for name, value in vars(self).items():
            checks.integer(name, value, 0 if name == "k_steps" else 2 if name == "group_size" else 1)
        if self.rollouts < self.group_size * self.groups_per_batch:
            raise ValueError(f"rollouts: must cover at least one batch "
                             f"({self.group_size * self.groups_per_batch}), got {self.rollouts}")


def sigmoid(logit: float | np.ndarray) -> Any:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))


def success_probability(model: LearnerModel, kind: StepKind, ability: float | np.ndarray,
                        iteration_skill: float, prev_correct: bool | np.ndarray = False) -> Any:
    """P(the response of a ``kind`` step is correct) for ability a = b + s_t - d (see module doc)."""
    if kind == "base":
        return sigmoid(ability)
    if kind == "diverge":
        return sigmoid(ability + iteration_skill - model.diverge_offset)
    if kind == "improve":
        fix = sigmoid(ability + iteration_skill - model.fix_offset)
        keep = 1.0 - sigmoid(-(ability + iteration_skill) - model.break_offset)
        return np.where(prev_correct, keep, fix)
    raise ValueError(f"kind: must be 'base', 'improve' or 'diverge', got {kind!r}")


@dataclass
class Learner:
    """The simulated policy: mutable skills over a fixed set of task difficulties."""

    model: LearnerModel
    difficulty: dict[str, float]
    base_skill: float = 0.0
    iteration_skill: float = 0.0
    task_skill: dict[str, float] = field(default_factory=dict)

    def ability(self, task: Task) -> float:
        """a = b + s_t - d for a training task."""
        return self.base_skill + self.task_skill.get(task.task_id, 0.0) - self.difficulty[task.task_id]

    def attempt(self, plan: GroupPlan, size: int, rng: np.random.Generator) -> tuple[bool, ...]:
        """Correctness of ``size`` independent responses to the plan's prompt."""
        p = success_probability(self.model, plan.kind, self.ability(plan.task), self.iteration_skill,
                                plan.prev_correct)
        return tuple(bool(x) for x in rng.random(size) < p)

    def train(self, group: Group) -> None:
        """One policy update on a group; a group with learnability 0 has zero advantages and teaches nothing."""
        signal = group.learnability / MAX_BINARY_VARIANCE
        if signal == 0.0:
            return
        task_id = group.task.task_id
        self.task_skill[task_id] = self.task_skill.get(task_id, 0.0) + self.model.task_lr * signal
        self.base_skill += self.model.base_lr * signal
        if group.kind != "base":
            self.iteration_skill += self.model.iteration_lr * signal

    def heldout_accuracy(self, difficulties: np.ndarray, k_steps: int) -> np.ndarray:
        """Expected accuracy after 0..K improve steps on unseen tasks (s_t = 0), computed exactly:
        p_{k+1} = p_k * P(keep) + (1 - p_k) * P(fix), averaged over tasks."""
        ability = self.base_skill - difficulties
        p = sigmoid(ability)
        fix = success_probability(self.model, "improve", ability, self.iteration_skill, False)
        keep = success_probability(self.model, "improve", ability, self.iteration_skill, True)
        curve = [float(p.mean())]
        for _ in range(k_steps):
            p = p * keep + (1.0 - p) * fix
            curve.append(float(p.mean()))
        return np.asarray(curve)


@dataclass(frozen=True)
class SimulationResult:
    """Per-batch traces of one run; arrays are aligned with ``rollouts``.

    Attributes:
        strategy: the simulated strategy name (a key of ``STRATEGIES``).
        seed: the run's seed.
        rollouts: rollouts spent after each batch.
        sampled_learnability: mean learnability S of the batch's groups built
            from a buffer instance (NaN when none was).
        batch_learnability: mean S of all the batch's groups.
        sampled_depth: mean depth (``GroupPlan.depth``: 0 for a question,
            k+1 for a step from y^k) of the batch's buffer-sampled groups (NaN when none).
        max_depth: deepest response produced so far.
        distinct_trained: distinct prompts (task, latest iterate) trained on
            so far with non-zero advantages.
        heldout_rollouts: rollouts spent at each held-out evaluation.
        heldout_accuracy: shape (evaluations, K + 1), accuracy after 0..K improve steps.
        buffer_metrics: ``ExitBuffer.metrics()`` at the end.
    """

    strategy: str
    seed: int
    rollouts: np.ndarray
    sampled_learnability: np.ndarray
    batch_learnability: np.ndarray
    sampled_depth: np.ndarray
    max_depth: np.ndarray
    distinct_trained: np.ndarray
    heldout_rollouts: np.ndarray
    heldout_accuracy: np.ndarray
    buffer_metrics: dict[str, float]


def simulation_config(strategy: str, seed: int, settings: SimulationSettings) -> ExitConfig:
    """The environment configuration a strategy runs with: the environment's own
    defaults and presets, with the simulation's buffer sizes and seed."""
    checks.choice("strategy", strategy, tuple(STRATEGIES))
    preset, kappa = STRATEGIES[strategy]
    arguments: dict[str, Any] = {"strategy": preset, "seed": seed, "buffer_size": settings.buffer_size,
                                 "min_buffer_size": settings.min_buffer_size}
    if kappa is not None:
        arguments["kappa"] = kappa
    return ExitConfig(**arguments).resolved()


def make_tasks(prefix: str, count: int, model: LearnerModel, rng: np.random.Generator) -> tuple[list[Task], np.ndarray]:
    """``count`` synthetic tasks with hidden difficulties drawn from the model's distribution."""
    difficulties = rng.normal(model.difficulty_mean, model.difficulty_sd, size=count)
    tasks = [Task(task_id=f"{prefix}-{i}", question=f"simulated question {i}", answer="1") for i in range(count)]
    return tasks, difficulties


def simulate(strategy: str, seed: int = 0, settings: SimulationSettings | None = None,
             model: LearnerModel | None = None) -> SimulationResult:
    """Run one strategy for ``settings.rollouts`` rollouts.

    Tasks and held-out tasks depend on ``seed`` only, so every strategy with the
    same seed faces the same task pool; each group is planned and observed by the
    real ``ExitLoop``, seeded as the environments seed it.
    """
    settings = settings or SimulationSettings()
    model = model or LearnerModel()
    settings.validate()
    model.validate()
    config = simulation_config(strategy, seed, settings)
    loop = ExitLoop.from_config(config)
    task_rng = np.random.default_rng([seed, 100])
    tasks, difficulties = make_tasks("train", settings.train_tasks, model, task_rng)
    _, heldout = make_tasks("heldout", settings.heldout_tasks, model, task_rng)
    learner = Learner(model, {task.task_id: float(d) for task, d in zip(tasks, difficulties, strict=True)})
    outcome_rng = np.random.default_rng([seed, 200])
    fresh_rng = np.random.default_rng([seed, 300])

    traces: dict[str, list[float]] = {name: [] for name in (
        "rollouts", "sampled_learnability", "batch_learnability", "sampled_depth", "max_depth", "distinct_trained")}
    heldout_rollouts: list[int] = []
    heldout_curves: list[np.ndarray] = [learner.heldout_accuracy(heldout, settings.k_steps)]
    heldout_rollouts.append(0)
    trained: set[tuple[str, str]] = set()
    spent, serial, deepest, batch = 0, 0, 0, 0
    batch_rollouts = settings.group_size * settings.groups_per_batch
    while spent + batch_rollouts <= settings.rollouts:
        plans = [loop.plan(tasks[int(fresh_rng.integers(len(tasks)))]) for _ in range(settings.groups_per_batch)]
        batches: list[list[Rollout]] = []
        for plan in plans:
            correct = learner.attempt(plan, settings.group_size, outcome_rng)
            batches.append([Rollout(f"{plan.task.task_id}#{serial + i}", float(flag), flag)
                            for i, flag in enumerate(correct)])
            serial += settings.group_size
        groups: list[Group] = [loop.finish(plan, rollouts).group for plan, rollouts in zip(plans, batches, strict=True)]
        for plan, group in zip(plans, groups, strict=True):
            learner.train(group)
            if group.learnability > 0:
                trained.add((group.task.task_id, plan.previous))
        spent += batch_rollouts
        batch += 1
        sampled = [(plan, group) for plan, group in zip(plans, groups, strict=True) if plan.from_buffer]
        deepest = max([deepest] + [plan.depth for plan in plans])
        traces["rollouts"].append(spent)
        traces["sampled_learnability"].append(_mean([g.learnability for _, g in sampled]))
        traces["batch_learnability"].append(_mean([g.learnability for g in groups]))
        traces["sampled_depth"].append(_mean([p.depth for p, _ in sampled]))
        traces["max_depth"].append(deepest)
        traces["distinct_trained"].append(len(trained))
        if batch % settings.eval_every == 0:
            heldout_rollouts.append(spent)
            heldout_curves.append(learner.heldout_accuracy(heldout, settings.k_steps))
    return SimulationResult(
        strategy=strategy,
        seed=seed,
        rollouts=np.asarray(traces["rollouts"], dtype=np.int64),
        sampled_learnability=np.asarray(traces["sampled_learnability"]),
        batch_learnability=np.asarray(traces["batch_learnability"]),
        sampled_depth=np.asarray(traces["sampled_depth"]),
        max_depth=np.asarray(traces["max_depth"], dtype=np.int64),
        distinct_trained=np.asarray(traces["distinct_trained"], dtype=np.int64),
        heldout_rollouts=np.asarray(heldout_rollouts, dtype=np.int64),
        heldout_accuracy=np.vstack(heldout_curves),
        buffer_metrics=loop.store.metrics(),
    )


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarize(results: list[SimulationResult]) -> dict[str, dict[str, float]]:
    """Per strategy, means over seeds of the headline numbers (NaN-aware).

    Keys: ``sampled_learnability`` (mean S of buffer-sampled groups over the
    run), ``batch_learnability``, ``sampled_depth`` (over the last quarter of
    the run), ``max_depth``, ``distinct_trained`` (at the end),
    ``heldout_step0`` / ``heldout_stepK`` (final held-out accuracy before and
    after K improve steps), ``heldout_delta`` (their difference), ``seeds``.
    """
    if not results:
        raise ValueError("results: need at least one simulation result")
    table: dict[str, dict[str, float]] = {}
    for strategy in dict.fromkeys(result.strategy for result in results):
        runs = [result for result in results if result.strategy == strategy]
        tail = [result.sampled_depth[len(result.sampled_depth) * 3 // 4:] for result in runs]
        final = np.vstack([result.heldout_accuracy[-1] for result in runs])
        table[strategy] = {
            "seeds": float(len(runs)),
            "sampled_learnability": _nanmean([r.sampled_learnability for r in runs]),
            "batch_learnability": float(np.mean([r.batch_learnability.mean() for r in runs])),
            "sampled_depth": _nanmean(tail),
            "max_depth": float(np.mean([r.max_depth[-1] for r in runs])),
            "distinct_trained": float(np.mean([r.distinct_trained[-1] for r in runs])),
            "heldout_step0": float(final[:, 0].mean()),
            "heldout_stepK": float(final[:, -1].mean()),
            "heldout_delta": float((final[:, -1] - final[:, 0]).mean()),
        }
    return table


def _nanmean(arrays: list[np.ndarray]) -> float:
    values = np.concatenate(arrays)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan
