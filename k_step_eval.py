"""K-step self-improvement evaluation (paper Section 5.3, Table 1, Figure 4).

For each held-out GSM8K test question and each of ``r`` samples, a *chain*
asks for an initial response y^0 to the base prompt, then K times sends the
self-improve prompt holding only the original question and the previous
response y^{k-1} (never the whole chat), giving y^k. With ``divergence_prob``
a step uses the self-diverge prompt instead. Prompts, answer checking and the
question subset are the environment's own (``prompts``, ``answer_check``,
``gsm8k_data.build_split``), so the eval and the env agree by construction.
The previous response is passed as the raw assistant content, the same text
the env's default parser (``vf.Parser``) scores.

Scheduling: every request holds one slot of an ``asyncio.Semaphore(c)``, so
``c`` requests are in flight across chains while each chain's steps stay
sequential. Waiting chains queue first-in first-out, so a run advances
breadth first (all y^0, then all y^1, ...) and keeps all ``c`` slots busy
until the last step.

Resume: ``requests.jsonl`` in the output directory is the source of truth.
Every finished request (a response, or an error after all retries) is
appended as one whole line and flushed before the chain moves on. A rerun
with the same directory rebuilds every chain from it, never sends a request
that already has a response, and retries chains that ended in an error. A
torn last line (the process was killed mid-write) is dropped with a warning.

Numbers reported (``summarize``), with Q questions and r samples per question:
    * A chain is *valid at step k* when it has y^k. Errors are never counted
      as wrong or right: a chain whose request failed leaves the denominators
      from that step on; ``n_valid`` and ``errors`` are reported.
    * acc_k (avg@r): p_qk = mean correctness of question q's valid chains at
      step k; acc_k = mean of p_qk over questions with a valid chain at k.
    * stderr_k = sample std (ddof=1) of p_qk over those questions / sqrt(count).
    * Delta_K = acc_K - acc_0; its stderr is that of the paired differences
      p_qK - p_q0 over questions valid at both steps.
    * Step k >= 1: incorrect->correct and correct->incorrect counts over chains
      valid at k, as fractions of those chains (all chains when nothing
      failed); net = i->c - c->i; cumulative net = sum over steps 1..k, and
      its fraction is the sum of the per-step net fractions (Figure 4).

Usage::

    self-improve-kstep -n 50 -r 1 -K 4            # starts the built-in local model
    self-improve-kstep -m gpt-4.1-mini -b https://api.openai.com/v1 -k OPENAI_API_KEY -n 100 -r 8
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import os
import re
import signal
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import openai
from tqdm import tqdm

import gsm8k_data
import local_model
import prompts
from answer_check import is_correct
from grouping import StepKind

logger = logging.getLogger("k_step_eval")

SPLIT: str = "test"
"""Held-out questions only: the env trains on the train split."""

DEFAULT_API_KEY: str = "EMPTY"
"""Sent when the ``-k`` variable is unset: local servers ignore the key."""

RESERVED_SAMPLING_KEYS: frozenset[str] = frozenset({"model", "messages", "n", "stream", "seed"})
"""Keys ``-S`` may not set: the eval owns them (one choice per request, a
derived per-request seed controlled by ``--seed``/``--no-request-seeds``)."""

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.InternalServerError,  # any 5xx
    openai.RateLimitError,
)
"""Transient failures worth retrying; a 4xx such as a too-long prompt is not."""

REQUESTS_FILE = "requests.jsonl"
CHAINS_FILE = "chains.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.md"
PLOT_FILE = "kstep.png"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class EvalConfig:
    """Everything one evaluation run needs; validated on construction."""

    model: str = local_model.MODEL_NAME
    base_url: str | None = None
    """None starts the built-in local model (``local_model``)."""
    api_key_var: str = "OPENAI_API_KEY"
    """Env var holding the key; when unset, ``DEFAULT_API_KEY`` is sent."""
    num_questions: int = 50
    """Seeded subset of the test split, same rule as ``gsm8k_data.build_split``; -1 = all 1,319."""
    samples: int = 1
    """Chains per question (the paper averages over 8: ``-r 8``)."""
    steps: int = 4
    """K, the number of self-improvement steps after y^0."""
    concurrency: int = 2
    """Requests in flight; 2 keeps a one-slot CPU llama.cpp server busy."""
    max_tokens: int = 768
    """Sent as ``max_tokens`` (llama.cpp honours it); 768 lets most 1.5B answers reach ``\\boxed{}``."""
    temperature: float = 0.7
    sampling_args: dict[str, Any] = field(default_factory=dict)
    """Extra body fields, merged over max_tokens/temperature."""
    divergence_prob: float = 0.0
    """Probability that a step k >= 1 uses the self-diverge prompt (Table 1 uses 0)."""
    seed: int = 0
    """Seeds the question subset, the divergence draws and the per-request seeds."""
    request_seeds: bool = True
    """Send a seed derived from (seed, question, sample, step): llama.cpp repeats samples otherwise."""
    max_attempts: int = 4
    """Tries per request on connection errors, timeouts, 5xx and 429; other errors are not retried."""
    retry_backoff_s: float = 1.0
    """Wait before retry i (1-based) is retry_backoff_s * 2**(i-1)."""
    timeout_s: float = 600.0
    """Per-request timeout; requests queue on a one-slot CPU server."""
    output_dir: Path | None = None
    """None: ``outputs/kstep/<model>-n<n>-r<r>-K<K>-seed<seed>``."""
    progress: bool = True
    """Draw the tqdm bar on stderr."""

    def __post_init__(self) -> None:
        if self.num_questions != -1 and self.num_questions < 1:
            raise ValueError(f"num_questions: must be >= 1 or -1 (all), got {self.num_questions}")
        for name in ("samples", "concurrency", "max_tokens", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps: must be >= 0, got {self.steps}")
        if not 0.0 <= self.divergence_prob <= 1.0:
            raise ValueError(f"divergence_prob: must be in [0, 1], got {self.divergence_prob}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s: must be >= 0, got {self.retry_backoff_s}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {self.timeout_s}")
        if not isinstance(self.sampling_args, dict) or not isinstance(self.sampling_args.get("extra_body", {}), dict):
            raise ValueError(f"sampling_args: must be a JSON object (extra_body too), got {self.sampling_args!r}")
        reserved = RESERVED_SAMPLING_KEYS & set(self.body_args)
        if reserved:
            raise ValueError(f"sampling_args: may not set {sorted(reserved)}")

    @property
    def body_args(self) -> dict[str, Any]:
        """Request body fields besides model, messages and seed."""
        extra = dict(self.sampling_args)
        nested = extra.pop("extra_body", {})  # accept vf-eval's {"extra_body": {...}} form too
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, **extra, **nested}

    @property
    def resolved_output_dir(self) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)
        return Path("outputs") / "kstep" / f"{name}-n{self.num_questions}-r{self.samples}-K{self.steps}-seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What gives recorded responses their meaning: a resume must match it.
        n, r, K, c, the URL and retry settings may change between runs."""
        return {"model": self.model, "split": SPLIT, "seed": self.seed, "body_args": self.body_args,
                "divergence_prob": self.divergence_prob, "request_seeds": self.request_seeds,
                "system_prompt": prompts.SYSTEM_PROMPT}


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
            "iterates": [{key: it[key] for key in ("step", "kind", "response", "correct", "finish_reason",
                                                   "completion_tokens")} for it in self.iterates],
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


