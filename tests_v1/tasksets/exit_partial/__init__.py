"""``exit-partial``: name the vowels of a word; partial-credit reward, its own chat harness.

A test taskset (tests_v1/tasksets/README.md): a system + user message prompt, and two
rewards: ``coverage`` (weight 1), the share of the word's distinct vowels named on the last
``ANSWER:`` line minus the share of wrong letters named there, clipped to [0, 1]; and
``answered`` (weight 0.5), 1 when an ``ANSWER:`` line exists. Its harness sends one chat
completion from this process.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import verifiers.v1 as vf

WORDS: tuple[str, ...] = ("education", "rhythm", "banana", "sequoia", "strength", "audio")
SYSTEM = "You answer letter puzzles. Finish with one line `ANSWER: <letters separated by commas>`."
ANSWER_LINE = re.compile(r"^\s*ANSWER:(.*)$", re.M)


def vowels(word: str) -> str:
    """The distinct vowels of ``word`` in alphabetical order, comma-separated ('' for none)."""
    return ",".join(sorted(set(word) & set("aeiou")))


def named_letters(text: str) -> set[str] | None:
    """The letters on the last ``ANSWER:`` line; None without one."""
    found = ANSWER_LINE.findall(text or "")
    return None if not found else {part.strip().lower() for part in found[-1].split(",") if part.strip()}


def coverage_of(text: str, answer: str) -> float:
    """|named & gold| / |gold| - |named - gold| / |gold|, in [0, 1] (1 for an exact empty answer)."""
    named, gold = named_letters(text), {letter for letter in answer.split(",") if letter}
    if named is None:
        return 0.0
    if not gold:
        return float(not named)
    return min(1.0, max(0.0, (len(named & gold) - len(named - gold)) / len(gold)))


class PartialData(vf.TaskData):
    answer: str
    """The word's distinct vowels, comma-separated."""


class PartialTask(vf.Task[PartialData, vf.State, vf.TaskConfig]):
    @vf.reward(weight=1.0)
    async def coverage(self, trace: vf.Trace) -> float:
        """Partial credit for the vowels named (``coverage_of``)."""
        return coverage_of(trace.last_reply or "", self.data.answer)

    @vf.reward(weight=0.5)
    async def answered(self, trace: vf.Trace) -> float:
        """1 when the reply has an ANSWER line."""
        return float(named_letters(trace.last_reply or "") is not None)


class PartialTaskset(vf.Taskset[PartialTask, vf.TasksetConfig]):
    def load(self) -> list[PartialTask]:
        return [PartialTask(PartialData(id=f"vowels-{word}", answer=vowels(word), prompt=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Which vowels does the word '{word}' contain?"}]), self.config.task)
            for word in WORDS]


class OneShotHarness(vf.Harness[vf.HarnessConfig]):
    """One chat completion of the task's messages through the rollout's endpoint, from this process."""

    APPENDS_SYSTEM_PROMPT = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(self, ctx: vf.ModelContext, trace: vf.Trace, runtime: vf.Runtime, endpoint: str, secret: str,
                     mcp_urls: dict[str, str], data: vf.TaskData) -> vf.ProgramResult:
        system, prompt = self.resolve_prompt(data)
        if isinstance(prompt, str):
            messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        else:
            messages = [{"role": m.role, "content": m.content} for m in prompt or []]
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        body: dict[str, Any] = {"model": ctx.model, "messages": messages}
        if getattr(data, "request_seed", None) is not None:
            body["seed"] = data.request_seed
        async with httpx.AsyncClient(timeout=120.0) as client:
            reply = await client.post(f"{endpoint.rstrip('/')}/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {secret}"})
        if reply.status_code >= 400:
            return vf.ProgramResult(exit_code=1, stdout="", stderr=f"HTTP {reply.status_code}: {reply.text[:300]}")
        return vf.ProgramResult(exit_code=0, stdout="", stderr="")


__all__ = ["OneShotHarness", "PartialTaskset"]
