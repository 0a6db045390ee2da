"""Reward functions of the classic self-improve rubric.

verifiers passes arguments by name (``completions``, ``answers``, ``infos``,
``parser``, ``states``...). Each response is parsed and checked once per
rollout (``group_checks``, kept in the rollout's state), off the event loop
when the check needs the symbolic fallback; both functions here are called
once per group, read those checks and return a list, one number per rollout,
and never touch the buffer.

Step returns: a base step, and a self-iteration step under
``iteration_reward="correctness"`` (the paper's math setting, App. A.2),
return correctness; under ``"improvement"`` a self-iteration step returns
``scoring.response.improvement_reward`` (the per-response rules every host
shares live in that module, which imports no verifiers).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import verifiers as vf

from self_improve.exit_config import IterationReward
from self_improve.scoring.response import CheckRecord, cached_check, improvement_reward, record_check

Func = TypeVar("Func", bound=Callable[..., Any])

def response_text(parser: vf.Parser, completion: vf.Messages) -> str:
    """The response a step produced, as the parser sees it (think blocks removed
    by a think-aware parser). Empty when the model said nothing."""
    return parser.parse_answer(completion) or ""


async def group_checks(parser: vf.Parser, completions: list[vf.Messages], answers: list[str],
                       states: list[vf.State]) -> list[CheckRecord]:
    """Each rollout's one answer check, run once and kept in its state (``scoring.response.record_check``,
    with the checked text for ``hosts.classic.rollout_of``); those not yet run go together (a
    symbolic check each off the event loop, so a group's slow checks overlap)."""
    cached = [cached_check(state) for state in states]
    rows = zip(states, completions, answers, cached, strict=True)
    fresh = iter(await asyncio.gather(*(record_check(state, response_text(parser, completion or []), answer,
                                                     keep_response=True)
                                        for state, completion, answer, check in rows if check is None)))
    return [check if check is not None else next(fresh) for check in cached]


def make_correct_answer(iteration_reward: IterationReward) -> vf.GroupRewardFunc:
    """The weight-1 step return, configured for the chosen iteration reward; one call per group."""

    async def correct_answer(parser: vf.Parser, completions: list[vf.Messages], answers: list[str],
                             infos: list[dict[str, Any]], states: list[vf.State]) -> list[float]:
        returns = []
        for check, info in zip(await group_checks(parser, completions, answers, states), infos, strict=True):
            solved = float(check.correct)
            improving = iteration_reward == "improvement" and info.get("step", "base") != "base"
            returns.append(improvement_reward(solved, float(info["prev_correct"])) if improving else solved)
        return returns

    return correct_answer


async def format_reward(parser: vf.Parser, completions: list[vf.Messages], answers: list[str],
                        states: list[vf.State]) -> list[float]:
    """1 for each rollout of the group whose response closes a ``\\boxed{}`` answer, read from the
    rollout's one check (which has already looked for it)."""
    return [float(check.boxed) for check in await group_checks(parser, completions, answers, states)]


def build_rubric(parser: vf.Parser, iteration_reward: IterationReward, format_weight: float) -> vf.Rubric:
    """Rubric: step return (weight 1) and format (``format_weight``).

    Both are group functions (they take ``states``), so verifiers calls each once per group: it
    runs a per-rollout function as one task per rollout and builds its arguments each time, which
    cost the format reward 1.2 million instructions a group (``scripts/bench_instructions.py``),
    40 times what the function does; the environment requires whole groups anyway. Metrics that
    the hook already knows (step kind, depth...) are written by the hook, not by more functions.
    """
    rubric = GroupRubric(parser=parser)
    rubric.add_reward_func(with_signature(make_correct_answer(iteration_reward)), weight=1.0)
    rubric.add_reward_func(with_signature(format_reward), weight=format_weight)
    return rubric


_GROUP_OBJECTS: ContextVar[list[Any] | None] = ContextVar("self_improve_group_objects", default=None)
"""Inside ``GroupRubric.score_group``: [the group's states, their score objects], built once."""


class GroupRubric(vf.Rubric):
    """verifiers' ``Rubric``, building a group's score objects once for all its group functions.

    verifiers builds them (``group_score_objects``: every rollout's ``score_objects``) for each
    group function it calls; both functions here read the same objects of the same group and
    change none of them (every classic verifiers, 0.1.14 to 0.3.0, has both methods). Outside
    ``score_group`` it is verifiers' own rubric.
    """

    async def score_group(self, states: list[vf.State]) -> None:
        token = _GROUP_OBJECTS.set([None, None])
        try:
            await super().score_group(states)
        finally:
            _GROUP_OBJECTS.reset(token)

    def group_score_objects(self, states: list[vf.State]) -> dict[str, Any]:
        shared = _GROUP_OBJECTS.get()
        if shared is None:
            return super().group_score_objects(states)
        if shared[0] is not states:
            shared[:] = [states, super().group_score_objects(states)]
        return shared[1]


def with_signature(func: Func) -> Func:
    """``func`` with its signature computed once: verifiers calls ``inspect.signature`` on
    every reward function for every rollout, which costs more than our functions do
    (``scripts/bench_overhead.py`` measures the rubric). ``inspect.signature`` returns
    ``__signature__`` when it is set, so what verifiers sees is unchanged."""
    func.__signature__ = inspect.signature(func)
    return func


def max_return(rubric: vf.Rubric) -> float:
    """r_max, the largest return the rubric can give: every function is in [0, 1], so the
    sum of the positive weights (over every rubric of a ``RubricGroup``)."""
    rubrics = getattr(rubric, "rubrics", None) or [rubric]
    return float(sum(weight for part in rubrics for weight in part.weights if weight > 0))