def _check_identity(output_dir: Path, config: EvalConfig) -> None:
    """Write ``run.json`` on the first run; refuse to resume a different run."""
    path = output_dir / RUN_FILE
    identity = config.identity()
    if not path.exists():
        path.write_text(json.dumps(identity, indent=2) + "\n")
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
        accuracy = "/".join(f"{c / v:.2f}" for c, v in zip(self.correct, self.valid) if v)
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


async def _run_chain(chain: Chain, client: openai.AsyncOpenAI, config: EvalConfig, semaphore: asyncio.Semaphore,
                     log: RequestLog, progress: _Progress) -> None:
    question = chain.question
    while len(chain.iterates) <= config.steps:
        step = len(chain.iterates)
        kind = step_kind(config, question.question_id, chain.sample, step)
        previous = chain.iterates[-1]["response"] if chain.iterates else ""
        messages = prompts.step_messages(kind, question.question, previous)
        seed = request_seed(config.seed, question.question_id, chain.sample, step) if config.request_seeds else None
        result, attempts = await _complete(client, config, semaphore, messages, seed)
        record = {"question_id": question.question_id, "sample": chain.sample, "step": step, "kind": kind,
                  "seed": seed, "attempts": attempts, **result}
        if "error" not in result:
            record["correct"] = is_correct(result["response"], question.answer)
        log.append(record)
        chain.apply(record, config.steps)
        progress.done(record)
        if "error" in result:
            return


