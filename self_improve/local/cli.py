"""Built-in local model: ``self-improve-local`` runs ``vf-eval self-improve`` on any machine, no GPU, no model hub.

It prepares the model file (``weights``), starts llama.cpp's server on 127.0.0.1
(``server``), runs the real ``vf-eval self-improve ... -s`` against it, prints
per-metric averages and stops the server. ``-b`` points the same command at any
other OpenAI-compatible endpoint, and then no server is started.

It fails loudly: an endpoint it cannot reach, a server that dies during the run,
or more than ``--max-failed-share`` of the rollouts failed is a non-zero exit with
a message, never a table of zeros. Details and measurements: docs/local-model.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from self_improve import cli_args, sampling
from self_improve.cli_args import option
from self_improve.exit_config import resolve_config
from self_improve.local.server import (
    DEFAULT_ENGINE,
    DEFAULT_N_CTX,
    DEFAULT_PARALLEL,
    DEFAULT_STARTUP_TIMEOUT_S,
    ENGINES,
    LocalModelError,
    LocalServer,
    raise_on_sigterm,
    stop_process,
)
from self_improve.local.weights import CACHE_ENV, MODEL_NAME, ensure_model, join_parts, log

__all__ = ["LocalModelError", "LocalRunConfig", "LocalServer", "MODEL_NAME", "check_failures", "ensure_model",
           "find_results", "format_summary", "join_parts", "main", "parse_args", "probe_endpoint", "raise_on_sigterm",
           "summarize", "vf_eval_command"]

PROG = "self-improve-local"
DESCRIPTION = ("Run `vf-eval self-improve` against the built-in local model (or any OpenAI-compatible endpoint "
               "with -b) and print per-metric averages.")
EPILOG = "Unrecognised flags are passed on to vf-eval. Details: docs/local-model.md."

LOCAL_KEY_VAR: str = "SELF_IMPROVE_LOCAL_KEY"
"""API-key variable handed to vf-eval for the built-in server (which checks no key)."""

SERVER_FLAGS = "built-in server (ignored with -b)"

PROBE_TIMEOUT_S: float = 10.0
"""How long ``-b``'s endpoint has to accept a connection before the run is refused."""


