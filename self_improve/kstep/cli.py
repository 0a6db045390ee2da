"""K-step self-improvement evaluation (paper Section 5.3, Table 1, Figure 4): ``self-improve-kstep``.

For each held-out GSM8K test question and each of r samples, a chain asks for
y^0 with the base prompt, then K times sends the self-improve prompt holding
only the question and y^{k-1}. Usage, outputs, resume and the definitions of
every reported number: docs/k-step-eval.md.

This module runs one evaluation (``evaluate``) and the command line (``main``);
it re-exports the names a caller needs from the modules that hold them:
``kstep.config`` (settings, file names), ``kstep.chains`` (questions, chains,
the request log), ``kstep.runner`` (sending requests), ``kstep.report``
(numbers, table, plot).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from self_improve import cli_args
from self_improve.atomic_io import write_text_atomic
from self_improve.buffer.redis_auth import redact
from self_improve.kstep.chains import (
    Chain,
    Question,
    RequestLog,
    check_identity,
    load_chains,
    load_questions,
    request_seed,
    step_kind,
)
from self_improve.kstep.config import (
    CHAINS_FILE,
    PLOT_FILE,
    REQUESTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    EvalConfig,
)
from self_improve.kstep.report import markdown_table, plot, summarize
from self_improve.kstep.runner import run_chains
from self_improve.local.server import LocalModelError, LocalServer, raise_on_sigterm
from self_improve.local.weights import ensure_model

__all__ = [
    "CHAINS_FILE", "PLOT_FILE", "REQUESTS_FILE", "RUN_FILE", "SUMMARY_FILE", "TABLE_FILE",
    "Chain", "EvalConfig", "Question", "RequestLog",
    "evaluate", "load_chains", "load_questions", "main", "markdown_table", "parse_args", "plot", "request_seed",
    "run_chains", "step_kind", "summarize", "taskset_run", "write_outputs",
]

logger = logging.getLogger(__name__)

PROG = "self-improve-kstep"
DESCRIPTION = "K-step self-improvement evaluation (paper Section 5.3, Table 1, Figure 4)."
EPILOG = ("Rerun the same command to resume: every finished request is kept in <output dir>/requests.jsonl. "
          "Details: docs/k-step-eval.md.")


def taskset_run(config: EvalConfig) -> Any:
    """The ``kstep.taskset_runner.TasksetRun`` of a ``--taskset`` run: the taskset loaded and every
    chosen task checked (single-turn, with rewards) before any model request. ``ValueError`` when
    verifiers 0.4 is missing (naming the ``v1`` extra) or the taskset cannot be iterated on."""
    try:
        version = importlib.metadata.version("verifiers")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    major_minor = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if major_minor < (0, 4):
        raise ValueError(f"taskset: --taskset {config.taskset!r} needs verifiers 0.4 (pip install "
                         f"'self-improve[v1]', the v1 extra), found verifiers {version}")
    from self_improve.kstep.taskset_runner import TasksetRun

    return TasksetRun(config)


def write_outputs(config: EvalConfig, chains: Sequence[Chain], output_dir: Path, base_url: str,
                  run: Any = None) -> dict[str, Any]:
    """chains.jsonl, summary.json and summary.md, each replaced atomically, then the plot."""
    summary = summarize(chains, config.steps)
    if run is not None:
        summary["taskset"], summary["max_return"], summary["threshold"] = config.taskset, run.max_return, run.threshold
    summary["model"], summary["base_url"] = config.model, redact(base_url)  # never a password in user info
    summary["config"] = {**asdict(config), "output_dir": str(output_dir)}
    write_text_atomic(output_dir / CHAINS_FILE, "".join(json.dumps(chain.row(config.steps)) + "\n"
                                                       for chain in chains))
    write_text_atomic(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(output_dir / TABLE_FILE, markdown_table(summary) + "\n")
    try:
        plot(summary, output_dir / PLOT_FILE)
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", PLOT_FILE)
    return summary


def evaluate(config: EvalConfig, base_url: str, questions: Sequence[Question] | None = None,
             run: Any = None) -> dict[str, Any]:
    """Run (or resume) the evaluation against ``base_url`` and write every output.
    Outputs are written even when interrupted, counting unfinished chains. A ``--taskset``
    run uses ``run`` (``taskset_run(config)``; built here when not given) for its tasks."""
    if config.taskset is not None and run is None:
        run = taskset_run(config)
    output_dir = config.resolved_output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    check_identity(output_dir, config)
    if run is not None:
        questions = run.questions()
    elif questions is None:
        questions = load_questions(config.num_questions, config.seed)
    log = RequestLog(output_dir / REQUESTS_FILE)
    chains = load_chains(config, questions, log)
    if run is not None:
        run.judge(chains)
    reused = sum(len(chain.iterates) for chain in chains)
    if reused:
        logger.warning("resuming %s: %d finished requests reused, %d of %d chains to continue", output_dir, reused,
                       sum(chain.status(config.steps) != "done" for chain in chains), len(chains))
    started = time.perf_counter()
    try:
        asyncio.run(run_chains(config, chains, log, base_url) if run is None else run.run(chains, log, base_url))
    finally:
        log.close()
        summary = write_outputs(config, chains, output_dir, base_url, run)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    """The ``EvalConfig`` for a command line; a bad value raises ``ValueError`` naming its flag."""
    return cli_args.parse(EvalConfig, argv, prog=PROG, description=DESCRIPTION, epilog=EPILOG)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``self-improve-kstep``: prints the Markdown table and the output paths."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # our own progress notes; the HTTP client's per-request lines stay hidden
    try:
        config = parse_args(argv)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    output_dir = config.resolved_output_dir
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        run = taskset_run(config) if config.taskset is not None else None  # refusals before any server or request
        if config.base_url is not None:
            summary = evaluate(config, config.base_url, run=run)
        else:
            output_dir.mkdir(parents=True, exist_ok=True)
            server = LocalServer(ensure_model(), log_path=output_dir / "server.log")
            logger.info("starting the built-in model server; its log: %s", server.log_path)
            with server:
                summary = evaluate(config, server.base_url, run=run)
    except ValueError as error:  # a refused taskset, or an output dir holding another run
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except LocalModelError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
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
