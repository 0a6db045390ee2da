"""Settings of one K-step evaluation run (``EvalConfig``) and the names of its output files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from self_improve import checks, prompts, sampling
from self_improve.cli_args import option
from self_improve.local.weights import MODEL_NAME

SPLIT: str = "test"
"""Held-out questions only: the env trains on the train split."""

DEFAULT_API_KEY: str = "EMPTY"
"""Sent when the ``-k`` variable is unset: local servers ignore the key."""

RESERVED_SAMPLING_KEYS: frozenset[str] = frozenset({"model", "messages", "n", "stream", "seed"})
"""Keys ``-S`` may not set: the eval owns them (one choice per request, a
derived per-request seed controlled by ``--seed``/``--no-request-seeds``)."""

REQUESTS_FILE = "requests.jsonl"
CHAINS_FILE = "chains.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.md"
PLOT_FILE = "kstep.png"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class EvalConfig:
    """Everything one evaluation run needs; validated on construction. Each field is one flag of
    ``self-improve-kstep``."""

    model: str = option(MODEL_NAME, "model name sent to the endpoint", "-m")
    base_url: str | None = option(None, "OpenAI-compatible base URL; unset starts the built-in local model",
                                  "-b", "--api-base-url")
    api_key_var: str = option("OPENAI_API_KEY", f"env var holding the API key ({DEFAULT_API_KEY!r} when unset)", "-k")
    num_questions: int = option(50, "seeded subset of the GSM8K test split (as gsm8k_data.build_split; -1 for all "
                                    "1,319) or of the taskset's tasks", "-n")
    samples: int = option(1, "chains per question (the paper averages over 8)", "-r")
    steps: int = option(4, "K, the self-improvement steps after y^0", "-K")
    concurrency: int = option(2, "requests in flight (2 keeps a one-slot CPU llama.cpp server busy)",
                              "-c", "--max-concurrent")
    max_tokens: int = option(sampling.MAX_TOKENS, "sent as max_tokens", "-t")
    temperature: float = option(sampling.TEMPERATURE, "sampling temperature", "-T")
    sampling_args: dict[str, Any] = option({}, "extra request-body fields, merged over max_tokens and temperature "
                                               '(vf-eval\'s {"extra_body": {...}} form too)', "-S")
    divergence_prob: float = option(0.0, "probability that a step k >= 1 uses the self-diverge prompt", "-p")
    seed: int = option(0, "seeds the question subset, the divergence draws and the per-request seeds")
    request_seeds: bool = option(True, "send a seed derived from (seed, question, sample, step): "
                                       "llama.cpp repeats samples otherwise")
    max_attempts: int = option(4, "tries per request on connection errors, timeouts, 5xx and 429")
    retry_backoff_s: float = option(1.0, "seconds before the first retry, doubling after", "--retry-backoff")
    timeout_s: float = option(600.0, "seconds per request (requests queue on a one-slot CPU server)", "--timeout")
    output_dir: Path | None = option(None, "where outputs go; rerun to resume (default "
                                           "outputs/kstep/<model>-n<n>-r<r>-K<K>-seed<seed>)", "-o")
    progress: bool = option(True, "draw the progress bar on stderr")
    taskset: str | None = option(None, "a verifiers 0.4 taskset id: its tasks, scored by its own rewards (the v1 "
                                       "extra); unset: GSM8K", "--taskset", group="any taskset")
    taskset_args: dict[str, Any] = option({}, "the taskset's config fields, a JSON object", "--taskset-args",
                                          group="any taskset")
    max_return: float | None = option(None, "declared r_max of a task's return (default: the sum of its positive "
                                            "reward weights)", "--max-return", group="any taskset")
    threshold: float | None = option(None, "a step is solved when its return reaches this (default: r_max)",
                                     "--threshold", group="any taskset")

    def __post_init__(self) -> None:
        checks.subset_size("num_questions", self.num_questions)
        for name in ("samples", "concurrency", "max_tokens", "max_attempts"):
            checks.integer(name, getattr(self, name), 1)
        checks.integer("steps", self.steps, 0)
        checks.number("divergence_prob", self.divergence_prob, 0.0, 1.0)
        checks.number("temperature", self.temperature, 0.0)
        checks.number("retry_backoff_s", self.retry_backoff_s, 0.0)
        checks.number("timeout_s", self.timeout_s, 0.0, low_open=True)
        if not isinstance(self.sampling_args, dict) or not isinstance(self.sampling_args.get("extra_body", {}), dict):
            raise ValueError(f"sampling_args: must be a JSON object (extra_body too), got {self.sampling_args!r}")
        reserved = RESERVED_SAMPLING_KEYS & set(self.body_args)
        if reserved:
            raise ValueError(f"sampling_args: may not set {sorted(reserved)}")
        if self.taskset is None:
            for name in ("taskset_args", "max_return", "threshold"):
                if getattr(self, name) not in (None, {}):
                    raise ValueError(f"{name}: needs --taskset (GSM8K is scored by its boxed answer), "
                                     f"got {getattr(self, name)!r}")
            return
        checks.text("taskset", self.taskset)
        if not isinstance(self.taskset_args, dict) or "id" in self.taskset_args:
            raise ValueError(f"taskset_args: must be a JSON object without 'id', got {self.taskset_args!r}")
        if self.max_return is not None:
            checks.number("max_return", self.max_return, 0.0, low_open=True)
        if self.threshold is not None:
            checks.number("threshold", self.threshold)

    @property
    def body_args(self) -> dict[str, Any]:
        """Request body fields besides model, messages and seed."""
        extra = dict(self.sampling_args)
        nested = extra.pop("extra_body", {})
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, **extra, **nested}

    @property
    def resolved_output_dir(self) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model if self.taskset is None else f"{self.taskset}-{self.model}")
        return Path("outputs") / "kstep" / f"{name}-n{self.num_questions}-r{self.samples}-K{self.steps}-seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What gives recorded responses their meaning: a resume must match it.
        n, r, K, c, the URL and retry settings (and a taskset's r_max and threshold) may change between runs."""
        if self.taskset is not None:
            return {"model": self.model, "taskset": self.taskset, "taskset_args": self.taskset_args, "seed": self.seed,
                    "body_args": self.body_args, "divergence_prob": self.divergence_prob,
                    "request_seeds": self.request_seeds}
        return {"model": self.model, "split": SPLIT, "seed": self.seed, "body_args": self.body_args,
                "divergence_prob": self.divergence_prob, "request_seeds": self.request_seeds,
                "system_prompt": prompts.SYSTEM_PROMPT}