async def run_chains(config: EvalConfig, chains: Sequence[Chain], log: RequestLog, base_url: str) -> None:
    """Advance every unfinished chain to step K (or an error), ``concurrency`` requests at a time."""
    pending = [chain for chain in chains if chain.status(config.steps) != "done"]
    api_key = os.environ.get(config.api_key_var) or DEFAULT_API_KEY
    progress = _Progress(chains, config)
    semaphore = asyncio.Semaphore(config.concurrency)
    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                  timeout=config.timeout_s) as client:
        try:
            await asyncio.gather(*(_run_chain(c, client, config, semaphore, log, progress) for c in pending))
        finally:
            progress.close()


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def summarize(chains: Sequence[Chain], steps: int) -> dict[str, Any]:
    """Every reported number, from the chains alone (formulas in the module doc)."""
    by_question: dict[str, list[Chain]] = defaultdict(list)
    for chain in chains:
        by_question[chain.question.question_id].append(chain)
    rates: list[dict[str, float]] = [{} for _ in range(steps + 1)]  # step -> question -> p_qk
    per_step: list[dict[str, Any]] = []
    cumulative, cumulative_fraction = 0, 0.0
    for k in range(steps + 1):
        valid = [c for c in chains if len(c.iterates) > k]
        for question_id, group in by_question.items():
            flags = [c.iterates[k]["correct"] for c in group if len(c.iterates) > k]
            if flags:
                rates[k][question_id] = sum(flags) / len(flags)
        accuracy, stderr = _mean_se(list(rates[k].values()))
        row: dict[str, Any] = {"step": k, "kinds": dict(Counter(c.iterates[k]["kind"] for c in valid)),
                               "n_valid": len(valid), "n_questions": len(rates[k]),
                               "correct": sum(c.iterates[k]["correct"] for c in valid),
                               "accuracy": accuracy, "stderr": stderr}
        if k >= 1:
            fixed = sum(not c.iterates[k - 1]["correct"] and c.iterates[k]["correct"] for c in valid)
            broken = sum(c.iterates[k - 1]["correct"] and not c.iterates[k]["correct"] for c in valid)
            fixed_fraction = fixed / len(valid) if valid else 0.0
            broken_fraction = broken / len(valid) if valid else 0.0
            cumulative += fixed - broken
            cumulative_fraction += fixed_fraction - broken_fraction
            row |= {"incorrect_to_correct": fixed, "correct_to_incorrect": broken, "net": fixed - broken,
                    "incorrect_to_correct_frac": fixed_fraction, "correct_to_incorrect_frac": broken_fraction,
                    "net_frac": fixed_fraction - broken_fraction,
                    "cumulative_net": cumulative, "cumulative_net_frac": cumulative_fraction}
        per_step.append(row)
    first, last = per_step[0]["accuracy"], per_step[-1]["accuracy"]
    paired = [rates[steps][q] - rates[0][q] for q in rates[steps] if q in rates[0]]
    statuses = Counter(chain.status(steps) for chain in chains)
    return {
        "num_questions": len(by_question), "samples": max((c.sample for c in chains), default=-1) + 1,
        "steps": steps, "chains": len(chains), "done": statuses["done"], "errors": statuses["error"],
        "unfinished": statuses["unfinished"],
        "delta_K": None if first is None or last is None else last - first,
        "delta_K_stderr": _mean_se(paired)[1],
        "per_step": per_step,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown_table(summary: dict[str, Any]) -> str:
    """The stdout report: one row per step, then Delta_K and chain counts."""
    lines = ["| step | prompt | valid | accuracy (avg@r) | ± s.e. | i→c | c→i | net | cum. net | cum. net % |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary["per_step"]:
        kinds = " + ".join(f"{kind} {count}" for kind, count in sorted(row["kinds"].items())) or "-"
        moves = ([str(row[key]) for key in ("incorrect_to_correct", "correct_to_incorrect", "net", "cumulative_net")]
                 + [_percent(row["cumulative_net_frac"])] if row["step"] else ["-"] * 5)
        lines.append(f"| {row['step']} | {kinds} | {row['n_valid']} | {_percent(row['accuracy'])} | "
                     f"{_percent(row['stderr'])} | " + " | ".join(moves) + " |")
    delta = summary["delta_K"]
    delta_text = "n/a" if delta is None else f"{100 * delta:+.1f} points (± {_percent(summary['delta_K_stderr'])})"
    lines += ["", f"Δ_K = acc_{summary['steps']} − acc_0 = {delta_text}; "
              f"{summary['num_questions']} questions × {summary['samples']} samples = {summary['chains']} chains: "
              f"{summary['done']} done, {summary['errors']} errors, {summary['unfinished']} unfinished"]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Two panels: accuracy per step with ± s.e., and cumulative net corrections (Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["per_step"]
    steps = [row["step"] for row in rows if row["accuracy"] is not None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(steps, [100 * rows[k]["accuracy"] for k in steps],
                  yerr=[100 * (rows[k]["stderr"] or 0.0) for k in steps], marker="o", capsize=3)
    left.set(xlabel="step k", ylabel="accuracy (%)", title="Accuracy after each step (avg@r ± s.e.)")
    moves = rows[1:]
    right.plot([0] + [row["step"] for row in moves], [0.0] + [100 * row["cumulative_net_frac"] for row in moves],
               marker="o", label="cumulative net")
    right.bar([row["step"] - 0.15 for row in moves], [100 * row["incorrect_to_correct_frac"] for row in moves],
              width=0.3, alpha=0.5, label="incorrect→correct")
    right.bar([row["step"] + 0.15 for row in moves], [-100 * row["correct_to_incorrect_frac"] for row in moves],
              width=0.3, alpha=0.5, label="correct→incorrect (negative)")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set(xlabel="step k", ylabel="% of chains", title="Net corrections")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.set_xticks(range(summary["steps"] + 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_outputs(config: EvalConfig, chains: Sequence[Chain], output_dir: Path, base_url: str) -> dict[str, Any]:
    """chains.jsonl, summary.json, summary.md and the plot, each replaced atomically."""
    summary = summarize(chains, config.steps)
    summary["model"], summary["base_url"] = config.model, base_url
    summary["config"] = {**asdict(config), "output_dir": str(output_dir)}
    _write_atomic(output_dir / CHAINS_FILE, "".join(json.dumps(chain.row(config.steps)) + "\n" for chain in chains))
    _write_atomic(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    _write_atomic(output_dir / TABLE_FILE, markdown_table(summary) + "\n")
    try:
        plot(summary, output_dir / PLOT_FILE)
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", PLOT_FILE)
    return summary


def evaluate(config: EvalConfig, base_url: str, questions: Sequence[Question] | None = None) -> dict[str, Any]:
    """Run (or resume) the evaluation against ``base_url`` and write every output.
    Outputs are written even when interrupted, counting unfinished chains."""
    output_dir = config.resolved_output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    _check_identity(output_dir, config)
    if questions is None:
        questions = load_questions(config.num_questions, config.seed)
    log = RequestLog(output_dir / REQUESTS_FILE)
    chains = load_chains(config, questions, log)
    reused = sum(len(chain.iterates) for chain in chains)
    if reused:
        logger.warning("resuming %s: %d finished requests reused, %d of %d chains to continue", output_dir, reused,
                       sum(chain.status(config.steps) != "done" for chain in chains), len(chains))
    started = time.perf_counter()
    try:
        asyncio.run(run_chains(config, chains, log, base_url))
    finally:
        log.close()
        summary = write_outputs(config, chains, output_dir, base_url)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    defaults = EvalConfig.__dataclass_fields__
    parser = argparse.ArgumentParser(prog="self-improve-kstep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-m", "--model", default=local_model.MODEL_NAME, help="model name sent to the endpoint")
    parser.add_argument("-b", "--api-base-url", default=None,
                        help="OpenAI-compatible base URL; unset starts the built-in local model")
    parser.add_argument("-k", "--api-key-var", default="OPENAI_API_KEY", help="env var holding the API key")
    parser.add_argument("-n", "--num-questions", type=int, default=defaults["num_questions"].default,
                        help="seeded subset of the test split (as build_split); -1 for all")
    parser.add_argument("-r", "--samples", type=int, default=defaults["samples"].default, help="chains per question")
    parser.add_argument("-K", "--steps", type=int, default=defaults["steps"].default, help="self-improvement steps")
    parser.add_argument("-c", "--max-concurrent", type=int, default=defaults["concurrency"].default,
                        help="requests in flight")
    parser.add_argument("-t", "--max-tokens", type=int, default=defaults["max_tokens"].default)
    parser.add_argument("-T", "--temperature", type=float, default=defaults["temperature"].default)
    parser.add_argument("-S", "--sampling-args", default="{}", help="JSON object of extra request-body fields")
    parser.add_argument("-p", "--divergence-prob", type=float, default=0.0,
                        help="probability a step uses the self-diverge prompt")
    parser.add_argument("--seed", type=int, default=0, help="question subset, divergence draws, request seeds")
    parser.add_argument("--no-request-seeds", action="store_true", help="send no per-request seed")
    parser.add_argument("--max-attempts", type=int, default=defaults["max_attempts"].default,
                        help="tries per request on connection errors, 5xx and 429")
    parser.add_argument("--retry-backoff", type=float, default=defaults["retry_backoff_s"].default,
                        help="seconds before the first retry, doubling after")
    parser.add_argument("--timeout", type=float, default=defaults["timeout_s"].default, help="seconds per request")
    parser.add_argument("-o", "--output-dir", type=Path, default=None,
                        help="default outputs/kstep/<model>-n<n>-r<r>-K<K>-seed<seed>; rerun to resume")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        sampling_args = json.loads(args.sampling_args)
    except json.JSONDecodeError as error:
        raise ValueError(f"sampling_args: not JSON: {args.sampling_args!r} ({error})") from error
    return EvalConfig(model=args.model, base_url=args.api_base_url, api_key_var=args.api_key_var,
                      num_questions=args.num_questions, samples=args.samples, steps=args.steps,
                      concurrency=args.max_concurrent, max_tokens=args.max_tokens, temperature=args.temperature,
                      sampling_args=sampling_args, divergence_prob=args.divergence_prob, seed=args.seed,
                      request_seeds=not args.no_request_seeds, max_attempts=args.max_attempts,
                      retry_backoff_s=args.retry_backoff, timeout_s=args.timeout, output_dir=args.output_dir,
                      progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``self-improve-kstep``: prints the Markdown table and the output paths."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # our own progress notes; the HTTP client's per-request lines stay hidden
    try:
        config = parse_args(argv)
    except ValueError as error:
        print(f"self-improve-kstep: error: {error}", file=sys.stderr)
        return 2
    output_dir = config.resolved_output_dir
    signal.signal(signal.SIGTERM, local_model.raise_on_sigterm)
    try:
        if config.base_url is not None:
            summary = evaluate(config, config.base_url)
        else:
            output_dir.mkdir(parents=True, exist_ok=True)
            server = local_model.LocalServer(local_model.ensure_model(), log_path=output_dir / "server.log")
            logger.info("starting the built-in model server; its log: %s", server.log_path)
            with server:
                summary = evaluate(config, server.base_url)
    except local_model.LocalModelError as error:
        print(f"self-improve-kstep: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume from {output_dir / REQUESTS_FILE}", file=sys.stderr)
        return 130
    print(markdown_table(summary))
    print(f"\nwall {summary['wall_s']:.1f} s; outputs in {output_dir}: {CHAINS_FILE}, {SUMMARY_FILE}, "
          f"{TABLE_FILE}, {PLOT_FILE}, {REQUESTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
