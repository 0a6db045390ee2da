"""K-step chains over any verifiers 0.4 taskset (``self-improve-kstep --taskset ID``).

Each request is one episode of verifiers' ``SingleAgentEnv`` over the taskset: the step's
task is the taskset's own task with its prompt replaced by ``prompts.wrap_step`` (its own
prompt at step 0; the Appendix B template quoting that request and y^{k-1} after), played by
``v1_tasks.chat_agent`` (the in-process chat harness unless the taskset brings a harness),
and scored by the task's own reward hooks and judges with verifiers' weights. The trace's
return is logged; a step is solved when it reaches the threshold (default r_max).

Imports ``verifiers.v1``: ``kstep.cli`` imports this module only for a ``--taskset`` run.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from typing import Any

import verifiers.v1 as vf
from verifiers.v1.clients import ModelContext
from verifiers.v1.envs.single_agent import SingleAgentEnv, SingleAgentEnvConfig

from self_improve import prompts
from self_improve.grouping import StepKind
from self_improve.hosts import v1_tasks
from self_improve.kstep.chains import Chain, Question, RequestLog
from self_improve.kstep.config import EvalConfig
from self_improve.kstep.runner import advance

RETRYABLE_STATUS = re.compile(r"\b(HTTP|upstream) (429|5\d\d)\b|request failed")
"""A failure worth retrying (5xx, 429, no connection; the GSM8K runner retries the same), when the
trace's error carries no HTTP status of its own (a harness that reports the status in its text)."""


class TasksetRun:
    """The taskset's chosen tasks, their r_max and threshold, and the env every step runs in."""

    def __init__(self, config: EvalConfig) -> None:
        if config.taskset is None:
            raise ValueError("taskset: a TasksetRun needs --taskset, got None")
        self.config = config
        taskset = v1_tasks.load_taskset(config.taskset, config.taskset_args)
        if not taskset.bounded:
            raise ValueError(f"taskset: {config.taskset!r} is infinite; the K-step evaluation needs a finite taskset")
        tasks = list(taskset)
        if not tasks:
            raise ValueError(f"taskset: {config.taskset!r} loaded no tasks")
        keys = [task.key for task in tasks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"taskset: {config.taskset!r} has tasks with equal keys; each chain needs its own")
        if config.num_questions != -1 and config.num_questions < len(tasks):
            chosen = sorted(random.Random(config.seed).sample(range(len(tasks)), config.num_questions))
            tasks = [tasks[index] for index in chosen]
        task_type = type(taskset).task_type()
        problems = v1_tasks.taskset_problems(taskset, task_type, *v1_tasks.seat_harness_class(config.taskset))
        problems += sorted({p for p in map(v1_tasks.prompt_problem, (t.data.prompt for t in tasks)) if p})
        v1_tasks.refuse(config.taskset, problems)  # before any model request
        self.tasks: dict[str, vf.Task] = {task.key: task for task in tasks}
        self.max_return = v1_tasks.max_return(task_type, taskset.config.task, config.max_return)
        self.threshold = v1_tasks.solved_threshold("threshold", config.threshold, self.max_return)
        self.env = SingleAgentEnv(SingleAgentEnvConfig(
            taskset=taskset.config, agent=v1_tasks.chat_agent(config.taskset, config.timeout_s)))

    def questions(self) -> list[Question]:
        """One question per chosen task: its key, the request its prompt makes, its answer if it has one."""
        return [Question(key, prompts.request_text(task.data.prompt), str(getattr(task.data, "answer", "") or ""))
                for key, task in self.tasks.items()]

    def judge(self, chains: Sequence[Chain]) -> None:
        """Set every logged iterate's ``correct`` from its return under this run's threshold
        (r_max and the threshold may change between runs of one log)."""
        for chain in chains:
            for iterate in chain.iterates:
                iterate["correct"] = v1_tasks.reaches(iterate["return"], self.threshold)

    def step_task(self, question_id: str, kind: StepKind, previous: str) -> vf.Task:
        """The task of one step: the taskset's own, prompted by ``prompts.wrap_step``."""
        task = self.tasks[question_id]
        if kind == "base":
            return task
        return v1_tasks.with_prompt(task, prompts.wrap_step(kind, task.data.prompt, previous))

    def result(self, episode: vf.Episode) -> tuple[dict[str, Any], bool]:
        """(the logged fields of one step's episode, whether its failure is worth a retry)."""
        traces = list(episode.traces)
        trace = traces[-1] if traces else None
        error, status = None, None
        if trace is None or not episode.ok:
            failure = (trace.last_error if trace is not None else None) or \
                (episode.errors[-1] if episode.errors else None)
            error = f"{failure.type}: {failure.message}"[:500] if failure else "episode failed without an error"
            status = getattr(failure, "status_code", None)
        elif trace.is_timeout:
            error = f"timed out ({trace.stop_condition})"
        elif v1_tasks.reply_problem(trace) is not None:
            error = f"taskset {self.config.taskset!r}: {v1_tasks.reply_problem(trace)}"
        if error is not None:
            retry = status == 429 or (status or 0) >= 500 or bool(RETRYABLE_STATUS.search(error))
            return {"error": error}, retry
        value = trace.reward
        calls = [call for call in trace.calls if call.error is None]
        return {"response": trace.last_reply, "finish_reason": calls[-1].finish_reason if calls else None,
                "completion_tokens": trace.num_output_tokens, "return": value,
                "rewards": {name: {"score": r.score, "weight": r.weight} for name, r in trace.rewards.items()
                            if r is not None},
                "correct": v1_tasks.reaches(value, self.threshold)}, False

    async def run(self, chains: Sequence[Chain], log: RequestLog, base_url: str) -> None:
        """Advance every unfinished chain to step K (or an error), ``concurrency`` episodes at a time."""
        config = self.config
        client = vf.EvalClientConfig(base_url=base_url, api_key_var=config.api_key_var)
        semaphore = asyncio.Semaphore(config.concurrency)

        async def ask(question: Question, kind: StepKind, previous: str,
                      seed: int | None) -> tuple[dict[str, Any], int]:
            task = self.step_task(question.question_id, kind, previous)
            sampling = vf.SamplingConfig(**config.body_args, **({} if seed is None else {"seed": seed}))
            context = ModelContext(model=config.model, client=client, sampling=sampling)
            attempt = 0
            while True:
                attempt += 1
                async with semaphore:
                    episode = await self.env.run_episode(task, context)
                result, retry = self.result(episode)
                if not retry or attempt >= config.max_attempts:
                    return result, attempt
                await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))

        async with self.env.serving():
            await advance(config, chains, log, ask)
