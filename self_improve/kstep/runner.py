"""Sending the K-step requests: chains advance concurrently, each chain's steps in order.

Every request holds one slot of an ``asyncio.Semaphore(c)``, so ``c`` requests
are in flight across chains. Waiting chains queue first-in first-out, so a run
advances breadth first (all y^0, then all y^1, ...) and keeps every slot busy
until the last step. Each finished request (a response, or an error after all
retries) is appended to the ``RequestLog`` before its chain moves on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai
from tqdm import tqdm

from self_improve import prompts
from self_improve.grouping import StepKind
from self_improve.kstep.chains import Chain, Question, RequestLog, request_seed, step_kind
from self_improve.kstep.config import DEFAULT_API_KEY, EvalConfig
from self_improve.scoring.answer_check import is_correct

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.InternalServerError,  # any 5xx
    openai.RateLimitError,
)
"""Transient failures worth retrying; a 4xx such as a too-long prompt is not."""


class _Progress:
    """tqdm bar over requests, with running accuracy per step and errors.
    The accuracy text is rebuilt at most every ``POSTFIX_INTERVAL_S`` so the bar
    costs next to nothing per request."""

    POSTFIX_INTERVAL_S = 0.5

    def __init__(self, chains: Sequence[Chain], config: EvalConfig) -> None:
        self.steps = config.steps
        self.correct = [0] * (config.steps + 1)
        self.valid = [0] * (config.steps + 1)
        for chain in chains:
            for iterate in chain.iterates:
                self._count(iterate)
        todo = sum(config.steps + 1 - len(chain.iterates) for chain in chains)
        self.errors = 0
        self._postfix_at = 0.0
        self.bar = tqdm(total=todo, desc="k-step", unit="req", mininterval=0.5, disable=not config.progress,
                        file=sys.stderr, dynamic_ncols=True)

    def _count(self, iterate: dict[str, Any]) -> None:
        self.valid[iterate["step"]] += 1
        self.correct[iterate["step"]] += iterate["correct"]

    def done(self, record: dict[str, Any]) -> None:
        if "error" in record:
            self.errors += 1
            self.bar.total -= self.steps - record["step"]  # the chain's later steps will not run
        else:
            self._count(record)
        now = time.monotonic()
        if not self.bar.disable and now - self._postfix_at >= self.POSTFIX_INTERVAL_S:
            self._postfix_at = now
            self._set_postfix()
        self.bar.update(1)

    def _set_postfix(self) -> None:
        accuracy = "/".join(f"{c / v:.2f}" for c, v in zip(self.correct, self.valid, strict=True) if v)
        self.bar.set_postfix_str(f"acc@step {accuracy} err {self.errors}", refresh=False)

    def close(self) -> None:
        if not self.bar.disable:
            self._set_postfix()
        self.bar.close()


async def _complete(client: openai.AsyncOpenAI, config: EvalConfig, semaphore: asyncio.Semaphore,
                    messages: list[dict[str, str]], seed: int | None) -> tuple[dict[str, Any], int]:
    """One chat completion with retries; returns (result fields, attempts).
    The semaphore is held per attempt, never while backing off."""
    body = config.body_args if seed is None else {**config.body_args, "seed": seed}
    attempt = 0
    while True:
        attempt += 1
        try:
            async with semaphore:
                response = await client.chat.completions.create(model=config.model, messages=messages,
                                                                extra_body=body)
            choice = response.choices[0]
            usage = response.usage
            return {"response": choice.message.content or "", "finish_reason": choice.finish_reason,
                    "completion_tokens": usage.completion_tokens if usage else None}, attempt
        except RETRYABLE_ERRORS as error:
            if attempt >= config.max_attempts:
                return {"error": f"{type(error).__name__}: {error}"}, attempt
            await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
        except (openai.APIError, IndexError, AttributeError) as error:  # 4xx, or a reply without a message
            return {"error": f"{type(error).__name__}: {error}"}, attempt


Ask = Callable[[Question, StepKind, str, "int | None"], Awaitable[tuple[dict[str, Any], int]]]
"""Sends one step's request: (question, step kind, previous response, seed) -> (result, attempts).
A result holds ``response``, ``finish_reason``, ``completion_tokens`` and ``correct`` (plus any
scores worth logging), or ``error``."""


async def _run_chain(chain: Chain, ask: Ask, config: EvalConfig, log: RequestLog, progress: _Progress) -> None:
    question = chain.question
    while len(chain.iterates) <= config.steps:
        step = len(chain.iterates)
        kind = step_kind(config, question.question_id, chain.sample, step)
        previous = chain.iterates[-1]["response"] if chain.iterates else ""
        seed = request_seed(config.seed, question.question_id, chain.sample, step) if config.request_seeds else None
        result, attempts = await ask(question, kind, previous, seed)
        record = {"question_id": question.question_id, "sample": chain.sample, "step": step, "kind": kind,
                  "seed": seed, "attempts": attempts, **result}
        log.append(record)
        chain.apply(record, config.steps)
        progress.done(record)
        if "error" in result:
            return


async def advance(config: EvalConfig, chains: Sequence[Chain], log: RequestLog, ask: Ask) -> None:
    """Advance every unfinished chain to step K (or an error), each request sent by ``ask``."""
    pending = [chain for chain in chains if chain.status(config.steps) != "done"]
    progress = _Progress(chains, config)
    try:
        await asyncio.gather(*(_run_chain(chain, ask, config, log, progress) for chain in pending))
    finally:
        progress.close()


async def run_chains(config: EvalConfig, chains: Sequence[Chain], log: RequestLog, base_url: str) -> None:
    """GSM8K: advance every unfinished chain to step K (or an error), ``concurrency`` requests at a
    time, each response checked against the gold number."""
    api_key = os.environ.get(config.api_key_var) or DEFAULT_API_KEY
    semaphore = asyncio.Semaphore(config.concurrency)
    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                  timeout=config.timeout_s) as client:

        async def ask(question: Question, kind: StepKind, previous: str,
                      seed: int | None) -> tuple[dict[str, Any], int]:
            messages = prompts.step_messages(kind, question.question, previous)
            result, attempts = await _complete(client, config, semaphore, messages, seed)
            if "error" not in result:
                result["correct"] = is_correct(result["response"], question.answer)
            return result, attempts

        await advance(config, chains, log, ask)
