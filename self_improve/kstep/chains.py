"""K-step chains and their record on disk: questions, per-request seeds and step kinds,
``Chain`` (one question x sample), and ``RequestLog``, the append-only ``requests.jsonl``
a run resumes from."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from self_improve import gsm8k_data
from self_improve.atomic_io import write_text_atomic
from self_improve.grouping import StepKind
from self_improve.kstep.config import RUN_FILE, SPLIT, EvalConfig

logger = logging.getLogger(__name__)


ITERATE_FIELDS: tuple[str, ...] = ("step", "kind", "response", "correct", "return", "rewards", "finish_reason",
                                   "completion_tokens")
"""What ``chains.jsonl`` keeps of each iterate (``return`` and ``rewards``: a taskset run's scores)."""


@dataclass(frozen=True)
class Question:
    question_id: str
    question: str
    answer: str


def load_questions(num_questions: int, seed: int) -> list[Question]:
    """The test questions the env would draw: ``build_split("test", num_questions, seed)``,
    i.e. the first n of a seeded permutation, kept in file order; ids are ``test-<row>``."""
    split = gsm8k_data.build_split(SPLIT, num_examples=num_questions, seed=seed)
    return [Question(row["info"]["task_id"], row["info"]["question"], row["answer"]) for row in split]


def _derived(seed: int, question_id: str, sample: int, step: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{seed}/{question_id}/{sample}/{step}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def request_seed(seed: int, question_id: str, sample: int, step: int) -> int:
    """Per-request sampling seed in [0, 2**31): reproducible across reruns, distinct
    (up to hash collisions) for the r samples of one question that share a prompt."""
    return _derived(seed, question_id, sample, step, "request")


def step_kind(config: EvalConfig, question_id: str, sample: int, step: int) -> StepKind:
    """base at step 0; diverge with probability ``divergence_prob``, drawn
    deterministically so a resumed chain takes the same path."""
    if step == 0:
        return "base"
    if config.divergence_prob in (0.0, 1.0):  # no draw needed; the hash is the per-request cost that matters
        return "diverge" if config.divergence_prob else "improve"
    draw = _derived(config.seed, question_id, sample, step, "kind") / 2**31
    return "diverge" if draw < config.divergence_prob else "improve"


@dataclass
class Chain:
    """One (question, sample) chain: its successful iterates in step order and
    the error that stopped it, if any."""

    question: Question
    sample: int
    iterates: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def apply(self, record: dict[str, Any], steps: int) -> None:
        """Fold one request record in; records for other steps (duplicates, or
        steps beyond K after K was lowered) are ignored."""
        if record["step"] != len(self.iterates) or record["step"] > steps:
            return
        if "error" in record:
            self.error = record["error"]
        else:
            self.iterates.append(record)
            self.error = None

    def status(self, steps: int) -> str:
        if len(self.iterates) > steps:
            return "done"
        return "error" if self.error is not None else "unfinished"

    def row(self, steps: int) -> dict[str, Any]:
        """The chain's line in ``chains.jsonl``."""
        return {
            "question_id": self.question.question_id, "sample": self.sample, "status": self.status(steps),
            "error": self.error, "question": self.question.question, "answer": self.question.answer,
            "correct": [it["correct"] for it in self.iterates],
            "iterates": [{key: it[key] for key in ITERATE_FIELDS if key in it} for it in self.iterates],
        }


class RequestLog:
    """Append-only JSONL of finished requests. Whole lines, flushed one by one,
    so a killed process leaves at most one torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def load(self) -> list[dict[str, Any]]:
        """All records; a torn last line is removed from the file with a warning,
        a bad line anywhere else is corruption and raises ``ValueError``."""
        if not self.path.exists():
            return []
        text = self.path.read_text()
        lines = text.split("\n")
        complete, torn = lines[:-1], lines[-1]
        records = []
        for number, line in enumerate(complete, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}: line {number} is not JSON ({error}); the log is corrupt") from error
        if torn:
            logger.warning("%s: dropping a torn last line (%d chars) left by an interrupted run", self.path, len(torn))
            with self.path.open("r+") as handle:
                handle.truncate(len(text) - len(torn))
        return records

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def check_identity(output_dir: Path, config: EvalConfig) -> None:
    """Write ``run.json`` on the first run; refuse to resume a different run."""
    path = output_dir / RUN_FILE
    identity = config.identity()
    if not path.exists():
        write_text_atomic(path, json.dumps(identity, indent=2) + "\n")
        return
    recorded = json.loads(path.read_text())
    differing = sorted(key for key in identity.keys() | recorded.keys() if identity.get(key) != recorded.get(key))
    if differing:
        raise ValueError(f"output_dir: {output_dir} holds a run with different {differing} "
                         f"({ {k: recorded.get(k) for k in differing} }); choose another -o to start afresh")


def load_chains(config: EvalConfig, questions: Sequence[Question], log: RequestLog) -> list[Chain]:
    """Chains for the requested questions x samples, rebuilt from the log."""
    chains = {(q.question_id, s): Chain(q, s) for q in questions for s in range(config.samples)}
    for record in log.load():
        chain = chains.get((record["question_id"], record["sample"]))
        if chain is not None:
            chain.apply(record, config.steps)
    return list(chains.values())
