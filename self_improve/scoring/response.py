"""The per-response rules every host shares, with no verifiers import (classic 0.3, v1 0.4 and
the prime-rl sampler all use them):

* :func:`improvement_reward`: the return of a self-iteration step under
  ``iteration_reward="improvement"``, max(0, (r - r_prev) / (1 - r_prev)), set to 0 when
  r_prev = 1 (nothing left to improve: the limit of every epsilon regularisation);
* :func:`final_reply`: the text that is scored, after the last ``</think>`` for a reasoning
  model, stripped;
* the check cache: a rollout's answer is checked once (:func:`record_check`) and the verdict,
  with whether the text closes a ``\\boxed{}`` (the format reward), kept under :data:`CHECK_KEY`
  in a mapping the rollout carries (the classic state, a v1 trace's ``info``) as plain values,
  so it stays serialisable; :func:`cached_check` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from self_improve.scoring.answer_check import check_async

THINK_END = "</think>"
"""Closes a reasoning model's thinking; with ``use_think`` only the text after it is scored."""

CHECK_KEY = "exit_check"
"""Key of a rollout's one answer check record (classic ``state``, v1 ``trace.info``)."""


def improvement_reward(r_new: float, r_prev: float) -> float:
    """max(0, (r_new - r_prev) / (1 - r_prev)); 0 when r_prev >= 1 (see module doc)."""
    if r_prev >= 1.0:
        return 0.0
    return max(0.0, (r_new - r_prev) / (1.0 - r_prev))


def final_reply(text: str | None, use_think: bool = False) -> str:
    """The scored text of a reply: after the last ``</think>`` when ``use_think`` is on (all of it
    when there is none), stripped; "" for no reply."""
    text = text or ""
    if use_think and THINK_END in text:
        text = text.rsplit(THINK_END, 1)[1]
    return text.strip()


@dataclass(frozen=True)
class CheckRecord:
    """The verdict of a rollout's one answer check."""

    correct: bool
    timed_out: bool = False
    """The check ran out of time (the response counts as wrong)."""
    response: str | None = None
    """The checked text, when the host keeps it (``record_check(..., keep_response=True)``)."""
    boxed: bool = False
    """The text closes a ``\\boxed{}`` answer (the format reward: the check has already looked)."""


def cached_check(holder: Mapping[str, Any]) -> CheckRecord | None:
    """The check recorded in ``holder``, or None when the rollout has not been checked.

    The record is the holder's own key, so a dict (verifiers' ``State`` among them) is read as a
    plain dict: ``State.get`` is a Python call that forwards input fields and raises and catches
    ``KeyError`` for a missing key, as it is before every check."""
    raw = dict.get(holder, CHECK_KEY) if isinstance(holder, dict) else holder.get(CHECK_KEY)
    if raw is None:
        return None
    return CheckRecord(correct=bool(raw["correct"]), timed_out=bool(raw.get("timed_out", False)),
                       response=raw.get("response"), boxed=bool(raw.get("boxed", False)))


async def record_check(holder: MutableMapping[str, Any], text: str, answer: str,
                       keep_response: bool = False) -> CheckRecord:
    """Check ``text`` against the gold ``answer`` (off the event loop when the symbolic fallback
    runs) and record the verdict in ``holder``; the recorded one if there is already one."""
    cached = cached_check(holder)
    if cached is not None:
        return cached
    result = await check_async(text, answer)
    record = CheckRecord(correct=bool(result.correct), timed_out=bool(result.timed_out),
                         response=text if keep_response else None, boxed=result.route != "unboxed")
    raw: dict[str, Any] = {"correct": record.correct, "timed_out": record.timed_out, "boxed": record.boxed}
    if keep_response:
        raw["response"] = text
    holder[CHECK_KEY] = raw
    return record
