"""``exit-letters``: reverse a word, answer on an ``ANSWER: <word>`` line; binary reward, no harness.

A test taskset (tests_v1/tasksets/README.md): a string prompt, a reward that is 1 when the
last ``ANSWER:`` line holds the reversed word (case-insensitive) and 0 otherwise.
"""

from __future__ import annotations

import re

import verifiers.v1 as vf

WORDS: tuple[str, ...] = ("stone", "planet", "garden", "silver", "bridge", "lantern")
ANSWER_LINE = re.compile(r"^\s*ANSWER:\s*([A-Za-z]+)\s*$", re.M)


def final_answer(text: str) -> str | None:
    """The word on the last ``ANSWER:`` line, lower-cased; None without one."""
    found = ANSWER_LINE.findall(text or "")
    return found[-1].lower() if found else None


class LettersData(vf.TaskData):
    answer: str
    """The word reversed."""


class LettersTask(vf.Task[LettersData, vf.State, vf.TaskConfig]):
    @vf.reward(weight=1.0)
    async def exact(self, trace: vf.Trace) -> float:
        """1 when the last ANSWER line is the reversed word."""
        return float(final_answer(trace.last_reply or "") == self.data.answer)


class LettersTaskset(vf.Taskset[LettersTask, vf.TasksetConfig]):
    def load(self) -> list[LettersTask]:
        return [LettersTask(LettersData(id=f"letters-{i}", prompt=f"Spell the word '{word}' backwards. "
                                        "End with a line `ANSWER: <the reversed word>`.", answer=word[::-1]),
                            self.config.task)
                for i, word in enumerate(WORDS)]


__all__ = ["LettersTaskset"]