@dataclass(frozen=True)
class LocalRunConfig:
    """One ``self-improve-local`` run; each field is one flag. The flags mirror vf-eval's."""

    model: str | None = option(None, f"model name; {MODEL_NAME} for the built-in server; required with -b", "-m")
    api_base_url: str | None = option(None, "OpenAI-compatible base URL; when given, no local server is started",
                                      "-b")
    api_key_var: str | None = option(None, "environment variable holding the API key (OPENAI_API_KEY with -b)", "-k")
    num_examples: int = option(8, "questions", "-n")
    rollouts_per_example: int = option(4, "rollouts per group", "-r")
    max_concurrent: int = option(8, "model requests in flight (the env's request_slots; vf-eval admits every "
                                    "group): a freed slot goes to the next request, and a group is planned when "
                                    "one is free for it", "-c")
    max_tokens: int = option(sampling.MAX_TOKENS, "max tokens per response", "-t")
    temperature: float = option(sampling.TEMPERATURE, "sampling temperature", "-T")
    sampling_args: dict[str, Any] | None = option(None, "sampling arguments as JSON, as in vf-eval", "-S")
    env_args: dict[str, Any] = option({}, 'environment arguments as JSON, merged over the run\'s own '
                                          '(request_slots: -c; min_buffer_size: -r; request_seeds and '
                                          'group_request: true for the built-in server)', "-a")
    output_dir: Path | None = option(None, "where results and the server log go "
                                           "(default outputs/self-improve-local/<time>)", "-o")
    max_failed_share: float = option(0.1, "exit 1 when more than this share of rollouts failed (0: any failure)")
    port: int | None = option(None, "port on 127.0.0.1 (default a free one)", group=SERVER_FLAGS)
    threads: int | None = option(None, "generation threads (default all cores)", group=SERVER_FLAGS)
    n_ctx: int = option(DEFAULT_N_CTX, "context length per slot", group=SERVER_FLAGS)
    parallel: int = option(DEFAULT_PARALLEL, "requests decoded together (continuous batching)", group=SERVER_FLAGS)
    engine: str = option(DEFAULT_ENGINE, f"{' or '.join(ENGINES)}: the xllamacpp wheel (local extra), or "
                                         "llama-server compiled on this machine (local-compiled extra; faster)",
                         group=SERVER_FLAGS)
    startup_timeout_s: float = option(DEFAULT_STARTUP_TIMEOUT_S, "seconds to wait for the server",
                                      "--startup-timeout", group=SERVER_FLAGS)
    cache_dir: Path | None = option(None, f"where the model file is kept (default ${CACHE_ENV} or "
                                          "~/.cache/self-improve)", group=SERVER_FLAGS)
    model_file: Path | None = option(None, "a GGUF to serve instead of the built-in model", group=SERVER_FLAGS)
    server_binary: Path | None = option(None, "a llama-server executable to run instead of --engine's",
                                        group=SERVER_FLAGS)

    def __post_init__(self) -> None:
        if self.api_base_url is not None and self.model is None:
            raise ValueError("model: give the model name the -b endpoint serves")
        for name in ("num_examples", "rollouts_per_example", "max_concurrent", "max_tokens", "parallel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not 0.0 <= self.max_failed_share <= 1.0:
            raise ValueError(f"max_failed_share: must be in [0, 1], got {self.max_failed_share}")
        resolve_config(self.env_arguments)  # a bad env arg (a password in buffer_url too) stops here, not in vf-eval

    @property
    def env_arguments(self) -> dict[str, Any]:
        """The env's arguments: ``-a`` over the run's own. ``-c`` is ``request_slots`` (vf-eval,
        whose ``-c`` counts whole groups, admits every group, so the slots keep the server's batch
        full); the buffer is sampled once one group is scored (``min_buffer_size`` = ``-r``: at the
        default 8 x 4, Table 4's 128 instances per 128 x 8 rollouts, one eighth of a step)."""
        return {"request_slots": self.max_concurrent, "min_buffer_size": self.rollouts_per_example,
                **self.env_args}

    @property
    def local(self) -> bool:
        """Whether this run starts the built-in server (no ``-b``)."""
        return self.api_base_url is None


def parse_args(argv: Sequence[str] | None = None) -> tuple[LocalRunConfig, list[str]]:
    """The run's settings and the flags left for vf-eval; a bad value is a usage error (exit 2)."""
    parser = cli_args.build_parser(LocalRunConfig, prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    namespace, extra = parser.parse_known_args(argv)
    try:
        return cli_args.from_namespace(LocalRunConfig, namespace), extra
    except ValueError as error:
        parser.error(str(error))


def vf_eval_command(config: LocalRunConfig, extra: Sequence[str], base_url: str, model: str,
                    key_var: str, local: bool) -> list[str]:
    """The ``vf-eval self-improve ... -s -d`` command line for these settings.

    The env arguments are :attr:`LocalRunConfig.env_arguments`; for the built-in server they
    add ``request_seeds`` (each request gets its own seed) and ``group_request``: one streamed
    request per group, so llama.cpp evaluates the group's prompt once (a quarter of the prompt
    work at G = 4), and each choice frees its slot as it ends (docs/local-model.md has the
    figures). ``-a '{"group_request": false}'`` sends one request per rollout instead. vf-eval's
    ``-c`` admits every group (the env's slots decide).
    """
    env_args = config.env_arguments
    if local:
        env_args = {"request_seeds": True, "group_request": True, **env_args}
    admitted = config.num_examples * config.rollouts_per_example
    sampling_args = dict(config.sampling_args or {})
    command = [
        str(Path(sys.executable).with_name("vf-eval")), "self-improve",
        "-m", model, "-b", base_url, "-k", key_var,
        "-n", str(config.num_examples), "-r", str(config.rollouts_per_example), "-c", str(admitted),
        "-t", str(config.max_tokens), "-T", str(config.temperature),
        "-a", json.dumps(env_args), "-o", str(config.output_dir), "-s", "-d",
    ]
    if sampling_args:
        command += ["-S", json.dumps(sampling_args)]
    return [*command, *extra]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric means over rollouts, and what the ExIt loop did per group.

    Returns ``rollouts``; ``metrics``: the mean of ``reward`` and of every
    metric vf-eval saved; ``truncated`` and ``errors``: rollouts cut at
    ``max_tokens`` and rollouts that failed, with ``first_error``; ``groups``: groups per step kind
    (base / improve / diverge; one group per ``example_id``);
    ``groups_from_buffer``; ``base_accuracy``: mean ``solved`` over base-step
    rollouts on fresh dataset questions (None when there are none).
    """
    if not rows:
        raise ValueError("rows: no results to summarize")
    columns: dict[str, list[float]] = defaultdict(list)
    groups: dict[Any, dict[str, Any]] = {}
    fresh_base: list[float] = []
    for row in rows:
        metrics = {"reward": row["reward"], **(row.get("metrics") or {})}
        for name, value in metrics.items():
            columns[name].append(float(value))
        info = _info(row)
        groups.setdefault(row.get("example_id"), info)
        if info.get("step", "base") == "base" and info.get("parent_id") is None:
            fresh_base.append(float(metrics["solved"]))
    return {
        "rollouts": len(rows),
        "metrics": {name: sum(values) / len(values) for name, values in columns.items()},
        "truncated": sum(bool(row.get("is_truncated")) for row in rows),
        "errors": sum(row.get("error") is not None for row in rows),
        "first_error": next((row["error"] for row in rows if row.get("error") is not None), None),
        "groups": dict(Counter(info.get("step", "base") for info in groups.values())),
        "groups_from_buffer": sum(info.get("parent_id") is not None for info in groups.values()),
        "base_accuracy": sum(fresh_base) / len(fresh_base) if fresh_base else None,
    }


def _info(row: dict[str, Any]) -> dict[str, Any]:
    info = row.get("info") or {}
    return json.loads(info) if isinstance(info, str) else dict(info)


def format_summary(summary: dict[str, Any], results_path: Path) -> str:
    """The text ``main`` prints after the run."""
    lines = [f"self-improve results: {summary['rollouts']} rollouts"]
    lines += [f"  {name:<28} {value:.3f}" for name, value in sorted(summary["metrics"].items())]
    kinds = ", ".join(f"{kind} {summary['groups'].get(kind, 0)}" for kind in ("base", "improve", "diverge"))
    lines.append(f"  groups by step: {kinds}; drawn from the buffer: {summary['groups_from_buffer']}")
    lines.append(f"  rollouts cut at max_tokens: {summary['truncated']}; failed: {summary['errors']}")
    if summary["base_accuracy"] is not None:
        lines.append(f"  base accuracy (solved, fresh questions): {summary['base_accuracy']:.3f}")
    lines.append(f"  saved results: {results_path}")
    return "\n".join(lines)


def find_results(output_dir: Path) -> Path:
    """The newest ``results.jsonl`` under ``output_dir``."""
    found = sorted(output_dir.rglob("results.jsonl"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise LocalModelError(f"vf-eval saved no results.jsonl under {output_dir}")
    return found[-1]


def probe_endpoint(base_url: str) -> None:
    """Refuse an endpoint that does not accept a connection within :data:`PROBE_TIMEOUT_S`.

    Any HTTP answer (401 and 404 included) counts as reachable: only the
    connection is checked, not the key or the model name.

    Raises:
        LocalModelError: naming the URL and why it could not be reached.
    """
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise LocalModelError(f"cannot reach the endpoint -b {base_url}: {reason}") from None


def _run_eval(command: list[str], environment: dict[str, str], server: LocalServer | None = None) -> int:
    """Run vf-eval; stop it and raise if ``server`` dies before it finishes."""
    log("running: " + " ".join(command))
    evaluation = subprocess.Popen(command, env=environment)
    try:
        while True:
            try:
                return evaluation.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if server is not None and server.poll() is not None:
                    raise LocalModelError(f"during the run, {server.death_report()}") from None
    finally:
        stop_process(evaluation)


def check_failures(summary: dict[str, Any], max_failed_share: float) -> None:
    """Refuse a run whose share of failed rollouts is over ``max_failed_share``.

    Raises:
        LocalModelError: with the count, the share and the first error saved.
    """
    failed, total = summary["errors"], summary["rollouts"]
    if failed / total > max_failed_share:
        raise LocalModelError(f"{failed} of {total} rollouts failed ({failed / total:.0%} > --max-failed-share "
                              f"{max_failed_share:g}); first error: {summary.get('first_error')}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``self-improve-local``; returns the exit status."""
    config, extra = parse_args(argv)
    output_dir = config.output_dir or Path("outputs") / "self-improve-local" / datetime.now().strftime("%Y%m%d-%H%M%S")
    config = replace(config, output_dir=output_dir.resolve())
    config.output_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    try:
        if config.local:
            server = LocalServer(config.model_file or ensure_model(config.cache_dir), port=config.port,
                                 log_path=config.output_dir / "server.log", n_ctx=config.n_ctx,
                                 threads=config.threads, startup_timeout_s=config.startup_timeout_s,
                                 parallel=config.parallel, binary=config.server_binary, engine=config.engine)
            log(f"starting the model server; its log: {server.log_path}")
            with server:
                log(f"server pid {server.pid} answered at {server.base_url}")
                command = vf_eval_command(config, extra, server.base_url, config.model or MODEL_NAME,
                                          LOCAL_KEY_VAR, local=True)
                code = _run_eval(command, {**os.environ, LOCAL_KEY_VAR: "local"}, server)
                if server.poll() is not None:
                    raise LocalModelError(f"during the run, {server.death_report()}")
            log(f"server stopped; its log: {server.log_path}")
        else:
            probe_endpoint(config.api_base_url)
            command = vf_eval_command(config, extra, config.api_base_url, config.model,
                                      config.api_key_var or "OPENAI_API_KEY", local=False)
            code = _run_eval(command, dict(os.environ))
        if code != 0:
            log(f"vf-eval failed with exit code {code}")
            return code
        results = find_results(config.output_dir)
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if not rows:
            raise LocalModelError(f"vf-eval saved no rollouts in {results}")
        summary = summarize(rows)
        print(format_summary(summary, results))
        check_failures(summary, config.max_failed_share)
    except LocalModelError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; stopped what it had started")
        return 130
    log(f"wall time {time.monotonic() - started:.0f} s")
    return 0

if __name__ == "__main__":
    sys.exit(main())
