"""self-improve: ExIt (Exploratory Iteration) on GSM8K as a verifiers environment.

``vf-eval self-improve`` and prime-rl call :func:`load_environment`. The
environment is a ``vf.SingleTurnEnv`` over GSM8K whose per-group hook
(``_run_group_states``, called once per GRPO group by ``run_group``) runs the
ExIt autocurriculum of "Bootstrapping Task Spaces for Self-Improvement":

1. At group start, with probability ``select_prob`` once the buffer holds
   ``min_buffer_size`` instances, sample one instance and give *all G*
   rollouts the same self-improve prompt (or, with probability
   ``divergence_prob``, self-diverge prompt); otherwise the dataset question.
2. Generate and score the group with the library's own machinery.
3. From the G returns compute learnability S = Var(returns / max return); the parent takes
   S, the G responses enter the buffer as children (S, or 0 when solved).

All per-group state lives in local variables of the hook, so any number of
groups can be in flight in one event loop; the buffer is touched only between
awaits, and only after a group finished without errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import verifiers as vf

import gsm8k_data
import prompts
from answer_check import is_correct
from embeddings import BufferEmbeddings, embed_texts, instance_text
from exit_buffer import ExitBuffer, Instance, claim_buffer_file, read_state, write_state
from exit_config import DEFAULT_EMBEDDING_MODEL, DiversityMode, ExitConfig, Strategy, resolve_config
from grouping import Group, StepKind, Task, bonus_advantages, diversity_bonus, shaped_returns
from rewards import IterationReward, build_rubric, response_text

logger = logging.getLogger("self_improve")


@dataclass(frozen=True)
class GroupPlan:
    """What one group is asked: the step kind and the buffer instance it starts from."""

    kind: StepKind
    instance: Instance | None

    @property
    def depth(self) -> int:
        """Depth of the responses this group produces."""
        if self.instance is None or not self.instance.iterates:
            return 0
        return self.instance.depth + 1

    @property
    def prev_correct(self) -> bool:
        return bool(self.instance and self.instance.iterate_correct and self.instance.iterate_correct[-1])

    def metrics(self) -> dict[str, float]:
        """Per-rollout metrics that are constants of the plan (README's Metrics table)."""
        return {
            "from_buffer": float(self.instance is not None),
            "improve_step": float(self.kind == "improve"),
            "diverge_step": float(self.kind == "diverge"),
            "depth": float(self.depth),
            "prev_correct": float(self.prev_correct),
        }


def plan_group(buffer: ExitBuffer, rng: np.random.Generator, config: ExitConfig) -> GroupPlan:
    """Algorithm 1, lines 3-7: draw a fresh question or a buffer instance for one whole group."""
    if len(buffer) < config.min_buffer_size or rng.random() >= config.select_prob:
        return GroupPlan("base", None)
    instance = buffer.sample()
    if not instance.iterates:
        return GroupPlan("base", instance)
    return GroupPlan("diverge" if rng.random() < config.divergence_prob else "improve", instance)


def input_task(group_input: vf.RolloutInput) -> Task:
    """The GSM8K task a dataset row carries."""
    info = _info_dict(group_input.get("info"))
    return Task(task_id=str(info["task_id"]), question=str(info["question"]), answer=str(group_input["answer"]))


def rewrite_input(group_input: vf.RolloutInput, plan: GroupPlan) -> vf.RolloutInput:
    """A copy of one rollout input carrying the plan's prompt, answer and step info."""
    task = plan.instance.task if plan.instance else input_task(group_input)
    rewritten: dict[str, Any] = dict(group_input)
    if plan.instance is not None:
        rewritten["prompt"] = prompts.step_messages(plan.kind, task.question, plan.instance.latest)
        rewritten["answer"] = task.answer
    rewritten["info"] = {
        **_info_dict(group_input.get("info")),
        "task_id": task.task_id,
        "question": task.question,
        "step": plan.kind,
        "depth": plan.depth,
        "parent_id": plan.instance.instance_id if plan.instance else None,
        "prev_correct": plan.prev_correct,
    }
    return rewritten  # type: ignore[return-value]


def _info_dict(info: Any) -> dict[str, Any]:
    if isinstance(info, str):
        return json.loads(info) if info else {}
    return dict(info or {})


class ExitEnv(vf.SingleTurnEnv):
    """GSM8K single-turn environment with the ExIt per-group hook."""

    def __init__(self, config: ExitConfig, buffer: ExitBuffer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.buffer = buffer
        self._select_rng = np.random.default_rng([config.seed, 1])
        self._request_seed_rng = np.random.default_rng([config.seed, 2])
        self._save_lock = asyncio.Lock()
        self._saved_step = buffer.step
        self._buffer_embeddings = BufferEmbeddings()

    async def setup_state(self, state: vf.State) -> vf.State:
        """Give each request its own seed when ``request_seeds`` is on: servers
        that reseed per request (llama.cpp) otherwise return one sample G times."""
        if self.config.request_seeds:
            seed = int(self._request_seed_rng.integers(2**31 - 1))
            state["sampling_args"] = {**(state.get("sampling_args") or {}), "seed": seed}
        return await super().setup_state(state)

    async def _run_group_states(
        self,
        group_inputs: list[vf.RolloutInput],
        client: Any,
        model: str,
        sampling_args: vf.SamplingArgs,
    ) -> list[vf.State]:
        plan = plan_group(self.buffer, self._select_rng, self.config)
        inputs = [rewrite_input(group_input, plan) for group_input in group_inputs]
        states = await super()._run_group_states(inputs, client, model, sampling_args)
        responses = tuple(response_text(self.parser, state["completion"] or []) for state in states)
        solved = tuple(is_correct(text, str(state["answer"])) for text, state in zip(responses, states, strict=True))
        group = Group(
            task=plan.instance.task if plan.instance else input_task(group_inputs[0]),
            parent_id=plan.instance.instance_id if plan.instance else None,
            history=plan.instance.iterates if plan.instance else (),
            history_correct=plan.instance.iterate_correct if plan.instance else (),
            kind=plan.kind,
            responses=responses,
            returns=tuple(float(state["reward"]) for state in states),
            correct=solved,
            max_return=1.0 + self.config.format_weight,
        )
        if self.config.diversity_bonus:
            await self._apply_diversity(states, group)
        failed = [state["error"] for state in states if state.get("error")]
        if failed:
            logger.warning("group of %s left out of the buffer: %d rollout(s) failed (%r)",
                           group.task.task_id, len(failed), failed[0])
        else:
            self.buffer.observe(group)
            await self._persist()
        buffer_metrics = self.buffer.metrics()
        if self.config.diversity_bonus:
            texts = [instance_text(instance) for instance in self.buffer.instances()]
            buffer_metrics["buffer_diversity"] = self._buffer_embeddings.diversity(texts)
        step_metrics = plan.metrics()
        for state, correct in zip(states, solved, strict=True):
            state["metrics"].update(step_metrics, solved=float(correct), learnability=group.learnability,
                                    **buffer_metrics)
        logger.info("group %s step=%s depth=%d S=%.4f buffer=%s", group.task.task_id, plan.kind,
                    plan.depth, group.learnability, buffer_metrics)
        return states

    async def _apply_diversity(self, states: list[vf.State], group: Group) -> None:
        """Section 4.2: scale each advantage by d_i, as advantages or as shaped rewards.

        One batch, off the event loop, embeds the group's responses and up to
        ``CATCH_UP_PER_GROUP`` buffer texts still lacking a vector (a resumed
        buffer). The responses' vectors enter the buffer-diversity cache here,
        with no await before ``buffer.observe``, so every child the group
        inserts has its vector and no other group can prune it in between.
        """
        responses = list(group.responses)
        buffer_texts = [instance_text(instance) for instance in self.buffer.instances()]
        catch_up = self._buffer_embeddings.claim_missing(buffer_texts)
        try:
            vectors = await asyncio.to_thread(embed_texts, self.config.embedding_model, responses + catch_up)
        except BaseException:
            self._buffer_embeddings.release(catch_up)
            raise
        self._buffer_embeddings.add(responses + catch_up, vectors)
        self._buffer_embeddings.retain([instance_text(instance) for instance in self.buffer.instances()] + responses)
        present = [bool(text.strip()) for text in responses]
        bonus = diversity_bonus(vectors[: len(responses)], self.config.diversity_min_range, present)
        if self.config.diversity_mode == "advantage":
            advantages = bonus_advantages(group.advantages, bonus)
        else:
            rewards = shaped_returns(group.returns, bonus)
            mean = sum(rewards) / len(rewards)
            advantages = tuple(reward - mean for reward in rewards)
            for state, reward in zip(states, rewards, strict=True):
                state["reward"] = reward
        for state, advantage, d in zip(states, advantages, bonus, strict=True):
            state["advantage"] = advantage
            for step in state["trajectory"]:
                step["advantage"] = advantage
                step["reward"] = state["reward"]
            state["metrics"]["diversity"] = float(d)

    async def _persist(self) -> None:
        """Write the buffer to ``buffer_path`` off the event loop; writes are serialised
        and coalesced, so a burst of finished groups costs one write of the newest state."""
        path = self.config.buffer_path
        if path is None:
            return
        claim_buffer_file(path)  # at the first write, not at load: prime-rl's orchestrator loads but never writes
        async with self._save_lock:
            if self._saved_step == self.buffer.step:
                return
            state = self.buffer.state_dict()
            await asyncio.to_thread(write_state, state, path)
            self._saved_step = state["step"]


def load_buffer(config: ExitConfig) -> ExitBuffer:
    """A fresh buffer, or the one saved at ``buffer_path`` (a corrupt file raises)."""
    buffer = ExitBuffer(
        capacity=config.buffer_size,
        kappa=config.kappa,
        seed=config.seed,
        store_responses=config.stores_responses,
    )
    if config.buffer_path is not None and Path(config.buffer_path).exists():
        buffer.load_state_dict(read_state(config.buffer_path))
        logger.info("resumed buffer from %s at step %d with %d instances",
                    config.buffer_path, buffer.step, len(buffer))
    return buffer


def load_environment(
    strategy: Strategy = "diverge",
    select_prob: float | None = None,
    divergence_prob: float | None = None,
    diversity_bonus: bool | None = None,
    diversity_mode: DiversityMode = "reward",
    diversity_min_range: float = 0.1,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    buffer_size: int = 512,
    min_buffer_size: int = 8,
    kappa: float = 10.0,
    iteration_reward: IterationReward = "correctness",
    format_weight: float = 0.1,
    use_think: bool = False,
    num_train_examples: int = -1,
    num_eval_examples: int = -1,
    dataset_name: str | None = None,
    dataset_config: str | None = "main",
    buffer_path: str | None = None,
    request_seeds: bool = False,
    seed: int = 0,
    **unknown: Any,
) -> ExitEnv:
    """Build the self-improve environment. Every argument is documented in the
    README's Environment Arguments table; ``select_prob``, ``divergence_prob``
    and ``diversity_bonus`` default to the ``strategy`` preset.

    Raises:
        ValueError: an unknown argument or a value out of range, named in the
            message, before any data is loaded.
    """
    arguments = {name: value for name, value in locals().items() if name != "unknown"}
    config = resolve_config(arguments, unknown)
    buffer = load_buffer(config)
    parser = vf.MaybeThinkParser() if config.use_think else vf.Parser()
    split_args = {"seed": config.seed, "dataset_name": config.dataset_name, "dataset_config": config.dataset_config}
    return ExitEnv(
        config=config,
        buffer=buffer,
        dataset=gsm8k_data.build_split("train", config.num_train_examples, **split_args),
        eval_dataset=gsm8k_data.build_split("test", config.num_eval_examples, **split_args),
        parser=parser,
        rubric=build_rubric(parser, config.iteration_reward, config.format_weight),
    )
